"""SQLite connections of the read model store, and of a runner, end with their threads."""

from __future__ import annotations

import gc
import os
import threading
import time
from pathlib import Path

from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from projections import ProjectionRunner
from projections.read_model_store.port import ProjectionState
from projections.read_model_store.sqlite import SQLiteReadModelStore
from projections.testing.contracts import Tally, append_tallied

THREADS = 1_000
SLACK = 5


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_thousand_short_lived_threads_leave_no_read_model_descriptor_open(tmp_path: Path) -> None:
    store = SQLiteReadModelStore(tmp_path / "views.db", durable=False)
    store.set_state("tally", ProjectionState.NEW)
    gc.collect()
    before = open_descriptors()
    failures: list[BaseException] = []

    def request(n: int) -> None:
        try:
            store.set_state("tally", ProjectionState.STOPPED, error=f"request {n}")  # a write
            assert store.projection_names() == ["tally"]  # a read
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    for n in range(THREADS):
        thread = threading.Thread(target=request, args=(n,))
        thread.start()
        thread.join()
        assert not failures, failures[0]
        if n % 100 == 0:
            assert open_descriptors() <= before + SLACK, f"after {n + 1} threads"
    gc.collect()
    assert open_descriptors() <= before + SLACK
    store.close()
    assert open_descriptors() < before


def test_a_runner_started_and_stopped_twenty_times_leaves_no_descriptor_open(tmp_path: Path) -> None:
    events = SQLiteEventStore(tmp_path / "events.db", durable=False)
    views = SQLiteReadModelStore(tmp_path / "views.db", durable=False)
    position = append_tallied(events, "Tally-1", 3)
    runner = ProjectionRunner(Tally(), events, views, batch_delay=0.01, lease_poll_interval=0.01)
    runner.start()  # the first run opens what stays open (the lease files' directory, etc.)
    runner.wait_for(position, timeout=10)
    runner.stop()
    runner.join(10)
    gc.collect()
    before = open_descriptors()
    for n in range(20):
        position = append_tallied(events, "Tally-1", 1)
        runner.start()
        runner.wait_for(position, timeout=10)
        runner.stop()
        runner.join(10)
        time.sleep(0)
        assert open_descriptors() <= before + 1, f"after {n + 1} start/stop cycles"
    gc.collect()
    assert open_descriptors() <= before
    events.close()
    views.close()
