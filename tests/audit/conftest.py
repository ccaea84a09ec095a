"""Audit tests run on every event store: memory, an SQLite file and EventStoreDB (the in-process
gRPC test server, or the server named by ``ESDB_URI``). Streams get fresh names, because the
EventStoreDB server is shared by the whole session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from escqrs.examples.bank import handlers
from escqrs.examples.bank.account import Account
from eventsourcing_cqrs.bus import CommandBus
from eventsourcing_cqrs.event_store import connect
from eventsourcing_cqrs.event_store.port import EventStore
from eventsourcing_cqrs.repository import Repository
from eventsourcing_cqrs.testing.esdb_fixtures import EsdbEndpoint, esdb_server

__all__ = ["esdb_server"]


@pytest.fixture(params=["memory", "sqlite", "esdb"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    if request.param == "esdb":
        endpoint: EsdbEndpoint = request.getfixturevalue("esdb_server")
        uri = endpoint.uri
    else:
        uri = "memory:" if request.param == "memory" else f"sqlite:///{tmp_path}/events.db"
    opened = connect(uri)
    yield opened
    opened.close()


@pytest.fixture
def accounts(store: EventStore) -> Repository[Account]:
    return handlers.account_repository(store, snapshot_every=3)


@pytest.fixture
def bus(accounts: Repository[Account]) -> CommandBus:
    command_bus = CommandBus()
    handlers.register(command_bus, accounts)
    return command_bus


@pytest.fixture
def account_id() -> str:
    return uuid.uuid4().hex[:12]
