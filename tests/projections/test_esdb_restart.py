"""Fault test: the EventStoreDB test server restarted 20 times at random moments under load.

An appender thread appends numbered events round-robin to many streams, a
:class:`~projections.runner.ProjectionRunner` tallies them into a SQLite read model (once as one
runner, once split into 4 segments, whose worker reads ``$all`` once for all of them) and a raw
:meth:`EsdbEventStore.subscribe` consumer collects them, all through one shared store (one
esdbclient client, as in production). Meanwhile the server is stopped and started again on the
same port, keeping its data, 20 times. At the end every appended event must have been applied
once by the runner and seen once, in order, by the raw subscription.

The random schedule is seeded; the seed is in every failure message. ``ESDB_RESTART_SEED=N``
replays one schedule. The figures (restarts, events, lost, doubled, recovery times) are printed
(``pytest -s``) and recorded as test properties (``--junitxml``).
"""

from __future__ import annotations

import functools
import json
import os
import random
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest
from _esdb_appender import Appender

from eventsourcing_cqrs.event_store.esdb import EsdbEventStore
from eventsourcing_cqrs.event_store.port import EventFilter, RecordedEvent
from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer
from projections.projection import EventContext
from projections.read_model_store.sqlite import SQLiteReadModelStore
from projections.runner import ProjectionRunner
from projections.testing.contracts import Tally

pytestmark = pytest.mark.slow

RESTARTS = 20
STREAMS = 16
#: How long the runner and the raw subscription may take to deliver again after a restart.
RECOVERY_LIMIT = 15.0
#: How long the end state may take to settle once the appender stopped.
SETTLE_LIMIT = 30.0


class TimedTally(Tally):
    """The tally, noting when it last applied an event (to measure recovery times)."""

    def __init__(self, event_type: str) -> None:
        super().__init__(event_type)
        self.last_applied = 0.0

    def tallied(self, event: RecordedEvent, context: EventContext) -> None:
        super().tallied(event, context)
        self.last_applied = time.monotonic()


class RawConsumer(threading.Thread):
    """Collects the events of the test's streams from a raw subscription."""

    def __init__(self, events: EsdbEventStore, prefix: str) -> None:
        super().__init__(name="raw-consumer", daemon=True)
        self._subscription = events.subscribe(filter=EventFilter.for_stream_prefixes([prefix]))
        self.seen: list[RecordedEvent] = []
        self.last_seen = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for item in self._subscription:
                if isinstance(item, RecordedEvent):
                    self.seen.append(item)
                    self.last_seen = time.monotonic()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def stop(self) -> None:
        self._subscription.stop()


def _wait(condition: Callable[[], bool], limit: float) -> bool:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("segments", [1, 4], ids=["one runner", "4 segments"])
def test_twenty_restarts_under_load_lose_and_double_nothing(
    segments: int, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    seed = int(os.environ.get("ESDB_RESTART_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    event_type = f"Restarted{tag}"
    prefix = f"restart{tag}-"
    streams = [f"{prefix}{i}" for i in range(STREAMS)]
    recoveries: list[float] = []

    with EsdbTestServer(strict=True) as server, EsdbEventStore(server.uri) as events:
        read_models = SQLiteReadModelStore(tmp_path / "views.db", durable=False)
        # Split into segments, the runner is a worker whose segments share one reader of $all.
        tally_class = type("SegmentedTimedTally", (TimedTally,), {"segments": segments})
        projection = TimedTally(event_type) if segments == 1 else tally_class(event_type)
        runner = ProjectionRunner(
            projection,
            events,
            read_models,
            batch_delay=0.01,
            lease_poll_interval=0.02,
            retry_check_interval=0.02,
            rebalance_interval=0.05,
        )
        appender = Appender(events, streams, event_type)
        raw = RawConsumer(events, prefix)

        def broken() -> str | None:
            if appender.error is not None:
                return f"the appender failed: {appender.error!r}"
            if raw.error is not None:
                return f"the raw subscription failed: {raw.error!r}"
            if not runner.running:
                return f"the runner ended: {runner.error!r}, state {read_models.describe('tally').state}"
            return None

        def settled(started: float) -> bool:
            """Broken, or both consumers delivered an event since ``started``."""
            return broken() is not None or (raw.last_seen > started and projection.last_applied > started)

        def fail(what: str) -> NoReturn:
            pytest.fail(f"seed={seed} (replay with ESDB_RESTART_SEED={seed}): {what}", pytrace=False)

        runner.start()
        raw.start()
        appender.start()
        try:
            for restart in range(RESTARTS):
                time.sleep(rng.uniform(0.0, 0.4))
                server.stop()
                time.sleep(rng.uniform(0.0, 0.8))
                started = time.monotonic()
                server.start()
                recovered = _wait(functools.partial(settled, started), RECOVERY_LIMIT)
                if (problem := broken()) is not None:
                    fail(f"after restart {restart + 1}: {problem}")
                if not recovered:
                    fail(f"nothing delivered for {RECOVERY_LIMIT} s after restart {restart + 1}")
                recoveries.append(max(raw.last_seen, projection.last_applied) - started)

            appender.done.set()
            appender.join(10)
            if (problem := broken()) is not None:
                fail(problem)
            total = appender.total
            if not _wait(lambda: broken() is not None or len(raw.seen) >= total, SETTLE_LIMIT):
                fail(f"the raw subscription saw {len(raw.seen)} of {total} events")
            runner.wait_for(appender.last_position, timeout=SETTLE_LIMIT)
            if (problem := broken()) is not None:
                fail(problem)
        finally:
            appender.done.set()
            runner.stop()
            raw.stop()
            runner.join(10)
            raw.join(10)
            appender.join(10)

        with read_models.read("tally") as view:
            applied_table = view.table("applied")
            applied = {
                event_id: applied_table.get(str(event_id))
                for ids in appender.appended.values()
                for event_id in ids
            }
            applied_count = len(applied_table.find())
            rows = {stream: view.table("streams").get(stream) or {"count": 0} for stream in streams}
        read_models.close()
    counts = {stream: row["count"] for stream, row in rows.items()}
    out_of_order = sorted(stream for stream, row in rows.items() if not row.get("in_order", True))

    appended_ids = {event_id for ids in appender.appended.values() for event_id in ids}
    expected_counts = {stream: len(ids) for stream, ids in appender.appended.items()}
    runner_doubled = sum(doc["times"] - 1 for doc in applied.values() if doc is not None)
    runner_lost = sum(1 for doc in applied.values() if doc is None)
    raw_ids = [event.id for event in raw.seen]
    raw_doubled = len(raw_ids) - len(set(raw_ids))
    raw_lost = len(appended_ids - set(raw_ids))
    figures = {
        "seed": seed,
        "restarts": RESTARTS,
        "events_appended": len(appended_ids),
        "append_retries": appender.retries,
        "runner_lost": runner_lost,
        "runner_doubled": runner_doubled,
        "runner_out_of_order_streams": len(out_of_order),
        "segments": segments,
        "raw_lost": raw_lost,
        "raw_doubled": raw_doubled,
        "max_recovery_s": round(max(recoveries), 3),
        "mean_recovery_s": round(sum(recoveries) / len(recoveries), 3),
    }
    print(f"\nesdb restart figures: {json.dumps(figures)}")
    for key, value in figures.items():
        record_property(key, value)

    if counts != expected_counts or runner_doubled or runner_lost or applied_count != len(appended_ids):
        fail(f"the runner's counts differ: {figures}; counts {counts} != appended {expected_counts}")
    if out_of_order:
        fail(f"the runner applied events of {out_of_order[:5]} out of order: {figures}")
    if raw_lost or raw_doubled or len(raw_ids) != len(appended_ids):
        fail(f"the raw subscription lost or doubled events: {figures}")
    positions = [event.position for event in raw.seen]
    if positions != sorted(positions) or len(set(positions)) != len(positions):
        fail(f"the raw subscription delivered out of order: {figures}")
    for stream in streams:
        revisions = [event.revision for event in raw.seen if event.stream == stream]
        if revisions != list(range(expected_counts[stream])):
            fail(f"the raw subscription's revisions of {stream} are not 0..{expected_counts[stream] - 1}")
