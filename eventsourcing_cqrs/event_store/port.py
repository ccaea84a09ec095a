"""The event store port: value types, errors and the reader/writer protocols. No I/O.

Every adapter (memory, SQLite, EventStoreDB) behaves like EventStoreDB, so an application moves
between them by changing one connection string:

* A stream is named ``{Category}-{id}``; its revisions count from 0 and have no gaps.
* :meth:`EventWriter.append` is atomic per stream and checks an :data:`ExpectedVersion`:
  :attr:`StreamState.ANY`, :attr:`StreamState.NO_STREAM`, :attr:`StreamState.STREAM_EXISTS` or
  an exact revision. Re-appending the same event ids at the same expected version writes
  nothing and returns the original result (idempotent append).
* ``$all`` orders every event by commit position: strictly increasing, greater than zero, with
  gaps allowed. Reading ``$all`` forwards *includes* the start position, backwards *excludes*
  it; subscriptions *exclude* their start position, so a subscriber resumes from its checkpoint.
* Event types starting with ``$`` are system events, excluded from ``$all`` unless a filter
  asks for them.
* Soft delete hides a stream (it may be written again, revisions continuing); a tombstone
  deletes it for ever.
* Arguments are checked here, not in the adapters: each adapter's public method starts with the
  ``checked_*`` function of its operation (:func:`checked_append`, :func:`checked_read_stream`,
  :func:`checked_subscribe`...), so every adapter refuses the same malformed argument with the
  same :class:`~eventsourcing_cqrs.errors.InvalidInputError`, before any I/O. Among them:
  stream names and event types are valid Unicode text (no control characters, no lone
  surrogates); revisions and expected versions are below 2**63 (:data:`MAX_REVISION`,
  EventStoreDB's signed 64-bit event numbers) and commit positions below 2**64
  (:data:`MAX_POSITION`, EventStoreDB's unsigned 64-bit commit positions).
"""

from __future__ import annotations

import enum
import math
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from eventsourcing_cqrs.errors import (
    EventStoreError,
    InvalidInputError,
    StreamDeletedError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)

__all__ = [
    "CAUSATION_ID_KEY",
    "CORRELATION_ID_KEY",
    "MAX_POSITION",
    "MAX_REVISION",
    "MAX_STREAM_NAME_LENGTH",
    "AppendResult",
    "CaughtUp",
    "Checkpoint",
    "EventFilter",
    "EventReader",
    "EventStore",
    "EventStoreError",
    "EventWriter",
    "ExpectedVersion",
    "NewEvent",
    "RecordedEvent",
    "StreamDeletedError",
    "StreamName",
    "StreamNotFoundError",
    "StreamState",
    "Subscription",
    "SubscriptionItem",
    "WrongExpectedVersionError",
    "checked_append",
    "checked_delete",
    "checked_read_all",
    "checked_read_stream",
    "checked_subscribe",
    "validate_backwards",
    "validate_checkpoint_interval",
    "validate_count",
    "validate_events",
    "validate_expected_version",
    "validate_filter",
    "validate_limit",
    "validate_position",
    "validate_revision",
    "validate_seconds",
]

#: EventStoreDB's metadata key for the correlation id (its ``$by_correlation_id`` projection reads it).
CORRELATION_ID_KEY = "$correlationId"
#: EventStoreDB's metadata key for the causation id.
CAUSATION_ID_KEY = "$causationId"

MAX_STREAM_NAME_LENGTH = 1000
#: Revisions (``from_revision``, an expected version) are below 2**63: EventStoreDB's event
#: numbers are signed 64-bit (its largest, 2**63 - 1, marks a tombstone), as is SQLite's INTEGER.
MAX_REVISION = 2**63 - 1
#: Commit positions (``from_position``) are below 2**64: EventStoreDB's commit positions are
#: unsigned 64-bit. The SQLite store's positions are rowids (signed 64-bit, so below 2**63);
#: it reads a start position beyond its last as "after every event".
MAX_POSITION = 2**64 - 1
#: What a stream name or event type must not contain: control characters, and lone surrogates
#: (``"\ud800"``), which are not text: no store can encode them (UTF-8 refuses them).
_FORBIDDEN_CHARACTERS = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _refuse_forbidden_characters(field_name: str, value: str, what: str) -> None:
    """Raise :class:`InvalidInputError` if ``value`` holds a control character or a lone surrogate."""
    if _FORBIDDEN_CHARACTERS.search(value) is None:
        return
    if _CONTROL_CHARACTERS.search(value):
        raise InvalidInputError(field_name, value, f"{what} must not contain control characters")
    raise InvalidInputError(
        field_name,
        value,
        f"{what} must be valid Unicode text: it holds a lone surrogate (such as '\\ud800'), "
        "which cannot be encoded",
    )


class StreamName(str):
    """A validated stream name: non-empty, at most 1000 characters, no control characters, no
    lone surrogates.

    It is a ``str``, so it can be used anywhere a string is expected::

        >>> StreamName.for_aggregate("Account", "42")
        'Account-42'
    """

    __slots__ = ()

    def __new__(cls, value: str) -> Self:
        if isinstance(value, cls):
            return value
        if not isinstance(value, str):
            raise InvalidInputError("stream name", value, "a stream name must be a string")
        if not value:
            raise InvalidInputError("stream name", value, "a stream name must not be empty")
        if len(value) > MAX_STREAM_NAME_LENGTH:
            raise InvalidInputError(
                "stream name",
                value,
                f"a stream name is at most {MAX_STREAM_NAME_LENGTH} characters, this one has {len(value)}",
            )
        _refuse_forbidden_characters("stream name", value, "a stream name")
        return super().__new__(cls, value)

    @classmethod
    def for_aggregate(cls, category: str, aggregate_id: object) -> StreamName:
        """The stream of one aggregate: ``{category}-{id}``."""
        if not isinstance(category, str) or not category or "-" in category:
            raise InvalidInputError(
                "stream category", category, "a category must be non-empty and contain no '-'"
            )
        return cls(f"{category}-{aggregate_id}")

    @property
    def category(self) -> str:
        """The part before the first ``-`` (the whole name when there is none)."""
        return self.split("-", 1)[0]


class StreamState(enum.Enum):
    """Expected stream states that are not an exact revision."""

    ANY = "any"
    NO_STREAM = "no_stream"
    STREAM_EXISTS = "stream_exists"

    def __repr__(self) -> str:
        return f"StreamState.{self.name}"

    def __str__(self) -> str:
        return self.name


#: What a writer expects of a stream: a state, or the exact revision of its last event.
ExpectedVersion = StreamState | int


def validate_revision(revision: object, field_name: str = "revision") -> int:
    """Return ``revision`` if it is an ``int`` from 0 to :data:`MAX_REVISION`, else raise.

    Raises :class:`InvalidInputError`.
    """
    if isinstance(revision, bool) or not isinstance(revision, int):
        raise InvalidInputError(field_name, revision, "a revision must be an integer")
    if revision < 0:
        raise InvalidInputError(field_name, revision, "a revision must not be negative")
    if revision > MAX_REVISION:
        raise InvalidInputError(field_name, revision, "a revision is below 2**63 (a signed 64-bit number)")
    return revision


def validate_position(position: object, field_name: str = "position") -> int:
    """Return ``position`` if it is an ``int`` from 0 to :data:`MAX_POSITION`, else raise.

    Raises :class:`InvalidInputError`.
    """
    if isinstance(position, bool) or not isinstance(position, int):
        raise InvalidInputError(field_name, position, "a commit position must be an integer")
    if position < 0:
        raise InvalidInputError(field_name, position, "a commit position must not be negative")
    if position > MAX_POSITION:
        raise InvalidInputError(
            field_name, position, "a commit position is below 2**64 (an unsigned 64-bit number)"
        )
    return position


def validate_expected_version(expected: object) -> ExpectedVersion:
    """Return ``expected`` if it is a :class:`StreamState` or a revision, else raise."""
    if isinstance(expected, StreamState):
        return expected
    return validate_revision(expected, "expected version")


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append.

    ``data`` and ``metadata`` are bytes (JSON by convention, ``content_type`` says otherwise).
    ``id`` makes the append idempotent: derive it deterministically when a retry must not
    write twice.
    """

    type: str
    data: bytes
    metadata: bytes = b""
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    content_type: str = "application/json"

    def __post_init__(self) -> None:
        if not isinstance(self.type, str) or not self.type:
            raise InvalidInputError("event type", self.type, "an event type must be non-empty")
        _refuse_forbidden_characters("event type", self.type, "an event type")
        if not isinstance(self.id, uuid.UUID):
            raise InvalidInputError("event id", self.id, "an event id must be a uuid.UUID")
        if not isinstance(self.data, bytes):
            raise InvalidInputError(
                "event data", self.data, f"event data must be bytes, not {type(self.data).__name__}"
            )
        if not isinstance(self.metadata, bytes):
            raise InvalidInputError(
                "event metadata",
                self.metadata,
                f"event metadata must be bytes, not {type(self.metadata).__name__}",
            )
        if not isinstance(self.content_type, str) or not self.content_type:
            raise InvalidInputError(
                "content type", self.content_type, "a content type must be a non-empty string"
            )
        _refuse_forbidden_characters("content type", self.content_type, "a content type")


def validate_events(events: object) -> list[NewEvent]:
    """Check that ``events`` is a sequence of :class:`NewEvent` with distinct ids."""
    if isinstance(events, NewEvent) or not isinstance(events, Sequence):
        raise InvalidInputError("events", events, "give a sequence of NewEvent")
    checked = list(events)
    for event in checked:
        if not isinstance(event, NewEvent):
            raise InvalidInputError("event", event, "each event must be a NewEvent")
    if len(checked) > 1 and len({event.id for event in checked}) != len(checked):
        raise InvalidInputError("event ids", [e.id for e in checked], "event ids must be distinct")
    return checked


def validate_limit(limit: object) -> int | None:
    """Return ``limit`` if it is ``None`` or a non-negative ``int``, else raise."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidInputError("limit", limit, "a limit must be a non-negative integer")
    return limit


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An event as stored: where it is in its stream and in ``$all``, and when it was written."""

    id: uuid.UUID
    type: str
    data: bytes
    metadata: bytes
    stream: str
    revision: int
    position: int
    recorded_at: datetime
    content_type: str = "application/json"

    @property
    def is_system(self) -> bool:
        """Whether this is a system event (its type starts with ``$``)."""
        return self.type.startswith("$")


@dataclass(frozen=True, slots=True)
class AppendResult:
    """The outcome of an append: the stream's new last revision and its commit position.

    ``already_written`` is true when the append wrote nothing because the same events were
    already in the stream (an idempotent re-append: the result is the original one). Every
    adapter reports it for a re-appended creation (``NO_STREAM``), which is how a redelivered
    creation command is recognised; the embedded stores report it for every expected version.
    EventStoreDB answers an idempotent append like a first one, so its adapter finds out by
    reading the stream's first event before a ``NO_STREAM`` append (one read more per creation),
    and leaves it false for the other expected versions. It takes no part in equality.
    """

    stream: str
    revision: int
    position: int
    already_written: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A subscription has considered every event up to and including ``position``.

    Emitted while filtering, so that a consumer of rare events still advances its checkpoint.
    """

    position: int


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """A subscription has delivered every event that existed when it caught up; it is now live.

    ``position`` is the last position considered (``None`` if ``$all`` was empty).
    """

    position: int | None


#: What iterating a :class:`Subscription` yields.
SubscriptionItem = RecordedEvent | Checkpoint | CaughtUp


@dataclass(frozen=True, slots=True)
class EventFilter:
    """A server-side filter for ``$all`` reads and subscriptions.

    It matches either on event type (``by="event_type"``) or on stream name
    (``by="stream_name"``), by any of ``prefixes`` or by ``regex`` (searched, unanchored, as
    EventStoreDB does). System events (types starting with ``$``) are excluded unless
    ``include_system_events`` is true.

    ``regex`` is a Python regular expression. EventStoreDB runs it as a .NET one: the adapter
    rewrites the one spelling .NET refuses (named groups ``(?P<name>...)``, ``(?P=name)``);
    the constructs filters use (anchors, alternation, classes, ``\\d``, lookarounds) mean the
    same in both, while a few do not (``\\Z``, ``\\b`` on non-ASCII text, ``\\p{...}``).

    >>> EventFilter.for_event_types(["AccountOpened", "MoneyDeposited"]).matches("MoneyDeposited", "x")
    True
    """

    by: str = "event_type"
    prefixes: tuple[str, ...] = ()
    regex: str | None = None
    include_system_events: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.by, str) or self.by not in ("event_type", "stream_name"):
            raise InvalidInputError("filter by", self.by, "use 'event_type' or 'stream_name'")
        if isinstance(self.prefixes, str):
            raise InvalidInputError("filter prefixes", self.prefixes, "give a tuple of prefixes")
        if not isinstance(self.prefixes, tuple):
            if not isinstance(self.prefixes, Iterable):
                raise InvalidInputError("filter prefixes", self.prefixes, "give a tuple of prefixes")
            object.__setattr__(self, "prefixes", tuple(self.prefixes))  # a list, a set...
        for prefix in self.prefixes:
            if not isinstance(prefix, str):
                raise InvalidInputError("filter prefix", prefix, "each prefix must be a string")
        if self.prefixes and self.regex is not None:
            raise InvalidInputError("filter", self, "give prefixes or a regex, not both")
        if self.regex is not None:
            if not isinstance(self.regex, str):
                raise InvalidInputError("filter regex", self.regex, "a regex must be a string")
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise InvalidInputError("filter regex", self.regex, str(exc)) from exc
        if not isinstance(self.include_system_events, bool):
            raise InvalidInputError("include_system_events", self.include_system_events, "give True or False")

    @classmethod
    def for_event_types(cls, types: Sequence[str]) -> EventFilter:
        """Match exactly these event types."""
        if isinstance(types, str) or not isinstance(types, Iterable):
            raise InvalidInputError("event types", types, "give a sequence of event type names")
        listed = list(types)
        if not all(isinstance(name, str) and name for name in listed):
            raise InvalidInputError("event types", types, "each event type must be a non-empty string")
        names = sorted(set(listed))
        if not names:
            raise InvalidInputError("event types", types, "give at least one event type")
        return cls(regex="^(?:" + "|".join(re.escape(name) for name in names) + ")$")

    @classmethod
    def for_stream_prefixes(cls, prefixes: Sequence[str]) -> EventFilter:
        """Match events whose stream name starts with any of ``prefixes``."""
        return cls(by="stream_name", prefixes=tuple(prefixes))

    @classmethod
    def for_categories(cls, categories: Sequence[str]) -> EventFilter:
        """Match the streams of these aggregate categories (``{Category}-...``)."""
        if isinstance(categories, str) or not isinstance(categories, Iterable):
            raise InvalidInputError("categories", categories, "give a sequence of category names")
        return cls.for_stream_prefixes([f"{category}-" for category in categories])

    def matches(self, event_type: str, stream: str) -> bool:
        """Whether an event of this type in this stream passes the filter."""
        if not self.include_system_events and event_type.startswith("$"):
            return False
        value = event_type if self.by == "event_type" else stream
        if self.regex is not None:
            return _compiled(self.regex).search(value) is not None
        if self.prefixes:
            return value.startswith(self.prefixes)
        return True


_REGEX_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    compiled = _REGEX_CACHE.get(pattern)
    if compiled is None:
        compiled = _REGEX_CACHE[pattern] = re.compile(pattern)
    return compiled


#: The filter used when none is given: every non-system event.
DEFAULT_FILTER = EventFilter()


def validate_backwards(backwards: object) -> bool:
    """Return ``backwards`` if it is a ``bool``, else raise :class:`InvalidInputError`."""
    if not isinstance(backwards, bool):
        raise InvalidInputError("backwards", backwards, "give True or False")
    return backwards


def validate_filter(filter: object) -> EventFilter:
    """Return ``filter`` (:data:`DEFAULT_FILTER` for ``None``) if it is an :class:`EventFilter`."""
    if filter is None:
        return DEFAULT_FILTER
    if not isinstance(filter, EventFilter):
        raise InvalidInputError(
            "filter", filter, f"give an EventFilter (or None), not {type(filter).__name__}"
        )
    return filter


def validate_count(value: object, field_name: str, unit: str) -> int:
    """Return ``value`` if it is a whole number of at least 1 (a bool is not one), else raise
    :class:`InvalidInputError`. For counts of ``unit`` (events, attempts) given as arguments."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInputError(
            field_name, value, f"give a whole number of {unit}, not {type(value).__name__}"
        )
    if value < 1:
        raise InvalidInputError(field_name, value, "it must be at least 1")
    return value


def validate_checkpoint_interval(interval: object) -> int:
    """Return ``interval`` if it is an ``int`` of at least 1, else raise :class:`InvalidInputError`."""
    if isinstance(interval, bool) or not isinstance(interval, int):
        raise InvalidInputError(
            "checkpoint_interval",
            interval,
            f"a checkpoint interval must be an integer, not {type(interval).__name__}",
        )
    return validate_count(interval, "checkpoint_interval", "events")


def validate_seconds(value: object, field_name: str, *, zero_allowed: bool = False) -> float:
    """Return ``value`` as a float if it is a finite number of seconds above zero (or zero, if
    ``zero_allowed``), else raise :class:`InvalidInputError` (also for a bool or NaN). For
    timeouts, polling intervals and delays given as arguments, on both sides."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(field_name, value, f"give a number of seconds, not {type(value).__name__}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_allowed):
        bound = "zero or more" if zero_allowed else "more than zero"
        raise InvalidInputError(field_name, value, f"it must be finite and {bound} seconds")
    return seconds


# The argument checks of each port operation. Every adapter calls these first, so that all of
# them refuse the same arguments with the same errors, before any I/O.


def checked_append(
    stream: str, events: Sequence[NewEvent], expected_version: ExpectedVersion
) -> tuple[StreamName, ExpectedVersion, list[NewEvent]]:
    """The checked arguments of :meth:`EventWriter.append`: stream name, expected version, events."""
    name = StreamName(stream)
    expected = validate_expected_version(expected_version)
    return name, expected, validate_events(events)


def checked_delete(stream: str, expected_version: ExpectedVersion) -> tuple[StreamName, ExpectedVersion]:
    """The checked arguments of :meth:`EventWriter.delete_stream` and ``tombstone_stream``."""
    return StreamName(stream), validate_expected_version(expected_version)


def checked_read_stream(
    stream: str, from_revision: int | None, backwards: bool, limit: int | None
) -> tuple[StreamName, int | None, bool, int | None]:
    """The checked arguments of :meth:`EventReader.read_stream`."""
    name = StreamName(stream)
    revision = None if from_revision is None else validate_revision(from_revision, "from_revision")
    return name, revision, validate_backwards(backwards), validate_limit(limit)


def checked_read_all(
    from_position: int | None,
    backwards: bool,
    limit: int | None,
    filter: EventFilter | None,
) -> tuple[int | None, bool, int | None, EventFilter]:
    """The checked arguments of :meth:`EventReader.read_all` (``None`` filter: :data:`DEFAULT_FILTER`)."""
    position = None if from_position is None else validate_position(from_position, "from_position")
    return position, validate_backwards(backwards), validate_limit(limit), validate_filter(filter)


def checked_subscribe(
    from_position: int | None,
    filter: EventFilter | None,
    checkpoint_interval: int,
) -> tuple[int | None, EventFilter, int]:
    """The checked arguments of :meth:`EventReader.subscribe` (``None`` filter: :data:`DEFAULT_FILTER`)."""
    position = None if from_position is None else validate_position(from_position, "from_position")
    return position, validate_filter(filter), validate_checkpoint_interval(checkpoint_interval)


@runtime_checkable
class Subscription(Protocol):
    """A catch-up subscription to ``$all``: historical events, then live ones.

    Iterating yields :class:`RecordedEvent` in commit-position order with no gap and no
    duplicate across the switch to live, :class:`Checkpoint` while filtering, and one
    :class:`CaughtUp` when it first goes live. Iteration blocks for new events; it ends after
    :meth:`stop` (which may be called from another thread).
    """

    def __iter__(self) -> Iterator[SubscriptionItem]: ...

    def __next__(self) -> SubscriptionItem: ...

    def poll(self, timeout: float) -> SubscriptionItem | None:
        """The next item, or ``None`` if none arrives within ``timeout`` seconds."""
        ...

    def stop(self) -> None:
        """End the subscription; a blocked iteration returns promptly."""
        ...

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called (or the subscription ended)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class EventReader(Protocol):
    """Reading streams and ``$all``, and subscribing to ``$all``."""

    def read_stream(
        self,
        stream: str,
        *,
        from_revision: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> Iterator[RecordedEvent]:
        """Events of one stream from ``from_revision`` (inclusive; default: the first, or the last
        when ``backwards``), at most ``limit`` of them.

        Raises :class:`StreamNotFoundError` when called (not when iterated) if the stream has no
        events or was soft-deleted, and :class:`StreamDeletedError` if it was tombstoned.
        """
        ...

    def read_all(
        self,
        *,
        from_position: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        filter: EventFilter | None = None,
    ) -> Iterator[RecordedEvent]:
        """Events of ``$all`` in commit order.

        Forwards from ``from_position`` *inclusive* (default: the start); backwards from
        ``from_position`` *exclusive* (default: the end). Events are fetched in pages, so memory
        stays flat however many are read.

        ``from_position`` is 0 or a position this store reported (an event's, a checkpoint's, an
        append's): EventStoreDB reads ``$all`` only from a record, and refuses any other value
        with :class:`~eventsourcing_cqrs.errors.InvalidInputError`, where the embedded stores
        start at the next event. To read *after* a position, read from it and skip it
        (:func:`~eventsourcing_cqrs.event_store.read_after` does), never from ``position + 1``.
        """
        ...

    def stream_version(self, stream: str) -> int | None:
        """The revision of the stream's last event, or ``None`` if it has none (or was soft-deleted).

        Raises :class:`StreamDeletedError` if the stream was tombstoned.
        """
        ...

    def head_position(self, filter: EventFilter | None = None) -> int:
        """The commit position of the last event of ``$all`` passing ``filter`` (0 if none)."""
        ...

    def subscribe(
        self,
        *,
        from_position: int | None = None,
        filter: EventFilter | None = None,
        checkpoint_interval: int = 150,
    ) -> Subscription:
        """Subscribe to ``$all`` after ``from_position`` (exclusive; default: from the start).

        ``checkpoint_interval`` is an ``int`` of at least 1 (anything else raises
        :class:`~eventsourcing_cqrs.errors.InvalidInputError` at the call). While filtering, a
        :class:`Checkpoint` is emitted at least every ``checkpoint_interval`` considered events
        and when catch-up ends. Where that last one points differs, within the guarantee that
        no matching event at or before a checkpoint is still to come: the embedded stores use
        the last event considered, EventStoreDB the last event delivered (filtered-out events
        after it are passed by a later checkpoint).

        Every checkpoint is a position of ``$all`` that a later ``subscribe(from_position=...)``
        may resume after. EventStoreDB 24.x ends a filtered catch-up that delivered nothing with
        a checkpoint at ``Position.End`` (2**64 - 1), and servers before 22.10 could send one
        past the last event; the EventStoreDB adapter *drops* such checkpoints (the previous one
        stands), because resuming after them would skip every event written later.
        ``from_position`` follows the rule of :meth:`read_all`.
        """
        ...


class EventWriter(Protocol):
    """Appending to and deleting streams."""

    def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        """Append ``events`` to ``stream`` atomically if it is at ``expected_version``.

        Raises :class:`WrongExpectedVersionError` (nothing written) on a mismatch and
        :class:`StreamDeletedError` for a tombstoned stream. Re-appending events whose ids are
        already in the stream at the same exact expected version (a revision or ``NO_STREAM``)
        writes nothing and returns the original revision and position: every store checks that
        against the stream itself. With ``ANY`` or ``STREAM_EXISTS`` EventStoreDB recognises a
        re-append only while the ids are in its bounded cache of recent writes, which a restart
        empties; after that it appends the events again. Effectively-once writers (the
        repository, snapshots) therefore always give an exact expected version.
        """
        ...

    def delete_stream(self, stream: str, *, expected_version: ExpectedVersion) -> None:
        """Soft-delete: the stream reads as not found, and may be written again later."""
        ...

    def tombstone_stream(self, stream: str, *, expected_version: ExpectedVersion) -> None:
        """Hard-delete: the stream can never be read or written again."""
        ...


class EventStore(EventReader, EventWriter, Protocol):
    """An event store: reader and writer, with a lifetime."""

    def close(self) -> None:
        """Release connections and stop background work; idempotent."""
        ...
