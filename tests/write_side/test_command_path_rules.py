"""The command path's rules: a redelivered command writes nothing (with snapshots, and for a
creation too), and a handler that saves two aggregates writes neither."""

from __future__ import annotations

import collections
import json
import multiprocessing
import random
import uuid
from decimal import Decimal
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from escqrs.examples.bank import handlers
from escqrs.examples.bank.account import Account
from escqrs.examples.bank.commands import Deposit, OpenAccount
from eventsourcing_cqrs.bus import CommandBus, RetryPolicy
from eventsourcing_cqrs.errors import InvalidInputError
from eventsourcing_cqrs.event_store.port import EventFilter, EventStore
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from eventsourcing_cqrs.messages import Command
from eventsourcing_cqrs.repository import Repository

PROCESSES = 6
COMMANDS = 300
COMMAND_IDS = [uuid.UUID(int=n + 1) for n in range(COMMANDS)]


def redeliver_all(path: Path, seed: int, start: multiprocessing.synchronize.Barrier) -> None:
    """One process delivering every command, in its own order (a redelivering consumer)."""
    store = SQLiteEventStore(path, durable=False)
    accounts = handlers.account_repository(store, snapshot_every=10)
    bus = CommandBus(retry=RetryPolicy(max_attempts=1000, base_delay=0.0005, max_delay=0.005))
    handlers.register(bus, accounts)
    order = list(range(COMMANDS))
    random.Random(seed).shuffle(order)
    start.wait()
    for n in order:
        bus.dispatch(Deposit(account_id="acc", amount=Decimal(n + 1) / 100, command_id=COMMAND_IDS[n]))
    store.close()


@pytest.mark.slow
def test_processes_redelivering_the_same_commands_with_snapshots_write_each_once(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path)
    accounts = handlers.account_repository(store, snapshot_every=10)
    bus = CommandBus()
    handlers.register(bus, accounts)
    bus.dispatch(OpenAccount(account_id="acc", owner="Ann"))
    # Spawned, not forked: this process may have gRPC loaded (earlier EventStoreDB tests), whose
    # threads do not survive a fork and abort the child at a random moment.
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(PROCESSES)
    children = [context.Process(target=redeliver_all, args=(path, seed, start)) for seed in range(PROCESSES)]
    for child in children:
        child.start()
    for child in children:
        child.join(120)
    assert [child.exitcode for child in children] == [0] * PROCESSES
    per_command = collections.Counter(
        json.loads(event.metadata)["commandId"] for event in store.read_stream("Account-acc")
    )
    doubled = {command: count for command, count in per_command.items() if count != 1}
    assert doubled == {}, f"{len(doubled)} commands written more than once"
    assert len(per_command) == COMMANDS + 1
    assert accounts.load("acc").balance == sum(Decimal(n + 1) / 100 for n in range(COMMANDS))
    store.close()


def test_a_redelivery_older_than_the_last_snapshots_is_recognised(store: EventStore) -> None:
    accounts = handlers.account_repository(store, snapshot_every=10)
    bus = CommandBus()
    handlers.register(bus, accounts)
    bus.dispatch(OpenAccount(account_id="acc", owner="Ann"))
    first = Deposit(account_id="acc", amount=Decimal(1))
    original = bus.dispatch(first)
    for _ in range(200):  # twenty snapshots later
        bus.dispatch(Deposit(account_id="acc", amount=Decimal(1)))
    again = bus.dispatch(first)
    assert again.duplicate
    assert (again.version, again.position) == (original.version, original.position)
    assert accounts.load("acc").version == 201


def test_a_redelivered_creation_command_is_flagged_logged_and_counted_as_a_duplicate(
    bus: CommandBus, store: EventStore
) -> None:
    command = OpenAccount(account_id=uuid.uuid4().hex, owner="Ann")
    first = bus.dispatch(command)
    with capture_logs() as logs:
        again = bus.dispatch(command)
    assert not first.duplicate
    assert again.duplicate
    assert (again.stream, again.version, again.position) == (first.stream, first.version, first.position)
    assert [log["event"] for log in logs if log["event"].startswith("command.")] == ["command.duplicate"]
    assert (bus.metrics.succeeded, bus.metrics.duplicates) == (1, 1)
    assert len(list(store.read_stream(f"Account-{command.account_id}"))) == 1


class OpenTwo(Command):
    first: str
    second: str


class DepositIntoTwo(Command):
    first: str
    second: str


def test_a_handler_saving_two_aggregates_is_refused_before_anything_is_written(
    accounts: Repository[Account], store: EventStore
) -> None:
    bus = CommandBus()
    handlers.register(bus, accounts)

    def open_two(command: OpenTwo) -> None:
        accounts.save(Account.open(command.first, "Ann"))
        accounts.save(Account.open(command.second, "Bob"))

    def deposit_into_two(command: DepositIntoTwo) -> None:
        for account_id in (command.first, command.second):
            account = accounts.load(account_id)
            account.deposit(Decimal(5))
            accounts.save(account)

    bus.register(OpenTwo, open_two)
    bus.register(DepositIntoTwo, deposit_into_two)
    everything = EventFilter(include_system_events=True)
    head = store.head_position(everything)
    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    with pytest.raises(InvalidInputError, match="a command appends once, to one aggregate"):
        bus.dispatch(OpenTwo(first=first, second=second))
    assert store.stream_version(f"Account-{first}") is None
    assert store.stream_version(f"Account-{second}") is None
    assert store.head_position(everything) == head

    bus.dispatch(OpenAccount(account_id=first, owner="Ann"))
    bus.dispatch(OpenAccount(account_id=second, owner="Bob"))
    head = store.head_position(everything)
    with pytest.raises(InvalidInputError, match="nothing was written"):
        bus.dispatch(DepositIntoTwo(first=first, second=second))
    assert store.stream_version(f"Account-{first}") == 0
    assert store.stream_version(f"Account-{second}") == 0
    assert store.head_position(everything) == head
