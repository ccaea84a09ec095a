"""A projection runner in its own process, for the SIGKILL, SIGTERM and lease tests.

    python runner_child.py EVENTS_DB STORE_URI EVENT_TYPE [--delay S] [--batch-size N]

Prints ``ready`` once imported, then runs :class:`Tally` until SIGTERM (exit code 0).
"""

from __future__ import annotations

import argparse
import logging
import sys

import structlog

from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from projections import ProjectionRunner
from projections.read_model_store import connect
from projections.testing.contracts import Tally


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("events")
    parser.add_argument("store")
    parser.add_argument("event_type")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--batch-size", type=int, default=50)
    args = parser.parse_args()
    # This is an application entry point, so it may configure logging: warnings only, to stderr.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    events = SQLiteEventStore(args.events)
    store = connect(args.store)
    runner = ProjectionRunner(
        Tally(args.event_type, delay=args.delay),
        events,
        store,
        batch_size=args.batch_size,
        batch_delay=0.02,
        lease_poll_interval=0.05,
    )
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        runner.run(install_signal_handlers=True)
    finally:
        store.close()
        events.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
