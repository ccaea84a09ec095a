"""The SQLite event store's per-thread connections end with their threads."""

from __future__ import annotations

import gc
import os
import threading
from pathlib import Path

from eventsourcing_cqrs.event_store import StreamState
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from eventsourcing_cqrs.testing.contracts import new_events

THREADS = 1_000
#: Descriptors the process may open meanwhile for reasons of its own (logging, the GC...).
SLACK = 5


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def in_a_short_lived_thread(work: object, *args: object) -> None:
    failures: list[BaseException] = []

    def run() -> None:
        try:
            work(*args)  # type: ignore[operator]
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failures:
        raise failures[0]


def test_a_thousand_short_lived_threads_leave_no_descriptor_open(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db", durable=False)
    store.append("Account-0", new_events(1), expected_version=StreamState.NO_STREAM)
    gc.collect()
    before = open_descriptors()

    def request(n: int) -> None:  # one request of a thread-per-request server
        store.append(f"Account-{n}", new_events(1), expected_version=StreamState.NO_STREAM)
        assert [event.revision for event in store.read_stream(f"Account-{n}")] == [0]
        assert store.stream_version("Account-0") == 0

    for n in range(1, THREADS + 1):
        in_a_short_lived_thread(request, n)
        if n % 100 == 0:
            assert open_descriptors() <= before + SLACK, f"after {n} threads"
    gc.collect()
    assert open_descriptors() <= before + SLACK
    assert store.head_position() > 0
    store.close()
    assert open_descriptors() < before


def test_close_closes_the_connections_of_threads_still_alive(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db", durable=False)
    before = open_descriptors()
    used, done = threading.Barrier(4), threading.Event()

    def worker() -> None:
        store.stream_version("Account-1")
        used.wait()
        done.wait()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    used.wait()
    assert open_descriptors() >= before + 3  # each thread has its own connection
    store.close()
    assert open_descriptors() < before  # the main thread's is closed too
    done.set()
    for thread in threads:
        thread.join()
