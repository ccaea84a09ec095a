"""The :class:`Projection` base: a stable name, a version, tables, and handlers per event type.

A projection is plain code that mypy can follow: handlers are registered in ``__init__`` with
:meth:`Projection.on`, whose signature ties the event class to the handler's first parameter::

    class AccountList(Projection):
        name = "account_list"
        version = 1
        tables = (TableSpec("accounts", indexes=("owner",)),)

        def __init__(self) -> None:
            super().__init__()
            self.on(AccountOpened, self.opened)

        def opened(self, event: AccountOpened, context: EventContext) -> None:
            context.table("accounts").put(event.account_id, {"owner": event.owner})

The event types it handles become the subscription's server-side filter, so the runner never
reads events it would ignore. ``name`` identifies the read model in the store: never change
it. Bump ``version`` whenever the handlers' logic changes; the runner then rebuilds the read
model from the start of ``$all`` beside the live one (see :mod:`projections.rebuild`).

Handlers may only write through the :class:`~projections.read_model_store.port.ReadModelWriter` they are
given, so that their writes commit with the checkpoint, and must be deterministic: a rebuild
replays them over the same events.

**Segments and order.** Events are applied in commit order per *sequencing key*
(:meth:`Projection.sequencing_key`, the stream name by default). A projection with
``segments = N`` (N > 1) is split into N segments by a hash of that key
(:func:`segment_of`): each segment has its own checkpoint, lease and parked events, and any
number of runner processes share the segments out (see :class:`~projections.runner.ProjectionRunner`).
Events of one key always land in one segment, so their order holds across workers, takeovers
and restarts; events of different keys may be applied in any order relative to each other.
A segmented projection's handlers must therefore only write documents that belong to the
event's key (or combine with writes of other keys commutatively): two segments write at the
same time, and on PostgreSQL a read-modify-write of a document shared between keys would
lose one of the updates. Changing ``segments`` rebuilds the read model, as a version bump does.
"""

from __future__ import annotations

import enum
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from eventsourcing_cqrs.event_store.port import EventFilter, RecordedEvent, validate_count, validate_seconds
from eventsourcing_cqrs.messages import DomainEvent, Metadata
from eventsourcing_cqrs.serialization import EventRegistry
from projections.errors import ProjectionDefinitionError
from projections.read_model_store._names import validate_projection_name
from projections.read_model_store.port import MAX_SEGMENTS, ReadModelWriter, Table, TableSpec

__all__ = ["Backoff", "EventContext", "FailurePolicy", "Projection", "key_function", "segment_of"]

E = TypeVar("E", bound=DomainEvent)


class FailurePolicy(enum.Enum):
    """What the runner does with an event that still fails after its retries."""

    #: Stop the runner with :class:`~projections.errors.ProjectionFailedError`; the checkpoint
    #: stays before the event, so a restart after a fix retries it. The default: nothing is lost.
    STOP = "stop"
    #: Set the event aside (it can be listed and retried) and go on with the next one.
    PARK = "park"


@dataclass(frozen=True, slots=True)
class Backoff:
    """How a failing event is retried: ``max_attempts`` in all, waiting ``base_delay`` seconds
    after the first failure and doubling up to ``max_delay``.

    Raises :class:`~eventsourcing_cqrs.errors.InvalidInputError` (a ``ValueError``) unless
    ``max_attempts`` is a whole number of at least 1 and both delays are seconds, zero or more.
    """

    max_attempts: int = 3
    base_delay: float = 0.1
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        validate_count(self.max_attempts, "Backoff max_attempts", "attempts")
        validate_seconds(self.base_delay, "Backoff base_delay", zero_allowed=True)
        validate_seconds(self.max_delay, "Backoff max_delay", zero_allowed=True)

    def delay(self, attempt: int) -> float:
        """The pause after failed attempt number ``attempt`` (from 1), in seconds."""
        return float(min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


class EventContext:
    """What a handler gets beside the event: where it was recorded, and the unit of work."""

    __slots__ = ("_metadata", "_registry", "recorded", "uow")

    def __init__(self, recorded: RecordedEvent, uow: ReadModelWriter, registry: EventRegistry) -> None:
        #: The event as stored: stream, revision, position, recorded time, raw payload.
        self.recorded = recorded
        #: The unit of work that commits with the checkpoint.
        self.uow = uow
        self._registry = registry
        self._metadata: Metadata | None = None

    def table(self, name: str) -> Table:
        """One of the projection's declared tables (shorthand for ``uow.table(name)``)."""
        return self.uow.table(name)

    @property
    def metadata(self) -> Metadata:
        """The event's metadata (correlation and causation ids, actor, ...), decoded on first use."""
        if self._metadata is None:
            self._metadata = self._registry.decode_metadata(self.recorded)
        return self._metadata


_Dispatch = Callable[[RecordedEvent, EventContext], None]


def segment_of(key: str, segments: int) -> int:
    """The segment (``0 .. segments - 1``) that events of sequencing ``key`` belong to.

    A CRC-32 of the key's UTF-8 bytes modulo ``segments``: the same in every process and
    release (Python's ``hash`` is salted per process, so it would not do).
    """
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % segments


def key_function(projection: Projection) -> Callable[[RecordedEvent], str]:
    """``projection.sequencing_key`` as the runner and status use it: the stream when it raises.

    An event whose key cannot be computed (it does not decode, say) must still land in exactly
    one segment, where applying it fails and goes through the retry, stop or park path that
    names it; every segment computes the same fallback, so exactly one of them takes it.
    """
    key_of = projection.sequencing_key
    if type(projection).sequencing_key is Projection.sequencing_key:
        return key_of  # the stream: nothing to fall back from

    def key(recorded: RecordedEvent) -> str:
        try:
            return key_of(recorded)
        except Exception:  # noqa: BLE001 - the handler reports it, with its stream and revision
            return recorded.stream

    return key


class Projection:
    """Base class of projections: set ``name``, ``version``, ``tables``; register handlers in ``__init__``.

    Class attributes:

    ``name``
        Stable identifier of the read model (lowercase, ``[a-z][a-z0-9_]*``, at most 30 characters).
    ``version``
        Bump it when the handlers change; the runner rebuilds the read model beside the live one.
    ``tables``
        The document tables the handlers write (:class:`~projections.read_model_store.port.TableSpec`).
    ``failure_policy``
        :attr:`FailurePolicy.STOP` (default) or :attr:`FailurePolicy.PARK`.
    ``backoff``
        How a failing event is retried before the policy applies.
    ``segments``
        How many segments share the work out (1, the default: one runner at a time); see the
        module docstring. At most :data:`~projections.read_model_store.port.MAX_SEGMENTS`.
    ``registry``
        The :class:`~eventsourcing_cqrs.serialization.EventRegistry` that decodes events (with
        its upcasters); by default one made of the classes passed to :meth:`on`.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    tables: ClassVar[tuple[TableSpec, ...]] = ()
    failure_policy: ClassVar[FailurePolicy] = FailurePolicy.STOP
    backoff: ClassVar[Backoff] = Backoff()
    registry: ClassVar[EventRegistry | None] = None
    segments: ClassVar[int] = 1

    def __init__(self) -> None:
        label = type(self).__qualname__
        name = getattr(type(self), "name", None)
        if name is None:
            raise ProjectionDefinitionError(label, "set the class attribute name")
        validate_projection_name(name)
        version = type(self).version
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ProjectionDefinitionError(name, f"version must be a positive integer, not {version!r}")
        if not isinstance(type(self).tables, tuple) or not all(
            isinstance(spec, TableSpec) for spec in type(self).tables
        ):
            raise ProjectionDefinitionError(name, "tables must be a tuple of TableSpec")
        segments = type(self).segments
        if isinstance(segments, bool) or not isinstance(segments, int) or not 1 <= segments <= MAX_SEGMENTS:
            raise ProjectionDefinitionError(
                name, f"segments must be a whole number from 1 to {MAX_SEGMENTS}, not {segments!r}"
            )
        seen = [spec.name for spec in type(self).tables]
        if len(set(seen)) != len(seen):
            raise ProjectionDefinitionError(name, f"tables are declared twice: {seen}")
        self._dispatch: dict[str, _Dispatch] = {}
        self._decoding = EventRegistry() if type(self).registry is None else None

    def __repr__(self) -> str:
        return f"<projection {self.name!r} v{self.version}>"

    # -- registration ---------------------------------------------------------------------

    def on(self, event_class: type[E], handler: Callable[[E, EventContext], None]) -> None:
        """Call ``handler(event, context)`` for every event of ``event_class`` (decoded and upcast)."""
        if not (isinstance(event_class, type) and issubclass(event_class, DomainEvent)):
            raise ProjectionDefinitionError(self.name, f"{event_class!r} is not a DomainEvent class")
        event_type = getattr(event_class, "event_type", None)
        if not isinstance(event_type, str):
            raise ProjectionDefinitionError(self.name, f"{event_class.__name__} has no event_type")
        if self._decoding is not None and event_type not in self._decoding:
            self._decoding.register(event_class)
        elif self._decoding is None and event_type not in self.event_registry():
            raise ProjectionDefinitionError(
                self.name, f"its registry cannot decode {event_type!r}; register {event_class.__name__} there"
            )

        def dispatch(recorded: RecordedEvent, context: EventContext) -> None:
            event = context._registry.decode(recorded)
            if not isinstance(event, event_class):
                raise ProjectionDefinitionError(
                    self.name,
                    f"the registry decodes {event_type!r} as {type(event).__name__}, "
                    f"but the handler expects {event_class.__name__}",
                )
            handler(event, context)

        self._add(event_type, dispatch)

    def on_recorded(self, event_type: str, handler: Callable[[RecordedEvent, EventContext], None]) -> None:
        """Call ``handler(recorded, context)`` for every event of ``event_type``, undecoded."""
        if not isinstance(event_type, str) or not event_type:
            raise ProjectionDefinitionError(self.name, f"{event_type!r} is not an event type name")
        self._add(event_type, handler)

    def _add(self, event_type: str, dispatch: _Dispatch) -> None:
        if not hasattr(self, "_dispatch"):
            raise ProjectionDefinitionError(
                type(self).__qualname__, "call super().__init__() before registering handlers"
            )
        if event_type in self._dispatch:
            raise ProjectionDefinitionError(self.name, f"two handlers for event type {event_type!r}")
        self._dispatch[event_type] = dispatch

    # -- what the runner uses -------------------------------------------------------------

    @property
    def event_types(self) -> tuple[str, ...]:
        """The event types this projection handles, sorted."""
        return tuple(sorted(self._handlers()))

    def event_filter(self) -> EventFilter:
        """The server-side filter for the subscription: exactly the handled event types."""
        return EventFilter.for_event_types(self.event_types)

    def event_registry(self) -> EventRegistry:
        """The registry that decodes this projection's events."""
        registry = type(self).registry
        if registry is not None:
            return registry
        assert self._decoding is not None
        return self._decoding

    def sequencing_key(self, recorded: RecordedEvent) -> str:
        """The key whose events are applied in order, and held back behind a parked one.

        The stream name by default, so each aggregate's events apply in the order they were
        recorded. Override it (it must depend only on the recorded event) to order by
        something else, e.g. a tenant or an account that several streams' events concern.
        """
        return recorded.stream

    def handles(self, event_type: str) -> bool:
        """Whether a handler is registered for ``event_type``."""
        return event_type in self._handlers()

    def apply(self, recorded: RecordedEvent, uow: ReadModelWriter) -> bool:
        """Run the handler of ``recorded``'s type in ``uow``; ``False`` if there is none."""
        handlers: dict[str, _Dispatch] | None = getattr(self, "_dispatch", None)
        dispatch = None if handlers is None else handlers.get(recorded.type)
        if dispatch is None:
            self._handlers()  # raises if no handler was registered at all
            return False
        registry = type(self).registry
        if registry is None:
            registry = self.event_registry()
        dispatch(recorded, EventContext(recorded, uow, registry))
        return True

    def applier(self, uow: ReadModelWriter) -> Callable[[RecordedEvent], bool]:
        """:meth:`apply` bound to ``uow``: ``applier(uow)(recorded)`` is ``apply(recorded, uow)``.

        The runner takes one per transaction and calls it for each event of the batch, so that
        what :meth:`apply` looks up for every event (the handlers, the registry) is looked up
        once per batch. Handlers registered after the call are not seen by it. A subclass that
        overrides :meth:`apply` gets its own ``apply`` called.
        """
        if type(self).apply is not Projection.apply:
            return lambda recorded: self.apply(recorded, uow)
        handlers = self._handlers()  # raises if no handler was registered at all
        registry = self.event_registry()
        find = handlers.get
        context = EventContext

        def apply(recorded: RecordedEvent) -> bool:
            dispatch = find(recorded.type)
            if dispatch is None:
                return False
            dispatch(recorded, context(recorded, uow, registry))
            return True

        return apply

    def _handlers(self) -> dict[str, _Dispatch]:
        handlers: dict[str, _Dispatch] | None = getattr(self, "_dispatch", None)
        if not handlers:
            raise ProjectionDefinitionError(
                getattr(self, "name", type(self).__qualname__), "register at least one handler in __init__"
            )
        return handlers

    def describe(self) -> dict[str, Any]:
        """Name, version, tables and event types, for logs and the CLI."""
        return {
            "name": self.name,
            "version": self.version,
            "tables": [spec.name for spec in self.tables],
            "event_types": list(self.event_types),
            "failure_policy": self.failure_policy.value,
            "segments": self.segments,
        }
