"""Append cost against store size: does a commit get dearer as the event store grows? (issue 13)

For stores of 0, 100k and 1M events (``--quick``: 0, 20k, 100k) it prints, in µs per command:

* ``open`` — ``OpenAccount`` through the bank example's ``CommandBus`` (a new stream);
* ``deposit`` — ``Deposit`` through the bus on an account with a few events (load, decide, append);
* ``bare`` — ``SQLiteEventStore.append`` of one event at an exact expected version, nothing else;
* ``raw`` — the same insert and commit written with ``sqlite3`` alone (read the stream's last
  revision, insert one row, commit) in a file of the same size with a minimal schema.

The big stores are filled with bulk appends (1000 events per append, 100 per stream) through
the store itself, so the script measures whatever schema the imported library has: run it from
a checkout of an older commit (``PYTHONPATH=/path/to/checkout python benchmarks/append_cost.py``)
to compare schemas. Timings on a shared machine are indicative; compare columns of one run.

    python benchmarks/append_cost.py [--quick] [--durable]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sqlite3
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

import structlog

from escqrs.examples.bank import handlers
from escqrs.examples.bank.commands import Deposit, OpenAccount
from eventsourcing_cqrs.bus import CommandBus
from eventsourcing_cqrs.event_store import NewEvent, StreamState
from eventsourcing_cqrs.event_store.sqlite import SCHEMA_VERSION, SQLiteEventStore

FILL_BATCH = 1000  # events per bulk append
FILL_STREAM = 100  # events per filler stream
RAW_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (position INTEGER PRIMARY KEY, stream TEXT NOT NULL, "
    "revision INTEGER NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL, UNIQUE (stream, revision))"
)
PAYLOAD = json.dumps({"account_id": "x" * 36, "amount": "1.25", "balance": "100.00"}).encode()


def fill(store: SQLiteEventStore, events: int) -> None:
    """``events`` events in streams of 100, appended 1000 at a time."""
    for start in range(0, events, FILL_BATCH):
        batch = [NewEvent("MoneyDeposited", PAYLOAD, b"{}") for _ in range(min(FILL_BATCH, events - start))]
        for offset in range(0, len(batch), FILL_STREAM):
            store.append(
                f"Filler-{uuid.uuid4()}",
                batch[offset : offset + FILL_STREAM],
                expected_version=StreamState.NO_STREAM,
            )


def raw_connection(path: Path, durable: bool, events: int) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
    connection.execute(RAW_SCHEMA)
    rows = (
        (f"Filler-{n // FILL_STREAM}-{uuid.uuid4()}", n % FILL_STREAM, "MoneyDeposited", PAYLOAD)
        for n in range(events)
    )
    connection.execute("BEGIN")
    connection.executemany("INSERT INTO events (stream, revision, type, data) VALUES (?, ?, ?, ?)", rows)
    connection.execute("COMMIT")
    return connection


def raw_append(connection: sqlite3.Connection, stream: str, expected: int) -> None:
    connection.execute("BEGIN IMMEDIATE")
    (last,) = connection.execute(
        "SELECT coalesce(max(revision), -1) FROM events WHERE stream = ?", (stream,)
    ).fetchone()
    assert last == expected
    connection.execute(
        "INSERT INTO events (stream, revision, type, data) VALUES (?, ?, ?, ?)",
        (stream, expected + 1, "MoneyDeposited", PAYLOAD),
    )
    connection.execute("COMMIT")


def per_op(action: object, count: int) -> float:
    """µs per call of ``action(i)`` for i in range(count), after a short warm-up."""
    assert callable(action)
    for i in range(min(50, count)):
        action(-1 - i)
    started = time.perf_counter()
    for i in range(count):
        action(i)
    return (time.perf_counter() - started) / count * 1e6


def measure(directory: Path, events: int, durable: bool, count: int) -> dict[str, float]:
    path = directory / f"store-{events}.db"
    filling = SQLiteEventStore(path, durable=False)
    fill(filling, events)
    filling.close()
    store = SQLiteEventStore(path, durable=durable)
    bus = CommandBus()
    handlers.register(bus, handlers.account_repository(store))
    run = uuid.uuid4().hex[:8]
    accounts = [f"{run}-{n}" for n in range(64)]
    amount = Decimal("1.25")
    results: dict[str, float] = {}
    results["open"] = per_op(lambda i: bus.dispatch(OpenAccount(account_id=f"{run}-o{i}", owner="B")), count)
    for account in accounts:
        bus.dispatch(OpenAccount(account_id=account, owner="B"))
    results["deposit"] = per_op(
        lambda i: bus.dispatch(Deposit(account_id=accounts[i % len(accounts)], amount=amount)), count
    )
    versions: dict[str, int] = {}

    def bare(i: int) -> None:
        stream = f"Bare-{run}-{i % 64}"
        expected = versions.get(stream, -1)
        store.append(
            stream,
            [NewEvent("MoneyDeposited", PAYLOAD, b"{}")],
            expected_version=StreamState.NO_STREAM if expected < 0 else expected,
        )
        versions[stream] = expected + 1

    results["bare"] = per_op(bare, count)
    store.close()
    raw = raw_connection(directory / f"raw-{events}.db", durable, events)
    raw_versions: dict[str, int] = {}

    def raw_op(i: int) -> None:
        stream = f"Raw-{i % 64}"
        expected = raw_versions.get(stream, -1)
        raw_append(raw, stream, expected)
        raw_versions[stream] = expected + 1

    results["raw"] = per_op(raw_op, count)
    raw.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="stores of 0, 20k and 100k events")
    parser.add_argument("--durable", action="store_true", help="synchronous=FULL (default NORMAL)")
    parser.add_argument("--count", type=int, help="commands timed per cell")
    arguments = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    sizes = [0, 20_000, 100_000] if arguments.quick else [0, 100_000, 1_000_000]
    count = arguments.count or (300 if arguments.quick else 2000)
    mode = "FULL" if arguments.durable else "NORMAL"
    print(f"append cost, schema version {SCHEMA_VERSION}, synchronous={mode}, {count} commands per cell")
    print()
    print("| events in store | open µs | deposit µs | bare append µs | raw sqlite3 µs | bare ÷ raw |")
    print("|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="append-cost-") as directory:
        for events in sizes:
            row = measure(Path(directory), events, arguments.durable, count)
            print(
                f"| {events:,} | {row['open']:.0f} | {row['deposit']:.0f} | {row['bare']:.0f} "
                f"| {row['raw']:.0f} | {row['bare'] / row['raw']:.2f} |",
                flush=True,
            )
            for leftover in Path(directory).iterdir():
                with contextlib.suppress(OSError):
                    leftover.unlink()


if __name__ == "__main__":
    main()
