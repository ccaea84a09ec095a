"""The ``eventsourcing`` library's side of ``compare.py`` (9.x, its SQLite persistence module).

The domain, application and projection are written as its documentation shows: an ``Aggregate``
with ``@event`` methods, an ``Application`` with one method per command, and a ``Projection`` over
a ``SQLiteTrackingRecorder`` view. Same functions and classes as the other sides (see
``_ours.py``): W1 ``Commands`` (its aggregate cache off or on), W2 ``replay_loaders``, W3
``fill`` and ``rebuild``. There is no W4 ``latency``: eventsourcing's SQLite recorder has no
``subscribe()`` (``NotImplementedError``), so its ``ProjectionRunner`` cannot follow a SQLite
application live.

Importing this module patches eventsourcing's SQLite connection pool so that every connection it
opens issues the same ``PRAGMA synchronous`` as our side (it has no durability setting);
``compare.py`` reads the PRAGMAs back from its connections and refuses to report otherwise.

Not a script: run ``compare.py``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from _common import AMOUNT, EVENTS_PER_ACCOUNT, SNAPSHOT_TAIL, SYNC_MODES, Loaders
from eventsourcing import sqlite as es_sqlite
from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate as EsAggregate
from eventsourcing.domain import event
from eventsourcing.persistence import InfrastructureFactory, Tracking
from eventsourcing.projection import Projection as EsProjection
from eventsourcing.utils import Environment, get_topic

# PRAGMA synchronous per database file, as their_env() was asked for it. Per file, not one global
# mode: the pool opens connections lazily, possibly after another file was set up at another mode.
_their_sync: dict[str, str] = {}
_their_create_connection = es_sqlite.SQLiteConnectionPool._create_connection


def _create_connection_with_sync(pool: es_sqlite.SQLiteConnectionPool) -> es_sqlite.SQLiteConnection:
    connection = _their_create_connection(pool)
    connection._sqlite_conn.execute(f"PRAGMA synchronous={_their_sync.get(pool.db_name, 'FULL')}")
    return connection


# eventsourcing has no durability setting for SQLite: set the same PRAGMA as our side uses.
# compare.py reads it back from every connection of their pool (_common.watch_connections).
es_sqlite.SQLiteConnectionPool._create_connection = _create_connection_with_sync  # type: ignore[method-assign]

#: eventsourcing's own aggregate cache, as W1 runs it: off, on (its default fast-forward: each
#: hit reads the stream after the cached version, so another process's appends are seen), or on
#: without fast-forward (write-through after each save, no read on a hit; a conflict with another
#: process's append fails the save, but the stale aggregate stays cached).
CACHE_MODES = ("off", "fastforward", "write-through")


def their_env(
    path: Path, *, durable: bool, snapshots: bool = False, cache: int = 0, fastforward: bool = True
) -> dict[str, str]:
    """The environment of an eventsourcing application on the SQLite file ``path``.

    ``cache`` is ``AGGREGATE_CACHE_MAXSIZE`` (0 = no cache, their default); ``fastforward`` is
    ``AGGREGATE_CACHE_FASTFORWARD``. ``DEEPCOPY_FROM_AGGREGATE_CACHE`` stays at its default (on),
    so that a command that fails half-way cannot corrupt the cached aggregate.
    """
    _their_sync[str(path)] = SYNC_MODES[durable]
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.sqlite",
        "SQLITE_DBNAME": str(path),
        "IS_SNAPSHOTTING_ENABLED": "y" if snapshots else "n",
    }
    if cache:
        env["AGGREGATE_CACHE_MAXSIZE"] = str(cache)
        env["AGGREGATE_CACHE_FASTFORWARD"] = "y" if fastforward else "n"
    return env


# =========================================================================================
# The domain, the application and the projection
# =========================================================================================


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
# W1 commands
# =========================================================================================


class Commands:
    """The application's command methods; ``cache`` and ``fastforward`` set its aggregate cache
    (see :func:`their_env`)."""

    def __init__(self, path: Path, durable: bool, cache: int = 0, fastforward: bool = True) -> None:
        self.app = EsBank(env=their_env(path, durable=durable, cache=cache, fastforward=fastforward))

    def seed(self, number: int, events: int) -> uuid.UUID:
        """An account opened with ``events - 1`` deposits, saved at once (set-up, untimed)."""
        account = EsAccount("Bench")
        for _ in range(events - 1):
            account.deposit(AMOUNT)
        self.app.save(account)
        return account.id

    def deposit(self, account_id: uuid.UUID) -> None:
        self.app.deposit(account_id, AMOUNT)

    def balance(self, account_id: uuid.UUID) -> Decimal:
        account: EsAccount = self.app.repository.get(account_id)
        return account.balance

    def close(self) -> None:
        self.app.close()


# =========================================================================================
# W2 replay
# =========================================================================================


def replay_loaders(directory: Path, events: int) -> Loaders:
    """(full replay, snapshot + tail, close) for one account of ``events`` events."""
    path = directory / "w2-theirs.db"
    writer = EsBank(env=their_env(path, durable=False, snapshots=True))
    try:
        account = EsAccount("Bench")
        head = events - SNAPSHOT_TAIL
        while account.version < head:
            for _ in range(min(1000, head - account.version)):
                account.deposit(AMOUNT)
            writer.save(account)
        writer.take_snapshot(account.id)
        for _ in range(SNAPSHOT_TAIL):
            account.deposit(AMOUNT)
        writer.save(account)
        assert account.version == events  # eventsourcing counts versions from 1
    finally:
        writer.close()
    plain = EsBank(env=their_env(path, durable=False, snapshots=False))
    snapshotting = EsBank(env=their_env(path, durable=False, snapshots=True))
    expected = AMOUNT * (events - 1)
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


# =========================================================================================
# W3 rebuild
# =========================================================================================


def fill(path: Path, events: int) -> None:
    """``events`` events: accounts opened, then 99 deposits each (saved per account)."""
    app = EsBank(env=their_env(path, durable=False))
    try:
        for _ in range(events // EVENTS_PER_ACCOUNT):
            account = EsAccount("Bench")
            for _ in range(EVENTS_PER_ACCOUNT - 1):
                account.deposit(AMOUNT)
            app.save(account)
    finally:
        app.close()


def rebuild(source: Path, target: Path, durable: bool) -> tuple[int, Callable[[], Decimal]]:
    """Their projection into an empty view, one transaction per event as its API requires."""
    app = EsBank(env=their_env(source, durable=durable))
    projection = EsBalances(view=their_view(target, durable=durable))
    count = their_catch_up(app, projection)
    app.close()

    def total() -> Decimal:
        with projection.view.datastore.transaction(commit=False) as cursor:
            cursor.execute("SELECT balance FROM balances")
            return sum((Decimal(row[0]) for row in cursor.fetchall()), Decimal(0))

    return count, total
