"""The runner across processes: SIGKILL at random points, SIGTERM, and lease takeover.

These use a SQLite event store file and real child processes (``runner_child.py``); the read
model is a SQLite file, or a PostgreSQL schema for the lease test.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from projections import ProjectionRunner, ProjectionState, rebuild, wait_for
from projections.read_model_store import ReadModelStore, connect
from projections.read_model_store.port import LeaseRole
from projections.testing.contracts import Tally, append_tallied, read_model_snapshot

CHILD = Path(__file__).with_name("runner_child.py")
ROOT = Path(__file__).resolve().parents[2]
EVENT_TYPE = "Tallied"


def spawn(events: Path, store_uri: str, *options: str) -> subprocess.Popen[str]:
    """Start a runner process and wait until it has imported everything."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(events), store_uri, EVENT_TYPE, *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if line.strip() != "ready":
        child.kill()
        _, err = child.communicate()
        pytest.fail(f"runner child did not start: {line!r} {err}")
    return child


def until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def kill(child: subprocess.Popen[str]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGKILL)
    child.communicate(timeout=10)


@pytest.fixture
def events(tmp_path: Path) -> Iterator[SQLiteEventStore]:
    store = SQLiteEventStore(tmp_path / "events.db", durable=False)
    yield store
    store.close()


@pytest.fixture
def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'views.db'}"


@pytest.fixture
def postgres_store_uri(postgres_uri: str, postgres_schema: str) -> str:
    return f"{postgres_uri}?schema={postgres_schema}"


def test_sigkill_at_random_points_ten_times_never_applies_an_event_twice(
    events: SQLiteEventStore, sqlite_uri: str
) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    streams = [f"Tally-{n}" for n in range(5)]
    for n in range(60):
        append_tallied(events, streams[n % 5], 50, EVENT_TYPE)
    store = connect(sqlite_uri)
    try:
        checkpoints: list[int | None] = []
        for _ in range(10):
            child = spawn(
                events.path, sqlite_uri, "--delay", "0.001", "--batch-size", str(rng.choice([1, 10, 50]))
            )
            for _ in range(rng.randrange(3)):  # some events arrive while it runs
                append_tallied(events, rng.choice(streams), rng.randrange(1, 30), EVENT_TYPE)
            time.sleep(rng.uniform(0.1, 0.6))
            kill(child)
            live = store.describe("tally").live
            checkpoints.append(None if live is None else live.checkpoint)
        head = events.head_position()
        progressed = sum(
            1 for before, after in zip([None, *checkpoints], checkpoints, strict=False) if after != before
        )
        killed_mid_way = sum(1 for c in checkpoints if c is None or c < head)
        assert progressed >= 5, f"seed {seed}: the runner should make progress between kills: {checkpoints}"
        assert killed_mid_way >= 5, f"seed {seed}: most kills should land before the end: {checkpoints}"
        ProjectionRunner(Tally(EVENT_TYPE), events, store).run(until_caught_up=True)
        survived = read_model_snapshot(store, "tally", ("streams", "applied"))
        total = sum(1 for _ in events.read_all())
        assert len(survived["applied"]) == total, f"seed {seed}"
        assert all(doc["times"] == 1 for doc in survived["applied"]), (
            f"seed {seed}: an event was applied twice"
        )
        assert sum(doc["count"] for doc in survived["streams"]) == total
        report = rebuild(Tally(EVENT_TYPE), events, store)
        assert report is not None
        assert report.events == total
        assert read_model_snapshot(store, "tally", ("streams", "applied")) == survived, f"seed {seed}"
    finally:
        store.close()


def test_sigterm_finishes_the_current_batch_and_exits_cleanly(
    events: SQLiteEventStore, sqlite_uri: str
) -> None:
    append_tallied(events, "Tally-1", 2000, EVENT_TYPE)
    store = connect(sqlite_uri)
    try:
        child = spawn(events.path, sqlite_uri, "--delay", "0.002", "--batch-size", "10")
        until(lambda: _applied(store) >= 10, what="the first batches")
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=10)
        assert child.returncode == 0, err
        applied = _applied(store)
        assert 10 <= applied < 2000
        assert applied % 10 == 0, "a batch was cut short"
        assert store.describe("tally").state is ProjectionState.STOPPED
        assert not store.lease_held("tally", LeaseRole.RUN)
    finally:
        store.close()


def _applied(store: ReadModelStore) -> int:
    live = store.describe("tally").live
    return 0 if live is None else live.events_applied


def _lease_takeover(events: SQLiteEventStore, store_uri: str) -> None:
    append_tallied(events, "Tally-1", 3, EVENT_TYPE)
    store = connect(store_uri)
    first = second = None
    try:
        first = spawn(events.path, store_uri)
        until(lambda: _applied(store) == 3, what="the first runner to catch up")
        second = spawn(events.path, store_uri)
        until(
            lambda: store.describe("tally").state is ProjectionState.WAITING_FOR_LEASE,
            what="the second runner to wait for the lease",
        )
        position = append_tallied(events, "Tally-1", 1, EVENT_TYPE)
        wait_for(Tally(EVENT_TYPE), events, store, position, timeout=15)  # the first one still runs it
        assert store.describe("tally").state is ProjectionState.WAITING_FOR_LEASE
        kill(first)
        position = append_tallied(events, "Tally-1", 2, EVENT_TYPE)
        wait_for(Tally(EVENT_TYPE), events, store, position, timeout=15)
        assert second.poll() is None
        assert _applied(store) == 6
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=10)
        assert second.returncode == 0, err
    finally:
        for child in (first, second):
            if child is not None:
                kill(child)
        store.close()


def test_two_runner_processes_share_one_sqlite_lease_and_the_second_takes_over(
    events: SQLiteEventStore, sqlite_uri: str
) -> None:
    _lease_takeover(events, sqlite_uri)


@pytest.mark.postgres
def test_two_runner_processes_share_one_postgres_lease_and_the_second_takes_over(
    events: SQLiteEventStore, postgres_store_uri: str
) -> None:
    _lease_takeover(events, postgres_store_uri)
