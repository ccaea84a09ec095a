"""Write-side throughput on the embedded SQLite store: commands through the bus, and replay.

Run: ``python benchmarks/write_side.py`` (``--help`` for sizes). Prints a Markdown table:

* **command throughput** — ``Deposit`` commands dispatched one after the other through the
  :class:`~eventsourcing_cqrs.bus.CommandBus` (load, decide, append with expected version,
  metadata, deterministic ids), with SQLite ``durable=true`` (fsync per commit) and
  ``durable=false``;
* **replay** — loading one account whose stream holds N events (default 10 000), by full
  replay and from a snapshot (plus the tail written after it).

A benchmark, not a test: numbers depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pydantic
import structlog

from escqrs.examples.bank import handlers
from escqrs.examples.bank.account import Account
from escqrs.examples.bank.commands import Deposit, OpenAccount
from eventsourcing_cqrs.bus import CommandBus
from eventsourcing_cqrs.event_store import connect
from eventsourcing_cqrs.event_store.port import EventStore


def best_of(repeat: int, action: Callable[[], object]) -> float:
    """The median wall time of ``repeat`` runs of ``action``, in seconds."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def command_throughput(store: EventStore, commands: int, accounts: int) -> float:
    """Deposits per second, spread round-robin over ``accounts`` accounts."""
    bus = CommandBus()
    handlers.register(bus, handlers.account_repository(store))
    ids = [f"bench-{n}" for n in range(accounts)]
    for account_id in ids:
        bus.dispatch(OpenAccount(account_id=account_id, owner="Bench"))
    deposits = [Deposit(account_id=ids[n % accounts], amount=Decimal("1.25")) for n in range(commands)]
    started = time.perf_counter()
    for command in deposits:
        bus.dispatch(command)
    return commands / (time.perf_counter() - started)


def build_long_account(store: EventStore, events: int) -> str:
    """One account with ``events`` events, written in batches."""
    accounts = handlers.account_repository(store)
    account = Account.open("long", "Bench")
    accounts.save(account)
    while account.version < events - 1:
        for _ in range(min(1000, events - 1 - account.version)):
            account.deposit(Decimal("0.01"))
        accounts.save(account)
    return account.id


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=2000, help="deposits per command run (default 2000)")
    parser.add_argument("--accounts", type=int, default=100, help="accounts the deposits spread over")
    parser.add_argument("--events", type=int, default=10_000, help="events in the replayed stream")
    parser.add_argument("--snapshot-every", type=int, default=100, help="snapshot interval for the replay")
    parser.add_argument("--repeat", type=int, default=9, help="loads timed per replay row (median)")
    args = parser.parse_args()
    # The script is the application here: it, not the library, decides what is logged.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as directory:
        for durable in (True, False):
            path = Path(directory) / f"commands-{durable}.db"
            store = connect(f"sqlite:///{path}?durable={str(durable).lower()}")
            try:
                rate = command_throughput(store, args.commands, args.accounts)
            finally:
                store.close()
            rows.append(
                (
                    f"Deposit via CommandBus, SQLite durable={str(durable).lower()}",
                    f"{rate:,.0f} commands/s",
                    "",
                )
            )

        store = connect(f"sqlite:///{Path(directory) / 'replay.db'}")
        try:
            account_id = build_long_account(store, args.events)
            plain = handlers.account_repository(store)
            full = best_of(args.repeat, lambda: plain.load(account_id))
            snapshotting = handlers.account_repository(store, snapshot_every=args.snapshot_every)
            snapshot_version = snapshotting.take_snapshot(account_id)
            account = snapshotting.load(account_id)
            tail = args.snapshot_every // 2  # a typical tail: half a snapshot interval
            for _ in range(tail):
                account.deposit(Decimal("0.01"))
            plain.save(account)  # no snapshot written, so the tail is really replayed
            assert snapshotting.load(account_id).version == snapshot_version + tail
            from_snapshot = best_of(args.repeat, lambda: snapshotting.load(account_id))
        finally:
            store.close()
        rows.append(
            (
                f"Load {args.events:,}-event account, full replay",
                f"{args.events / full:,.0f} events/s",
                f"{full * 1000:,.1f} ms per load",
            )
        )
        rows.append(
            (
                f"Load {args.events + tail:,}-event account, snapshot + {tail}-event tail",
                f"{1 / from_snapshot:,.0f} loads/s",
                f"{from_snapshot * 1000:,.2f} ms per load ({full / from_snapshot:,.0f}x faster)",
            )
        )

    print(
        f"Write side on SQLite — Python {platform.python_version()}, pydantic {pydantic.VERSION}, "
        f"{platform.machine()}; {args.commands:,} deposits over {args.accounts} accounts\n"
    )
    widths = [max(len(row[i]) for row in [("Scenario", "Throughput", "Notes"), *rows]) for i in range(3)]
    header = ("Scenario", "Throughput", "Notes")
    print("| " + " | ".join(cell.ljust(width) for cell, width in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (width + 2) for width in widths) + "|")
    for row in rows:
        print("| " + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)) + " |")


if __name__ == "__main__":
    main()
