"""The status of a segmented projection: each segment's own lag, counted in one read of ``$all``."""

from __future__ import annotations

from collections import Counter

from eventsourcing_cqrs.event_store.memory import InMemoryEventStore
from projections import ProjectionRunner, projection_status, segment_of
from projections.read_model_store.memory import InMemoryReadModelStore
from projections.testing.contracts import Tally, append_tallied


class SegmentedTally(Tally):
    segments = 4


def test_each_segment_reports_the_events_of_its_own_keys_after_its_checkpoint() -> None:
    events, views = InMemoryEventStore(), InMemoryReadModelStore()
    streams = [f"Tally-{n}" for n in range(10)]
    for stream in streams:
        append_tallied(events, stream, 2)
    ProjectionRunner(SegmentedTally(), events, views, rebalance_interval=0.05).run(until_caught_up=True)
    for number, stream in enumerate(streams):
        append_tallied(events, stream, number)  # stream n gets n more events: 45 in all
    expected = Counter(dict.fromkeys(range(4), 0))
    for number, stream in enumerate(streams):
        expected[segment_of(stream, 4)] += number

    status = projection_status(SegmentedTally(), events, views)
    assert [segment.lag_events for segment in status.segments] == [expected[s] for s in range(4)]
    assert (status.lag_events, status.lag_capped) == (45, False)
    assert all(segment.lag_seconds >= 0 for segment in status.segments)
    assert not any(segment.running for segment in status.segments)
    assert status.workers == 0

    capped = projection_status(SegmentedTally(), events, views, count_limit=5)
    assert capped.lag_capped
    assert sum(segment.lag_events for segment in capped.segments) <= 6
