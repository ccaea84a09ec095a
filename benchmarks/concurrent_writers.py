"""Concurrent writers on one SQLite event store, with group commit on and off (issue 13).

Threads (1, 4, 8, 16) of one process, and processes (2, one thread each), each writing to
aggregates of its own, at ``synchronous=NORMAL`` and ``FULL``: commands per second through the
bank example's ``CommandBus`` (``Deposit``: load, decide, append) and bare one-event appends at
an exact expected version. ``off`` is ``SQLiteEventStore(..., group_commit=False)``: every
append commits alone, one after another on SQLite's write lock (the library before issue 13).
Group commit works between threads of one process; processes each have their own groups.
Timings on a shared machine are indicative; compare columns of one run.

    python benchmarks/concurrent_writers.py [--quick] [--seconds S]
"""

from __future__ import annotations

import argparse
import inspect
import logging
import multiprocessing
import tempfile
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

from escqrs.examples.bank import handlers
from escqrs.examples.bank.account import Account
from escqrs.examples.bank.commands import Deposit, OpenAccount
from escqrs.examples.bank.events import registry
from eventsourcing_cqrs.bus import CommandBus
from eventsourcing_cqrs.event_store import NewEvent, StreamState
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from eventsourcing_cqrs.repository import Repository

HAS_SWITCH = "group_commit" in inspect.signature(SQLiteEventStore).parameters
AMOUNT = Decimal("1.25")


def open_store(path: Path, durable: bool, group: bool) -> SQLiteEventStore:
    options: dict[str, Any] = {"group_commit": group} if HAS_SWITCH else {}
    return SQLiteEventStore(path, durable=durable, **options)


def work(store: SQLiteEventStore, kind: str, writers: int, seconds: float) -> int:
    """Commands done by ``writers`` threads in ``seconds`` on ``store``, each on its own aggregates."""
    bus = CommandBus()
    # A cache, so that a command costs the same however long its account's stream has grown.
    handlers.register(bus, Repository(store, Account, registry, cache_size=writers))
    run = uuid.uuid4().hex[:8]
    done = [0] * writers
    barrier = threading.Barrier(writers + 1)
    stop = threading.Event()

    def writer(n: int) -> None:
        account = f"{run}-{n}"
        stream, version = f"Bare-{run}-{n}", -1
        if kind == "bus":
            bus.dispatch(OpenAccount(account_id=account, owner="B"))
        barrier.wait()
        while not stop.is_set():
            if kind == "bus":
                bus.dispatch(Deposit(account_id=account, amount=AMOUNT))
            else:
                expected = StreamState.NO_STREAM if version < 0 else version
                store.append(stream, [NewEvent("Bench", b"{}", b"{}")], expected_version=expected)
                version += 1
            done[n] += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    barrier.wait()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return sum(done)


def _child(
    path: Path, durable: bool, group: bool, *, kind: str, seconds: float, start: Any, out: Any
) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    store = open_store(path, durable, group)
    start.wait()
    out.put(work(store, kind, 1, seconds))
    store.close()


def per_second(
    path: Path, durable: bool, group: bool, *, kind: str, writers: int, procs: int, seconds: float
) -> float:
    if procs == 1:
        store = open_store(path, durable, group)
        try:
            return work(store, kind, writers, seconds) / seconds
        finally:
            store.close()
    context = multiprocessing.get_context("spawn")
    start, out = context.Barrier(procs), context.Queue()
    children = [
        context.Process(
            target=_child,
            args=(path, durable, group),
            kwargs={"kind": kind, "seconds": seconds, "start": start, "out": out},
        )
        for _ in range(procs)
    ]
    for child in children:
        child.start()
    total = sum(out.get(timeout=120) for _ in children)
    for child in children:
        child.join()
    return total / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, FULL only, no 16 threads")
    parser.add_argument("--seconds", type=float, help="seconds per cell")
    arguments = parser.parse_args()
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    seconds = arguments.seconds or (1.0 if arguments.quick else 3.0)
    modes = [True] if arguments.quick else [False, True]
    shapes = (
        [(1, 1), (4, 1), (8, 1), (2, 2)] if arguments.quick else [(1, 1), (4, 1), (8, 1), (16, 1), (2, 2)]
    )
    groups = [False, True] if HAS_SWITCH else [False]
    print(f"concurrent writers, disjoint aggregates, {seconds:g} s per cell (commands/s)")
    print()
    header = "| sync | kind | writers |" + "".join(f" group commit {'on' if g else 'off'} |" for g in groups)
    print(header + (" on ÷ off | vs 1 thread (on) |" if HAS_SWITCH else ""))
    print("|---|---|---|" + "---:|" * (len(groups) + (2 if HAS_SWITCH else 0)))
    with tempfile.TemporaryDirectory(prefix="writers-") as directory:
        for durable in modes:
            for kind in ("bus", "bare"):
                single: float | None = None
                for writers, procs in shapes:
                    rates = []
                    for group in groups:
                        path = Path(directory) / f"{uuid.uuid4().hex}.db"
                        open_store(path, durable, group).close()
                        rates.append(
                            per_second(
                                path, durable, group, kind=kind, writers=writers, procs=procs, seconds=seconds
                            )
                        )
                    label = f"{writers} processes" if procs > 1 else f"{writers} threads"
                    cells = "".join(f" {rate:,.0f} |" for rate in rates)
                    extra = ""
                    if HAS_SWITCH:
                        single = rates[1] if single is None else single
                        extra = f" {rates[1] / rates[0]:.2f}x | {rates[1] / single:.2f}x |"
                    sync = "FULL" if durable else "NORMAL"
                    print(f"| {sync} | {kind} | {label} |{cells}{extra}", flush=True)


if __name__ == "__main__":
    main()
