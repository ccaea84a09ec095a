"""Side by side: this project, the ``eventsourcing`` library, and a raw ``sqlite3`` + ``json`` loop.

Run ``python benchmarks/compare.py`` (quick sizes, well under two minutes) or ``--full``. The same
workloads run on

* **ours** — the embedded :class:`~eventsourcing_cqrs.event_store.sqlite.SQLiteEventStore`, the bank
  example's ``Account`` through the :class:`~eventsourcing_cqrs.bus.CommandBus`, and the
  :class:`~projections.ProjectionRunner` into the SQLite read-model store;
* **eventsourcing** — the library Python users would otherwise pick (9.x), with its SQLite
  persistence module, an ``Application`` and an ``Aggregate`` written as its documentation shows,
  and its ``Projection`` over a ``SQLiteTrackingRecorder`` view;
* **raw** — the same work written directly against ``sqlite3`` and ``json``: no framework, no
  validation, no metadata. It is the practical limit for CPython on SQLite.

Workloads:

* **W1 commands** — N accounts opened, then K deposits each (round robin); every command loads
  the account from its events, decides, and appends with an optimistic version check. Neither
  side caches aggregates (eventsourcing's cache is off by default, and we have none).
* **W2 replay** — load one account of 10 000 events, by full replay and from a snapshot taken
  50 events before the end.
* **W3 rebuild** — project every event of N accounts x 100 events into an account-balances read
  model from scratch, each run in a fresh subprocess that reports its own peak RSS (VmHWM).

The sides take turns (a round of W1 commands, one W2 load, one W3 run each), so that load from
elsewhere on the machine falls on all of them alike; short W3 runs are repeated and the fastest
kept. ``--profile W1|W2|W3`` runs our side of one workload under pyinstrument instead.
* **W4 latency** — with the projection running live, the time from calling append to the new
  balance being readable in the read model (read by another connection), p50 and p99.

Durability is the same on every side and is named in each row: SQLite's ``synchronous=FULL``
(both libraries' default, an ``fsync`` per commit) or ``synchronous=NORMAL`` (our
``durable=false``; for eventsourcing, which has no setting for it, the benchmark issues the
PRAGMA on each connection its pool opens).

A benchmark, not a test: the numbers depend on the machine and on what else it is running.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from importlib.metadata import version
from pathlib import Path
from typing import Any

import structlog
from eventsourcing import sqlite as es_sqlite
from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate as EsAggregate
from eventsourcing.domain import event
from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.projection import Projection as EsProjection
from eventsourcing.utils import Environment, get_topic

from escqrs.examples.bank import handlers
from escqrs.examples.bank.account import Account
from escqrs.examples.bank.commands import Deposit, OpenAccount
from escqrs.examples.bank.events import AccountOpened, MoneyDeposited, registry
from escqrs.examples.bank.read_models import AccountList
from eventsourcing_cqrs.bus import CommandBus
from eventsourcing_cqrs.event_store import StreamState
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from projections import ProjectionRunner
from projections.errors import ProjectionNotFoundError
from projections.read_model_store import SQLiteReadModelStore

ROOT = Path(__file__).resolve().parent.parent
AMOUNT = Decimal("1.25")
EVENTS_PER_ACCOUNT = 100  # W3 data: each account is opened, then has 99 deposits
SNAPSHOT_TAIL = 50  # W2: events written after the snapshot, replayed on top of it
SYNC_MODES = {True: "FULL", False: "NORMAL"}


@dataclass(frozen=True)
class Sizes:
    accounts: int  # W1: accounts opened
    deposits: int  # W1: deposits per account
    replay_events: int  # W2: events in the replayed aggregate
    replay_repeat: int  # W2: full replays timed per side (median); 20x as many snapshot loads
    rebuild_sizes: tuple[int, ...]  # W3: events per rebuild run (each in its own subprocess)
    rebuild_full_sync_sizes: tuple[int, ...]  # W3: sizes also rebuilt with synchronous=FULL
    latency_samples: int  # W4: appends timed


QUICK = Sizes(
    accounts=50,
    deposits=10,
    replay_events=10_000,
    replay_repeat=5,
    rebuild_sizes=(10_000, 100_000),
    rebuild_full_sync_sizes=(10_000,),
    latency_samples=200,
)
FULL = Sizes(
    accounts=200,
    deposits=25,
    replay_events=10_000,
    replay_repeat=15,
    rebuild_sizes=(10_000, 100_000, 1_000_000),
    rebuild_full_sync_sizes=(10_000, 100_000),
    latency_samples=1000,
)


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


# =========================================================================================
# eventsourcing: the domain, application and projection as its documentation writes them
# =========================================================================================

_their_sync = {"mode": "FULL"}
_their_create_connection = es_sqlite.SQLiteConnectionPool._create_connection


def _create_connection_with_sync(pool: es_sqlite.SQLiteConnectionPool) -> es_sqlite.SQLiteConnection:
    connection = _their_create_connection(pool)
    connection._sqlite_conn.execute(f"PRAGMA synchronous={_their_sync['mode']}")
    return connection


# eventsourcing has no durability setting for SQLite: set the same PRAGMA as our side uses.
es_sqlite.SQLiteConnectionPool._create_connection = _create_connection_with_sync  # type: ignore[method-assign]


def their_env(path: Path, *, durable: bool, snapshots: bool = False) -> dict[str, str]:
    _their_sync["mode"] = SYNC_MODES[durable]
    return {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path),
        "IS_SNAPSHOTTING_ENABLED": "y" if snapshots else "n",
    }


class EsAccount(EsAggregate):
    """The bank account of the eventsourcing side: same rules, same event payloads."""

    @event("AccountOpened")
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.balance = Decimal(0)
        self.closed = False

    def deposit(self, amount: Decimal) -> None:
        if self.closed:
            raise ValueError("closed")
        if amount <= 0:
            raise ValueError("amount must be positive")
        self._deposited(amount=amount, balance=self.balance + amount)

    @event("MoneyDeposited")
    def _deposited(self, amount: Decimal, balance: Decimal) -> None:
        self.balance = balance


class EsBank(Application):
    """The eventsourcing application: one method per command."""

    name = "Bank"

    def open_account(self, owner: str) -> uuid.UUID:
        account = EsAccount(owner)
        self.save(account)
        return account.id

    def deposit(self, account_id: uuid.UUID, amount: Decimal) -> None:
        account: EsAccount = self.repository.get(account_id)
        account.deposit(amount)
        self.save(account)


class EsBalancesView(es_sqlite.SQLiteTrackingRecorder):
    """eventsourcing's materialised view: a tracking recorder with a balances table."""

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS balances "
            "(account_id TEXT PRIMARY KEY, owner TEXT, balance TEXT) WITHOUT ROWID",
        ]

    def account_opened(self, account_id: str, owner: str, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                "INSERT INTO balances VALUES (?, ?, '0') ON CONFLICT (account_id) DO NOTHING",
                (account_id, owner),
            )
            self._insert_tracking(cursor, tracking)

    def balance_changed(self, account_id: str, balance: str, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute("UPDATE balances SET balance = ? WHERE account_id = ?", (balance, account_id))
            self._insert_tracking(cursor, tracking)


class EsBalances(EsProjection[EsBalancesView]):
    """eventsourcing's projection of account balances."""

    name = "balances"
    topics = (get_topic(EsAccount.AccountOpened), get_topic(EsAccount.MoneyDeposited))  # type: ignore[attr-defined]

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register(EsAccount.AccountOpened)  # type: ignore[attr-defined]
    def _(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.account_opened(domain_event.originator_id.hex, domain_event.owner, tracking)

    @process_event.register(EsAccount.MoneyDeposited)  # type: ignore[attr-defined]
    def _(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.balance_changed(domain_event.originator_id.hex, str(domain_event.balance), tracking)


def their_view(path: Path, *, durable: bool) -> EsBalancesView:
    """The view, built the way their ``ProjectionRunner`` builds it (a factory named after the projection)."""
    env = Environment(EsBalances.name, their_env(path, durable=durable))
    view = InfrastructureFactory.construct(env).tracking_recorder(EsBalancesView)
    assert isinstance(view, EsBalancesView)
    return view


def their_catch_up(app: EsBank, projection: EsBalances, *, stop: threading.Event | None = None) -> int:
    """Feed ``projection`` every event after its tracking position; returns how many.

    Their ``ProjectionRunner`` needs ``ApplicationRecorder.subscribe()``, which eventsourcing's SQLite
    recorder does not implement (it raises ``NotImplementedError``). This is the loop of their
    ``ApplicationSubscription``: select notifications after the last one, map each to its domain
    event, call ``process_event`` with its tracking object.
    """
    after = projection.view.max_tracking_id(app.name)
    topics = projection.topics
    processed = 0
    while True:
        notifications = app.recorder.select_notifications(
            start=after, limit=500, topics=topics, inclusive_of_start=False
        )
        if not notifications:
            return processed
        for notification in notifications:
            domain_event = app.mapper.to_domain_event(notification)
            projection.process_event(domain_event, Tracking(app.name, notification.id))
        processed += len(notifications)
        after = notifications[-1].id
        if stop is not None and stop.is_set():
            return processed


# =========================================================================================
# raw sqlite3 + json: the practical limit
# =========================================================================================

_RAW_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (position INTEGER PRIMARY KEY, stream TEXT NOT NULL, "
    "revision INTEGER NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL, UNIQUE (stream, revision))",
    "CREATE TABLE IF NOT EXISTS snapshots (stream TEXT NOT NULL, revision INTEGER NOT NULL, "
    "data BLOB NOT NULL, PRIMARY KEY (stream, revision)) WITHOUT ROWID",
)
_RAW_READ_MODEL = (
    "CREATE TABLE IF NOT EXISTS balances "
    "(account_id TEXT PRIMARY KEY, owner TEXT, balance TEXT) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS checkpoint (name TEXT PRIMARY KEY, position INTEGER) WITHOUT ROWID",
)


def raw_connect(path: Path, *, durable: bool, schema: Sequence[str] = ()) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={SYNC_MODES[durable]}")
    for statement in schema:
        connection.execute(statement)
    return connection


class RawBank:
    """Commands as plain SQL: read the stream, fold it, append with a version check."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.db = connection

    def _append(self, stream: str, expected: int, type_: str, payload: dict[str, str]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            (last,) = self.db.execute(
                "SELECT coalesce(max(revision), -1) FROM events WHERE stream = ?", (stream,)
            ).fetchone()
            if last == expected:
                self.db.execute(
                    "INSERT INTO events (stream, revision, type, data) VALUES (?, ?, ?, ?)",
                    (stream, expected + 1, type_, json.dumps(payload).encode()),
                )
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        if last != expected:
            self.db.execute("ROLLBACK")
            raise RuntimeError(f"{stream}: expected {expected}, found {last}")
        self.db.execute("COMMIT")

    def load(self, stream: str, *, snapshot: bool = False) -> tuple[int, Decimal]:
        version, balance = -1, Decimal(0)
        if snapshot:
            row = self.db.execute(
                "SELECT revision, data FROM snapshots WHERE stream = ? ORDER BY revision DESC LIMIT 1",
                (stream,),
            ).fetchone()
            if row is not None:
                version, balance = row[0], Decimal(json.loads(row[1])["balance"])
        for revision, data in self.db.execute(
            "SELECT revision, data FROM events WHERE stream = ? AND revision > ? ORDER BY revision",
            (stream, version),
        ):
            payload = json.loads(data)
            if "balance" in payload:
                balance = Decimal(payload["balance"])
            version = revision
        return version, balance

    def open_account(self, account_id: str) -> None:
        self._append(
            f"Account-{account_id}", -1, "AccountOpened", {"account_id": account_id, "owner": "Bench"}
        )

    def deposit(self, account_id: str, amount: Decimal) -> None:
        stream = f"Account-{account_id}"
        version, balance = self.load(stream)
        payload = {"account_id": account_id, "amount": str(amount), "balance": str(balance + amount)}
        self._append(stream, version, "MoneyDeposited", payload)


# =========================================================================================
# W1 commands
# =========================================================================================


@dataclass
class Row:
    workload: str
    ours: float | str | None = None
    theirs: float | str | None = None
    raw: float | str | None = None
    unit: str = "events/s"
    target: str = ""
    higher_is_better: bool = True
    note: str = ""


class OursW1:
    """Our side of W1: every command through the CommandBus (load, decide, append, metadata)."""

    def __init__(self, path: Path, durable: bool) -> None:
        self.store = SQLiteEventStore(path, durable=durable)
        self.bus = CommandBus()
        handlers.register(self.bus, handlers.account_repository(self.store))

    def open_account(self, number: int) -> str:
        account_id = f"bench-{number}"
        self.bus.dispatch(OpenAccount(account_id=account_id, owner="Bench"))
        return account_id

    def deposit(self, account_id: str) -> None:
        self.bus.dispatch(Deposit(account_id=account_id, amount=AMOUNT))

    def close(self) -> None:
        self.store.close()


class OursW1WithoutBus:
    """A diagnostic: our Repository and Account alone, as a handler would use them, without the
    bus (no context, metadata, deterministic ids, redelivery check, retries or logging)."""

    def __init__(self, path: Path, durable: bool) -> None:
        self.store = SQLiteEventStore(path, durable=durable)
        self.accounts = handlers.account_repository(self.store)

    def open_account(self, number: int) -> str:
        account_id = f"bench-{number}"
        self.accounts.save(Account.open(account_id, "Bench"))
        return account_id

    def deposit(self, account_id: str) -> None:
        account = self.accounts.load(account_id)
        account.deposit(AMOUNT)
        self.accounts.save(account)

    def close(self) -> None:
        self.store.close()


class TheirsW1:
    """eventsourcing's side of W1: the application's command methods."""

    def __init__(self, path: Path, durable: bool) -> None:
        self.app = EsBank(env=their_env(path, durable=durable))

    def open_account(self, number: int) -> uuid.UUID:
        return self.app.open_account("Bench")

    def deposit(self, account_id: uuid.UUID) -> None:
        self.app.deposit(account_id, AMOUNT)

    def close(self) -> None:
        self.app.close()


class RawW1:
    def __init__(self, path: Path, durable: bool) -> None:
        self.db = raw_connect(path, durable=durable, schema=_RAW_SCHEMA)
        self.bank = RawBank(self.db)

    def open_account(self, number: int) -> str:
        account_id = f"bench-{number}"
        self.bank.open_account(account_id)
        return account_id

    def deposit(self, account_id: str) -> None:
        self.bank.deposit(account_id, AMOUNT)

    def close(self) -> None:
        self.db.close()


def w1(directory: Path, sizes: Sizes, durable: bool) -> dict[str, float]:
    """Commands/s per side. The sides take turns, one round (a deposit to every account) at a
    time, so that a burst of load from elsewhere on the machine hits all of them alike."""
    mode = SYNC_MODES[durable]
    sides: dict[str, Any] = {
        "ours": OursW1(directory / f"w1-ours-{mode}.db", durable),
        "theirs": TheirsW1(directory / f"w1-theirs-{mode}.db", durable),
        "raw": RawW1(directory / f"w1-raw-{mode}.db", durable),
        "ours_without_bus": OursW1WithoutBus(directory / f"w1-ours-nobus-{mode}.db", durable),
    }
    spent = dict.fromkeys(sides, 0.0)
    ids: dict[str, list[Any]] = {}
    try:
        for name, side in sides.items():
            started = time.perf_counter()
            ids[name] = [side.open_account(number) for number in range(sizes.accounts)]
            spent[name] += time.perf_counter() - started
        for _ in range(sizes.deposits):
            for name, side in sides.items():
                deposit = side.deposit
                started = time.perf_counter()
                for account_id in ids[name]:
                    deposit(account_id)
                spent[name] += time.perf_counter() - started
        their_app = sides["theirs"].app
        assert their_app.repository.get(ids["theirs"][0]).balance == AMOUNT * sizes.deposits
    finally:
        for side in sides.values():
            side.close()
    commands = sizes.accounts * (1 + sizes.deposits)
    return {name: commands / seconds for name, seconds in spent.items()}


# =========================================================================================
# W2 replay
# =========================================================================================


Loaders = tuple[Callable[[], object], Callable[[], object], Callable[[], None]]


def w2_ours(directory: Path, sizes: Sizes) -> Loaders:
    """(full replay, snapshot + tail, close) for one account of ``sizes.replay_events`` events."""
    store = SQLiteEventStore(directory / "w2-ours.db", durable=False)
    plain = handlers.account_repository(store)
    snapshotting = handlers.account_repository(store, snapshot_every=10**9)  # snapshots taken by hand
    account = Account.open("long", "Bench")
    head = sizes.replay_events - SNAPSHOT_TAIL
    while account.version < head - 1:
        for _ in range(min(1000, head - 1 - account.version - len(account.pending_events))):
            account.deposit(AMOUNT)
        plain.save(account)
    snapshotting.take_snapshot("long")
    for _ in range(SNAPSHOT_TAIL):
        account.deposit(AMOUNT)
    plain.save(account)
    expected = AMOUNT * (sizes.replay_events - 1)
    assert account.version == sizes.replay_events - 1
    assert snapshotting.load("long").balance == plain.load("long").balance == expected
    return (lambda: plain.load("long")), (lambda: snapshotting.load("long")), store.close


def w2_theirs(directory: Path, sizes: Sizes) -> Loaders:
    path = directory / "w2-theirs.db"
    writer = EsBank(env=their_env(path, durable=False, snapshots=True))
    try:
        account = EsAccount("Bench")
        head = sizes.replay_events - SNAPSHOT_TAIL
        while account.version < head:
            for _ in range(min(1000, head - account.version)):
                account.deposit(AMOUNT)
            writer.save(account)
        writer.take_snapshot(account.id)
        for _ in range(SNAPSHOT_TAIL):
            account.deposit(AMOUNT)
        writer.save(account)
        assert account.version == sizes.replay_events  # eventsourcing counts versions from 1
    finally:
        writer.close()
    plain = EsBank(env=their_env(path, durable=False, snapshots=False))
    snapshotting = EsBank(env=their_env(path, durable=False, snapshots=True))
    expected = AMOUNT * (sizes.replay_events - 1)
    assert plain.repository.get(account.id).balance == expected
    assert snapshotting.repository.get(account.id).balance == expected

    def close() -> None:
        plain.close()
        snapshotting.close()

    return (
        (lambda: plain.repository.get(account.id)),
        (lambda: snapshotting.repository.get(account.id)),
        close,
    )


def w2_raw(directory: Path, sizes: Sizes) -> Loaders:
    db = raw_connect(directory / "w2-raw.db", durable=False, schema=_RAW_SCHEMA)
    stream = "Account-long"
    rows, balance = [], Decimal(0)
    rows.append((stream, 0, "AccountOpened", b'{"account_id": "long", "owner": "Bench"}'))
    for revision in range(1, sizes.replay_events):
        balance += AMOUNT
        payload = {"account_id": "long", "amount": str(AMOUNT), "balance": str(balance)}
        rows.append((stream, revision, "MoneyDeposited", json.dumps(payload).encode()))
    db.executemany("INSERT INTO events (stream, revision, type, data) VALUES (?, ?, ?, ?)", rows)
    snapshot_at = sizes.replay_events - SNAPSHOT_TAIL - 1
    state = json.dumps({"owner": "Bench", "balance": str(AMOUNT * snapshot_at), "closed": False})
    db.execute("INSERT INTO snapshots VALUES (?, ?, ?)", (stream, snapshot_at, state.encode()))
    bank = RawBank(db)
    assert bank.load(stream) == bank.load(stream, snapshot=True) == (sizes.replay_events - 1, balance)
    return (lambda: bank.load(stream)), (lambda: bank.load(stream, snapshot=True)), db.close


def w2(directory: Path, sizes: Sizes) -> dict[str, tuple[float, float]]:
    """Events/s of full replay and of snapshot + tail per side: medians of loads taken in turns."""
    sides = {"ours": w2_ours, "theirs": w2_theirs, "raw": w2_raw}
    loaders = {name: build(directory, sizes) for name, build in sides.items()}
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in sides}
    try:
        for kind, repeat in ((0, sizes.replay_repeat), (1, sizes.replay_repeat * 20)):
            for _ in range(repeat):
                for name, loader in loaders.items():
                    load = loader[kind]
                    started = time.perf_counter()
                    load()
                    times[name][kind].append(time.perf_counter() - started)
    finally:
        for loader in loaders.values():
            loader[2]()
    events = sizes.replay_events
    return {
        name: (events / statistics.median(full), events / statistics.median(snap))
        for name, (full, snap) in times.items()
    }


# =========================================================================================
# W3 rebuild: data, and one subprocess per run
# =========================================================================================


def fill_ours(path: Path, events: int) -> None:
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


def fill_theirs(path: Path, events: int) -> None:
    app = EsBank(env=their_env(path, durable=False))
    try:
        for _ in range(events // EVENTS_PER_ACCOUNT):
            account = EsAccount("Bench")
            for _ in range(EVENTS_PER_ACCOUNT - 1):
                account.deposit(AMOUNT)
            app.save(account)
    finally:
        app.close()


def rebuild_ours(source: Path, target: Path, durable: bool) -> tuple[int, Callable[[], Decimal]]:
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


def rebuild_theirs(source: Path, target: Path, durable: bool) -> tuple[int, Callable[[], Decimal]]:
    app = EsBank(env=their_env(source, durable=durable))
    projection = EsBalances(view=their_view(target, durable=durable))
    count = their_catch_up(app, projection)
    app.close()

    def total() -> Decimal:
        with projection.view.datastore.transaction(commit=False) as cursor:
            cursor.execute("SELECT balance FROM balances")
            return sum((Decimal(row[0]) for row in cursor.fetchall()), Decimal(0))

    return count, total


RAW_BATCH = 500


def raw_project(
    events: sqlite3.Connection, model: sqlite3.Connection, after: int, *, limit: int | None = None
) -> tuple[int, int]:
    """Apply the bank events after ``after`` to ``model`` in batches of 500, each batch one
    transaction with its checkpoint; returns (events applied, new checkpoint)."""
    applied = 0
    query = (
        "SELECT position, type, data FROM events WHERE position > ? "
        "AND type IN ('AccountOpened', 'MoneyDeposited') ORDER BY position LIMIT ?"
    )
    while True:
        rows = events.execute(query, (after, RAW_BATCH)).fetchall()
        if not rows:
            return applied, after
        model.execute("BEGIN IMMEDIATE")
        for _position, type_, data in rows:
            payload = json.loads(data)
            if type_ == "AccountOpened":
                model.execute(
                    "INSERT INTO balances VALUES (?, ?, '0') ON CONFLICT (account_id) DO NOTHING",
                    (payload["account_id"], payload["owner"]),
                )
            else:
                model.execute(
                    "UPDATE balances SET balance = ? WHERE account_id = ?",
                    (payload["balance"], payload["account_id"]),
                )
        after = rows[-1][0]
        model.execute(
            "INSERT INTO checkpoint VALUES ('balances', ?) "
            "ON CONFLICT (name) DO UPDATE SET position = excluded.position",
            (after,),
        )
        model.execute("COMMIT")
        applied += len(rows)
        if limit is not None and applied >= limit:
            return applied, after


def rebuild_raw(source: Path, target: Path, durable: bool) -> tuple[int, Callable[[], Decimal]]:
    """Reads our event store's file (the same rows ours reads) with plain SQL and ``json``."""
    events = sqlite3.connect(source)
    model = raw_connect(target, durable=durable, schema=_RAW_READ_MODEL)
    count, _ = raw_project(events, model, 0)
    events.close()

    def total() -> Decimal:
        return sum((Decimal(row[0]) for row in model.execute("SELECT balance FROM balances")), Decimal(0))

    return count, total


REBUILDERS = {"ours": rebuild_ours, "theirs": rebuild_theirs, "raw": rebuild_raw}


def _memory_kib(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in KiB. Unlike ru_maxrss, which Linux
    carries over from the parent across fork and exec, VmHWM starts afresh in the new program."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def rebuild_child(system: str, source: Path, target: Path, events: int, durable: bool) -> None:
    """Run one rebuild in this (fresh) process and print what it measured as JSON."""
    gc.collect()
    before = _memory_kib("VmRSS")
    started = time.perf_counter()
    count, total = REBUILDERS[system](source, target, durable)
    elapsed = time.perf_counter() - started
    peak = _memory_kib("VmHWM")
    expected_total = (events // EVENTS_PER_ACCOUNT) * AMOUNT * (EVENTS_PER_ACCOUNT - 1)
    if count != events or total() != expected_total:
        raise SystemExit(
            f"{system}: projected {count} events, balances sum to {total()}, expected {expected_total}"
        )
    print(json.dumps({"seconds": elapsed, "rss_before_kib": before, "rss_peak_kib": peak}))


@dataclass
class RebuildResult:
    events: int
    seconds: float
    rss_before_mib: float
    rss_peak_mib: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def memory(self) -> str:
        return f"{self.rss_peak_mib:,.0f} MiB ({self.rss_peak_mib - self.rss_before_mib:+.1f})"


def run_rebuild(system: str, source: Path, target: Path, events: int, durable: bool) -> RebuildResult:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--rebuild-child",
        system,
        str(source),
        str(target),
        str(events),
        "--durable" if durable else "--not-durable",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rebuild child {system} {events} failed:\n{done.stderr}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return RebuildResult(
        events, measured["seconds"], measured["rss_before_kib"] / 1024, measured["rss_peak_kib"] / 1024
    )


# =========================================================================================
# W4 latency
# =========================================================================================


def _visible(read: Callable[[], str | None], expected: str, deadline: float) -> None:
    while read() != expected:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"balance {expected} not visible in time")
        time.sleep(0.0001)


def w4_raw(directory: Path, samples: int, durable: bool) -> list[float]:
    """A projector thread woken by the writer (as our store wakes its subscriptions), polling too."""
    source = directory / "w4-raw-events.db"
    fill_ours(source, EVENTS_PER_ACCOUNT)  # one account to deposit into
    target = directory / "w4-raw-model.db"
    writer = raw_connect(source, durable=durable)
    reader = raw_connect(target, durable=durable, schema=_RAW_READ_MODEL)
    wake = threading.Event()
    stop = threading.Event()

    def projector() -> None:
        events = sqlite3.connect(source)
        model = raw_connect(target, durable=durable)
        after = 0
        while not stop.is_set():
            wake.clear()  # before reading, so that an append after the read is not missed
            applied, after = raw_project(events, model, after)
            if not applied:
                wake.wait(0.02)
        events.close()
        model.close()

    thread = threading.Thread(target=projector, daemon=True)
    thread.start()
    latencies = []
    try:
        balance = AMOUNT * (EVENTS_PER_ACCOUNT - 1)
        _visible(lambda: _one(reader.execute, "acc-0"), str(balance), time.perf_counter() + 30)
        (revision,) = writer.execute(
            "SELECT max(revision) FROM events WHERE stream = 'Account-acc-0'"
        ).fetchone()
        for _ in range(samples):
            balance += AMOUNT
            revision += 1
            data = json.dumps(
                {"account_id": "acc-0", "amount": str(AMOUNT), "balance": str(balance)}
            ).encode()
            started = time.perf_counter()
            writer.execute("BEGIN IMMEDIATE")
            writer.execute(
                "INSERT INTO events (stream, revision, id, type, data, metadata, content_type, recorded_at) "
                "VALUES ('Account-acc-0', ?, ?, 'MoneyDeposited', ?, x'', 'application/json', 0)",
                (revision, uuid.uuid4().bytes, data),
            )
            writer.execute("COMMIT")
            wake.set()
            _visible(lambda: _one(reader.execute, "acc-0"), str(balance), started + 10)
            latencies.append(time.perf_counter() - started)
    finally:
        stop.set()
        wake.set()
        thread.join()
        writer.close()
        reader.close()
    return latencies


def _one(execute: Callable[..., sqlite3.Cursor], account_id: str) -> str | None:
    row = execute("SELECT balance FROM balances WHERE account_id = ?", (account_id,)).fetchone()
    return None if row is None else str(row[0])


def w4_ours(directory: Path, samples: int, durable: bool, batch_delay: float) -> list[float]:
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
        _visible(read_balance, "0", time.perf_counter() + 30)
        balance, revision = Decimal(0), 0
        for _ in range(samples):
            balance += AMOUNT
            new = registry.encode(MoneyDeposited(account_id="acc-0", amount=AMOUNT, balance=balance))
            started = time.perf_counter()
            revision = events.append("Account-acc-0", [new], expected_version=revision).revision
            _visible(read_balance, str(balance), started + 10)
            latencies.append(time.perf_counter() - started)
    finally:
        runner.stop()
        runner.join(10)
        events.close()
        store.close()
    return latencies


# =========================================================================================
# The table
# =========================================================================================


def _fmt(value: float | str | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if unit == "ms":
        return f"{value:,.2f} ms"
    return f"{value:,.0f}"


def _ratio(a: float | str | None, b: float | str | None, higher_is_better: bool) -> str:
    if not isinstance(a, float | int) or not isinstance(b, float | int) or a == 0 or b == 0:
        return "—"
    return f"{(a / b if higher_is_better else b / a):,.2f}x"


def print_table(rows: list[Row], header_lines: list[str]) -> None:
    for line in header_lines:
        print(line)
    print()
    header = ("Workload", "unit", "ours", "eventsourcing", "raw sqlite3", "ours ÷ es", "ours ÷ raw", "target")
    table = [header]
    for row in rows:
        table.append(
            (
                row.workload,
                row.unit,
                _fmt(row.ours, row.unit),
                _fmt(row.theirs, row.unit),
                _fmt(row.raw, row.unit),
                _ratio(row.ours, row.theirs, row.higher_is_better),
                _ratio(row.ours, row.raw, row.higher_is_better),
                row.target,
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    right = {2, 3, 4, 5, 6}

    def render(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                cell.rjust(width) if i in right else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    print(render(header))
    print(
        "|"
        + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths))
        + "|"
    )
    for line in table[1:]:
        print(render(line))
    notes = [row.note for row in rows if row.note]
    if notes:
        print()
        for note in notes:
            print(f"- {note}")


# =========================================================================================
# main
# =========================================================================================


@dataclass
class Run:
    sizes: Sizes
    directory: Path
    only: set[str]
    rows: list[Row] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        print(f"... {name}", file=sys.stderr, flush=True)
        yield
        self.timings[name] = time.perf_counter() - started

    def wants(self, workload: str) -> bool:
        return not self.only or workload in self.only


def run_w1(run: Run) -> None:
    sizes = run.sizes
    for durable in (True, False):
        mode = SYNC_MODES[durable]
        with run.step(f"W1 {mode}"):
            rates = w1(run.directory, sizes, durable)
        label = f"W1 commands ({sizes.accounts} accounts x {sizes.deposits} deposits, synchronous={mode})"
        run.rows.append(Row(label, rates["ours"], rates["theirs"], rates["raw"], target="≥ 3x es"))
        run.rows.append(
            Row(
                f"  ↳ ours without the CommandBus (Repository + Account only, synchronous={mode})",
                rates["ours_without_bus"],
                rates["theirs"],
                rates["raw"],
            )
        )
    commands = sizes.accounts * (1 + sizes.deposits)
    run.rows[-1].note = (
        f"W1: {commands:,} commands per side, one event each (so commands/s = events/s); no aggregate "
        "cache on either side. The ↳ rows are a diagnostic, not the comparison: the same work through "
        "our Repository without the bus (no context, metadata, deterministic ids, redelivery check, "
        "retries, logging), beside the same eventsourcing and raw runs."
    )


def run_w2(run: Run) -> None:
    with run.step("W2"):
        rates = w2(run.directory, run.sizes)
    events = run.sizes.replay_events
    run.rows.append(
        Row(
            f"W2 replay {events:,} events, no snapshot",
            rates["ours"][0],
            rates["theirs"][0],
            rates["raw"][0],
            target="≥ 3x es",
        )
    )
    run.rows.append(
        Row(
            f"W2 replay {events:,} events, snapshot + {SNAPSHOT_TAIL}-event tail",
            rates["ours"][1],
            rates["theirs"][1],
            rates["raw"][1],
            target="≥ 3x es",
            note=(
                f"W2 snapshot row: the aggregate's {events:,} events ÷ load time (a load reads 1 snapshot "
                f"+ {SNAPSHOT_TAIL} events); median of {run.sizes.replay_repeat * 20} loads, "
                f"{run.sizes.replay_repeat} for full replay."
            ),
        )
    )


def run_w3(run: Run) -> None:
    results: dict[tuple[int, bool], dict[str, RebuildResult]] = {}
    for events in run.sizes.rebuild_sizes:
        with run.step(f"W3 data {events:,}"):
            ours_source = run.directory / f"w3-ours-{events}.db"
            theirs_source = run.directory / f"w3-theirs-{events}.db"
            fill_ours(ours_source, events)
            fill_theirs(theirs_source, events)
        modes = [False] + ([True] if events in run.sizes.rebuild_full_sync_sizes else [])
        # Short runs are repeated (sides in turn) and the fastest kept: noise only slows a run down.
        repeat = 3 if events <= 10_000 else 1
        for durable in modes:
            measured = results[events, durable] = {}
            with run.step(f"W3 {events:,} events, synchronous={SYNC_MODES[durable]}, x{repeat}"):
                for attempt in range(repeat):
                    for system, source in (
                        ("ours", ours_source),
                        ("theirs", theirs_source),
                        ("raw", ours_source),
                    ):
                        target = run.directory / f"w3-{system}-{events}-{durable}-{attempt}-model.db"
                        try:
                            result = run_rebuild(system, source, target, events, durable)
                        except RuntimeError as exc:  # keep the other sides' numbers; say what failed
                            print(exc, file=sys.stderr)
                            continue
                        best = measured.get(system)
                        if best is None or result.seconds < best.seconds:
                            measured[system] = result
        for path in run.directory.glob(f"w3-*-{events}*.db*"):
            path.unlink()

    for (events, durable), measured in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        ours, theirs, raw = (measured.get(system) for system in ("ours", "theirs", "raw"))
        run.rows.append(
            Row(
                f"W3 rebuild {events:,} events (synchronous={SYNC_MODES[durable]})",
                ours and ours.rate,
                theirs and theirs.rate,
                raw and raw.rate,
                target="≥ 20x es, ≥ 0.5x raw",
            )
        )
    for events in run.sizes.rebuild_sizes:
        measured = results[events, False]
        run.rows.append(
            Row(
                f"W3 peak RSS at {events:,} events (growth during the rebuild)",
                *(
                    measured[system].memory if system in measured else None
                    for system in ("ours", "theirs", "raw")
                ),
                unit="MiB",
                higher_is_better=False,
                target="flat",
            )
        )
    run.rows[-1].note = (
        "W3: every rebuild runs in a fresh subprocess into an empty read model (ours: the bank's "
        "AccountList projection and our runner; eventsourcing: its Projection and a SQLiteTrackingRecorder "
        "view, one transaction per event as its API requires; raw: batches of 500 with a checkpoint); "
        "peak RSS is the subprocess's VmHWM, growth is peak minus RSS before the rebuild started."
    )


def run_w4(run: Run) -> None:
    durable = False
    mode = SYNC_MODES[durable]
    samples = run.sizes.latency_samples
    with run.step("W4"):
        ours_default = w4_ours(run.directory, samples, durable, batch_delay=0.05)
        ours_unbatched = w4_ours(run.directory, samples, durable, batch_delay=0.0)
        raw = w4_raw(run.directory, samples, durable)
    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        for delay, ours in (("0.05 s, default", ours_default), ("0", ours_unbatched)):
            run.rows.append(
                Row(
                    f"W4 append → visible, {label} (runner batch_delay={delay}; synchronous={mode})",
                    percentile(ours, fraction) * 1000,
                    None,
                    percentile(raw, fraction) * 1000,
                    unit="ms",
                    higher_is_better=False,
                )
            )
    run.rows[-1].note = (
        f"W4: {samples} deposits appended one at a time, each timed from the append call until a "
        "separate connection reads the new balance from the read model; eventsourcing n/a: its "
        "SQLite recorder has no subscribe() (NotImplementedError), so its ProjectionRunner cannot "
        "follow a SQLite application live."
    )


def profile(workload: str, directory: Path) -> None:
    """Run our side of one workload under pyinstrument: its call tree, then self time per module."""
    try:
        from pyinstrument import Profiler  # noqa: PLC0415 - an optional tool, not a dependency
    except ImportError:
        raise SystemExit("--profile needs pyinstrument: .venv/bin/pip install pyinstrument") from None
    action: Callable[[], object]
    if workload == "W1":
        side = OursW1(directory / "profile-w1.db", durable=False)
        ids = [side.open_account(number) for number in range(QUICK.accounts)]

        def action() -> None:
            for _ in range(QUICK.deposits):
                for account_id in ids:
                    side.deposit(account_id)

    elif workload == "W2":
        full, _, _ = w2_ours(directory, QUICK)

        def action() -> None:
            for _ in range(5):
                full()

    elif workload == "W3":
        fill_ours(directory / "profile-w3.db", 100_000)

        def action() -> None:
            rebuild_ours(directory / "profile-w3.db", directory / "profile-w3-model.db", False)

    else:
        raise SystemExit(f"--profile takes W1, W2 or W3, not {workload!r}")
    profiler = Profiler(interval=0.0005)
    profiler.start()
    action()
    profiler.stop()
    print(profiler.output_text(unicode=False, show_all=False))
    root = profiler.last_session.root_frame() if profiler.last_session else None
    if root is None:
        return
    # Each sample goes to the innermost frame of our own code (eventsourcing_cqrs, projections,
    # examples): time in sqlite3, pydantic, json or the stdlib counts for the module that called it.
    ours = ("eventsourcing_cqrs/", "projections/", "escqrs/")
    by_module: dict[str, float] = {}
    stack: list[tuple[Any, str]] = [(root, "(outside our modules)")]
    while stack:
        frame, owner = stack.pop()
        path = frame.file_path or ""
        if path.startswith(str(ROOT)) and any(part in path for part in ours):
            owner = str(Path(path).relative_to(ROOT))
        if not frame.is_synthetic:
            by_module[owner] = by_module.get(owner, 0.0) + frame.total_self_time
        stack.extend((child, owner) for child in frame.children)
    total = sum(by_module.values())
    print(f"Time by our module, with the library and C calls each makes ({total:.2f} s sampled):")
    for label, seconds in sorted(by_module.items(), key=lambda item: -item[1]):
        if seconds / total >= 0.005:
            print(f"  {100 * seconds / total:5.1f}%  {label}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="full sizes (W3 up to 1M events)")
    parser.add_argument("--only", default="", help="comma-separated workloads to run (W1,W2,W3,W4)")
    parser.add_argument(
        "--profile", metavar="W1|W2|W3", help="profile our side of one workload with pyinstrument, then stop"
    )
    parser.add_argument(
        "--rebuild-child", nargs=4, metavar=("SYSTEM", "SOURCE", "TARGET", "EVENTS"), help=argparse.SUPPRESS
    )
    parser.add_argument("--durable", dest="durable", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--not-durable", dest="durable", action="store_false", help=argparse.SUPPRESS)
    args = parser.parse_args()
    # The script is the application here: it, not the library, decides what is logged.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    if args.rebuild_child:
        system, source, target, events = args.rebuild_child
        rebuild_child(system, Path(source), Path(target), int(events), args.durable)
        return

    if args.profile:
        with tempfile.TemporaryDirectory(prefix="escqrs-profile-") as directory:
            profile(args.profile.upper(), Path(directory))
        return

    sizes = FULL if args.full else QUICK
    only = {part.strip().upper() for part in args.only.split(",") if part.strip()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="escqrs-bench-") as directory:
        run = Run(sizes, Path(directory), only)
        for name, workload in (("W1", run_w1), ("W2", run_w2), ("W3", run_w3), ("W4", run_w4)):
            if run.wants(name):
                workload(run)
    elapsed = time.perf_counter() - started
    header = [
        f"## eventsourcing-cqrs vs eventsourcing {version('eventsourcing')} vs raw sqlite3 "
        f"({'full' if args.full else 'quick'} sizes)",
        "",
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"pydantic {version('pydantic')}, {platform.machine()}, {os.cpu_count()} cores; "
        f"run took {elapsed:,.0f} s.",
        "Rates are events/s (higher is better); ratios > 1x mean ours is faster (or smaller).",
    ]
    print_table(run.rows, header)


if __name__ == "__main__":
    main()
