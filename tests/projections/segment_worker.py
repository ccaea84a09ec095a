"""A worker of a segmented projection in its own process, for the segment SIGKILL test.

    python segment_worker.py EVENTS_URI READ_MODELS_URI EVENT_TYPE LABEL
                             [--batch-size N] [--rebalance-interval S] [--delay S]

Runs :class:`SegmentTally` (8 segments) as one worker of the pool sharing its segments
(:meth:`~projections.ProjectionRunner.run`), over the event store ``EVENTS_URI``
(``sqlite:///...``, ``esdb://...``) and the read model store ``READ_MODELS_URI``. ``LABEL``
names this incarnation of the worker in every document it writes, so that the test can tell
who applied what. Prints ``ready`` once everything is imported and connected, then runs until
SIGTERM (exit 0) or until it is killed.

The projections are importable (the test rebuilds the same read model with
:class:`SingleTally`, the unsegmented twin).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import structlog

from eventsourcing_cqrs import event_store
from eventsourcing_cqrs.event_store.port import RecordedEvent
from projections import EventContext, ProjectionRunner
from projections.read_model_store import connect
from projections.testing.contracts import Tally

__all__ = ["SegmentTally", "SingleTally"]


class SegmentTally(Tally):
    """:class:`~projections.testing.contracts.Tally` in 8 segments, which also records who
    applied each event, and when.

    ``streams`` holds per stream the count, the last revision applied and ``in_order`` (false
    once an event was applied after a later one of its stream). ``applied`` holds per event id
    how many times it was applied, its id, stream, revision and position, and ``by`` (the label of
    the worker incarnation that applied it) and ``at`` (the wall-clock time the handler ran):
    these two differ from a rebuild's by design, the test leaves them out of the comparison.
    """

    name = "segment_tally"
    segments = 8

    def __init__(self, event_type: str, *, label: str = "rebuild", delay: float = 0.0) -> None:
        super().__init__(event_type, delay=delay)
        self._label = label

    def tallied(self, event: RecordedEvent, context: EventContext) -> None:
        """Count the event in its stream and record who applied it, once or more."""
        if self._delay:
            time.sleep(self._delay)
        streams = context.table("streams")
        row = streams.get(event.stream) or {"count": 0, "last_revision": -1, "in_order": True}
        streams.put(
            event.stream,
            {
                "count": row["count"] + 1,
                "last_revision": event.revision,
                "version": self.version,
                "in_order": bool(row["in_order"]) and event.revision > row["last_revision"],
            },
        )
        applied = context.table("applied")
        seen = applied.get(str(event.id))
        applied.put(
            str(event.id),
            {
                "times": 1 if seen is None else seen["times"] + 1,
                "id": str(event.id),
                "stream": event.stream,
                "revision": event.revision,
                "position": event.position,
                "by": self._label,
                "at": time.time(),
            },
        )


class SingleTally(SegmentTally):
    """The same projection unsegmented: the reference a single runner rebuilds."""

    segments = 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("events")
    parser.add_argument("read_models")
    parser.add_argument("event_type")
    parser.add_argument("label")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--rebalance-interval", type=float, default=0.2)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    # An application entry point may configure logging: warnings only, to stderr.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    events = event_store.connect(args.events)
    read_models = connect(args.read_models)
    runner = ProjectionRunner(
        SegmentTally(args.event_type, label=args.label, delay=args.delay),
        events,
        read_models,
        batch_size=args.batch_size,
        batch_delay=0.01,
        lease_poll_interval=0.05,
        rebalance_interval=args.rebalance_interval,
    )
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        runner.run(install_signal_handlers=True)
    finally:
        read_models.close()
        events.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
