"""Every write-side test that takes ``store`` runs on both embedded stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from escqrs.examples.bank import handlers
from escqrs.examples.bank.account import Account
from eventsourcing_cqrs.bus import CommandBus, QueryBus, RetryPolicy
from eventsourcing_cqrs.event_store import connect
from eventsourcing_cqrs.event_store.port import EventStore
from eventsourcing_cqrs.repository import Repository


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    uri = "memory:" if request.param == "memory" else f"sqlite:///{tmp_path}/e.db"
    opened = connect(uri)
    yield opened
    opened.close()


@pytest.fixture
def accounts(store: EventStore) -> Repository[Account]:
    return handlers.account_repository(store)


@pytest.fixture
def bus(accounts: Repository[Account]) -> CommandBus:
    command_bus = CommandBus(retry=RetryPolicy(max_attempts=5, base_delay=0.0005, max_delay=0.005))
    handlers.register(command_bus, accounts)
    return command_bus


@pytest.fixture
def query_bus() -> QueryBus:
    return QueryBus()
