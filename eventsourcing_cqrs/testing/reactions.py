"""Given / when / then for reactors and process managers, with a clock you move by hand.

No store, no bus, no runner: the same decision code the runner uses
(:meth:`Reactor.decide`, :meth:`ProcessManager.route` and :meth:`ProcessManager.decide`), fed
with events you name::

    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    transfers = ProcessScenario(TransferProcess(), clock=clock)
    transfers.given(TransferRequested(account_id="a", transfer_id="t1", target="b", amount=Decimal(5)))
    transfers.when(MoneyWithdrawn(account_id="a", amount=Decimal(5), balance=Decimal(0), transfer_id="t1"))
        .then_sends(Deposit(account_id="b", amount=Decimal(5), transfer_id="t1"))
    transfers.when_refused(Deposit, "Account 'b' is closed.")
        .then_sends(Deposit(account_id="a", amount=Decimal(5), transfer_id="t1"))
    transfers.advance(timedelta(minutes=10)).then_nothing()     # the deadline was cancelled

    ReactorScenario(WelcomeBonus()).when(AccountOpened(account_id="a", owner="Ann"))
        .then_sends(Deposit(account_id="a", amount=Decimal("10.00")))

Commands are compared without their ``command_id`` (the runner derives it from the triggering
event). In a :class:`ProcessScenario`, every command sent is taken to succeed unless
:meth:`ProcessScenario.when_refused` refuses it; deadlines fire when :meth:`~ProcessScenario.advance`
moves the clock past them. Failures raise ``AssertionError`` with both sides spelled out.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, Self, TypeVar

from eventsourcing_cqrs.errors import InvalidInputError
from eventsourcing_cqrs.event_store.port import RecordedEvent
from eventsourcing_cqrs.messages import Command, DomainEvent
from eventsourcing_cqrs.reactions._clock import check_now
from eventsourcing_cqrs.reactions.process import (
    Process,
    ProcessCommandIssued,
    ProcessCommandRefused,
    ProcessDeadlineCancelled,
    ProcessDeadlineFired,
    ProcessDeadlineScheduled,
    ProcessEvent,
    ProcessFinished,
    ProcessManager,
)
from eventsourcing_cqrs.reactions.reactor import Reactor, reaction_command_id
from eventsourcing_cqrs.serialization import EventRegistry

__all__ = ["FakeClock", "ProcessScenario", "ReactionOutcome", "ReactorScenario"]

P = TypeVar("P", bound=Process[Any])
X = TypeVar("X", bound=BaseException)


class FakeClock:
    """A clock that stands still until told: pass it as ``clock=`` to runners and scenarios.

    Calling it returns the current fake time (timezone-aware, UTC by default).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = check_now(start) if start is not None else datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        """Move the clock forward by ``delta``; the new time."""
        if not isinstance(delta, timedelta) or delta < timedelta(0):
            raise InvalidInputError("delta", delta, "advance the clock by a timedelta of zero or more")
        with self._lock:
            self._now += delta
            return self._now

    def set(self, now: datetime) -> None:
        """Set the time (earlier or later)."""
        with self._lock:
            self._now = check_now(now)


def _command_key(command: Command) -> tuple[str, dict[str, Any]]:
    return type(command).__name__, command.model_dump(mode="json", exclude={"command_id"})


def _describe(items: Sequence[object]) -> str:
    if not items:
        return "  (none)"
    return "\n".join(f"  {type(item).__name__}({item!r})" for item in items)


class ReactionOutcome:
    """What a reaction decided: commands sent, events recorded, deadlines, finish; or the error.

    Every ``then_*`` returns the outcome, so checks chain.
    """

    def __init__(
        self,
        *,
        commands: Sequence[Command] = (),
        events: Sequence[DomainEvent] = (),
        scheduled: dict[str, datetime] | None = None,
        cancelled: Sequence[str] = (),
        finished: ProcessFinished | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.commands = tuple(commands)
        self.events = tuple(events)
        self.scheduled = dict(scheduled or {})
        self.cancelled = tuple(cancelled)
        self.finished = finished
        self.error = error

    def _ok(self) -> None:
        if self.error is not None:
            raise AssertionError(
                f"Expected a decision, but {type(self.error).__name__} was raised: {self.error}"
            )

    def then_sends(self, *expected: Command) -> Self:
        """Assert exactly ``expected`` were sent, in order (``command_id`` aside)."""
        self._ok()
        if [_command_key(c) for c in self.commands] != [_command_key(c) for c in expected]:
            raise AssertionError(
                f"Expected commands:\n{_describe(expected)}\nbut it sent:\n{_describe(self.commands)}"
            )
        return self

    def then_records(self, *expected: DomainEvent) -> Self:
        """Assert the process recorded exactly ``expected`` of its own events, in order."""
        self._ok()
        if list(self.events) != list(expected):
            raise AssertionError(
                f"Expected events:\n{_describe(expected)}\nbut it recorded:\n{_describe(self.events)}"
            )
        return self

    def then_schedules(self, name: str, *, at: datetime | None = None) -> Self:
        """Assert deadline ``name`` was scheduled (``at`` that time, if given)."""
        self._ok()
        if name not in self.scheduled:
            raise AssertionError(
                f"Expected deadline {name!r} to be scheduled; scheduled: {sorted(self.scheduled)}"
            )
        if at is not None and self.scheduled[name] != at:
            raise AssertionError(
                f"Expected deadline {name!r} at {at.isoformat()}, not {self.scheduled[name].isoformat()}"
            )
        return self

    def then_cancels(self, *names: str) -> Self:
        """Assert exactly these deadlines were cancelled (in any order)."""
        self._ok()
        if sorted(self.cancelled) != sorted(names):
            raise AssertionError(
                f"Expected cancelled deadlines {sorted(names)}, got {sorted(self.cancelled)}"
            )
        return self

    def then_finished(self, outcome: str | None = None) -> Self:
        """Assert the process finished (with ``outcome``, if given)."""
        self._ok()
        if self.finished is None:
            raise AssertionError("Expected the process to finish, but it did not.")
        if outcome is not None and self.finished.outcome != outcome:
            raise AssertionError(f"Expected outcome {outcome!r}, got {self.finished.outcome!r}")
        return self

    def then_nothing(self) -> Self:
        """Assert nothing was decided at all."""
        self._ok()
        if self.commands or self.events or self.scheduled or self.cancelled or self.finished:
            raise AssertionError(
                "Expected no decision, but got:\n"
                + _describe([*self.commands, *self.events])
                + (f"\n  scheduled {sorted(self.scheduled)}" if self.scheduled else "")
                + (f"\n  cancelled {sorted(self.cancelled)}" if self.cancelled else "")
                + ("\n  finished" if self.finished else "")
            )
        return self

    def then_raises(self, error_type: type[X], match: str | None = None) -> X:
        """Assert the handler raised ``error_type`` (its message containing ``match``)."""
        if self.error is None:
            raise AssertionError(f"Expected {error_type.__name__} to be raised, but nothing was raised.")
        if not isinstance(self.error, error_type):
            message = (
                f"Expected {error_type.__name__}, but {type(self.error).__name__} was raised: {self.error}"
            )
            raise AssertionError(message)  # noqa: TRY004 - a failed expectation, as test failures are
        if match is not None and match not in str(self.error):
            raise AssertionError(
                f"Expected the {error_type.__name__} message to contain {match!r}: {self.error}"
            )
        return self.error


class _Recorder:
    """Turns events into stored-looking events, in one growing ``$all``."""

    def __init__(self, registry: EventRegistry, clock: FakeClock) -> None:
        self._registry = registry
        self._clock = clock
        self._position = 0
        self._revisions: dict[str, int] = {}

    def record(self, event: DomainEvent, stream: str) -> RecordedEvent:
        new = self._registry.encode(event, event_id=uuid.uuid4())
        self._position += 1
        revision = self._revisions[stream] = self._revisions.get(stream, -1) + 1
        return RecordedEvent(
            new.id, new.type, new.data, new.metadata, stream, revision, self._position, self._clock()
        )


class ReactorScenario:
    """A reactor fed with events one at a time: ``when(event)`` gives what it would dispatch."""

    def __init__(self, reactor: Reactor, *, clock: FakeClock | None = None) -> None:
        self.reactor = reactor
        self.clock = clock or FakeClock()
        self._recorder = _Recorder(reactor.event_registry(), self.clock)

    def when(self, event: DomainEvent, *, stream: str = "Given-1") -> ReactionOutcome:
        """What the reactor returns for ``event`` (its commands carry the ids the runner gives them)."""
        recorded = self._recorder.record(event, stream)
        try:
            commands = self.reactor.decide(recorded, self.clock())
        except Exception as exc:  # noqa: BLE001 - kept in the outcome; then_raises judges it
            return ReactionOutcome(error=exc)
        return ReactionOutcome(
            commands=[
                c.model_copy(update={"command_id": reaction_command_id(recorded.id, self.reactor.name, i)})
                for i, c in enumerate(commands)
            ]
        )


class ProcessScenario(Generic[P]):
    """A process manager's instances fed with events, refusals and the passing of time.

    ``given(*events)`` delivers history (its decisions are taken and kept); ``when(event)``,
    ``when_refused(command_class, reason)`` and ``advance(delta)`` return what was decided.
    :meth:`instance` gives an instance's state for further checks.
    """

    def __init__(self, manager: ProcessManager[P], *, clock: FakeClock | None = None) -> None:
        self.manager = manager
        self.clock = clock or FakeClock()
        self._recorder = _Recorder(manager.event_registry(), self.clock)
        self._instances: dict[str, P] = {}
        self._last_sender: dict[str, str] = {}

    def instance(self, key: str) -> P:
        """The state of instance ``key`` (an AssertionError if it was never started)."""
        found = self._instances.get(key)
        if found is None:
            raise AssertionError(f"No instance {key!r} of {self.manager.name!r} was started.")
        return found

    def given(self, *events: DomainEvent) -> Self:
        """Deliver ``events`` in order, as history; a handler that raises fails the test here."""
        for event in events:
            outcome = self.when(event)
            if outcome.error is not None:
                raise AssertionError(
                    f"Given {type(event).__name__} failed: {outcome.error!r}"
                ) from outcome.error
        return self

    def when(self, event: DomainEvent, *, stream: str = "Given-1") -> ReactionOutcome:
        """Deliver one event (from another aggregate's ``stream``) and report what was decided."""
        return self._deliver(self._recorder.record(event, stream))

    def when_refused(
        self, command_class: type[Command], reason: str = "refused", *, key: str | None = None
    ) -> ReactionOutcome:
        """Refuse the last ``command_class`` command sent (by instance ``key``, or the last to send one)."""
        name = command_class.__name__
        key = key if key is not None else self._last_sender.get(name)
        instance = self._instances.get(key) if key is not None else None
        if instance is None:
            raise AssertionError(f"No instance of {self.manager.name!r} sent a {name} to refuse.")
        sent = [issued for issued in instance.unsettled_commands if issued.command_type == name]
        if not sent:
            raise AssertionError(f"Instance {key!r} has no {name} waiting for an outcome.")
        refused = ProcessCommandRefused(
            command_id=sent[-1].command_id, command_type=name, error_type="DomainError", reason=reason
        )
        return self._own(instance, refused)

    def advance(self, delta: timedelta) -> ReactionOutcome:
        """Move the clock by ``delta`` and fire every deadline it passes, earliest first."""
        now = self.clock.advance(delta)
        due = sorted(
            (due_at, key, name)
            for key, instance in self._instances.items()
            if not instance.finished
            for name, due_at in instance.pending_deadlines.items()
            if due_at <= now
        )
        outcomes = []
        for _, key, name in due:
            instance = self._instances[key]
            scheduled = instance._deadlines.get(name)
            if scheduled is None or instance.finished:
                continue  # cancelled by an earlier deadline's handler
            fired = ProcessDeadlineFired(
                deadline_id=scheduled.deadline_id, deadline=name, due_at=scheduled.due_at
            )
            outcomes.append(self._own(instance, fired))
        return _merged(outcomes)

    def _own(self, instance: P, event: ProcessEvent) -> ReactionOutcome:
        """Record a bookkeeping event in the instance's stream, then deliver it."""
        recorded = self._recorder.record(event, self.manager.stream_of(instance.id))
        instance._replayed(event, instance.version + 1)
        return self._deliver(recorded)

    def _deliver(self, recorded: RecordedEvent) -> ReactionOutcome:
        try:
            route = self.manager.route(recorded)
            if route is None:
                return ReactionOutcome()
            stored = self._instances.get(route.key)
            if stored is None:
                if not route.starts:
                    return ReactionOutcome()
                instance = self.manager.new_instance(route.key)
            elif stored.finished:
                return ReactionOutcome()
            else:
                # A copy, as the runner replays the stream: a handler that raises changes nothing.
                instance = copy.deepcopy(stored)
            self.manager.decide(instance, route, trigger_id=recorded.id, now=self.clock())
        except Exception as exc:  # noqa: BLE001 - kept in the outcome; then_raises judges it
            return ReactionOutcome(error=exc)
        pending = instance.pending_events
        if stored is None and not pending:
            return ReactionOutcome()  # as in the runner: an instance exists once it recorded something
        self._instances[route.key] = instance
        instance._saved(instance.version + len(pending))
        commands: list[Command] = []
        events: list[DomainEvent] = []
        scheduled: dict[str, datetime] = {}
        cancelled: list[str] = []
        finished = None
        for event in pending:
            match event:
                case ProcessCommandIssued():
                    commands.append(self.manager.rebuild_command(event))
                    self._last_sender[event.command_type] = route.key
                case ProcessDeadlineScheduled(deadline=name, due_at=due_at):
                    scheduled[name] = due_at
                case ProcessDeadlineCancelled(deadline=name):
                    cancelled.append(name)
                case ProcessFinished():
                    finished = event
                case ProcessEvent():
                    pass
                case _:
                    events.append(event)
        return ReactionOutcome(
            commands=commands, events=events, scheduled=scheduled, cancelled=cancelled, finished=finished
        )


def _merged(outcomes: Sequence[ReactionOutcome]) -> ReactionOutcome:
    for outcome in outcomes:
        if outcome.error is not None:
            return outcome
    scheduled: dict[str, datetime] = {}
    for outcome in outcomes:
        scheduled.update(outcome.scheduled)
    finished = next((o.finished for o in reversed(outcomes) if o.finished is not None), None)
    return ReactionOutcome(
        commands=[c for o in outcomes for c in o.commands],
        events=[e for o in outcomes for e in o.events],
        scheduled=scheduled,
        cancelled=[n for o in outcomes for n in o.cancelled],
        finished=finished,
    )
