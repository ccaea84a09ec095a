"""A reactor runner in its own process, for the two-runner test of ``test_reactor_runner.py``.

    python reactor_child.py EVENTS_DB STORE_URI LOG_FILE [--handler-delay S]

Runs the bank's :class:`WelcomeBonus` from the beginning, on an SQLite event store, until
SIGTERM (exit code 0). Its ``Deposit`` handler appends ``start PID T ACCOUNT`` before each
dispatch and ``end PID T ACCOUNT OUTCOME`` after it to ``LOG_FILE`` (``T`` is
``time.monotonic()``, one clock for every process of the machine), so the test can tell
whether two processes ever dispatched at the same time. Prints ``ready`` once imported.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import structlog

from escqrs.examples.bank.commands import Deposit
from escqrs.examples.bank.handlers import AccountHandlers, account_repository
from escqrs.examples.bank.transfers import WelcomeBonus
from eventsourcing_cqrs import CommandBus
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from eventsourcing_cqrs.unit_of_work import CommandAlreadyHandled
from projections import ReactorRunner, StartFrom
from projections.read_model_store import connect


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("events")
    parser.add_argument("store")
    parser.add_argument("log")
    parser.add_argument("--handler-delay", type=float, default=0.005)
    args = parser.parse_args()
    # An application entry point may configure logging: warnings only, to stderr.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    events = SQLiteEventStore(args.events)
    store = connect(args.store)
    handlers = AccountHandlers(account_repository(events))
    pid = os.getpid()
    log = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def deposit(command: Deposit) -> None:
        os.write(log, f"start {pid} {time.monotonic()!r} {command.account_id}\n".encode())
        outcome = "failed"
        try:
            time.sleep(args.handler_delay)  # widen each dispatch, so an overlap would show
            handlers.deposit(command)
            outcome = "applied"
        except CommandAlreadyHandled:
            outcome = "duplicate"
            raise
        finally:
            os.write(log, f"end {pid} {time.monotonic()!r} {command.account_id} {outcome}\n".encode())

    bus = CommandBus()
    bus.register(Deposit, deposit)
    runner = ReactorRunner(
        WelcomeBonus(),
        events,
        store,
        bus=bus,
        start_from=StartFrom.BEGINNING,
        batch_size=10,
        batch_delay=0.01,
        lease_poll_interval=0.05,
    )
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    try:
        runner.run(install_signal_handlers=True)
    finally:
        os.close(log)
        store.close()
        events.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
