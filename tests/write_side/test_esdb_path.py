"""The bank through the command bus on the EventStoreDB adapter (in-process gRPC test server, or
the server named by ``ESDB_URI``): the write side needs nothing the embedded stores alone provide."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest

from escqrs.examples.bank import handlers
from escqrs.examples.bank.account import InsufficientFundsError
from escqrs.examples.bank.commands import Deposit, OpenAccount, Withdraw
from eventsourcing_cqrs.bus import CommandBus
from eventsourcing_cqrs.event_store.esdb import EsdbEventStore
from eventsourcing_cqrs.repository import SNAPSHOT_EVENT_TYPE
from eventsourcing_cqrs.testing.esdb_fixtures import EsdbEndpoint, esdb_server

__all__ = ["esdb_server"]


@pytest.fixture
def store(esdb_server: EsdbEndpoint) -> Iterator[EsdbEventStore]:
    with EsdbEventStore(esdb_server.uri) as opened:
        yield opened


def test_the_bank_runs_on_eventstoredb_with_snapshots_and_deduplication(store: EsdbEventStore) -> None:
    accounts = handlers.account_repository(store, snapshot_every=3)
    bus = CommandBus()
    handlers.register(bus, accounts)
    account_id = uuid.uuid4().hex
    bus.dispatch(OpenAccount(account_id=account_id, owner="Ann"), actor="teller")
    first = Deposit(account_id=account_id, amount=Decimal("5.00"))
    result = bus.dispatch(first, correlation_id="req-1")
    for _ in range(5):
        bus.dispatch(Deposit(account_id=account_id, amount=Decimal(1)))
    with pytest.raises(InsufficientFundsError):
        bus.dispatch(Withdraw(account_id=account_id, amount=Decimal(100)))

    again = bus.dispatch(first)
    assert again.duplicate
    assert (again.version, again.position) == (result.version, result.position)
    assert accounts.load(account_id).balance == Decimal(10)
    assert accounts.load(account_id, at_version=1).balance == Decimal(5)
    snapshots = list(store.read_stream(f"Account.snapshots-{account_id}"))
    assert [recorded.type for recorded in snapshots] == [SNAPSHOT_EVENT_TYPE] * 2
    deposited = list(store.read_stream(f"Account-{account_id}"))[1]
    assert json.loads(deposited.metadata)["$correlationId"] == "req-1"


def test_a_redelivered_creation_command_is_flagged_duplicate_on_eventstoredb(store: EsdbEventStore) -> None:
    bus = CommandBus()
    handlers.register(bus, handlers.account_repository(store))
    command = OpenAccount(account_id=uuid.uuid4().hex, owner="Ann")
    first = bus.dispatch(command)
    again = bus.dispatch(command)
    assert (first.duplicate, again.duplicate) == (False, True)
    assert (again.version, again.position) == (first.version, first.position)
    assert (bus.metrics.succeeded, bus.metrics.duplicates) == (1, 1)
    assert len(list(store.read_stream(f"Account-{command.account_id}"))) == 1
