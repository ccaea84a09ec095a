"""Pytest fixtures for the EventStoreDB path: the test server (in a child process or in this
one), or a real server.

Register with ``pytest_plugins = ["eventsourcing_cqrs.testing.esdb_fixtures"]`` in the root
conftest, or import the fixtures into a test module or a nested conftest. Each yields an
:class:`~eventsourcing_cqrs.testing.esdb_server.EsdbEndpoint` (import it from there to annotate
tests: this module imports pytest).

* ``esdb_server``: one strict test server for the session, **in a child process** by default
  (``python -m eventsourcing_cqrs.testing.esdb_server --strict --port 0``; ``endpoint.process``
  is its :class:`~eventsourcing_cqrs.testing.esdb_server.EsdbServerProcess`, ``endpoint.server``
  is ``None``). With the server apart the client's Python no longer shares a GIL with the
  server's, which makes the EventStoreDB path several times faster. Set
  ``ESDB_TEST_SERVER=in-process`` to run it in the test's interpreter instead (to step into the
  server with a debugger, or to measure its coverage): ``endpoint.server`` is then the
  :class:`~eventsourcing_cqrs.testing.esdb_server.EsdbTestServer`.
* ``esdb_inprocess_server``: one strict in-process test server for the session, whatever the
  environment says, for tests that inject faults through ``endpoint.server`` (``stop()``,
  ``start()``, ``latency``). It is a different server from ``esdb_server``'s.
* ``esdb_secure_server``: a secure in-process server (TLS, users, access rules).

When the ``ESDB_URI`` environment variable is set (e.g. ``esdb://localhost:2113?Tls=false`` after
``docker compose up -d``), ``esdb_server`` yields that URI and starts nothing, so the same tests
run against a real EventStoreDB; ``endpoint.is_test_server`` is then false. The child process is
stopped (SIGTERM, then SIGKILL) at the end of the session, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from eventsourcing_cqrs.testing.esdb_server import EsdbEndpoint, EsdbServerProcess, EsdbTestServer

__all__ = [
    "ESDB_TEST_SERVER_ENV",
    "ESDB_URI_ENV",
    "EsdbEndpoint",
    "esdb_inprocess_server",
    "esdb_secure_server",
    "esdb_server",
]

ESDB_URI_ENV = "ESDB_URI"
ESDB_TEST_SERVER_ENV = "ESDB_TEST_SERVER"
_IN_PROCESS = "in-process"
_CHILD_PROCESS = "process"


@pytest.fixture(scope="session")
def esdb_server() -> Iterator[EsdbEndpoint]:
    """One EventStoreDB for the whole session: ``ESDB_URI`` if set, else the test server in strict
    mode (EventStoreDB 24.10's behaviour where the lenient server would be kinder), in a child
    process unless ``ESDB_TEST_SERVER=in-process``."""
    external = os.environ.get(ESDB_URI_ENV)
    if external:
        yield EsdbEndpoint(uri=external)
        return
    where = os.environ.get(ESDB_TEST_SERVER_ENV, _CHILD_PROCESS)
    if where == _IN_PROCESS:
        with EsdbTestServer(strict=True) as server:
            yield EsdbEndpoint(uri=server.uri, server=server)
        return
    if where != _CHILD_PROCESS:
        raise pytest.UsageError(
            f"{ESDB_TEST_SERVER_ENV}={where!r} is not one of {_CHILD_PROCESS!r} (the default) "
            f"and {_IN_PROCESS!r}."
        )
    with EsdbServerProcess(strict=True) as process:
        yield EsdbEndpoint(uri=process.uri, process=process)


@pytest.fixture(scope="session")
def esdb_inprocess_server() -> Iterator[EsdbEndpoint]:
    """One strict in-process test server for the session, for fault injection through
    ``endpoint.server`` (``stop()``, ``start()``, ``latency``); it ignores ``ESDB_URI``."""
    with EsdbTestServer(strict=True) as server:
        yield EsdbEndpoint(uri=server.uri, server=server)


@pytest.fixture(scope="session")
def esdb_secure_server() -> Iterator[EsdbEndpoint]:
    """One secure in-process EventStoreDB for the session: TLS (``ca_file`` is its CA), the
    default users ``admin:changeit`` (``$admins``) and ``ops:changeit`` (``$ops``), and 24.10's
    default access rules. ``uri`` is the admin's; ``server.uri_for(user, password)`` another's.
    It ignores ``ESDB_URI`` (which names one server, usually insecure) and needs the
    ``esdb-testing`` extra (``cryptography``)."""
    server = EsdbTestServer(tls=True).start()
    try:
        yield EsdbEndpoint(uri=server.uri, server=server, ca_file=server.ca_file)
    finally:
        server.close()
