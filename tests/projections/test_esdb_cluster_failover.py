"""Fault test: a live projection over a three-node test cluster while its leader changes.

An appender appends numbered events round-robin to a few streams through ``esdb+discover://``;
a :class:`~projections.runner.ProjectionRunner` on the same store tallies them into a SQLite read
model. The leader is stopped at random moments under load, three times, and brought back as a
follower each time. At the end the live read model must hold every appended event exactly once
and equal a rebuild made from a follower (``NodePreference=follower``), which the cluster's
per-node call counts prove the leader did not serve. The seed is in every failure message.
"""

from __future__ import annotations

import random
import time
import uuid
from pathlib import Path
from typing import Any

from _esdb_appender import Appender

from eventsourcing_cqrs.event_store.esdb import EsdbEventStore
from eventsourcing_cqrs.testing.esdb_server import EsdbTestCluster
from projections.read_model_store.sqlite import SQLiteReadModelStore
from projections.runner import ProjectionRunner
from projections.testing.contracts import Tally

LEADER_CHANGES = 3
STREAMS = 8


def _tables(read_models: SQLiteReadModelStore, streams: list[str], ids: list[str]) -> dict[str, Any]:
    """The tally's documents by key, and how many documents each table holds."""
    with read_models.read("tally") as view:
        streams_table, applied_table = view.table("streams"), view.table("applied")
        return {
            "streams": {stream: streams_table.get(stream) for stream in streams},
            "applied": {event_id: applied_table.get(event_id) for event_id in ids},
            "sizes": (streams_table.count(), applied_table.count()),
        }


def test_a_live_projection_survives_three_leader_changes_and_equals_a_rebuild_from_a_follower(
    tmp_path: Path,
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    tag = uuid.uuid4().hex[:8]
    event_type = f"Failover{tag}"
    streams = [f"failover{tag}-{i}" for i in range(STREAMS)]

    with EsdbTestCluster(election_delay=0.2) as cluster, EsdbEventStore(cluster.uri_discover) as events:
        live_models = SQLiteReadModelStore(tmp_path / "live.db", durable=False)
        runner = ProjectionRunner(
            Tally(event_type),
            events,
            live_models,
            batch_delay=0.01,
            lease_poll_interval=0.02,
            retry_check_interval=0.02,
        )
        appender = Appender(events, streams, event_type)
        runner.start()
        appender.start()
        try:
            for change in range(LEADER_CHANGES):
                time.sleep(rng.uniform(0.05, 0.4))
                stopped = cluster.stop_leader()
                cluster.wait_for_leader(timeout=5)
                time.sleep(rng.uniform(0.0, 0.3))
                cluster.start(stopped)
                assert appender.error is None, f"seed={seed}, change {change + 1}: {appender.error!r}"
                assert runner.running, f"seed={seed}, change {change + 1}: the runner ended: {runner.error!r}"
            time.sleep(0.1)
            appender.done.set()
            appender.join(10)
            assert appender.error is None, f"seed={seed}: {appender.error!r}"
            runner.wait_for(appender.last_position, timeout=15)
            assert runner.running, f"seed={seed}: the runner ended: {runner.error!r}"
        finally:
            appender.done.set()
            runner.stop()
            runner.join(10)
        ids = [str(event_id) for stream_ids in appender.appended.values() for event_id in stream_ids]
        live = _tables(live_models, streams, ids)
        live_models.close()

        # The rebuild reads from a follower only: the leader serves none of its reads.
        leader = cluster.leader
        assert leader is not None
        leader_reads = cluster.served(leader)["Streams/Read"]
        follower_reads = sum(cluster.served(node)["Streams/Read"] for node in cluster.followers)
        rebuilt_models = SQLiteReadModelStore(tmp_path / "rebuilt.db", durable=False)
        with EsdbEventStore(cluster.uri_discover + "&NodePreference=follower") as from_follower:
            ProjectionRunner(Tally(event_type), from_follower, rebuilt_models).run(until_caught_up=True)
        rebuilt = _tables(rebuilt_models, streams, ids)
        rebuilt_models.close()
        assert cluster.served(leader)["Streams/Read"] == leader_reads
        assert sum(cluster.served(node)["Streams/Read"] for node in cluster.followers) > follower_reads

    applied = live["applied"]
    lost = [event_id for event_id, doc in applied.items() if doc is None]
    doubled = [event_id for event_id, doc in applied.items() if doc is not None and doc["times"] != 1]
    assert not doubled, f"seed={seed}: doubled {len(doubled)} of {len(ids)}"
    assert not lost, f"seed={seed}: lost {len(lost)} of {len(ids)}"
    assert live["sizes"] == (STREAMS, len(ids)), f"seed={seed}: documents {live['sizes']}"
    counts = {stream: (doc or {"count": 0})["count"] for stream, doc in live["streams"].items()}
    assert counts == {stream: len(ids) for stream, ids in appender.appended.items()}, f"seed={seed}"
    assert live == rebuilt, f"seed={seed}: the live read model differs from the rebuild"
