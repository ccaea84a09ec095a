"""Fixtures for exercising the EventStoreDB test server with esdbclient alone (no adapter).

Every test that takes ``client`` runs twice: against the session's server (lenient by default,
or the real EventStoreDB of ``ESDB_URI``) and against a strict in-process server
(``EsdbTestServer(strict=True)``), which must agree with the real 24.10 server on everything
these tests assert.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from esdbclient import EventStoreDBClient

from eventsourcing_cqrs.testing.esdb_fixtures import EsdbEndpoint, esdb_server
from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer

__all__ = ["client", "esdb_server", "strict_server"]


@pytest.fixture(scope="module")
def strict_server() -> Iterator[EsdbTestServer]:
    """A strict in-process server for one test module."""
    with EsdbTestServer(strict=True) as server:
        yield server


@pytest.fixture(scope="module", params=["session", "strict"])
def client(request: pytest.FixtureRequest, esdb_server: EsdbEndpoint) -> Iterator[EventStoreDBClient]:
    """A plain esdbclient client connected to the session's server, then to a strict one."""
    if request.param == "strict":
        if not esdb_server.is_test_server:
            pytest.skip("ESDB_URI points to a real EventStoreDB: the strict double is not needed.")
        uri = request.getfixturevalue("strict_server").uri
    else:
        uri = esdb_server.uri
    esdb_client = EventStoreDBClient(uri)
    yield esdb_client
    esdb_client.close()
