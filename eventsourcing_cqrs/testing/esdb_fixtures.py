"""Pytest fixtures for the EventStoreDB path: the in-process test server, or a real server.

Register with ``pytest_plugins = ["eventsourcing_cqrs.testing.esdb_fixtures"]`` in the root
conftest, or import ``esdb_server`` into a test module or a nested conftest.
When the ``ESDB_URI`` environment variable is set (e.g. ``esdb://localhost:2113?Tls=false`` after
``docker compose up -d``), the fixture yields that URI and starts nothing, so the same tests run
against a real EventStoreDB. The fixture yields an
:class:`~eventsourcing_cqrs.testing.esdb_server.EsdbEndpoint` (import it from there to annotate
tests: this module imports pytest).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from eventsourcing_cqrs.testing.esdb_server import EsdbEndpoint, EsdbTestServer

__all__ = ["ESDB_URI_ENV", "EsdbEndpoint", "esdb_secure_server", "esdb_server"]

ESDB_URI_ENV = "ESDB_URI"


@pytest.fixture(scope="session")
def esdb_server() -> Iterator[EsdbEndpoint]:
    """One EventStoreDB for the whole session: ``ESDB_URI`` if set, else an in-process server in
    strict mode (EventStoreDB 24.10's behaviour where the lenient server would be kinder)."""
    external = os.environ.get(ESDB_URI_ENV)
    if external:
        yield EsdbEndpoint(uri=external)
        return
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
