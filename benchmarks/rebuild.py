"""Rebuild throughput and peak memory of the bank's read models, into SQLite and PostgreSQL.

    python benchmarks/rebuild.py                       # 20,000 events, a quick look
    python benchmarks/rebuild.py --events 1000000      # the full size
    python benchmarks/rebuild.py --stores sqlite --projection account_detail

The events (one ``AccountOpened`` then deposits and withdrawals, 100 per account) are written
once to a SQLite event store file. Each rebuild then runs in a fresh child process, so that its
peak resident memory (``ru_maxrss``) is its own: a blue/green rebuild of the projection from
position 0 through the switch. ``baseline`` is the child's resident memory after imports and
connecting, before the rebuild; the difference shows whether memory stays flat.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_POSTGRES = os.environ.get("POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/test")
EVENTS_PER_ACCOUNT = 100
CHUNK = 100


def _rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def seed(path: Path, count: int) -> float:
    """Write ``count`` bank events to a SQLite event store at ``path``; seconds taken."""
    from eventsourcing_cqrs.event_store.port import NewEvent, StreamState  # noqa: PLC0415 - after sys.path
    from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore  # noqa: PLC0415

    started = time.perf_counter()
    store = SQLiteEventStore(path, durable=False)
    try:
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
    finally:
        store.close()
    return time.perf_counter() - started


def child(args: argparse.Namespace) -> None:
    """Run one rebuild in this process and print its measurements as JSON."""
    import structlog  # noqa: PLC0415

    from escqrs.examples.bank.read_models import AccountDetail, AccountList, DailyTransactions  # noqa: PLC0415
    from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore  # noqa: PLC0415
    from projections import rebuild  # noqa: PLC0415
    from projections.read_model_store import ReadModelStore  # noqa: PLC0415
    from projections.read_model_store.sqlite import SQLiteReadModelStore  # noqa: PLC0415

    # A benchmark is an application: it may silence the library's info logs.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    projection = {"account_list": AccountList, "account_detail": AccountDetail, "daily": DailyTransactions}[
        args.projection
    ]()
    events = SQLiteEventStore(args.events_db, durable=False)
    store: ReadModelStore
    schema = None
    if args.child == "sqlite":
        store = SQLiteReadModelStore(Path(args.workdir) / f"views-{uuid.uuid4().hex[:8]}.db", durable=False)
    else:
        from projections.read_model_store.postgres import PostgresReadModelStore  # noqa: PLC0415

        schema = f"bench_{uuid.uuid4().hex[:10]}"
        store = PostgresReadModelStore(args.postgres, schema=schema)
    try:
        baseline = _rss_mb()
        started = time.perf_counter()
        report = rebuild(projection, events, store, batch_size=args.batch_size)
        seconds = time.perf_counter() - started
        assert report is not None
        print(
            json.dumps(
                {"events": report.events, "seconds": seconds, "baseline_mb": baseline, "peak_mb": _rss_mb()}
            )
        )
    finally:
        store.close()
        events.close()
        if schema is not None:
            import psycopg  # noqa: PLC0415

            with psycopg.connect(args.postgres, autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000, help="how many events (default 20,000)")
    parser.add_argument("--stores", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument(
        "--projection", default="account_list", choices=["account_list", "account_detail", "daily"]
    )
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--postgres", default=DEFAULT_POSTGRES, help="PostgreSQL URI (env POSTGRES_URI)")
    parser.add_argument("--workdir", help="keep the event store here and reuse it between runs")
    parser.add_argument("--child", choices=["sqlite", "postgres"], help=argparse.SUPPRESS)
    parser.add_argument("--events-db", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="rebuild-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    events_db = workdir / f"events-{args.events}.db"
    if not events_db.exists():
        print(f"seeding {args.events:,} events into {events_db} ...", flush=True)
        print(f"  {seed(events_db, args.events):.1f} s", flush=True)
    rows: list[tuple[str, dict[str, float] | None, list[str] | None]] = []
    for kind in [s.strip() for s in args.stores.split(",") if s.strip()]:
        command = [
            sys.executable,
            __file__,
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
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            rows.append((kind, None, done.stderr.strip().splitlines()[-1:] or ["failed"]))
            continue
        rows.append((kind, json.loads(done.stdout.strip().splitlines()[-1]), None))
    print()
    source = f"SQLite event store, batch {args.batch_size}"
    print(f"Rebuild of {args.projection} from {args.events:,} events ({source})")
    header = f"{'read model store':<18}{'events':>11}{'seconds':>10}{'events/s':>11}"
    print(f"{header}{'baseline MB':>13}{'peak MB':>9}")
    for kind, result, error in rows:
        if result is None:
            print(f"{kind:<18}  failed: {error[0] if error else ''}")
            continue
        rate = result["events"] / result["seconds"]
        print(
            f"{kind:<18}{result['events']:>11,}{result['seconds']:>10.1f}{rate:>11,.0f}"
            f"{result['baseline_mb']:>13.0f}{result['peak_mb']:>9.0f}"
        )


if __name__ == "__main__":
    main()
