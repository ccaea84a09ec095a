"""The effectively-once path of a process manager, one event at a time (no runner).

A bus middleware stands in for a crash at the worst moments: after the decision was recorded
and before its command was dispatched, and after the dispatch before its outcome was recorded.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from escqrs.examples.bank.commands import CloseAccount, Deposit, OpenAccount, TransferMoney
from escqrs.examples.bank.handlers import account_repository, register
from escqrs.examples.bank.transfers import Transfer, TransferProcess
from eventsourcing_cqrs import Command, CommandBus, CommandContext, CommandResult
from eventsourcing_cqrs.event_store import EventStore, connect
from eventsourcing_cqrs.event_store.port import RecordedEvent
from eventsourcing_cqrs.reactions import ProcessEngine
from eventsourcing_cqrs.reactions.engine import FireOutcome
from eventsourcing_cqrs.testing import FakeClock


class SimulatedCrashError(Exception):
    """What the middleware raises to stand for the process dying at that moment."""


class CrashOnce:
    """Middleware: raise :class:`SimulatedCrashError` before (or after) a command type's next dispatch."""

    def __init__(self) -> None:
        self.before: str | None = None
        self.after: str | None = None

    def __call__(
        self, command: Command, context: CommandContext, call_next: Callable[[], CommandResult]
    ) -> CommandResult:
        name = type(command).__name__
        if self.before == name:
            self.before = None
            raise SimulatedCrashError(f"died before {name}")
        result = call_next()
        if self.after == name:
            self.after = None
            raise SimulatedCrashError(f"died after {name}")
        return result


@pytest.fixture(params=["memory", "sqlite"])
def events(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    store = connect("memory:" if request.param == "memory" else f"sqlite:///{tmp_path / 'events.db'}")
    yield store
    store.close()


def _bank(events: EventStore, crash: CrashOnce) -> CommandBus:
    bus = CommandBus(middleware=[crash])
    register(bus, account_repository(events))
    bus.dispatch(OpenAccount(account_id="a", owner="A"))
    bus.dispatch(Deposit(account_id="a", amount=Decimal(100)))
    bus.dispatch(OpenAccount(account_id="b", owner="B"))
    bus.dispatch(OpenAccount(account_id="shut", owner="S"))
    bus.dispatch(CloseAccount(account_id="shut"))
    return bus


def _deliver_all(engine: ProcessEngine, events: EventStore, after: int) -> int:
    """Deliver every event after position ``after`` once, in order (as a runner would); the last position."""
    last = after
    for recorded in list(events.read_all(from_position=after or None)):
        if recorded.position <= after:
            continue
        if recorded.type in engine.event_types:
            engine.react(recorded)
        last = recorded.position
    return last


def _types(events: EventStore, stream: str) -> list[str]:
    return [recorded.type for recorded in events.read_stream(stream)]


def _account_events(events: EventStore, account: str) -> list[RecordedEvent]:
    return list(events.read_stream(f"Account-{account}"))


def _requested(events: EventStore, crash: CrashOnce) -> tuple[ProcessEngine, RecordedEvent]:
    """The bank, its transfer process, and a transfer t1 requested (a → b, 30)."""
    bus = _bank(events, crash)
    engine = ProcessEngine(TransferProcess(), events, bus, clock=FakeClock())
    start = events.head_position()
    bus.dispatch(TransferMoney(transfer_id="t1", source="a", target="b", amount=Decimal(30)))
    (request,) = [r for r in events.read_all(from_position=start) if r.type == "TransferRequested"]
    return engine, request


def test_a_decision_recorded_before_a_crash_is_dispatched_once_on_redelivery(events: EventStore) -> None:
    crash = CrashOnce()
    engine, request = _requested(events, crash)

    crash.before = "Withdraw"
    with pytest.raises(SimulatedCrashError):
        engine.react(request)
    # The decision is recorded (the stream is the outbox); nothing was dispatched.
    assert _types(events, "Transfer-t1") == [
        "TransferStarted",
        "ProcessCommandIssued",
        "ProcessDeadlineScheduled",
    ]
    assert [r.type for r in _account_events(events, "a")][-1] == "TransferRequested"

    engine.react(request)  # redelivered: decides nothing again, dispatches the outbox
    engine.react(request)  # and again: nothing more at all
    assert _types(events, "Transfer-t1")[3:] == ["ProcessCommandSucceeded"]
    withdrawals = [r for r in _account_events(events, "a") if r.type == "MoneyWithdrawn"]
    assert len(withdrawals) == 1


def test_a_dispatch_whose_outcome_was_not_recorded_is_recognised_by_the_bus(events: EventStore) -> None:
    crash = CrashOnce()
    engine, request = _requested(events, crash)

    crash.after = "Withdraw"
    with pytest.raises(SimulatedCrashError):
        engine.react(request)
    engine.react(request)
    outcome = list(events.read_stream("Transfer-t1"))[-1]
    assert outcome.type == "ProcessCommandSucceeded"
    assert json.loads(outcome.data)["duplicate"] is True  # applied by the first attempt, once
    assert len([r for r in _account_events(events, "a") if r.type == "MoneyWithdrawn"]) == 1


def test_a_whole_transfer_delivered_twice_over_moves_the_money_once(events: EventStore) -> None:
    bus = _bank(events, CrashOnce())
    engine = ProcessEngine(TransferProcess(), events, bus, clock=FakeClock())
    start = events.head_position()
    bus.dispatch(TransferMoney(transfer_id="ok", source="a", target="b", amount=Decimal(30)))
    bus.dispatch(TransferMoney(transfer_id="bounce", source="a", target="shut", amount=Decimal(20)))
    position = start
    for _ in range(6):  # each pass delivers what the previous one caused
        position = _deliver_all(engine, events, position)
    head = events.head_position()
    for _ in range(2):  # then everything again, from the start (a lost checkpoint)
        _deliver_all(engine, events, 0)
    assert events.head_position() == head  # nothing written by the replays

    ok, bounce = engine.load("ok"), engine.load("bounce")
    assert isinstance(ok, Transfer)
    assert isinstance(bounce, Transfer)
    assert (ok.status, ok.outcome) == ("completed", "completed")
    assert (bounce.status, bounce.outcome, bounce.reason) == (
        "compensated",
        "compensated",
        "Account 'shut' is closed.",
    )
    accounts = account_repository(events)
    assert (accounts.load("a").balance, accounts.load("b").balance) == (Decimal(70), Decimal(30))
    # The saga's decisions carry the trigger as cause and its correlation.
    request = next(r for r in events.read_all(from_position=start) if r.type == "TransferRequested")
    started = next(iter(events.read_stream("Transfer-ok")))
    metadata = json.loads(started.metadata)
    assert metadata["$causationId"] == str(request.id)
    assert metadata["$correlationId"] == json.loads(request.metadata)["$correlationId"]
    assert metadata["triggerPosition"] == request.position


def test_a_parked_trigger_retried_after_later_ones_is_decided_once(events: EventStore) -> None:
    """Parking lets later events of the instance go on; the retried one is known by its id."""
    bus = _bank(events, CrashOnce())
    clock = FakeClock()
    engine = ProcessEngine(TransferProcess(), events, bus, clock=clock)
    start = events.head_position()
    bus.dispatch(TransferMoney(transfer_id="t1", source="a", target="b", amount=Decimal(30)))
    (request,) = [r for r in events.read_all(from_position=start) if r.type == "TransferRequested"]
    engine.react(request)
    (withdrawn,) = [r for r in events.read_all(from_position=request.position) if r.type == "MoneyWithdrawn"]
    # The withdrawal is parked; meanwhile the deadline passes and fires, later in $all.
    clock.advance(TransferProcess.timeout)
    (scheduled,) = [r for r in events.read_stream("Transfer-t1") if r.type == "ProcessDeadlineScheduled"]
    assert engine.fire("Transfer-t1", json.loads(scheduled.data)["deadline_id"]) is FireOutcome.FIRED
    fired = list(events.read_stream("Transfer-t1"))[-1]
    engine.react(fired)
    head = events.head_position()
    engine.react(withdrawn)  # in $all order it would count as seen: nothing
    assert events.head_position() == head

    engine.react(withdrawn, out_of_order=True)  # the parked event retried: decided now
    transfer = engine.load("t1")
    assert isinstance(transfer, Transfer)
    assert (transfer.status, transfer.timed_out) == ("compensating", True)  # a late debit: refunded
    head = events.head_position()
    engine.react(withdrawn, out_of_order=True)  # retried again: recognised, nothing more
    assert events.head_position() == head


def test_a_refused_refund_finishes_the_transfer_with_the_money_on_record(events: EventStore) -> None:
    bus = _bank(events, CrashOnce())
    engine = ProcessEngine(TransferProcess(), events, bus, clock=FakeClock())
    bus.dispatch(OpenAccount(account_id="all_in", owner="A"))
    bus.dispatch(Deposit(account_id="all_in", amount=Decimal(10)))
    start = events.head_position()
    bus.dispatch(TransferMoney(transfer_id="t9", source="all_in", target="shut", amount=Decimal(10)))
    position = _deliver_all(engine, events, start)  # withdrawn; the credit is refused
    bus.dispatch(CloseAccount(account_id="all_in"))  # emptied by the withdrawal, then closed
    for _ in range(4):
        position = _deliver_all(engine, events, position)
    transfer = engine.load("t9")
    assert isinstance(transfer, Transfer)
    assert (transfer.status, transfer.outcome) == ("refund_refused", "refund refused")
    assert transfer.reason == "Account 'all_in' is closed."


def test_unsettled_decisions_are_found_and_dispatched_once(events: EventStore) -> None:
    """What a process manager started from now does with decisions its streams never dispatched."""
    crash = CrashOnce()
    engine, request = _requested(events, crash)
    crash.before = "Withdraw"
    with pytest.raises(SimulatedCrashError):
        engine.react(request)
    head = events.head_position()
    assert engine.unsettled_streams(head) == ["Transfer-t1"]
    fresh = ProcessEngine(TransferProcess(), events, _bus_over(events), clock=FakeClock())
    assert fresh.settle("Transfer-t1") == 1
    assert fresh.settle("Transfer-t1") == 0
    assert fresh.unsettled_streams(events.head_position()) == []
    assert len([r for r in _account_events(events, "a") if r.type == "MoneyWithdrawn"]) == 1


def _bus_over(events: EventStore) -> CommandBus:
    bus = CommandBus()
    register(bus, account_repository(events))
    return bus
