"""Fixtures for exercising the EventStoreDB test server with esdbclient alone (no adapter)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from esdbclient import EventStoreDBClient

from eventsourcing_cqrs.testing.esdb_fixtures import EsdbEndpoint, esdb_server

__all__ = ["client", "esdb_server"]


@pytest.fixture(scope="module")
def client(esdb_server: EsdbEndpoint) -> Iterator[EventStoreDBClient]:
    """A plain esdbclient client connected to the server under test."""
    esdb_client = EventStoreDBClient(esdb_server.uri)
    yield esdb_client
    esdb_client.close()
