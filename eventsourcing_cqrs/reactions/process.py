"""Process managers (sagas): durable, auditable workflows across aggregates.

A process manager has two parts:

* a :class:`Process` - the state of one instance, an :class:`~eventsourcing_cqrs.aggregate.Aggregate`
  kept in its own stream ``{category}-{key}`` (``Transfer-t1``). Its handlers decide by calling
  :meth:`Process.apply` with the process's own events, :meth:`Process.send` for commands,
  :meth:`Process.schedule` / :meth:`Process.cancel` for deadlines and :meth:`Process.finish`.
  Every decision is an event of that stream, so the stream is at once the state, the audit
  trail (``escqrs audit history Transfer-t1``) and the outbox.
* a :class:`ProcessManager` - which events start an instance or feed it (with the function that
  finds the instance's key in the event), what to do when a command it sent is refused, and
  what to do when a deadline passes::

    class TransferProcess(ProcessManager[Transfer]):
        name = "transfers"
        process = Transfer
        commands = (Withdraw, Deposit)

        def __init__(self) -> None:
            super().__init__()
            self.start(TransferRequested, key=lambda e: e.transfer_id, handler=self.requested)
            self.on(MoneyWithdrawn, key=lambda e: e.transfer_id, handler=self.debited)
            self.on_refused(Deposit, self.credit_refused)
            self.on_deadline("timeout", self.timed_out)

        def requested(self, event: TransferRequested, transfer: Transfer) -> None:
            transfer.apply(TransferStarted(...))
            transfer.send(Withdraw(account_id=event.source, amount=event.amount, transfer_id=...))
            transfer.schedule("timeout", after=timedelta(minutes=5))

The process's state changes in :meth:`Process.evolve` (not ``when``, which the base keeps to
route its own bookkeeping events). Handlers must decide from the instance's state, the event and
``process.now``: a decision is recorded once and never taken again, but an event that led to no
decision may be decided again after a crash.

How it runs (:class:`projections.ReactorRunner`, through
:class:`~eventsourcing_cqrs.reactions.engine.ProcessEngine`): for each event, the instance is
replayed from its stream; if the event was already decided (its position is at or before the
last event the instance decided on) nothing is decided again; otherwise the handler's decisions
are appended in one append whose event ids derive from the triggering event, so a redelivered
trigger writes nothing. Then every command recorded and not yet settled is dispatched, with an
id derived from the trigger (the bus applies it once), and its outcome is appended
(``ProcessCommandSucceeded`` or ``ProcessCommandRefused``). A refusal is itself an event of the
instance's stream: it reaches :meth:`ProcessManager.on_refused`'s handler like any event, which
may compensate. Deadlines are events too: ``ProcessDeadlineScheduled``, then
``ProcessDeadlineFired`` (appended once, by the runner holding the lease, when the clock passes
it) or ``ProcessDeadlineCancelled``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, TypeVar, cast

from eventsourcing_cqrs.aggregate import Aggregate, event_classes_of
from eventsourcing_cqrs.errors import InvalidInputError
from eventsourcing_cqrs.event_store.port import EventFilter, RecordedEvent, StreamName
from eventsourcing_cqrs.messages import Command, DomainEvent
from eventsourcing_cqrs.reactions.reactor import (
    ReactionDefinitionError,
    reaction_command_id,
    validate_failure_policy,
    validate_reactor_name,
    validate_segments,
)
from eventsourcing_cqrs.serialization import EventRegistry

__all__ = [
    "CommandRefusal",
    "Deadline",
    "Process",
    "ProcessCommandIssued",
    "ProcessCommandRefused",
    "ProcessCommandSucceeded",
    "ProcessDeadlineCancelled",
    "ProcessDeadlineFired",
    "ProcessDeadlineScheduled",
    "ProcessEvent",
    "ProcessFinished",
    "ProcessManager",
    "process_events",
]

E = TypeVar("E", bound=DomainEvent)
P = TypeVar("P", bound="Process[Any]")
T = TypeVar("T", bound=DomainEvent)


# -- the events a process records beside its own -------------------------------------------


class ProcessEvent(DomainEvent):
    """Base of the bookkeeping events every process stream may hold beside the process's own."""


class ProcessCommandIssued(ProcessEvent):
    """The process decided to send ``command`` (its JSON); it is dispatched with ``command_id``."""

    event_type: ClassVar[str] = "ProcessCommandIssued"

    command_id: uuid.UUID
    command_type: str
    command: dict[str, Any]


class ProcessCommandSucceeded(ProcessEvent):
    """The command was handled (``duplicate`` when the bus found it already applied)."""

    event_type: ClassVar[str] = "ProcessCommandSucceeded"

    command_id: uuid.UUID
    command_type: str
    stream: str | None = None
    position: int | None = None
    duplicate: bool = False


class ProcessCommandRefused(ProcessEvent):
    """The command's handler refused it with a :class:`~eventsourcing_cqrs.errors.DomainError`."""

    event_type: ClassVar[str] = "ProcessCommandRefused"

    command_id: uuid.UUID
    command_type: str
    error_type: str
    reason: str


class ProcessDeadlineScheduled(ProcessEvent):
    """Deadline ``deadline`` is due at ``due_at`` unless cancelled first."""

    event_type: ClassVar[str] = "ProcessDeadlineScheduled"

    deadline_id: uuid.UUID
    deadline: str
    due_at: datetime


class ProcessDeadlineCancelled(ProcessEvent):
    """The deadline will not fire (cancelled, rescheduled, or the process finished)."""

    event_type: ClassVar[str] = "ProcessDeadlineCancelled"

    deadline_id: uuid.UUID
    deadline: str


class ProcessDeadlineFired(ProcessEvent):
    """The clock passed the deadline; its handler reacts to this event."""

    event_type: ClassVar[str] = "ProcessDeadlineFired"

    deadline_id: uuid.UUID
    deadline: str
    due_at: datetime


class ProcessFinished(ProcessEvent):
    """The process is over (``outcome`` says how); later events are ignored."""

    event_type: ClassVar[str] = "ProcessFinished"

    outcome: str | None = None


#: Every bookkeeping event class, for registries (``EventRegistry([... , *process_events])``).
process_events: tuple[type[ProcessEvent], ...] = (
    ProcessCommandIssued,
    ProcessCommandSucceeded,
    ProcessCommandRefused,
    ProcessDeadlineScheduled,
    ProcessDeadlineCancelled,
    ProcessDeadlineFired,
    ProcessFinished,
)


@dataclass(frozen=True, slots=True)
class CommandRefusal:
    """What a refusal handler gets: the command that was refused, and why."""

    command: Command
    error_type: str
    reason: str


@dataclass(frozen=True, slots=True)
class Deadline:
    """What a deadline handler gets: the deadline that passed."""

    name: str
    due_at: datetime


@dataclass(slots=True)
class _Reacting:
    """The reaction in progress on an instance: what ids and time its decisions get."""

    trigger_id: uuid.UUID
    manager: str
    now: datetime
    commands: dict[str, type[Command]]
    sent: int = 0
    scheduled: int = 0


class Process(Aggregate[E]):
    """Base of a process manager's state: an aggregate whose decisions are events of its stream.

    Set ``category`` (the stream category: instance ``t1`` lives in ``{category}-t1``) and
    implement :meth:`evolve` for the process's own events. In handlers, call :meth:`apply`
    (your events), :meth:`send`, :meth:`schedule`, :meth:`cancel` and :meth:`finish`.
    """

    framework_events: ClassVar[tuple[type[DomainEvent], ...]] = process_events

    def __init__(self, process_id: str) -> None:
        super().__init__(process_id)
        self._issued: dict[uuid.UUID, ProcessCommandIssued] = {}
        self._unsettled: dict[uuid.UUID, ProcessCommandIssued] = {}
        self._deadlines: dict[str, ProcessDeadlineScheduled] = {}
        self._finished: ProcessFinished | None = None
        self._reacting: _Reacting | None = None

    # -- state ------------------------------------------------------------------------------

    def evolve(self, event: E) -> None:
        """Change state for one of the process's own events (new or replayed)."""
        raise NotImplementedError(f"{type(self).__name__} must implement evolve(event)")

    def when(self, event: E) -> None:
        """Route bookkeeping events to the base and the process's own to :meth:`evolve`."""
        if isinstance(event, ProcessEvent):
            self._bookkeep(event)
        else:
            self.evolve(event)

    def _bookkeep(self, event: ProcessEvent) -> None:
        match event:
            case ProcessCommandIssued(command_id=command_id):
                self._issued[command_id] = event
                self._unsettled[command_id] = event
            case (
                ProcessCommandSucceeded(command_id=command_id) | ProcessCommandRefused(command_id=command_id)
            ):
                self._unsettled.pop(command_id, None)
            case ProcessDeadlineScheduled(deadline=name):
                self._deadlines[name] = event
            case (
                ProcessDeadlineCancelled(deadline=name, deadline_id=deadline_id)
                | ProcessDeadlineFired(deadline=name, deadline_id=deadline_id)
            ):
                scheduled = self._deadlines.get(name)
                if scheduled is not None and scheduled.deadline_id == deadline_id:
                    del self._deadlines[name]
            case ProcessFinished():
                self._finished = event
            case _:  # pragma: no cover - every ProcessEvent is matched above
                raise InvalidInputError("process event", event, "not a known process event")

    @property
    def finished(self) -> bool:
        """Whether :meth:`finish` was called; a finished process decides nothing more."""
        return self._finished is not None

    @property
    def outcome(self) -> str | None:
        """The outcome given to :meth:`finish`, if finished."""
        return None if self._finished is None else self._finished.outcome

    @property
    def now(self) -> datetime:
        """The runner's clock during a reaction (raises outside one)."""
        return self._current("read the time").now

    def deadline(self, name: str) -> datetime | None:
        """When deadline ``name`` is due, or ``None`` if none is pending."""
        scheduled = self._deadlines.get(name)
        return None if scheduled is None else scheduled.due_at

    @property
    def pending_deadlines(self) -> dict[str, datetime]:
        """The deadlines not yet fired nor cancelled, by name."""
        return {name: scheduled.due_at for name, scheduled in self._deadlines.items()}

    @property
    def unsettled_commands(self) -> tuple[ProcessCommandIssued, ...]:
        """Commands recorded whose outcome is not recorded yet (the outbox), oldest first."""
        return tuple(self._unsettled.values())

    def issued(self, command_id: uuid.UUID) -> ProcessCommandIssued | None:
        """The recorded decision that sent command ``command_id``."""
        return self._issued.get(command_id)

    # -- decisions --------------------------------------------------------------------------

    def send(self, command: Command) -> uuid.UUID:
        """Record the decision to send ``command``; the runner dispatches it once. Its id."""
        reacting = self._deciding("send a command")
        if not isinstance(command, Command):
            raise InvalidInputError("command", command, "send a Command instance")
        declared = reacting.commands.get(type(command).__name__)
        if declared is not type(command):
            raise ReactionDefinitionError(
                reacting.manager,
                f"it sends {type(command).__name__}, which is not in its commands; "
                "declare every command class it sends",
            )
        command_id = reaction_command_id(reacting.trigger_id, reacting.manager, reacting.sent)
        reacting.sent += 1
        self._record(
            ProcessCommandIssued(
                command_id=command_id,
                command_type=type(command).__name__,
                command=command.model_dump(mode="json", exclude={"command_id"}),
            )
        )
        return command_id

    def schedule(self, name: str, *, at: datetime | None = None, after: timedelta | None = None) -> datetime:
        """Schedule deadline ``name`` ``at`` a time or ``after`` a delay from :attr:`now`; when it is due.

        A pending deadline of the same name is cancelled first (rescheduled).
        """
        reacting = self._deciding("schedule a deadline")
        if not isinstance(name, str) or not name:
            raise InvalidInputError("deadline", name, "a deadline's name is a non-empty string")
        if (at is None) == (after is None):
            raise InvalidInputError("deadline", name, "give either at= (a time) or after= (a delay)")
        if at is not None:
            if not isinstance(at, datetime) or at.tzinfo is None:
                raise InvalidInputError("at", at, "a deadline is a timezone-aware datetime")
            due = at
        else:
            if not isinstance(after, timedelta) or after < timedelta(0):
                raise InvalidInputError("after", after, "a delay is a timedelta of zero or more")
            due = reacting.now + after
        self.cancel(name)
        deadline_id = uuid.uuid5(reacting.trigger_id, f"{reacting.manager}/deadline/{reacting.scheduled}")
        reacting.scheduled += 1
        self._record(ProcessDeadlineScheduled(deadline_id=deadline_id, deadline=name, due_at=due))
        return due

    def cancel(self, name: str) -> bool:
        """Cancel deadline ``name``; whether one was pending."""
        self._deciding("cancel a deadline")
        scheduled = self._deadlines.get(name)
        if scheduled is None:
            return False
        self._record(ProcessDeadlineCancelled(deadline_id=scheduled.deadline_id, deadline=name))
        return True

    def finish(self, outcome: str | None = None) -> None:
        """End the process: its pending deadlines are cancelled; later events are ignored."""
        self._deciding("finish")
        for name in list(self._deadlines):
            self.cancel(name)
        self._record(ProcessFinished(outcome=outcome))

    def apply(self, event: E) -> None:
        """Record one of the process's own events (its state changes through :meth:`evolve`)."""
        if isinstance(event, ProcessEvent):
            raise InvalidInputError(
                "event", type(event).__name__, "use send, schedule, cancel or finish for bookkeeping events"
            )
        self._deciding("record an event")
        super().apply(event)

    def _record(self, event: ProcessEvent) -> None:
        self._bookkeep(event)
        self._pending.append(cast(E, event))

    def _current(self, what: str) -> _Reacting:
        if self._reacting is None:
            raise InvalidInputError(
                "process", self.id, f"{what} only in a handler of its process manager (during a reaction)"
            )
        return self._reacting

    def _deciding(self, what: str) -> _Reacting:
        reacting = self._current(what)
        if self._finished is not None:
            raise InvalidInputError("process", self.id, f"it is finished; it cannot {what}")
        return reacting


# -- the manager: routing ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """Where an event goes: which instance (``key``), which handler, and the decoded argument."""

    key: str
    starts: bool
    argument: object
    handler: Callable[[Any, Any], object]


@dataclass(frozen=True, slots=True)
class _EventRoute:
    event_class: type[DomainEvent]
    key: Callable[[Any], str | None]
    handler: Callable[[Any, Any], object]
    starts: bool


class ProcessManager(Generic[P]):
    """Base of process managers: set ``name``, ``process`` and ``commands``; route in ``__init__``.

    Class attributes:

    ``name``
        Identifies its checkpoint, lease and parked events, and goes into the ids of what it
        decides: never change it.
    ``process``
        The :class:`Process` subclass of its instances (its ``category`` names their streams).
    ``commands``
        Every command class it may send, so that a recorded decision can be read back and
        dispatched after a crash.
    ``registry``
        Decodes the events it reacts to and its own stream; by default one made of the
        process's events, the bookkeeping events and the classes passed to :meth:`start` / :meth:`on`.
    ``failure_policy``
        ``"stop"`` (the default) or ``"park"``: what the runner does with an event whose
        reaction still fails after its retries (see :class:`~eventsourcing_cqrs.reactions.Reactor`).
    ``segments``
        How many segments the runner splits it into (1 by default). Events are sequenced by
        the *instance* they route to (its stream), so one instance's events are decided in
        order by one segment, whichever stream they come from.
    """

    name: ClassVar[str]
    process: ClassVar[type[Process[Any]]]
    commands: ClassVar[tuple[type[Command], ...]] = ()
    registry: ClassVar[EventRegistry | None] = None
    failure_policy: ClassVar[str] = "stop"
    segments: ClassVar[int] = 1

    def __init__(self) -> None:
        label = type(self).__qualname__
        validate_reactor_name(getattr(type(self), "name", None), label)
        validate_failure_policy(type(self).failure_policy, type(self).name)
        validate_segments(type(self).segments, type(self).name)
        process = getattr(type(self), "process", None)
        if not (isinstance(process, type) and issubclass(process, Process)):
            raise ReactionDefinitionError(self.name, "set process to a Process subclass")
        category = getattr(process, "category", None)
        try:
            StreamName.for_aggregate(category or "", "x")
        except InvalidInputError as exc:
            raise ReactionDefinitionError(self.name, f"its process has no valid category: {exc}") from None
        commands = type(self).commands
        if not isinstance(commands, tuple) or not all(
            isinstance(c, type) and issubclass(c, Command) for c in commands
        ):
            raise ReactionDefinitionError(self.name, "commands must be a tuple of Command classes")
        self._commands = {command.__name__: command for command in commands}
        if len(self._commands) != len(commands):
            raise ReactionDefinitionError(self.name, "two of its commands share a class name")
        self._routes: dict[str, _EventRoute] = {}
        self._refusals: dict[str, Callable[[CommandRefusal, Any], object]] = {}
        self._deadlines: dict[str, Callable[[Deadline, Any], object]] = {}
        own = event_classes_of(process)
        registry = type(self).registry
        if registry is None:
            registry = EventRegistry(own)
        else:
            for event_class in own:
                if event_class.event_type not in registry:
                    raise ReactionDefinitionError(
                        self.name, f"its registry cannot decode {event_class.event_type!r} (of its process)"
                    )
        self._registry = registry
        self._own_types = frozenset(event_class.event_type for event_class in own)

    def __repr__(self) -> str:
        return f"<process manager {self.name!r}>"

    @property
    def category(self) -> str:
        """The stream category of its instances."""
        category: str = self.process.category
        return category

    def stream_of(self, key: str) -> str:
        """The stream of the instance with ``key``."""
        return str(StreamName.for_aggregate(self.category, key))

    # -- registration -----------------------------------------------------------------------

    def start(
        self, event_class: type[T], key: Callable[[T], str | None], handler: Callable[[T, P], object]
    ) -> None:
        """Events of ``event_class`` start instance ``key(event)`` if it does not exist, and feed it.

        The instance exists once its handler recorded something (an event, a command, a
        deadline): a handler that decides nothing leaves no instance behind.
        """
        self._add(event_class, key, handler, starts=True)

    def on(
        self, event_class: type[T], key: Callable[[T], str | None], handler: Callable[[T, P], object]
    ) -> None:
        """Events of ``event_class`` feed the instance ``key(event)``; ignored when it does not exist
        (or ``key`` returns ``None``)."""
        self._add(event_class, key, handler, starts=False)

    def on_refused(
        self, command_class: type[Command], handler: Callable[[CommandRefusal, P], object]
    ) -> None:
        """Call ``handler(refusal, process)`` when a ``command_class`` command it sent is refused."""
        self._check_registering()
        name = getattr(command_class, "__name__", None)
        if name is None or self._commands.get(name) is not command_class:
            raise ReactionDefinitionError(self.name, f"{command_class!r} is not one of its commands")
        if name in self._refusals:
            raise ReactionDefinitionError(self.name, f"two refusal handlers for {name}")
        self._refusals[name] = handler

    def on_deadline(self, name: str, handler: Callable[[Deadline, P], object]) -> None:
        """Call ``handler(deadline, process)`` when deadline ``name`` passes."""
        self._check_registering()
        if not isinstance(name, str) or not name:
            raise ReactionDefinitionError(self.name, f"{name!r} is not a deadline name")
        if name in self._deadlines:
            raise ReactionDefinitionError(self.name, f"two handlers for deadline {name!r}")
        self._deadlines[name] = handler

    def _check_registering(self) -> None:
        if not hasattr(self, "_routes"):
            raise ReactionDefinitionError(
                type(self).__qualname__, "call super().__init__() before registering handlers"
            )

    def _add(
        self,
        event_class: type[Any],
        key: Callable[[Any], str | None],
        handler: Callable[[Any, Any], object],
        *,
        starts: bool,
    ) -> None:
        self._check_registering()
        if not (isinstance(event_class, type) and issubclass(event_class, DomainEvent)) or issubclass(
            event_class, ProcessEvent
        ):
            raise ReactionDefinitionError(
                self.name, f"{event_class!r} is not a domain event class it can react to"
            )
        event_type = getattr(event_class, "event_type", None)
        if not isinstance(event_type, str):
            raise ReactionDefinitionError(self.name, f"{event_class.__name__} has no event_type")
        if not callable(key) or not callable(handler):
            raise ReactionDefinitionError(self.name, "key and handler must be callables")
        if event_type in self._routes:
            raise ReactionDefinitionError(self.name, f"two handlers for event type {event_type!r}")
        if event_type not in self._registry:
            if type(self).registry is not None:
                raise ReactionDefinitionError(
                    self.name,
                    f"its registry cannot decode {event_type!r}; register {event_class.__name__} there",
                )
            self._registry.register(event_class)
        self._routes[event_type] = _EventRoute(event_class, key, handler, starts)

    # -- what the engine and the runner use ---------------------------------------------------

    def event_registry(self) -> EventRegistry:
        """The registry that decodes its triggers and its instances' streams."""
        return self._registry

    @property
    def event_types(self) -> tuple[str, ...]:
        """What its subscription reads: the events it routes, and its streams' refusals and deadlines."""
        if not self._routes:
            raise ReactionDefinitionError(self.name, "register at least one start event in __init__")
        if not any(route.starts for route in self._routes.values()):
            raise ReactionDefinitionError(self.name, "no event starts an instance; register one with start()")
        bookkeeping = {
            ProcessCommandRefused.event_type,
            ProcessDeadlineScheduled.event_type,
            ProcessDeadlineCancelled.event_type,
            ProcessDeadlineFired.event_type,
        }
        return tuple(sorted(set(self._routes) | bookkeeping))

    def event_filter(self) -> EventFilter:
        """The server-side filter of its subscription."""
        return EventFilter.for_event_types(self.event_types)

    def owns(self, recorded: RecordedEvent) -> str | None:
        """The instance key if ``recorded`` is in one of its instances' streams."""
        return self.owns_stream(recorded.stream)

    def owns_stream(self, stream: str) -> str | None:
        """The instance key if ``stream`` is one of its instances' streams."""
        prefix = f"{self.category}-"
        return stream[len(prefix) :] if stream.startswith(prefix) and len(stream) > len(prefix) else None

    def command_class(self, issued: ProcessCommandIssued) -> type[Command]:
        """The class of a recorded command (a clear error when it is no longer declared)."""
        found = self._commands.get(issued.command_type)
        if found is None:
            raise ReactionDefinitionError(
                self.name,
                f"a recorded decision sends {issued.command_type}, which is not in its commands; "
                "declare it again so that the outbox can be dispatched",
            )
        return found

    def rebuild_command(self, issued: ProcessCommandIssued) -> Command:
        """The recorded command, with the id it was issued with."""
        return self.command_class(issued).model_validate({**issued.command, "command_id": issued.command_id})

    def route(self, recorded: RecordedEvent) -> Route | None:
        """Where ``recorded`` goes, or ``None`` (not for it, no key, a deadline without handler...).

        Decodes the event: an unknown type or a corrupt payload raises, naming stream and revision.
        """
        found = self._routes.get(recorded.type)
        if found is not None:
            event = self._registry.decode(recorded)
            if not isinstance(event, found.event_class):
                raise ReactionDefinitionError(
                    self.name,
                    f"the registry decodes {recorded.type!r} as {type(event).__name__}, "
                    f"but the handler expects {found.event_class.__name__}",
                )
            key = found.key(event)
            if key is None:
                return None
            if not isinstance(key, str) or not key:
                raise ReactionDefinitionError(
                    self.name, f"its key for {recorded.type!r} returned {key!r}, not a string"
                )
            return Route(key, found.starts, event, found.handler)
        key = self.owns(recorded)
        if key is None:
            return None
        if recorded.type == ProcessCommandRefused.event_type:
            refused = self._registry.decode(recorded)
            assert isinstance(refused, ProcessCommandRefused)
            handler = self._refusals.get(refused.command_type)
            if handler is None:
                return None
            return Route(key, False, refused, handler)
        if recorded.type == ProcessDeadlineFired.event_type:
            fired = self._registry.decode(recorded)
            assert isinstance(fired, ProcessDeadlineFired)
            deadline_handler = self._deadlines.get(fired.deadline)
            if deadline_handler is None:
                return None
            return Route(key, False, fired, deadline_handler)
        return None

    def decide(self, instance: P, route: Route, *, trigger_id: uuid.UUID, now: datetime) -> None:
        """Run ``route``'s handler on ``instance``; its decisions become the instance's pending events."""
        argument = route.argument
        if isinstance(argument, ProcessCommandRefused):
            issued = instance.issued(argument.command_id)
            if issued is None:
                raise ReactionDefinitionError(
                    self.name, f"a refusal names command {argument.command_id}, which its stream never issued"
                )
            argument = CommandRefusal(self.rebuild_command(issued), argument.error_type, argument.reason)
        elif isinstance(argument, ProcessDeadlineFired):
            argument = Deadline(argument.deadline, argument.due_at)
        instance._reacting = _Reacting(trigger_id, self.name, now, self._commands)
        try:
            route.handler(argument, instance)
        finally:
            instance._reacting = None

    def new_instance(self, key: str) -> P:
        """An empty instance (nothing stored yet)."""
        return cast(P, self.process(key))

    def describe(self) -> dict[str, object]:
        """Name, kind, stream category and event types, for logs and the CLI."""
        return {
            "name": self.name,
            "kind": "process manager",
            "category": self.category,
            "event_types": list(self.event_types),
        }
