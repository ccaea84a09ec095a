"""The ``eventsourcing`` side of ``esdb_compare.py``: eventsourcing 9.3 on EventStoreDB.

Runs in the eventsourcing 9.3 venv (``.venv-es93``: ``eventsourcing==9.3.*``,
``eventsourcing-eventstoredb==1.1.2``, ``esdbclient>=1.1,<1.2``), as ``esdb_compare.py`` starts
it; it imports eventsourcing, esdbclient, the stdlib and ``_esdb_probe`` (stdlib only) and
nothing of this project. Persistence is ``PERSISTENCE_MODULE=eventsourcing_eventstoredb`` with
``EVENTSTOREDB_URI``; the domain is ``_eventsourcing.py``'s (an ``Aggregate`` with ``@event``
methods, an ``Application`` with one method per command), written again here because that module
is built on eventsourcing 9.5.

* ``w1`` — opens (``open_account``: a new aggregate, saved), one untimed deposit round, then the
  timed deposits (``deposit``: ``repository.get`` then ``save``). ``--cache N`` sets
  ``AGGREGATE_CACHE_MAXSIZE=N`` with ``AGGREGATE_CACHE_FASTFORWARD=y`` (its default, the mode that
  stays correct across processes: every hit reads the stream after the cached version) and
  ``DEEPCOPY_FROM_AGGREGATE_CACHE`` at its default (on).
* ``w1c`` — ``--threads`` threads, each depositing on accounts of its own through one shared
  ``Application`` (its repository locks the fast-forward per aggregate; esdbclient's channel is
  thread-safe), with the cache as in ``w1``.
* ``w2`` — ``repository.get`` of one aggregate of ``--events`` events, ``--loads`` times.
* ``w3`` — accounts of 100 events (saved one account per append, untimed), then a rebuild of a
  balances table in an SQLite file from the application's notification log
  (``recorder.select_notifications``: ``$all`` read in pages of 500 with a server-side filter on
  the projection's topics), one transaction per event with its tracking row, as eventsourcing's
  processing API records a tracking position with each event's write. eventsourcing 9.3 has no
  ``Projection``, and the EventStoreDB factory has no process (tracking) recorder
  (``process_recorder()`` raises ``NotImplementedError``), so the view is written here with
  eventsourcing's ``SQLiteDatastore``, at ``synchronous=NORMAL`` like ours.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

from _esdb_probe import Probe, emit, install_call_counter, p99, parse_args, run_threads

AMOUNT = Decimal("1.25")
EVENTS_PER_ACCOUNT = 100
PAGE = 500


def _env(uri: str, cache: int) -> dict[str, str]:
    env = {"PERSISTENCE_MODULE": "eventsourcing_eventstoredb", "EVENTSTOREDB_URI": uri}
    if cache:
        env["AGGREGATE_CACHE_MAXSIZE"] = str(cache)
        env["AGGREGATE_CACHE_FASTFORWARD"] = "y"
    return env


def main() -> None:
    args = parse_args(__doc__ or "")
    counter = install_call_counter() if args.count_calls else None

    # Imported after the counter is installed (esdbclient opens its channel on construction).
    from eventsourcing.application import Application  # noqa: PLC0415
    from eventsourcing.domain import Aggregate, event  # noqa: PLC0415
    from eventsourcing.sqlite import SQLiteConnectionPool, SQLiteDatastore  # noqa: PLC0415

    # eventsourcing has no durability setting for SQLite: every connection its pool opens gets
    # synchronous=NORMAL, as our read model store runs with durable=False (as _eventsourcing.py).
    create_connection = SQLiteConnectionPool._create_connection

    def create_connection_at_normal(pool: SQLiteConnectionPool) -> Any:
        connection = create_connection(pool)
        connection._sqlite_conn.execute("PRAGMA synchronous=NORMAL")
        return connection

    SQLiteConnectionPool._create_connection = create_connection_at_normal  # type: ignore[method-assign]

    class EsAccount(Aggregate):
        """The bank account: same rules, same event payloads as ``_eventsourcing.EsAccount``."""

        INITIAL_VERSION = 0  # eventsourcing-eventstoredb requires it: stream positions start at 0

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
        """One method per command."""

        name = "Bank"

        def open_account(self, owner: str) -> uuid.UUID:
            account = EsAccount(owner)
            self.save(account)
            return account.id

        def deposit(self, account_id: uuid.UUID, amount: Decimal) -> None:
            account: EsAccount = self.repository.get(account_id)
            account.deposit(amount)
            self.save(account)

        def balance(self, account_id: uuid.UUID) -> Decimal:
            account: EsAccount = self.repository.get(account_id)
            return account.balance

    probe = Probe(args.server_pid, counter)
    app = EsBank(env=_env(args.uri, args.cache if args.workload in ("w1", "w1c") else 0))

    if args.workload == "w1":
        with probe.phase("open", args.accounts):
            ids = [app.open_account("Bench") for _ in range(args.accounts)]
        for account_id in ids:  # untimed: every account loaded and saved once (warms the cache)
            app.deposit(account_id, AMOUNT)
        with probe.phase("deposit", args.accounts * args.deposits):
            for _ in range(args.deposits):
                for account_id in ids:
                    app.deposit(account_id, AMOUNT)
        expected = AMOUNT * (1 + args.deposits)
        assert all(app.balance(i) == expected for i in ids), "W1: a balance is wrong"

    elif args.workload == "w1c":
        per_thread_accounts = 2
        owned = [[app.open_account("Bench") for _ in range(per_thread_accounts)] for _ in range(args.threads)]
        for mine in owned:
            for account_id in mine:
                app.deposit(account_id, AMOUNT)

        def writer(n: int) -> list[float]:
            mine, latencies = owned[n], []
            for k in range(args.per_thread):
                started = time.perf_counter()
                app.deposit(mine[k % per_thread_accounts], AMOUNT)
                latencies.append(time.perf_counter() - started)
            return latencies

        with probe.phase("deposit", args.threads * args.per_thread) as result:
            latencies = run_threads(args.threads, writer)
        result["p99_ms"] = p99(latencies) * 1000
        total = sum(app.balance(i) for mine in owned for i in mine)
        assert total == AMOUNT * (len(owned) * per_thread_accounts + args.threads * args.per_thread)

    elif args.workload == "w2":
        account = EsAccount("Bench")
        while account.version < args.events - 1:  # versions from 0 (INITIAL_VERSION)
            for _ in range(min(1000, args.events - 1 - account.version)):
                account.deposit(AMOUNT)
            app.save(account)
        expected = AMOUNT * (args.events - 1)
        assert app.balance(account.id) == expected
        with probe.phase("load", args.events * args.loads):
            for _ in range(args.loads):
                loaded: Any = app.repository.get(account.id)
        assert loaded.balance == expected

    elif args.workload == "w3":
        accounts = args.events // EVENTS_PER_ACCOUNT
        for _ in range(accounts):
            account = EsAccount("Bench")
            for _ in range(EVENTS_PER_ACCOUNT - 1):
                account.deposit(AMOUNT)
            app.save(account)
        target = Path(args.directory) / "w3-eventsourcing-model.db"
        view = SQLiteDatastore(str(target))
        with view.transaction(commit=True) as cursor:
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS balances "
                "(account_id TEXT PRIMARY KEY, owner TEXT, balance TEXT) WITHOUT ROWID"
            )
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS tracking (application_name TEXT, notification_id INTEGER, "
                "PRIMARY KEY (application_name, notification_id)) WITHOUT ROWID"
            )
        opened_topic = f"{EsAccount.__module__}:{EsAccount.AccountOpened.__qualname__}"  # type: ignore[attr-defined]
        deposited_topic = f"{EsAccount.__module__}:{EsAccount.MoneyDeposited.__qualname__}"  # type: ignore[attr-defined]
        topics = (opened_topic, deposited_topic)
        with probe.phase("rebuild", args.events) as result:
            processed, start = 0, 0
            while True:
                notifications = app.recorder.select_notifications(start=start, limit=PAGE, topics=topics)
                if not notifications:
                    break
                for notification in notifications:
                    domain_event: Any = app.mapper.to_domain_event(notification)
                    with view.transaction(commit=True) as cursor:
                        if notification.topic == opened_topic:
                            cursor.execute(
                                "INSERT INTO balances VALUES (?, ?, '0') ON CONFLICT (account_id) DO NOTHING",
                                (domain_event.originator_id.hex, domain_event.owner),
                            )
                        else:
                            cursor.execute(
                                "UPDATE balances SET balance = ? WHERE account_id = ?",
                                (str(domain_event.balance), domain_event.originator_id.hex),
                            )
                        cursor.execute("INSERT INTO tracking VALUES (?, ?)", (app.name, notification.id))
                processed += len(notifications)
                start = notifications[-1].id + 1  # the recorder reads from start - 1, exclusive
            result["events_applied"] = processed
        with contextlib.closing(sqlite3.connect(target)) as check:
            (total,) = check.execute("SELECT SUM(CAST(balance AS REAL)) FROM balances").fetchone()
        view.close()
        expected_total = float(accounts * AMOUNT * (EVENTS_PER_ACCOUNT - 1))
        if processed != args.events or total != expected_total:
            raise SystemExit(
                f"W3: applied {processed} events, balances sum {total}, expected {expected_total}"
            )

    app.close()
    emit(probe)


if __name__ == "__main__":
    sys.exit(main())
