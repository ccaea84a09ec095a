"""Pytest fixtures for the EventStoreDB path: the in-process test server, or a real server.

Register with ``pytest_plugins = ["eventsourcing_cqrs.testing.esdb_fixtures"]`` in the root
conftest, or import ``esdb_server`` into a test module or a nested conftest.
When the ``ESDB_URI`` environment variable is set (e.g. ``esdb://localhost:2113?Tls=false`` after
``docker compose up -d``), the fixture yields that URI and starts nothing, so the same tests run
against a real EventStoreDB.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer

ESDB_URI_ENV = "ESDB_URI"


@dataclass(frozen=True)
class EsdbEndpoint:
    """Where the EventStoreDB under test listens.

    ``server`` is the in-process test server, or ``None`` when ``ESDB_URI`` points to a real one.
    """

    uri: str
    server: EsdbTestServer | None = None


@pytest.fixture(scope="session")
def esdb_server() -> Iterator[EsdbEndpoint]:
    """One EventStoreDB for the whole session: ``ESDB_URI`` if set, else an in-process server."""
    external = os.environ.get(ESDB_URI_ENV)
    if external:
        yield EsdbEndpoint(uri=external)
        return
    with EsdbTestServer() as server:
        yield EsdbEndpoint(uri=server.uri, server=server)
