"""A segmented worker rides out a PostgreSQL outage: every one of its connections killed at once.

For a second and a half the server ends every connection of the worker as soon as it opens: its
pooled ones and the ones holding its worker slot and segment leases (``pg_terminate_backend``, as
a restart or a failover does). The worker retries with its
``store_backoff``, takes a slot and its segments again, and applies what was appended meanwhile,
each event once and in order.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable

import psycopg
import pytest

from eventsourcing_cqrs.event_store.memory import InMemoryEventStore
from projections import Backoff, ProjectionRunner, ReadModelStoreUnavailableError
from projections.read_model_store.postgres import PostgresReadModelStore
from projections.testing.contracts import Tally, append_tallied


class SegmentedTally(Tally):
    segments = 4


def _until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def _counts(store: PostgresReadModelStore) -> dict[str, int]:
    """Events applied per stream; fails if one was applied twice or a stream out of order.

    Empty while the projection has no read model yet, or while this test's own read meets a
    connection the server killed (the pool replaces it).
    """
    try:
        if store.describe("tally").live is None:
            return {}
        with store.read("tally") as view:
            assert all(doc["in_order"] for doc in view.table("streams").find())
            applied = view.table("applied").find()
    except ReadModelStoreUnavailableError:
        return {}
    assert all(doc["times"] == 1 for doc in applied), "an event was applied twice"
    return dict(Counter(str(doc["stream"]) for doc in applied))


def test_a_segmented_worker_survives_its_postgresql_connections_being_killed(
    postgres_uri: str, postgres_schema: str
) -> None:
    application = f"segtest_{uuid.uuid4().hex[:8]}"
    uri = f"{postgres_uri}?application_name={application}"
    store = PostgresReadModelStore(uri, schema=postgres_schema, max_connections=8)
    events = InMemoryEventStore()
    streams = [f"Tally-{n}" for n in range(12)]
    for stream in streams:
        append_tallied(events, stream, 5)
    runner = ProjectionRunner(
        SegmentedTally(),
        events,
        store,
        rebalance_interval=0.05,
        batch_delay=0.001,
        lease_poll_interval=0.05,
        store_backoff=Backoff(max_attempts=30, base_delay=0.05, max_delay=0.5),
    )
    runner.start()
    try:
        _until(lambda: _counts(store) == dict.fromkeys(streams, 5), "the first events to be applied")
        killed = 0
        with psycopg.connect(postgres_uri, autocommit=True) as admin:
            # For a second and a half, every connection the worker opens dies at once.
            until = time.monotonic() + 1.5
            while time.monotonic() < until:
                row = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (application,),
                ).fetchone()
                killed += 0 if row is None else int(row[0])
                time.sleep(0.01)
        assert killed >= 6  # the pool's, the worker slot's and the four segments' connections, and more
        for stream in streams:
            append_tallied(events, stream, 3)
        _until(lambda: _counts(store) == dict.fromkeys(streams, 8), "the later events to be applied")
        assert runner.running
        assert runner.error is None
    finally:
        runner.stop()
        runner.join(30)
        store.close()
