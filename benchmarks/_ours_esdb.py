"""Our side of ``esdb_compare.py``: this project on EventStoreDB, through its public API only.

Runs in ``.venv`` as ``esdb_compare.py`` starts it (the same command line and measuring as
``_eventsourcing_esdb.py``, see ``_esdb_probe``). The wiring is ``_ours.py``'s, on an
:class:`~eventsourcing_cqrs.event_store.esdb.EsdbEventStore` instead of SQLite: the bank
example's ``Account`` through the :class:`~eventsourcing_cqrs.bus.CommandBus` and its handlers,
and the :class:`~projections.ProjectionRunner` into the SQLite read-model store.

* ``w1`` — ``OpenAccount`` commands (timed), one untimed ``Deposit`` round, then the timed
  deposits. ``--cache N`` gives the repository ``cache_size=N`` (write-through after each append;
  the untimed round leaves every account in it).
* ``w1c`` — ``--threads`` threads, each depositing on two accounts of its own through one bus and
  one store (cache on, warm).
* ``w2`` — ``Repository.load`` of one account of ``--events`` events (no cache, no snapshot),
  ``--loads`` times.
* ``w3`` — accounts of 100 events (one append per account, untimed), then the bank's
  ``AccountList`` projection rebuilt from ``$all`` by our runner (``run(until_caught_up=True)``,
  batches of up to 500 events per read-model transaction) into an SQLite read model file
  (``durable=False``: ``synchronous=NORMAL``).
"""

from __future__ import annotations

import sys
import time
from decimal import Decimal
from pathlib import Path

from _esdb_probe import Probe, emit, install_call_counter, p99, parse_args, run_threads

AMOUNT = Decimal("1.25")
EVENTS_PER_ACCOUNT = 100


def main() -> None:
    args = parse_args(__doc__ or "")
    counter = install_call_counter() if args.count_calls else None

    # Imported after the counter is installed, like the other side.
    from _common import quiet_logs  # noqa: PLC0415

    from escqrs.examples.bank import handlers  # noqa: PLC0415
    from escqrs.examples.bank.account import Account  # noqa: PLC0415
    from escqrs.examples.bank.commands import Deposit, OpenAccount  # noqa: PLC0415
    from escqrs.examples.bank.events import AccountOpened, MoneyDeposited, registry  # noqa: PLC0415
    from escqrs.examples.bank.read_models import AccountList  # noqa: PLC0415
    from eventsourcing_cqrs.bus import CommandBus  # noqa: PLC0415
    from eventsourcing_cqrs.event_store import StreamState  # noqa: PLC0415
    from eventsourcing_cqrs.event_store.esdb import EsdbEventStore  # noqa: PLC0415
    from eventsourcing_cqrs.repository import Repository  # noqa: PLC0415
    from projections import ProjectionRunner  # noqa: PLC0415
    from projections.read_model_store import SQLiteReadModelStore  # noqa: PLC0415

    quiet_logs()
    probe = Probe(args.server_pid, counter)
    store = EsdbEventStore(args.uri)
    bus = CommandBus()
    handlers.register(bus, Repository(store, Account, registry, cache_size=args.cache))

    def deposit(account_id: str) -> None:
        bus.dispatch(Deposit(account_id=account_id, amount=AMOUNT))

    def balance(account_id: str) -> Decimal:
        return handlers.account_repository(store).load(account_id).balance

    if args.workload == "w1":
        ids = [f"acc-{n}" for n in range(args.accounts)]
        with probe.phase("open", args.accounts):
            for account_id in ids:
                bus.dispatch(OpenAccount(account_id=account_id, owner="Bench"))
        for account_id in ids:  # untimed: every account loaded and saved once (warms the cache)
            deposit(account_id)
        with probe.phase("deposit", args.accounts * args.deposits):
            for _ in range(args.deposits):
                for account_id in ids:
                    deposit(account_id)
        expected = AMOUNT * (1 + args.deposits)
        assert all(balance(i) == expected for i in ids), "W1: a balance is wrong"

    elif args.workload == "w1c":
        per_thread_accounts = 2
        owned = [[f"t{n}-{k}" for k in range(per_thread_accounts)] for n in range(args.threads)]
        for mine in owned:
            for account_id in mine:
                bus.dispatch(OpenAccount(account_id=account_id, owner="Bench"))
                deposit(account_id)

        def writer(n: int) -> list[float]:
            mine, latencies = owned[n], []
            for k in range(args.per_thread):
                started = time.perf_counter()
                deposit(mine[k % per_thread_accounts])
                latencies.append(time.perf_counter() - started)
            return latencies

        with probe.phase("deposit", args.threads * args.per_thread) as result:
            latencies = run_threads(args.threads, writer)
        result["p99_ms"] = p99(latencies) * 1000
        total = sum(balance(i) for mine in owned for i in mine)
        assert total == AMOUNT * (len(owned) * per_thread_accounts + args.threads * args.per_thread)

    elif args.workload == "w2":
        accounts = handlers.account_repository(store)
        account = Account.open("long", "Bench")
        while account.version < args.events - 1:  # versions from 0
            for _ in range(min(1000, args.events - 1 - account.version - len(account.pending_events))):
                account.deposit(AMOUNT)
            accounts.save(account)
        expected = AMOUNT * (args.events - 1)
        assert account.version == args.events - 1
        assert balance("long") == expected
        with probe.phase("load", args.events * args.loads):
            for _ in range(args.loads):
                loaded = accounts.load("long")
        assert loaded.balance == expected

    elif args.workload == "w3":
        number_of_accounts = args.events // EVENTS_PER_ACCOUNT
        encode = registry.encode
        for number in range(number_of_accounts):
            account_id = f"acc-{number}"
            batch = [encode(AccountOpened(account_id=account_id, owner="Bench"))]
            running = Decimal(0)
            for _ in range(EVENTS_PER_ACCOUNT - 1):
                running += AMOUNT
                batch.append(encode(MoneyDeposited(account_id=account_id, amount=AMOUNT, balance=running)))
            store.append(f"Account-{account_id}", batch, expected_version=StreamState.NO_STREAM)
        target = SQLiteReadModelStore(Path(args.directory) / "w3-ours-model.db", durable=False)
        projection = AccountList()
        with probe.phase("rebuild", args.events) as result:
            ProjectionRunner(projection, store, target).run(until_caught_up=True)
        live = target.describe(projection.name).live
        assert live is not None
        result["events_applied"] = live.events_applied
        with target.read(projection.name) as view:
            total = sum((Decimal(row["balance"]) for row in view.table("accounts").find()), Decimal(0))
        target.close()
        expected_total = number_of_accounts * AMOUNT * (EVENTS_PER_ACCOUNT - 1)
        if live.events_applied != args.events or total != expected_total:
            raise SystemExit(
                f"W3: applied {live.events_applied} events, balances sum {total}, expected {expected_total}"
            )

    store.close()
    emit(probe)


if __name__ == "__main__":
    sys.exit(main())
