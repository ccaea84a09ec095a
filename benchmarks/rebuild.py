"""Our blue/green rebuild of one bank read model, into the SQLite and the PostgreSQL read-model stores.

    .venv/bin/python benchmarks/rebuild.py                       # 20,000 events, a quick look
    .venv/bin/python benchmarks/rebuild.py --events 1000000      # the full size
    .venv/bin/python benchmarks/rebuild.py --stores sqlite --projection account_detail

What ``compare.py`` W3 does not: it runs :func:`projections.rebuild` (the blue/green rebuild from
position 0 through the switch, as ``escqrs rebuild`` does) rather than a runner catching up, into
PostgreSQL as well as SQLite, for any of the bank's projections (``account_list``,
``account_detail``, ``daily``), on events that include withdrawals. Ours only; no other side.

The events (one ``AccountOpened`` then deposits and withdrawals, 100 per account) are written once
to a SQLite event store file (kept and reused with ``--workdir``). Each rebuild then runs in a
fresh child process (``rebuild.py --child``), as in ``compare.py``: ``baseline MiB`` is the
child's RSS after imports and connecting, ``peak MiB`` its VmHWM after the rebuild, so the
difference shows whether memory stays flat. PostgreSQL is at ``--postgres`` (default
``$POSTGRES_URI`` or ``postgresql://postgres@127.0.0.1:5432/test``); each run uses a fresh schema
and drops it. A store that fails is reported on its row.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

from _common import measure_here, quiet_logs, run_child

from escqrs.examples.bank.read_models import AccountDetail, AccountList, DailyTransactions
from eventsourcing_cqrs.event_store import EventStore, NewEvent, StreamState
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from projections import rebuild
from projections.read_model_store import ReadModelStore, SQLiteReadModelStore

DEFAULT_POSTGRES = os.environ.get("POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/test")
EVENTS_PER_ACCOUNT = 100
CHUNK = 100
PROJECTIONS = {"account_list": AccountList, "account_detail": AccountDetail, "daily": DailyTransactions}


def seed(path: Path, count: int) -> float:
    """Write ``count`` bank events to a SQLite event store at ``path``; seconds taken."""
    started = time.perf_counter()
    store = SQLiteEventStore(path, durable=False)
    try:
        seed_events(store, count)
    finally:
        store.close()
    return time.perf_counter() - started


def seed_events(store: EventStore, count: int) -> None:
    """Append ``count`` bank events to ``store``: accounts of 100 events (opened, then deposits and
    withdrawals), in appends of up to 100 events. ``reactors.py`` seeds its rebuild row with it."""
    written = 0
    account = 0
    while written < count:
        account_id = f"{account:07d}"
        stream = f"Account-{account_id}"
        size = min(EVENTS_PER_ACCOUNT, count - written)
        balance = Decimal(0)
        batch = [
            NewEvent(
                "AccountOpened",
                json.dumps({"account_id": account_id, "owner": f"owner {account % 997}"}).encode(),
            )
        ]
        for n in range(1, size):
            if n % 3 == 2 and balance >= 5:
                balance -= Decimal("5.00")
                kind, amount = "MoneyWithdrawn", "5.00"
            else:
                balance += Decimal("12.50")
                kind, amount = "MoneyDeposited", "12.50"
            payload = {"account_id": account_id, "amount": amount, "balance": str(balance)}
            batch.append(NewEvent(kind, json.dumps(payload).encode()))
        for start in range(0, len(batch), CHUNK):
            store.append(stream, batch[start : start + CHUNK], expected_version=StreamState.ANY)
        written += size
        account += 1


def child(args: argparse.Namespace) -> None:
    """Run one rebuild in this (fresh) process and print its measurements as JSON."""
    projection = PROJECTIONS[args.projection]()
    events = SQLiteEventStore(args.events_db, durable=False)
    store: ReadModelStore
    schema = None
    views = Path(args.workdir) / f"views-{uuid.uuid4().hex[:8]}.db"
    if args.child == "sqlite":
        store = SQLiteReadModelStore(views, durable=False)
    else:
        # An optional dependency (the postgres extra): imported only when asked for.
        from projections.read_model_store.postgres import PostgresReadModelStore  # noqa: PLC0415

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        store = PostgresReadModelStore(args.postgres, schema=schema)
    try:
        report, measured = measure_here(
            lambda: rebuild(projection, events, store, batch_size=args.batch_size)
        )
        assert report is not None
        print(json.dumps({"events": report.events, **measured}))
    finally:
        store.close()
        events.close()
        for path in views.parent.glob(f"{views.name}*"):  # the read model, its -wal and -shm
            path.unlink()
        if schema is not None:
            import psycopg  # noqa: PLC0415

            with psycopg.connect(args.postgres, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def measure(args: argparse.Namespace, workdir: Path) -> None:
    events_db = workdir / f"events-{args.events}.db"
    if not events_db.exists():
        print(f"seeding {args.events:,} events into {events_db} ...", flush=True)
        print(f"  {seed(events_db, args.events):.1f} s", flush=True)
    rows: list[tuple[str, dict[str, float] | None, str]] = []
    for kind in [s.strip() for s in args.stores.split(",") if s.strip()]:
        try:
            result = run_child(
                Path(__file__),
                "--child",
                kind,
                "--events-db",
                str(events_db),
                "--workdir",
                str(workdir),
                "--postgres",
                args.postgres,
                "--projection",
                args.projection,
                "--batch-size",
                str(args.batch_size),
            )
        except RuntimeError as exc:  # report it on the row, keep the other stores' numbers
            rows.append((kind, None, str(exc).strip().splitlines()[-1]))
            continue
        rows.append((kind, result, ""))
    print()
    source = f"SQLite event store, batch {args.batch_size}"
    print(f"Rebuild of {args.projection} from {args.events:,} events ({source})")
    header = f"{'read model store':<18}{'events':>11}{'seconds':>10}{'events/s':>11}"
    print(f"{header}{'baseline MiB':>14}{'peak MiB':>10}")
    for kind, measured, error in rows:
        if measured is None:
            print(f"{kind:<18}  failed: {error}")
            continue
        rate = measured["events"] / measured["seconds"]
        print(
            f"{kind:<18}{measured['events']:>11,}{measured['seconds']:>10.1f}{rate:>11,.0f}"
            f"{measured['rss_before_kib'] / 1024:>14.0f}{measured['rss_peak_kib'] / 1024:>10.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000, help="how many events (default 20,000)")
    parser.add_argument("--stores", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--projection", default="account_list", choices=list(PROJECTIONS))
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL URI (env POSTGRES_URI)")
    parser.add_argument("--workdir", help="keep the event store here and reuse it between runs")
    parser.add_argument("--child", choices=["sqlite", "postgres"], help=argparse.SUPPRESS)
    parser.add_argument("--events-db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_logs()
    if args.child:
        child(args)
        return
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        measure(args, workdir)
        return
    with tempfile.TemporaryDirectory(prefix="rebuild-bench-") as directory:
        measure(args, Path(directory))


if __name__ == "__main__":
    main()
