"""The bank's transfer process manager in its own process, for the SIGKILL tests.

    python transfer_worker.py EVENTS_URI READ_MODELS_URI [--start-from now|beginning]
                              [--batch-size N]

Runs a :class:`~projections.ReactorRunner` of
:class:`~escqrs.examples.bank.transfers.TransferProcess` over the event store ``EVENTS_URI``
(``sqlite:///...``, ``esdb://...``), with its checkpoint and deadlines in ``READ_MODELS_URI``,
dispatching through :func:`~escqrs.examples.bank.handlers.bank_bus` over the same event store.
Prints ``ready`` once everything is imported and connected, then runs until SIGTERM (exit 0)
or until it is killed.
"""

from __future__ import annotations

import argparse
import logging
import sys

import structlog

from escqrs.examples.bank.handlers import bank_bus
from escqrs.examples.bank.transfers import TransferProcess
from eventsourcing_cqrs import event_store
from projections import ReactorRunner, StartFrom
from projections.read_model_store import connect


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("events")
    parser.add_argument("read_models")
    parser.add_argument("--start-from", choices=[s.value for s in StartFrom], default=StartFrom.NOW.value)
    parser.add_argument("--batch-size", type=int, default=20)
    args = parser.parse_args()
    # An application entry point may configure logging: warnings only, to stderr.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    events = event_store.connect(args.events)
    read_models = connect(args.read_models)
    runner = ReactorRunner(
        TransferProcess(),
        events,
        read_models,
        bus=bank_bus(events),
        start_from=StartFrom(args.start_from),
        batch_size=args.batch_size,
        batch_delay=0.01,
        lease_poll_interval=0.05,
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
