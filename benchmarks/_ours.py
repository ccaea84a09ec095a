"""This project's side of ``compare.py``: each workload written the way an application would use it.

The embedded :class:`~eventsourcing_cqrs.event_store.sqlite.SQLiteEventStore`, the bank example's
``Account`` through the :class:`~eventsourcing_cqrs.bus.CommandBus`, and the
:class:`~projections.ProjectionRunner` into the SQLite read-model store. The functions and classes
are the same on every side (``_eventsourcing.py``, ``_raw_sqlite.py``):

* W1 ``Commands(path, durable, cache)`` — ``seed(number, events)`` (an account with that many
  events, written in one append, untimed), ``deposit(account_id)``, ``balance(account_id)``,
  ``close()``; here also ``CommandsWithoutBus``, a diagnostic, and ``CACHE_SUPPORTED``;
* W2 ``replay_loaders(directory, events)`` — (full replay, snapshot + tail, close);
* W3 ``fill(path, events)`` and ``rebuild(source, target, durable)`` — (events applied, balances sum);
* W4 ``latency(directory, samples, durable, ...)`` — seconds from append to visible, per sample.

Not a script: run ``compare.py``.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

from _common import AMOUNT, EVENTS_PER_ACCOUNT, SNAPSHOT_TAIL, Loaders, wait_until

from escqrs.examples.bank import handlers
from escqrs.examples.bank.account import Account
from escqrs.examples.bank.commands import Deposit
from escqrs.examples.bank.events import AccountOpened, MoneyDeposited, registry
from escqrs.examples.bank.read_models import AccountList
from eventsourcing_cqrs.bus import CommandBus
from eventsourcing_cqrs.event_store import StreamState
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from eventsourcing_cqrs.repository import Repository
from projections import ProjectionRunner
from projections.errors import ProjectionNotFoundError
from projections.read_model_store import SQLiteReadModelStore

# =========================================================================================
# W1 commands
# =========================================================================================


#: Whether this checkout's Repository has an aggregate cache (``cache_size``); the W1 rows
#: with our cache on print "n/a" where it has not.
CACHE_SUPPORTED = "cache_size" in inspect.signature(Repository).parameters


def _accounts(store: SQLiteEventStore, cache: int) -> Repository[Account]:
    """The bank's account repository, with an aggregate cache of ``cache`` accounts (0 = off)."""
    if not cache:
        return handlers.account_repository(store)
    if not CACHE_SUPPORTED:
        raise RuntimeError("this Repository has no cache_size parameter")
    options: dict[str, int] = {"cache_size": cache}  # through a dict: older checkouts lack it
    accounts: Repository[Account] = Repository(store, Account, registry, **options)
    return accounts


def _seed(store: SQLiteEventStore, number: int, events: int) -> str:
    """An account opened with ``events - 1`` deposits, saved in one append (set-up, untimed)."""
    account_id = f"bench-{number}"
    account = Account.open(account_id, "Bench")
    for _ in range(events - 1):
        account.deposit(AMOUNT)
    handlers.account_repository(store).save(account)
    return account_id


class Commands:
    """Every command through the CommandBus (load, decide, append, metadata); ``cache`` is the
    repository's aggregate cache size (0 = off)."""

    def __init__(self, path: Path, durable: bool, cache: int = 0) -> None:
        self.store = SQLiteEventStore(path, durable=durable)
        self.bus = CommandBus()
        handlers.register(self.bus, _accounts(self.store, cache))

    def seed(self, number: int, events: int) -> str:
        return _seed(self.store, number, events)

    def deposit(self, account_id: str) -> None:
        self.bus.dispatch(Deposit(account_id=account_id, amount=AMOUNT))

    def balance(self, account_id: str) -> Decimal:
        return handlers.account_repository(self.store).load(account_id).balance

    def close(self) -> None:
        self.store.close()


class CommandsWithoutBus:
    """A diagnostic: our Repository and Account alone, as a handler would use them, without the
    bus (no context, metadata, deterministic ids, redelivery check, retries or logging)."""

    def __init__(self, path: Path, durable: bool) -> None:
        self.store = SQLiteEventStore(path, durable=durable)
        self.accounts = handlers.account_repository(self.store)

    def seed(self, number: int, events: int) -> str:
        return _seed(self.store, number, events)

    def deposit(self, account_id: str) -> None:
        account = self.accounts.load(account_id)
        account.deposit(AMOUNT)
        self.accounts.save(account)

    def balance(self, account_id: str) -> Decimal:
        return self.accounts.load(account_id).balance

    def close(self) -> None:
        self.store.close()


# =========================================================================================
# W2 replay
# =========================================================================================


def replay_loaders(directory: Path, events: int) -> Loaders:
    """(full replay, snapshot + tail, close) for one account of ``events`` events."""
    store = SQLiteEventStore(directory / "w2-ours.db", durable=False)
    plain = handlers.account_repository(store)
    snapshotting = handlers.account_repository(store, snapshot_every=10**9)  # snapshots taken by hand
    account = Account.open("long", "Bench")
    head = events - SNAPSHOT_TAIL
    while account.version < head - 1:
        for _ in range(min(1000, head - 1 - account.version - len(account.pending_events))):
            account.deposit(AMOUNT)
        plain.save(account)
    snapshotting.take_snapshot("long")
    for _ in range(SNAPSHOT_TAIL):
        account.deposit(AMOUNT)
    plain.save(account)
    expected = AMOUNT * (events - 1)
    assert account.version == events - 1
    assert snapshotting.load("long").balance == plain.load("long").balance == expected
    return (lambda: plain.load("long")), (lambda: snapshotting.load("long")), store.close


# =========================================================================================
# W3 rebuild (the raw side reads the file ``fill`` writes too)
# =========================================================================================


def fill(path: Path, events: int) -> None:
    """``events`` events: accounts opened, then 99 deposits each (appended per account)."""
    store = SQLiteEventStore(path, durable=False)
    encode = registry.encode
    try:
        for number in range(events // EVENTS_PER_ACCOUNT):
            account_id = f"acc-{number}"
            batch = [encode(AccountOpened(account_id=account_id, owner="Bench"))]
            balance = Decimal(0)
            for _ in range(EVENTS_PER_ACCOUNT - 1):
                balance += AMOUNT
                batch.append(encode(MoneyDeposited(account_id=account_id, amount=AMOUNT, balance=balance)))
            store.append(f"Account-{account_id}", batch, expected_version=StreamState.NO_STREAM)
    finally:
        store.close()


def rebuild(source: Path, target: Path, durable: bool) -> tuple[int, Callable[[], Decimal]]:
    """The bank's ``AccountList`` projection, run by our runner until it has caught up."""
    events = SQLiteEventStore(source, durable=durable)
    store = SQLiteReadModelStore(target, durable=durable)
    projection = AccountList()
    ProjectionRunner(projection, events, store).run(until_caught_up=True)
    events.close()
    live = store.describe(projection.name).live
    assert live is not None

    def total() -> Decimal:
        with store.read(projection.name) as view:
            return sum((Decimal(row["balance"]) for row in view.table("accounts").find()), Decimal(0))

    return live.events_applied, total


# =========================================================================================
# W4 latency
# =========================================================================================


def latency(directory: Path, samples: int, durable: bool, batch_delay: float) -> list[float]:
    """Our runner live in a thread; each deposit appended to the store it subscribes to."""
    events = SQLiteEventStore(directory / f"w4-ours-{batch_delay}.db", durable=durable)
    account = Account.open("acc-0", "Bench")
    handlers.account_repository(events).save(account)
    store = SQLiteReadModelStore(directory / f"w4-ours-{batch_delay}-model.db", durable=durable)
    projection = AccountList()
    runner = ProjectionRunner(projection, events, store, batch_delay=batch_delay)
    runner.start()

    def read_balance() -> str | None:
        with contextlib.suppress(ProjectionNotFoundError), store.read(projection.name) as view:
            row = view.table("accounts").get("acc-0")
            return None if row is None else str(row["balance"])
        return None

    latencies = []
    try:
        wait_until(read_balance, "0", time.perf_counter() + 30)
        balance, revision = Decimal(0), 0
        for _ in range(samples):
            balance += AMOUNT
            new = registry.encode(MoneyDeposited(account_id="acc-0", amount=AMOUNT, balance=balance))
            started = time.perf_counter()
            revision = events.append("Account-acc-0", [new], expected_version=revision).revision
            wait_until(read_balance, str(balance), started + 10)
            latencies.append(time.perf_counter() - started)
    finally:
        runner.stop()
        runner.join(10)
        events.close()
        store.close()
    return latencies
