"""What happens for one event: the effectively-once path of reactors and process managers.

:class:`ReactorEngine` and :class:`ProcessEngine` take one stored event at a time (from a
runner that follows ``$all``, :class:`projections.ReactorRunner`) and carry out what the
reactor or process manager decides, such that delivering the same event again - any number of
times, after any crash - changes nothing more:

* a reactor's commands get ids derived from the event (:func:`reaction_command_id`), so the
  :class:`~eventsourcing_cqrs.bus.CommandBus` recognises a redelivered command and applies
  nothing twice;
* a process manager's decisions are appended to its instance's stream with ids derived from
  the event and the event's position in their metadata (``triggerPosition``), so a redelivered
  event is recognised (it is at or before the last position the instance decided on) and
  decided nothing again; its recorded commands are dispatched until their outcome is recorded
  (the stream is the outbox), and each dispatch has a derived id, so it applies once.

The process engine keeps the instances it replayed (the last ``cache_size``, 1,000 by default) up to
date with what it appends, so that an instance's next event does not read its stream again;
whatever goes wrong while an instance is being handled drops it from the cache, and a runner
that (re)acquires its lease calls :meth:`ProcessEngine.forget`. Only the lease holder writes an
instance's stream, and every append names the version it expects, so a stale copy can only make
an append fail with a conflict (retried on the stream's state), never write twice.

Nothing is dispatched for an event whose handler raises, whose payload cannot be decoded, or
one of whose commands has no handler on the bus: the error propagates to the runner, which
retries the event and then stops or parks it.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from eventsourcing_cqrs.bus import CommandBus, CommandResult, correlation_of
from eventsourcing_cqrs.errors import DomainError, HandlerNotFoundError, StreamNotFoundError
from eventsourcing_cqrs.event_store._reading import read_after
from eventsourcing_cqrs.event_store.port import (
    CAUSATION_ID_KEY,
    EventFilter,
    EventStore,
    NewEvent,
    RecordedEvent,
    StreamState,
)
from eventsourcing_cqrs.messages import Command, DomainEvent, Metadata
from eventsourcing_cqrs.reactions._clock import Clock, check_now, system_clock
from eventsourcing_cqrs.reactions.process import (
    Process,
    ProcessCommandIssued,
    ProcessCommandRefused,
    ProcessCommandSucceeded,
    ProcessDeadlineCancelled,
    ProcessDeadlineFired,
    ProcessDeadlineScheduled,
    ProcessManager,
)
from eventsourcing_cqrs.reactions.reactor import Reactor, reaction_command_id

__all__ = [
    "TRIGGER_POSITION_KEY",
    "DeadlineChange",
    "FireOutcome",
    "ProcessEngine",
    "ReactionEngine",
    "ReactorEngine",
    "engine_for",
]

logger = structlog.get_logger(__name__)

#: The metadata key of a process's decisions that holds the commit position of their trigger.
TRIGGER_POSITION_KEY = "triggerPosition"

_DEADLINE_TYPES = frozenset(
    {
        ProcessDeadlineScheduled.event_type,
        ProcessDeadlineCancelled.event_type,
        ProcessDeadlineFired.event_type,
    }
)


def _trigger_of(recorded: RecordedEvent) -> tuple[int | None, str | None]:
    """The position and id of the event a process decision was taken on (``None`` if it is not one)."""
    try:
        metadata = json.loads(recorded.metadata) if recorded.metadata else {}
    except ValueError:
        return None, None
    if not isinstance(metadata, dict):
        return None, None
    position, cause = metadata.get(TRIGGER_POSITION_KEY), metadata.get(CAUSATION_ID_KEY)
    if not isinstance(position, int) or isinstance(position, bool):
        return None, None
    return position, cause if isinstance(cause, str) else None


class FireOutcome(enum.Enum):
    """What :meth:`ReactionEngine.fire` found."""

    #: Recorded now (``ProcessDeadlineFired`` appended).
    FIRED = "fired"
    #: Still pending, not due yet by the engine's clock.
    NOT_DUE = "not_due"
    #: Not pending any more (fired, cancelled, finished, or its stream is gone).
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class DeadlineChange:
    """How an event changes the index of pending deadlines: ``due`` set means put, else delete."""

    deadline_id: str
    stream: str
    deadline: str
    due: float | None


class ReactionEngine:
    """What the runner drives: one of :class:`ReactorEngine` or :class:`ProcessEngine`."""

    #: ``"reactor"`` or ``"process manager"``, for messages.
    kind: str
    name: str
    has_deadlines: bool = False
    #: ``"stop"`` or ``"park"``: the reactor's or process manager's ``failure_policy``.
    failure_policy: str = "stop"
    #: How many segments the runner splits it into (see :meth:`sequencing_key`).
    segments: int = 1

    def sequencing_key(self, recorded: RecordedEvent) -> str:
        """The key whose events are reacted to in order (and held back behind a parked one).

        The event's stream for a reactor; for a process manager, the stream of the instance
        the event routes to.
        """
        return recorded.stream

    def event_filter(self) -> EventFilter:
        """The subscription's server-side filter."""
        raise NotImplementedError

    @property
    def event_types(self) -> tuple[str, ...]:
        """The event types its subscription reads."""
        raise NotImplementedError

    def react(self, recorded: RecordedEvent, *, out_of_order: bool = False) -> int:
        """Carry out the reaction to ``recorded``, effectively once; how many commands were dispatched.

        ``out_of_order`` says that later events may have been reacted to already (a parked
        event being retried): a process instance then checks that this very event was not
        decided on, rather than relying on the order of ``$all``.
        """
        raise NotImplementedError

    def deadline_change(self, recorded: RecordedEvent) -> DeadlineChange | None:
        """How ``recorded`` changes the pending deadlines (``None``: it does not)."""
        return None

    def fire(self, stream: str, deadline_id: str) -> FireOutcome:
        """Record that a due deadline fired, once (see :class:`FireOutcome`)."""
        return FireOutcome.GONE

    def unsettled_streams(self, up_to: int) -> list[str]:
        """Streams whose recorded commands (up to position ``up_to``) have no outcome yet."""
        return []

    def settle(self, stream: str) -> int:
        """Dispatch what ``stream``'s instance recorded and did not settle; how many commands."""
        return 0

    def now(self) -> datetime:
        """The engine's clock."""
        raise NotImplementedError

    def forget(self) -> None:
        """Drop whatever it keeps between events (the runner calls it when it takes the lease)."""


class ReactorEngine(ReactionEngine):
    """Dispatches a :class:`Reactor`'s commands with ids derived from the triggering event."""

    kind = "reactor"

    def __init__(self, reactor: Reactor, bus: CommandBus, *, clock: Clock = system_clock) -> None:
        self._reactor = reactor
        self.name = reactor.name
        self.failure_policy = reactor.failure_policy
        self.segments = reactor.segments
        self._bus = bus
        self._clock = clock
        self._actor = f"reactor:{reactor.name}"
        self._log = logger.bind(reactor=reactor.name)

    def event_filter(self) -> EventFilter:
        return self._reactor.event_filter()

    @property
    def event_types(self) -> tuple[str, ...]:
        return self._reactor.event_types

    def now(self) -> datetime:
        return check_now(self._clock())

    def react(self, recorded: RecordedEvent, *, out_of_order: bool = False) -> int:
        del out_of_order  # a reactor has no state: every delivery is decided the same way
        commands = self._reactor.decide(recorded, self.now())
        if not commands:
            return 0
        commands = [
            command.model_copy(update={"command_id": reaction_command_id(recorded.id, self.name, index)})
            for index, command in enumerate(commands)
        ]
        _check_handled(self._bus, commands)
        for command in commands:
            try:
                self._bus.dispatch(command, caused_by=recorded, actor=self._actor)
            except DomainError as exc:
                self._log.warning(
                    "reaction.command_refused",
                    command_type=type(command).__name__,
                    command_id=str(command.command_id),
                    stream=recorded.stream,
                    revision=recorded.revision,
                    error=type(exc).__name__,
                    reason=str(exc),
                )
        return len(commands)


def _check_handled(bus: CommandBus, commands: list[Command]) -> None:
    for command in commands:
        if not bus.handles(type(command)):
            raise HandlerNotFoundError(type(command).__name__, "command")


@dataclass
class _Loaded:
    """An instance replayed from its stream, with what the engine needs beside its state."""

    instance: Process[Any]
    #: The last trigger position its decisions name (``None``: it decided nothing yet).
    decided_upto: int | None = None
    #: The ids of the events it decided on (their decisions' ``$causationId``).
    triggers: set[str] = field(default_factory=set)
    #: The stored decision of each command and deadline, the cause of what follows from it.
    issued: dict[uuid.UUID, RecordedEvent] = field(default_factory=dict)
    scheduled: dict[uuid.UUID, RecordedEvent] = field(default_factory=dict)


class ProcessEngine(ReactionEngine):
    """Runs a :class:`ProcessManager`: replay the instance, decide once, record, dispatch the outbox."""

    kind = "process manager"
    has_deadlines = True

    def __init__(
        self,
        manager: ProcessManager[Any],
        store: EventStore,
        bus: CommandBus,
        *,
        clock: Clock = system_clock,
        cache_size: int = 1000,
    ) -> None:
        self._manager = manager
        self.name = manager.name
        self.failure_policy = manager.failure_policy
        self.segments = manager.segments
        self._store = store
        self._bus = bus
        self._clock = clock
        self._registry = manager.event_registry()
        self._actor = f"process:{manager.name}"
        self._log = logger.bind(process_manager=manager.name)
        self._cache: OrderedDict[str, _Loaded] = OrderedDict()
        self._cache_size = cache_size

    def forget(self) -> None:
        self._cache.clear()

    @contextmanager
    def _instance(self, stream: str, key: str, *, create: bool) -> Iterator[_Loaded | None]:
        """The instance of ``stream``: cached, else replayed, else (``create``) a new one.

        It is kept for the next event once stored, unless the block raised (it may be
        half-decided, or stale): then the next event replays it.
        """
        loaded = self._cache.pop(stream, None) or self._load(stream, key)
        if loaded is None and create:
            loaded = _Loaded(self._manager.new_instance(key))
        yield loaded
        if loaded is not None and loaded.instance.version >= 0 and self._cache_size:
            self._cache[stream] = loaded
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def sequencing_key(self, recorded: RecordedEvent) -> str:
        route = self._manager.route(recorded)
        return recorded.stream if route is None else self._manager.stream_of(route.key)

    @property
    def manager(self) -> ProcessManager[Any]:
        """The process manager it runs."""
        return self._manager

    def event_filter(self) -> EventFilter:
        return self._manager.event_filter()

    @property
    def event_types(self) -> tuple[str, ...]:
        return self._manager.event_types

    def now(self) -> datetime:
        return check_now(self._clock())

    # -- reading an instance ------------------------------------------------------------------

    def load(self, key: str) -> Process[Any] | None:
        """The instance with ``key`` as stored (read now, not from the cache), or ``None``."""
        loaded = self._load(self._manager.stream_of(key), key)
        return None if loaded is None else loaded.instance

    def _load(self, stream: str, key: str) -> _Loaded | None:
        try:
            records = list(self._store.read_stream(stream))
        except StreamNotFoundError:
            return None
        loaded = _Loaded(self._manager.new_instance(key))
        instance = loaded.instance
        decode = self._registry.decode
        for recorded in records:
            event = decode(recorded)
            instance._replayed(event, recorded.revision)
            if isinstance(event, ProcessCommandIssued):
                loaded.issued[event.command_id] = recorded
            elif isinstance(event, ProcessDeadlineScheduled):
                loaded.scheduled[event.deadline_id] = recorded
            position, trigger = _trigger_of(recorded)
            if position is not None:
                if loaded.decided_upto is None or position > loaded.decided_upto:
                    loaded.decided_upto = position
                if trigger is not None:
                    loaded.triggers.add(trigger)
        return loaded

    # -- reacting -----------------------------------------------------------------------------

    def react(self, recorded: RecordedEvent, *, out_of_order: bool = False) -> int:
        route = self._manager.route(recorded)
        if route is None:
            return 0
        stream = self._manager.stream_of(route.key)
        with self._instance(stream, route.key, create=route.starts) as loaded:
            if loaded is None:
                self._log.debug(
                    "process.event_ignored", stream=stream, event_type=recorded.type, reason="no instance"
                )
                return 0
            if out_of_order:
                decided = str(recorded.id) in loaded.triggers
            else:
                # In $all order, an event at or before the last one decided on was seen (and
                # either decided on, or ignored by the same state as now).
                decided = loaded.decided_upto is not None and recorded.position <= loaded.decided_upto
            if not decided and not loaded.instance.finished:
                self._decide(loaded, stream, route, recorded)
            return self._flush(loaded, stream)

    def _decide(self, loaded: _Loaded, stream: str, route: Any, trigger: RecordedEvent) -> None:
        instance = loaded.instance
        now = self.now()
        self._manager.decide(instance, route, trigger_id=trigger.id, now=now)
        pending = instance.pending_events
        if not pending:
            return
        issued = [event for event in pending if isinstance(event, ProcessCommandIssued)]
        for decision in issued:
            if not self._bus.handles(self._manager.command_class(decision)):
                raise HandlerNotFoundError(decision.command_type, "command")
        metadata = Metadata(
            correlation_id=correlation_of(trigger),
            causation_id=str(trigger.id),
            actor=self._actor,
            **{TRIGGER_POSITION_KEY: trigger.position},
        )
        new = [
            self._registry.encode(
                event, metadata, event_id=uuid.uuid5(trigger.id, f"{self.name}/event/{index}")
            )
            for index, event in enumerate(pending)
        ]
        result = self._append(stream, instance.version, new)
        instance._saved(result)
        first = result - len(new) + 1
        for index, (event, stored) in enumerate(zip(pending, new, strict=True)):
            if isinstance(event, ProcessCommandIssued):
                loaded.issued[event.command_id] = _as_recorded(stored, stream, first + index, now)
            elif isinstance(event, ProcessDeadlineScheduled):
                loaded.scheduled[event.deadline_id] = _as_recorded(stored, stream, first + index, now)
        if loaded.decided_upto is None or trigger.position > loaded.decided_upto:
            loaded.decided_upto = trigger.position
        loaded.triggers.add(str(trigger.id))
        self._log.info(
            "process.decided",
            stream=stream,
            trigger_type=trigger.type,
            trigger_stream=trigger.stream,
            trigger_revision=trigger.revision,
            events=len(new),
            commands=len(issued),
        )

    def _caused_by(self, cause: RecordedEvent) -> Metadata:
        """The metadata of what follows from a stored decision: its correlation, it as cause."""
        return Metadata(correlation_id=correlation_of(cause), causation_id=str(cause.id), actor=self._actor)

    def _append(self, stream: str, version: int, events: list[NewEvent]) -> int:
        expected = version if version >= 0 else StreamState.NO_STREAM
        return self._store.append(stream, events, expected_version=expected).revision

    def _flush(self, loaded: _Loaded, stream: str) -> int:
        """Dispatch every recorded command whose outcome is not recorded yet; record the outcomes."""
        instance = loaded.instance
        unsettled = instance.unsettled_commands
        if not unsettled:
            return 0
        commands = [self._manager.rebuild_command(issued) for issued in unsettled]
        _check_handled(self._bus, commands)
        outcomes: list[tuple[ProcessCommandIssued, DomainEvent]] = []
        try:
            for issued, command in zip(unsettled, commands, strict=True):
                outcomes.append(
                    (issued, self._dispatch(issued, command, loaded.issued[issued.command_id], stream))
                )
        finally:
            # What was dispatched is recorded even when a later dispatch failed: a retry then
            # re-dispatches only the rest.
            if outcomes:
                self._record_outcomes(loaded, stream, outcomes)
        return len(commands)

    def _dispatch(
        self, issued: ProcessCommandIssued, command: Command, cause: RecordedEvent, stream: str
    ) -> DomainEvent:
        try:
            result: CommandResult = self._bus.dispatch(command, caused_by=cause, actor=self._actor)
        except DomainError as exc:
            self._log.info(
                "process.command_refused",
                stream=stream,
                command_type=issued.command_type,
                command_id=str(issued.command_id),
                error=type(exc).__name__,
                reason=str(exc),
            )
            return ProcessCommandRefused(
                command_id=issued.command_id,
                command_type=issued.command_type,
                error_type=type(exc).__name__,
                reason=str(exc),
            )
        return ProcessCommandSucceeded(
            command_id=issued.command_id,
            command_type=issued.command_type,
            stream=result.stream,
            position=result.position,
            duplicate=result.duplicate,
        )

    def _record_outcomes(
        self, loaded: _Loaded, stream: str, outcomes: list[tuple[ProcessCommandIssued, DomainEvent]]
    ) -> None:
        instance = loaded.instance
        new = []
        for issued, outcome in outcomes:
            cause = loaded.issued[issued.command_id]
            metadata = self._caused_by(cause)
            new.append(
                self._registry.encode(outcome, metadata, event_id=uuid.uuid5(issued.command_id, "outcome"))
            )
        revision = self._append(stream, instance.version, new)
        for _, outcome in outcomes:
            instance.when(outcome)
        instance._saved(revision)

    def unsettled_streams(self, up_to: int) -> list[str]:
        # Only the bookkeeping of commands, filtered by the store: what a start from now needs.
        which = EventFilter.for_event_types(
            [
                ProcessCommandIssued.event_type,
                ProcessCommandSucceeded.event_type,
                ProcessCommandRefused.event_type,
            ]
        )
        waiting: dict[str, set[uuid.UUID]] = {}
        for recorded in read_after(self._store, None, filter=which):
            if recorded.position > up_to:
                break
            if self._manager.owns(recorded) is None:
                continue
            event = self._registry.decode(recorded)
            ids = waiting.setdefault(recorded.stream, set())
            if isinstance(event, ProcessCommandIssued):
                ids.add(event.command_id)
            elif isinstance(event, ProcessCommandSucceeded | ProcessCommandRefused):
                ids.discard(event.command_id)
        return [stream for stream, ids in waiting.items() if ids]

    def settle(self, stream: str) -> int:
        key = self._manager.owns_stream(stream)
        if key is None:
            return 0
        with self._instance(stream, key, create=False) as loaded:
            return 0 if loaded is None else self._flush(loaded, stream)

    # -- deadlines ----------------------------------------------------------------------------

    def deadline_change(self, recorded: RecordedEvent) -> DeadlineChange | None:
        if recorded.type not in _DEADLINE_TYPES or self._manager.owns(recorded) is None:
            return None
        event = self._registry.decode(recorded)
        if isinstance(event, ProcessDeadlineScheduled):
            return DeadlineChange(
                str(event.deadline_id), recorded.stream, event.deadline, event.due_at.timestamp()
            )
        assert isinstance(event, ProcessDeadlineCancelled | ProcessDeadlineFired)
        return DeadlineChange(str(event.deadline_id), recorded.stream, event.deadline, None)

    def fire(self, stream: str, deadline_id: str) -> FireOutcome:
        key = self._manager.owns_stream(stream)
        if key is None:
            return FireOutcome.GONE
        with self._instance(stream, key, create=False) as loaded:
            return FireOutcome.GONE if loaded is None else self._fire(loaded, stream, deadline_id)

    def _fire(self, loaded: _Loaded, stream: str, deadline_id: str) -> FireOutcome:
        instance = loaded.instance
        wanted = uuid.UUID(deadline_id)
        scheduled = next((s for s in instance._deadlines.values() if s.deadline_id == wanted), None)
        if scheduled is None or instance.finished:
            return FireOutcome.GONE
        if scheduled.due_at > self.now():
            return FireOutcome.NOT_DUE
        cause = loaded.scheduled[wanted]
        fired = ProcessDeadlineFired(deadline_id=wanted, deadline=scheduled.deadline, due_at=scheduled.due_at)
        metadata = self._caused_by(cause)
        event = self._registry.encode(fired, metadata, event_id=uuid.uuid5(wanted, "fired"))
        revision = self._append(stream, instance.version, [event])
        instance.when(fired)
        instance._saved(revision)
        self._log.info("process.deadline_fired", stream=stream, deadline=scheduled.deadline)
        return FireOutcome.FIRED


def _as_recorded(event: NewEvent, stream: str, revision: int, now: datetime) -> RecordedEvent:
    # Only its id and metadata matter: it is the cause given to the bus.
    return RecordedEvent(event.id, event.type, event.data, event.metadata, stream, revision, 0, now)


def engine_for(
    reactor: Reactor | ProcessManager[Any],
    *,
    store: EventStore,
    bus: CommandBus,
    clock: Clock = system_clock,
) -> ReactionEngine:
    """The engine that runs ``reactor`` (a :class:`Reactor` or a :class:`ProcessManager`)."""
    if isinstance(reactor, Reactor):
        return ReactorEngine(reactor, bus, clock=clock)
    if isinstance(reactor, ProcessManager):
        return ProcessEngine(reactor, store, bus, clock=clock)
    raise TypeError(f"{reactor!r} is neither a Reactor nor a ProcessManager")
