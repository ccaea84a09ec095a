"""The event store port alone: append, read and catch-up throughput, and cross-process delivery.

    .venv/bin/python benchmarks/event_store.py                         # quick sizes
    .venv/bin/python benchmarks/event_store.py --events 200000
    .venv/bin/python benchmarks/event_store.py --events 2000 --single 200  # smallest

What ``compare.py`` does not: raw :class:`~eventsourcing_cqrs.event_store.EventStore` calls with
no aggregate, command or projection on top, on the in-memory store as well as SQLite
(``durable=true`` and ``false``): appends of 1 and of 100 events per call, ``read_all()``, and a
catch-up subscription to the end; then the delay from an append in one process to its delivery
by a subscription in another (SQLite, 200 events, p50 / p99 / max). Ours only; no other side.

Prints one table per run. Every store is measured in the same run on the same machine; the
SQLite stores use a fresh file in a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import percentile, quiet_logs

from eventsourcing_cqrs.event_store import CaughtUp, EventStore, NewEvent, RecordedEvent, StreamState
from eventsourcing_cqrs.event_store.memory import InMemoryEventStore
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore

PAYLOAD = json.dumps({"account_id": "0123456789", "amount": "12.50", "balance": "1012.50"}).encode()


def event() -> NewEvent:
    return NewEvent("MoneyDeposited", PAYLOAD, b'{"$correlationId": "c"}')


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}"


def measure(store: EventStore, events: int, single: int) -> dict[str, str]:
    started = time.perf_counter()
    for n in range(single):
        store.append(f"Single-{n % 100}", [event()], expected_version=StreamState.ANY)
    single_rate = rate(single, time.perf_counter() - started)

    batch = 100
    started = time.perf_counter()
    for n in range(events // batch):
        store.append(f"Account-{n}", [event() for _ in range(batch)], expected_version=StreamState.NO_STREAM)
    batch_rate = rate(events, time.perf_counter() - started)

    started = time.perf_counter()
    count = sum(1 for _ in store.read_all())
    read_rate = rate(count, time.perf_counter() - started)

    started = time.perf_counter()
    seen = 0
    with store.subscribe() as subscription:
        for item in subscription:
            if isinstance(item, RecordedEvent):
                seen += 1
            elif isinstance(item, CaughtUp):
                break
    catch_up_rate = rate(seen, time.perf_counter() - started)
    return {
        "append 1 event/call": single_rate,
        "append 100 events/call": batch_rate,
        "read $all": read_rate,
        "catch-up subscription": catch_up_rate,
    }


def _appender(path: str, count: int, ready: multiprocessing.synchronize.Event) -> None:  # type: ignore[name-defined]
    quiet_logs()  # a spawned process: the parent's logging configuration does not carry over
    store = SQLiteEventStore(path, durable=False)
    ready.wait()
    for n in range(count):
        data = json.dumps({"sent": time.time(), "n": n}).encode()
        store.append("Latency-1", [NewEvent("Ping", data)], expected_version=StreamState.ANY)
        time.sleep(0.01)
    store.close()


def cross_process_latency(directory: Path, count: int) -> tuple[float, float, float]:
    """Append in a child process; measure until this process's subscription delivers."""
    path = str(directory / "latency.db")
    store = SQLiteEventStore(path, durable=False)
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    child = context.Process(target=_appender, args=(path, count, ready))
    latencies: list[float] = []
    with store.subscribe() as subscription:
        child.start()
        ready.set()
        while len(latencies) < count:
            item = subscription.poll(10)
            if item is None:
                break
            if isinstance(item, RecordedEvent) and item.type == "Ping":
                latencies.append((time.time() - json.loads(item.data)["sent"]) * 1000)
    child.join()
    store.close()
    return statistics.median(latencies), percentile(latencies, 0.99), max(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=50_000, help="events for batch append/read/catch-up")
    parser.add_argument("--single", type=int, default=2_000, help="one-event appends")
    args = parser.parse_args()
    quiet_logs()

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        stores: list[tuple[str, Callable[[], EventStore]]] = [
            ("memory", InMemoryEventStore),
            ("SQLite durable=true", lambda: SQLiteEventStore(directory / "durable.db")),
            ("SQLite durable=false", lambda: SQLiteEventStore(directory / "fast.db", durable=False)),
        ]
        results: dict[str, dict[str, str]] = {}
        for name, factory in stores:
            store = factory()
            results[name] = measure(store, args.events, args.single)
            store.close()
        p50, p99, worst = cross_process_latency(directory, 200)

    metrics = list(next(iter(results.values())))
    width = max(len(m) for m in metrics)
    python = sys.version.split()[0]
    print(
        f"Event store throughput (events/s), {args.events:,} events, {os.cpu_count()} cores, Python {python}"
    )
    print()
    print(f"| {'operation':<{width}} | " + " | ".join(f"{name:>20}" for name in results) + " |")
    print(f"|{'-' * (width + 2)}|" + "|".join("-" * 22 for _ in results) + "|")
    for metric in metrics:
        print(
            f"| {metric:<{width}} | " + " | ".join(f"{results[name][metric]:>20}" for name in results) + " |"
        )
    print()
    print(
        "Cross-process delivery (SQLite, append in one process -> subscription in another), "
        f"200 events: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {worst:.1f} ms (target: under 100 ms)"
    )


if __name__ == "__main__":
    main()
