"""The :class:`Reactor` base: a stateless policy, "when this happened, do that".

A reactor maps event types to handlers that return the commands to dispatch::

    class FlagLargeDeposits(Reactor):
        name = "flag_large_deposits"

        def __init__(self) -> None:
            super().__init__()
            self.on(MoneyDeposited, self.deposited)

        def deposited(self, event: MoneyDeposited, context: ReactionContext) -> list[Command]:
            if event.amount < 10_000:
                return []
            return [FlagAccount(account_id=event.account_id, reason="large deposit")]

A handler returns a command, a sequence of commands, or ``None``, and must be **deterministic**:
a redelivered event is decided again, and its commands are recognised by their ids (the event's
id, the reactor's name, the command's index), so the same event must give the same commands in
the same order. Decide from the event and ``context.recorded`` / ``context.metadata``; keep
``context.now`` for what does not change the commands (a log line), or write a process manager,
which records its decisions once. It never dispatches
itself: the runner (:class:`projections.ReactorRunner`) dispatches what it returns through the
:class:`~eventsourcing_cqrs.bus.CommandBus`, with

* a **command id derived from the triggering event** (:func:`reaction_command_id`: the event's
  id, the reactor's name and the command's index), so a redelivered event - after a crash, a
  lost checkpoint, a restart from position 0 - dispatches commands the bus recognises and
  applies nothing twice;
* the triggering event as **cause**: the command's events carry its correlation id, and its id
  as their causation id.

Nothing is dispatched for an event until every command it produced has a handler on the bus
(:class:`~eventsourcing_cqrs.errors.HandlerNotFoundError` otherwise), so a handler that raises,
an event the registry cannot decode and a command nobody handles all leave that event
undispatched until it is retried. A command the domain refuses (a
:class:`~eventsourcing_cqrs.errors.DomainError`) is the domain's answer, not a failure: it is
logged (``reaction.command_refused``) and the reactor goes on; it is not recorded, so a
redelivery tries that command again (and it may succeed then). When a refusal needs an answer,
or must stand, write a :class:`~eventsourcing_cqrs.reactions.process.ProcessManager`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import ClassVar, TypeVar

from eventsourcing_cqrs.errors import CQRSError
from eventsourcing_cqrs.event_store.port import EventFilter, RecordedEvent
from eventsourcing_cqrs.messages import Command, DomainEvent, Metadata
from eventsourcing_cqrs.serialization import EventRegistry

__all__ = [
    "Reaction",
    "ReactionContext",
    "ReactionDefinitionError",
    "Reactor",
    "reaction_command_id",
    "validate_reactor_name",
    "validate_segments",
]

E = TypeVar("E", bound=DomainEvent)

#: What a reaction handler may return.
Reaction = Command | Iterable[Command] | None

_NAMESPACE = uuid.UUID("6f0b7a4e-2c1d-5e8f-9a3b-4c5d6e7f8a9b")


def reaction_command_id(trigger_id: uuid.UUID, reactor: str, index: int) -> uuid.UUID:
    """The id of the ``index``-th command (from 0) that reactor ``reactor`` issues for event ``trigger_id``.

    ``uuid5(trigger_id, "{reactor}/{index}")``: the same event always gives the same ids, so the
    bus recognises a redelivered reaction.
    """
    return uuid.uuid5(trigger_id, f"{reactor}/{index}")


class ReactionDefinitionError(CQRSError, TypeError):
    """A reactor or process manager is defined wrongly (a missing name, a duplicate handler...)."""

    def __init__(self, reactor: str, reason: str) -> None:
        self.reactor = reactor
        self.reason = reason
        super().__init__(f"Reactor {reactor!r} is not valid: {reason}.")


def validate_reactor_name(name: object, label: str) -> str:
    """``name`` if it is a valid reactor name (as projection names: ``[a-z][a-z0-9_]*``, at most 30)."""
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= 30
        or not name[0].isascii()
        or not name[0].islower()
        or not all(c.isascii() and (c.islower() or c.isdigit() or c == "_") for c in name)
    ):
        raise ReactionDefinitionError(
            label,
            "name must be lowercase letters, digits and '_', starting with a letter, "
            f"at most 30 characters, not {name!r}",
        )
    return name


def validate_segments(segments: object, reactor: str) -> int:
    """``segments`` if it is a whole number of at least 1 (the runner checks the upper bound)."""
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise ReactionDefinitionError(
            reactor, f"segments must be a whole number of at least 1, not {segments!r}"
        )
    return segments


def validate_failure_policy(policy: object, reactor: str) -> str:
    """``policy`` if it is ``"stop"`` or ``"park"``."""
    if policy not in ("stop", "park"):
        raise ReactionDefinitionError(reactor, f"failure_policy is 'stop' or 'park', not {policy!r}")
    return str(policy)


class ReactionContext:
    """What a handler gets beside the event: where it was recorded, its metadata, and the time."""

    __slots__ = ("_metadata", "_registry", "now", "recorded")

    def __init__(self, recorded: RecordedEvent, registry: EventRegistry, now: datetime) -> None:
        #: The triggering event as stored: stream, revision, position, recorded time.
        self.recorded = recorded
        #: The runner's clock when the event is handled (timezone-aware, UTC): not for deciding
        #: which commands to return, which must be the same on every delivery.
        self.now = now
        self._registry = registry
        self._metadata: Metadata | None = None

    @property
    def metadata(self) -> Metadata:
        """The triggering event's metadata (correlation and causation ids, actor, ...)."""
        if self._metadata is None:
            self._metadata = self._registry.decode_metadata(self.recorded)
        return self._metadata


_Handler = Callable[[DomainEvent, ReactionContext], Reaction]


def commands_of(reactor: str, returned: object) -> list[Command]:
    """What a handler returned, as a list of commands; a clear error for anything else."""
    if returned is None:
        return []
    if isinstance(returned, Command):
        return [returned]
    if isinstance(returned, str | bytes) or not isinstance(returned, Iterable):
        raise ReactionDefinitionError(
            reactor, f"a handler returns a Command, commands or None, not {type(returned).__name__}"
        )
    commands = list(returned)
    for command in commands:
        if not isinstance(command, Command):
            raise ReactionDefinitionError(
                reactor, f"a handler returned {type(command).__name__} among its commands"
            )
    return commands


class Reactor:
    """Base class of stateless reactors: set ``name``; register handlers in ``__init__`` with :meth:`on`.

    ``name`` identifies the reactor's checkpoint, lease and parked events, and goes into the
    ids of the commands it issues: never change it. ``registry`` decodes its events (by default
    one made of the classes passed to :meth:`on`). ``failure_policy`` is what the runner does
    with an event whose reaction still fails after its retries: ``"stop"`` (the default: the
    runner stops, the checkpoint stays before the event) or ``"park"`` (set it aside, go on;
    the later events of its stream wait behind it). ``segments`` splits it into that many
    segments by the triggering event's stream, run by as many worker processes as share its
    read model store (see :class:`projections.ProjectionRunner`).
    """

    name: ClassVar[str]
    registry: ClassVar[EventRegistry | None] = None
    failure_policy: ClassVar[str] = "stop"
    segments: ClassVar[int] = 1

    def __init__(self) -> None:
        label = type(self).__qualname__
        validate_reactor_name(getattr(type(self), "name", None), label)
        validate_failure_policy(type(self).failure_policy, type(self).name)
        validate_segments(type(self).segments, type(self).name)
        self._handlers: dict[str, tuple[type[DomainEvent], _Handler]] = {}
        self._decoding = EventRegistry() if type(self).registry is None else None

    def __repr__(self) -> str:
        return f"<reactor {self.name!r}>"

    def on(self, event_class: type[E], handler: Callable[[E, ReactionContext], Reaction]) -> None:
        """Call ``handler(event, context)`` for every event of ``event_class``; dispatch what it returns."""
        if not hasattr(self, "_handlers"):
            raise ReactionDefinitionError(
                type(self).__qualname__, "call super().__init__() before registering handlers"
            )
        event_type = self._register(event_class)
        if event_type in self._handlers:
            raise ReactionDefinitionError(self.name, f"two handlers for event type {event_type!r}")
        self._handlers[event_type] = (event_class, handler)  # type: ignore[assignment]

    def _register(self, event_class: type[DomainEvent]) -> str:
        if not (isinstance(event_class, type) and issubclass(event_class, DomainEvent)):
            raise ReactionDefinitionError(self.name, f"{event_class!r} is not a DomainEvent class")
        event_type = getattr(event_class, "event_type", None)
        if not isinstance(event_type, str):
            raise ReactionDefinitionError(self.name, f"{event_class.__name__} has no event_type")
        if self._decoding is not None:
            if event_type not in self._decoding:
                self._decoding.register(event_class)
        elif event_type not in self.event_registry():
            raise ReactionDefinitionError(
                self.name, f"its registry cannot decode {event_type!r}; register {event_class.__name__} there"
            )
        return event_type

    @property
    def event_types(self) -> tuple[str, ...]:
        """The event types this reactor handles, sorted (its subscription's server-side filter)."""
        if not self._handlers:
            raise ReactionDefinitionError(self.name, "register at least one handler in __init__")
        return tuple(sorted(self._handlers))

    def event_filter(self) -> EventFilter:
        """The server-side filter of its subscription: exactly the handled event types."""
        return EventFilter.for_event_types(self.event_types)

    def event_registry(self) -> EventRegistry:
        """The registry that decodes this reactor's events."""
        registry = type(self).registry
        if registry is not None:
            return registry
        assert self._decoding is not None
        return self._decoding

    def decide(self, recorded: RecordedEvent, now: datetime) -> list[Command]:
        """The commands the handler of ``recorded``'s type returns (none for an unhandled type).

        Decoding errors (an unknown type, a corrupt payload) and the handler's own errors
        propagate: nothing is dispatched for the event.
        """
        found = self._handlers.get(recorded.type)
        if found is None:
            return []
        event_class, handler = found
        registry = self.event_registry()
        event = registry.decode(recorded)
        if not isinstance(event, event_class):
            raise ReactionDefinitionError(
                self.name,
                f"the registry decodes {recorded.type!r} as {type(event).__name__}, "
                f"but the handler expects {event_class.__name__}",
            )
        return commands_of(self.name, handler(event, ReactionContext(recorded, registry, now)))

    def describe(self) -> dict[str, object]:
        """Name, kind and event types, for logs and the CLI."""
        return {"name": self.name, "kind": "reactor", "event_types": list(self.event_types)}
