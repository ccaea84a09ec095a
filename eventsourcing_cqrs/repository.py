"""Loading aggregates from their streams and saving their new events with a version check.

``Repository[Account]`` loads an ``Account`` by replaying ``Account-{id}`` (from its latest
snapshot when there is one), rebuilds past states for audit (``at_version=``, ``at_time=``),
and saves pending events with the aggregate's version as the expected version, so that a
concurrent writer makes the save fail with
:class:`~eventsourcing_cqrs.errors.WrongExpectedVersionError` instead of losing an update.
The :class:`~eventsourcing_cqrs.bus.CommandBus` retries the command on fresh state then.

**Snapshots.** With ``snapshot_every=N``, a save that takes the stream across a multiple of N
events also stores the aggregate's snapshot, as one event of type ``$snapshot`` in the stream
``{Category}.snapshots-{id}``. The ``$`` prefix makes it a system event: ``$all`` reads and
subscriptions skip it unless asked, so projections never see snapshots; the separate category
keeps it out of ``{Category}-`` stream filters. A snapshot is derived data: one whose
``snapshot_version`` differs from the aggregate class's, or that no longer validates, is
ignored (logged as ``snapshot.ignored``) and the stream is replayed in full; failing to write
one never fails the save.

**Redelivered commands.** Inside a command (see :mod:`eventsourcing_cqrs.unit_of_work`), a
load that finds the command's own events in the stream raises
:class:`~eventsourcing_cqrs.unit_of_work.CommandAlreadyHandled`, so the handler does not decide
again. A full replay checks the whole stream. With snapshots, the window is the same whatever
``snapshot_every`` is: a redelivery is recognised while the command's first event is among the
stream's last ``dedup_window`` events (500 by default) — more precisely, among the snapshot's
last ``dedup_window`` events or its tail. Each snapshot carries, in its metadata
(``recentEventIds``), the ids of the ``dedup_window`` events up to it, which the repository
remembers from the load and the save that wrote it (no extra read), so the check is a search in
memory; the stream is read back only on an actual redelivery, for the original result. (The
other way, reading the last ``dedup_window`` events at every load, would cost a read of
``dedup_window`` events per command.) A snapshot written by an earlier version, without those
ids, falls back to reading the ``dedup_window`` events before it. A creation command (no load)
redelivered, or a redelivery racing the first delivery, is recognised by the store's
idempotent append (:attr:`~eventsourcing_cqrs.event_store.port.AppendResult.already_written`,
reported by the embedded stores) and flagged ``duplicate`` the same way.

**The aggregate cache.** With ``cache_size=N`` (0, the default, turns it off) the repository
keeps the last N aggregates it loaded or saved, least recently used dropped first. It never
hides another writer's append, in this process or another one:

* in a command, a cached load reads nothing: the command's save appends at the cached version,
  so an append by anyone else since makes it fail with
  :class:`~eventsourcing_cqrs.errors.WrongExpectedVersionError`, the entry is dropped (as on any
  failed append), and the command bus's retry loads from the store. A command whose outcome
  rests on a cached aggregate it does not append to (it refused, or it read one aggregate and
  saved another) has the store confirm that aggregate's version first — one
  ``read_stream(from_revision=version + 1, limit=1)``, usually empty — and runs again on the
  store's state if it had moved. On EventStoreDB that makes a command on a cached aggregate
  one call (its append) instead of two;
* a load outside a command reads the events appended after the cached version (the same
  short read) and applies them, so it returns exactly what a replay would.

The cache is write-through: a successful save replaces the entry with the saved state. Cached
aggregates are never handed out: a load returns a deep copy (``copy.deepcopy``), so two
concurrent commands never share state and a handler that changes an aggregate without saving
it changes nothing in the cache. A save outside a command stores a copy; a command's save is
appended once its handler has returned, and the aggregate is then cached as it is (a handler
must not keep its aggregate for later use). (An aggregate that cannot be deep copied is simply
not cached; ``aggregate_cache.copy_failed`` is logged.) Past states
(``at_version``/``at_time``) bypass the cache. A cached aggregate remembers the ids of its
last ``dedup_window`` events, so a redelivered command is recognised as with snapshots: while
its first event is among the stream's last ``dedup_window`` events. One thing it does not
see: a stream deleted and recreated by another process while cached (deletion is rare for an
aggregate's stream; use another repository, or none, after deleting).
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

import structlog
from pydantic import BaseModel, ValidationError

from eventsourcing_cqrs._logging import enabled
from eventsourcing_cqrs.aggregate import Aggregate, event_classes_of
from eventsourcing_cqrs.errors import (
    AggregateAlreadyExistsError,
    AggregateNotFoundError,
    CorruptEventError,
    InvalidInputError,
    StreamDeletedError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)
from eventsourcing_cqrs.event_store.port import (
    AppendResult,
    EventStore,
    NewEvent,
    RecordedEvent,
    StreamName,
    StreamState,
)
from eventsourcing_cqrs.messages import Metadata
from eventsourcing_cqrs.serialization import EventEnvelope, EventRegistry, FastPath
from eventsourcing_cqrs.unit_of_work import (
    CommandAlreadyHandled,
    UnitOfWork,
    current_unit_of_work,
)

__all__ = ["SNAPSHOT_EVENT_TYPE", "Repository"]

logger = structlog.get_logger(__name__)

A = TypeVar("A", bound=Aggregate[Any])

#: What a repository calls on its event store (checked when it is created).
_STORE_METHODS = ("append", "read_stream", "stream_version")

#: The event type of stored snapshots (a system type, so ``$all`` readers skip it).
SNAPSHOT_EVENT_TYPE = "$snapshot"
_AGGREGATE_VERSION_KEY = "aggregateVersion"
_SNAPSHOT_VERSION_KEY = "snapshotVersion"
#: The snapshot metadata key of the ids of the last ``dedup_window`` events it stands for (base64).
_RECENT_IDS_KEY = "recentEventIds"
_JSON = "application/json"
_SNAPSHOT_NAMESPACE = uuid.UUID("6f0b7d57-3f0c-4c3b-9a57-54a0b7c1e2d1")


class _Snapshot:
    __slots__ = ("recent_ids", "state", "version")

    def __init__(self, state: BaseModel, version: int, recent_ids: bytes | None) -> None:
        self.state = state
        self.version = version
        #: The ids (16 bytes each) of the events up to ``version``, at most ``dedup_window``
        #: of them; ``None`` for a snapshot written before snapshots carried them.
        self.recent_ids = recent_ids


#: Where a loaded or saved aggregate keeps the ids of its last ``dedup_window`` events (bytes,
#: 16 per event, the last one being the event at ``aggregate.version``), for its next snapshot.
_RECENT_IDS_ATTRIBUTE = "_repository_recent_event_ids"


def _remember_ids(aggregate: Aggregate[Any], ids: Sequence[uuid.UUID], window: int) -> None:
    """Add the ids of events just saved or replayed to what ``aggregate`` remembers."""
    known: bytes | None = aggregate.__dict__.get(_RECENT_IDS_ATTRIBUTE)
    if known is None:
        if aggregate.version - len(ids) >= 0:
            return  # its earlier events are unknown here (the snapshot writer reads them back)
        known = b""
    blob = known + b"".join(event_id.bytes for event_id in ids[-window:]) if window else b""
    aggregate.__dict__[_RECENT_IDS_ATTRIBUTE] = blob[-_ID_SIZE * window :] if window else b""


def _find_id(blob: bytes, wanted: bytes) -> int | None:
    """The index of the 16-byte id ``wanted`` in ``blob``, or ``None``."""
    start = 0
    while (found := blob.find(wanted, start)) >= 0:
        if found % _ID_SIZE == 0:
            return found // _ID_SIZE
        start = found + 1
    return None


_ID_SIZE = 16


class _RedeliveryCheck:
    """Spots the current command's events among replayed ones (a UUID comparison per event)."""

    __slots__ = ("index", "last", "next_id", "stream", "work")

    def __init__(self, work: UnitOfWork, stream: str) -> None:
        self.work = work
        self.stream = stream
        self.index = 0
        self.next_id = work.event_id(stream, 0)
        self.last: AppendResult | None = None

    def see(self, recorded: RecordedEvent) -> None:
        if recorded.id == self.next_id:
            self.last = AppendResult(recorded.stream, recorded.revision, recorded.position)
            self.index += 1
            self.next_id = self.work.event_id(self.stream, self.index)

    def raise_if_found(self) -> None:
        if self.last is not None:
            raise CommandAlreadyHandled(self.work.context.command_id, self.last)


class _AggregateCache(Generic[A]):
    """At most ``size`` aggregates by id, least recently used dropped first; thread-safe.

    The aggregates held are never changed once put here (the repository puts and hands out
    copies), so they are read outside the lock.
    """

    __slots__ = ("_entries", "_lock", "_size")

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[str, A] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, aggregate_id: str) -> A | None:
        with self._lock:
            found = self._entries.get(aggregate_id)
            if found is not None:
                self._entries.move_to_end(aggregate_id)
            return found

    def put(self, aggregate: A) -> None:
        """Hold ``aggregate`` (a copy no one else has), unless a later version is held already."""
        with self._lock:
            entries = self._entries
            held = entries.get(aggregate.id)
            if held is not None and held.version > aggregate.version:
                # A concurrent command saved a later version first: keep it.
                entries.move_to_end(aggregate.id)
                return
            entries[aggregate.id] = aggregate
            entries.move_to_end(aggregate.id)
            if len(entries) > self._size:
                entries.popitem(last=False)

    def drop(self, aggregate_id: str) -> None:
        with self._lock:
            self._entries.pop(aggregate_id, None)


class Repository(Generic[A]):
    """Loads and saves aggregates of one type from an event store.

    ``registry`` decodes and encodes the events; by default it is built from the event classes
    named in the aggregate's ``Aggregate[...]`` base (pass your own to add upcasters).
    ``dedup_window`` is how many of a stream's last events a redelivered command is looked
    for in when loading from a snapshot (see the module docstring); each snapshot carries
    16 bytes per event of it. ``cache_size`` is how many aggregates the repository keeps in
    memory between loads (0: none; see the module docstring for what a cached load reads).
    """

    def __init__(
        self,
        store: EventStore,
        aggregate_type: type[A],
        registry: EventRegistry | None = None,
        *,
        snapshot_every: int | None = None,
        dedup_window: int = 500,
        cache_size: int = 0,
    ) -> None:
        if not all(callable(getattr(store, method, None)) for method in _STORE_METHODS):
            raise InvalidInputError(
                "event store", store, "give an event store (memory, SQLite or EventStoreDB adapter)"
            )
        if not (isinstance(aggregate_type, type) and issubclass(aggregate_type, Aggregate)):
            raise InvalidInputError("aggregate type", aggregate_type, "give an Aggregate subclass")
        category = getattr(aggregate_type, "category", None)
        StreamName.for_aggregate(category or "", "x")  # validates the category
        self._event_classes = event_classes_of(aggregate_type)
        if registry is None:
            registry = EventRegistry(self._event_classes)
        elif not isinstance(registry, EventRegistry):
            raise InvalidInputError("registry", registry, "give an EventRegistry (or None to build one)")
        else:
            for event_class in self._event_classes:
                if registry.event_class(event_class.event_type) is not event_class:
                    raise InvalidInputError(
                        "registry", registry, f"it maps {event_class.event_type!r} to another class"
                    )
        if snapshot_every is not None:
            if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int) or snapshot_every < 1:
                raise InvalidInputError("snapshot_every", snapshot_every, "give a positive number of events")
            if aggregate_type.snapshot_type is None:
                raise InvalidInputError(
                    "snapshot_every",
                    snapshot_every,
                    f"{aggregate_type.__name__} has no snapshot_type, so it cannot take snapshots",
                )
        if isinstance(dedup_window, bool) or not isinstance(dedup_window, int) or dedup_window < 0:
            raise InvalidInputError("dedup_window", dedup_window, "give a non-negative number of events")
        if isinstance(cache_size, bool) or not isinstance(cache_size, int) or cache_size < 0:
            raise InvalidInputError(
                "cache_size", cache_size, "give a non-negative number of aggregates (0 turns the cache off)"
            )
        self._store = store
        self._type = aggregate_type
        self._category: str = aggregate_type.category
        self._registry = registry
        self._snapshot_every = snapshot_every
        self._dedup_window = dedup_window
        self._cache: _AggregateCache[A] | None = _AggregateCache(cache_size) if cache_size else None
        # Snapshots and cached aggregates both need the ids of an aggregate's last events.
        self._track_ids = snapshot_every is not None or cache_size > 0
        #: How to decode each stored type this aggregate handles, filled as types are met.
        self._fast_paths: dict[str, FastPath] = {}

    def __repr__(self) -> str:
        return f"Repository[{self._type.__name__}]({self._store!r})"

    @property
    def aggregate_type(self) -> type[A]:
        """The class of the aggregates this repository loads."""
        return self._type

    @property
    def cache_size(self) -> int:
        """How many aggregates the cache holds at most (0: no cache)."""
        return self._cache._size if self._cache is not None else 0

    @property
    def cached(self) -> int:
        """How many aggregates the cache holds now."""
        return len(self._cache) if self._cache is not None else 0

    @property
    def registry(self) -> EventRegistry:
        """The registry that encodes and decodes this aggregate's events."""
        return self._registry

    def stream_name(self, aggregate_id: str) -> StreamName:
        """The stream of the aggregate with this id: ``{Category}-{id}``."""
        # StreamName.for_aggregate without checking the category again (done in __init__).
        return StreamName(f"{self._category}-{aggregate_id}")

    def snapshot_stream_name(self, aggregate_id: str) -> StreamName:
        """The stream holding the aggregate's snapshots: ``{Category}.snapshots-{id}``."""
        return StreamName.for_aggregate(f"{self._category}.snapshots", aggregate_id)

    # -- loading --------------------------------------------------------------------------

    def exists(self, aggregate_id: str) -> bool:
        """Whether the aggregate has any stored event (and its stream is not deleted)."""
        try:
            return self._store.stream_version(self.stream_name(aggregate_id)) is not None
        except StreamDeletedError:
            return False

    def load(
        self,
        aggregate_id: str,
        *,
        at_version: int | None = None,
        at_time: datetime | None = None,
    ) -> A:
        """The aggregate as of its latest event, or as of version ``at_version`` / time ``at_time``.

        A past state (``at_version``/``at_time``) is for reading: saving it is refused.
        ``at_version`` starts from the latest snapshot at or before it; ``at_time`` replays
        from the first event, comparing each event's recorded time.
        Raises :class:`AggregateNotFoundError` if the stream has no events (or had none by
        ``at_time``), and :class:`InvalidInputError` if ``at_version`` is beyond the last one.
        With the cache on, a cached aggregate is brought up to date with the events stored
        after its version (see the module docstring), never returned as it was.
        """
        if at_version is not None and at_time is not None:
            raise InvalidInputError("at_time", at_time, "give at_version or at_time, not both")
        if at_version is not None and (
            isinstance(at_version, bool) or not isinstance(at_version, int) or at_version < 0
        ):
            raise InvalidInputError("at_version", at_version, "a version is a non-negative integer")
        if at_time is not None and (not isinstance(at_time, datetime) or at_time.tzinfo is None):
            raise InvalidInputError("at_time", at_time, "give a timezone-aware datetime")
        stream = self.stream_name(aggregate_id)
        latest = at_version is None and at_time is None
        work = current_unit_of_work() if latest else None
        cache = self._cache if latest else None
        if cache is not None:
            cached = cache.get(aggregate_id)
            if cached is not None:
                return self._from_cache(cached, stream, work)
        aggregate = self._type(aggregate_id)
        check = _RedeliveryCheck(work, stream) if work is not None else None

        snapshot = None
        if self._snapshot_every is not None and at_time is None:
            snapshot = self._latest_snapshot(aggregate_id, at_most=at_version)
        if snapshot is not None:
            aggregate._restored(snapshot.state, snapshot.version)
            if check is not None and self._dedup_window:
                self._check_recent(stream, snapshot.version, snapshot.recent_ids, check)
        start = snapshot.version + 1 if snapshot is not None else None
        limit = None if at_version is None else at_version - (start or 0) + 1
        if limit == 0:
            aggregate._mark_historical()
            return aggregate
        records = self._read(aggregate_id, stream, start, limit)
        # With snapshots, the ids replayed go into the aggregate's next snapshot (see the module).
        seen: list[uuid.UUID] | None = [] if self._track_ids and latest else None
        replayed = self._replay(aggregate, records, at_time, check, seen)
        if check is not None:
            check.raise_if_found()
        if seen is not None and (snapshot is None or snapshot.recent_ids is not None):
            if snapshot is not None:
                aggregate.__dict__[_RECENT_IDS_ATTRIBUTE] = snapshot.recent_ids
            _remember_ids(aggregate, seen, self._dedup_window)
        if not replayed and snapshot is None:
            # The stream exists but nothing had happened by ``at_time`` (or the tail is empty).
            raise AggregateNotFoundError(self._type.__name__, aggregate_id)
        if at_version is not None and aggregate.version < at_version:
            raise InvalidInputError(
                "at_version",
                at_version,
                f"{self._type.__name__} {aggregate_id!r} is only at version {aggregate.version}",
            )
        if not latest:
            aggregate._mark_historical()
        elif cache is not None:
            self._cache_copy(aggregate)
        return aggregate

    def _from_cache(self, cached: A, stream: StreamName, work: UnitOfWork | None) -> A:
        """A copy of ``cached``: in a command as it is, to be confirmed by the save's expected
        version or by the bus (:meth:`UnitOfWork.check_later`); outside one, with the events
        stored after its version applied, so that another process's append is never hidden.
        """
        aggregate = self._copy(cached)
        if aggregate is None:
            assert self._cache is not None
            self._cache.drop(cached.id)
            return self.load(cached.id)
        check = _RedeliveryCheck(work, stream) if work is not None else None
        if check is not None and self._dedup_window:
            self._check_recent(
                stream, aggregate.version, aggregate.__dict__.get(_RECENT_IDS_ATTRIBUTE), check
            )
        if work is not None:
            # In a command, the store is asked only if the outcome depends on it: the save's
            # expected version confirms this state, and the bus checks it otherwise.
            if check is not None:
                check.raise_if_found()
            version = aggregate.version
            work.check_later(stream, lambda: self._still_at(cached.id, stream, version))
            return aggregate
        try:
            records = self._store.read_stream(stream, from_revision=aggregate.version + 1)
        except (StreamNotFoundError, StreamDeletedError):
            assert self._cache is not None
            self._cache.drop(aggregate.id)
            raise AggregateNotFoundError(self._type.__name__, aggregate.id) from None
        seen: list[uuid.UUID] = []
        replayed = self._replay(aggregate, records, None, check, seen)
        if check is not None:
            check.raise_if_found()
        if replayed:
            _remember_ids(aggregate, seen, self._dedup_window)
            self._cache_copy(aggregate)
        return aggregate

    def _still_at(self, aggregate_id: str, stream: StreamName, version: int) -> bool:
        """Whether ``stream`` still ends at ``version``; if not, the cached entry is dropped."""
        try:
            newer = self._store.read_stream(stream, from_revision=version + 1, limit=1)
            moved = next(newer, None) is not None
        except (StreamNotFoundError, StreamDeletedError):
            moved = True
        if moved and self._cache is not None:
            self._cache.drop(aggregate_id)
        return not moved

    def _copy(self, aggregate: A) -> A | None:
        try:
            return copy.deepcopy(aggregate)
        except Exception:  # a cache must never fail a load or a save: go without it
            logger.warning(
                "aggregate_cache.copy_failed", stream=self.stream_name(aggregate.id), exc_info=True
            )
            return None

    def _cache_copy(self, aggregate: A) -> None:
        """Cache a copy of ``aggregate`` (stored, nothing pending), or drop its entry if it has none."""
        cache = self._cache
        assert cache is not None
        copied = self._copy(aggregate)
        if copied is None:
            cache.drop(aggregate.id)
        else:
            cache.put(copied)

    def _read(
        self, aggregate_id: str, stream: str, start: int | None, limit: int | None
    ) -> Iterator[RecordedEvent]:
        try:
            return self._store.read_stream(stream, from_revision=start, limit=limit)
        except (StreamNotFoundError, StreamDeletedError):
            raise AggregateNotFoundError(self._type.__name__, aggregate_id) from None

    def _replay(
        self,
        aggregate: A,
        records: Iterator[RecordedEvent],
        at_time: datetime | None,
        check: _RedeliveryCheck | None,
        seen: list[uuid.UUID] | None = None,
    ) -> int:
        # This loop runs once per stored event: what EventRegistry.decode and Aggregate._replayed
        # do is inlined for the usual event (JSON, written at its class's current version), and
        # the event type is checked once per type, not once per event (see _fast_path).
        paths = self._fast_paths
        decode = self._registry.decode
        when = aggregate.when
        # The check's next id, compared here: a method call only for the command's own events.
        wanted = check.next_id if check is not None else None
        count = 0
        for recorded in records:
            if at_time is not None and recorded.recorded_at > at_time:
                break
            path = paths.get(recorded.type)
            if path is None:
                path = self._fast_path(recorded)
            _, validate, tail, alone = path
            metadata = recorded.metadata
            if recorded.content_type == _JSON and (metadata == alone or metadata.endswith(tail)):
                try:
                    event = validate(recorded.data)
                except ValidationError:
                    decode(recorded)  # raises the CorruptEventError that names stream and revision
                    raise
            else:
                event = decode(recorded)  # an older schema version (upcast), or unusual metadata
            when(event)
            aggregate._version = recorded.revision
            if seen is not None:
                seen.append(recorded.id)
            if wanted is not None and recorded.id == wanted:
                assert check is not None
                check.see(recorded)
                wanted = check.next_id
            count += 1
        return count

    def _fast_path(self, recorded: RecordedEvent) -> FastPath:
        """How to decode events of ``recorded``'s type, checked once to be one this aggregate handles.

        The registry only ever adds names (a name never changes class), so what is kept here
        stays right; a type registered later is met here first.
        """
        registry = self._registry
        if recorded.type in registry and issubclass(registry.event_class(recorded.type), self._event_classes):
            path = self._fast_paths[recorded.type] = registry.fast_path(recorded.type)
            return path
        registry.decode(recorded)  # an unknown type or a corrupt payload is reported as such
        raise CorruptEventError(
            f"{self._type.__name__} does not handle {recorded.type!r} events.",
            stream=recorded.stream,
            revision=recorded.revision,
            event_type=recorded.type,
        )

    def history(self, aggregate_id: str) -> Iterator[EventEnvelope[Any]]:
        """Every stored event of the aggregate with its metadata (who, why, when), oldest first."""
        stream = self.stream_name(aggregate_id)
        records = self._read(aggregate_id, stream, None, None)
        decode = self._registry.decode_envelope
        return (decode(recorded) for recorded in records)

    # -- saving ---------------------------------------------------------------------------

    def save(self, aggregate: A) -> AppendResult | None:
        """Append the aggregate's pending events, expecting its stream at ``aggregate.version``.

        Outside a command: appends now and returns the stream's new revision and commit
        position, or ``None`` if nothing was pending. Inside a command (a unit of work, see
        :mod:`eventsourcing_cqrs.unit_of_work`) it only stages the append and returns
        ``None``: the bus appends it when the handler returns and reports it in the
        :class:`~eventsourcing_cqrs.bus.CommandResult`. A command saves one aggregate: saving
        a second one raises :class:`InvalidInputError` before anything is written.

        Raises :class:`WrongExpectedVersionError` when another writer got there first
        (reload and decide again: the command bus does it for you) and
        :class:`AggregateAlreadyExistsError` when a new aggregate's id is taken.
        """
        if not isinstance(aggregate, self._type):
            raise InvalidInputError("aggregate", aggregate, f"this repository saves {self._type.__name__}")
        if aggregate.is_historical:
            raise InvalidInputError("aggregate", aggregate, "a past state (at_version/at_time) is read-only")
        pending = aggregate.pending_events
        if not pending:
            return None
        stream = self.stream_name(aggregate.id)
        work = current_unit_of_work()
        if work is None:
            encode = self._registry.encode
            metadata = Metadata()
            return self._append(aggregate, stream, [encode(event, metadata) for event in pending], None)
        ids = work.claim_event_ids(stream, len(pending))
        encode_with = self._registry.encode_with
        metadata_for = work.metadata_json
        events = [
            encode_with(event, metadata_for, event_id=event_id)
            for event, event_id in zip(pending, ids, strict=True)
        ]

        def append() -> None:
            self._append(aggregate, stream, events, work)

        work.stage(stream, aggregate, append)
        return None

    def _append(
        self, aggregate: A, stream: StreamName, events: list[NewEvent], work: UnitOfWork | None
    ) -> AppendResult:
        before = aggregate.version
        expected = StreamState.NO_STREAM if before < 0 else before
        cache = self._cache
        try:
            result = self._store.append(stream, events, expected_version=expected)
        except WrongExpectedVersionError as exc:
            if cache is not None:
                cache.drop(aggregate.id)  # the retry reloads from the store
            if before < 0:
                raise AggregateAlreadyExistsError(self._type.__name__, aggregate.id) from exc
            raise
        except BaseException:
            if cache is not None:
                cache.drop(aggregate.id)  # the append's outcome is unknown: trust only the store
            raise
        if work is not None and result.already_written:
            # The store found this command's events already written: a redelivery that no load
            # could spot (a creation, or a delivery racing the first one).
            if cache is not None:
                cache.drop(aggregate.id)
            raise CommandAlreadyHandled(work.context.command_id, result)
        aggregate._saved(result.revision)
        if work is not None:
            work.record(result)
        if enabled("debug"):
            logger.debug(
                "aggregate.saved",
                stream=stream,
                events=len(events),
                revision=result.revision,
                commit_position=result.position,
            )
        if self._track_ids:
            _remember_ids(aggregate, [event.id for event in events], self._dedup_window)
        every = self._snapshot_every
        if every is not None and (before + 1) // every != (result.revision + 1) // every:
            self._write_snapshot(aggregate)
        if cache is not None:
            # Write-through, after the snapshot read back any ids. In a command the handler has
            # returned and its aggregate is done with: it is cached as it is, not copied.
            if work is not None:
                cache.put(aggregate)
            else:
                self._cache_copy(aggregate)
        return result

    # -- snapshots ------------------------------------------------------------------------

    def take_snapshot(self, aggregate_id: str) -> int:
        """Store a snapshot of the aggregate now (e.g. after a bulk import); returns its version."""
        if self._snapshot_every is None:
            raise InvalidInputError("snapshot_every", None, "snapshots are not enabled for this repository")
        aggregate = self.load(aggregate_id)
        self._write_snapshot(aggregate)
        return aggregate.version

    def _write_snapshot(self, aggregate: A) -> None:
        version = aggregate.version
        schema = self._type.snapshot_version
        stream = self.snapshot_stream_name(aggregate.id)
        try:
            state = aggregate.snapshot()
            recent = self._recent_ids_of(aggregate)
            metadata = json.dumps(
                {
                    _AGGREGATE_VERSION_KEY: version,
                    _SNAPSHOT_VERSION_KEY: schema,
                    _RECENT_IDS_KEY: base64.b64encode(recent).decode("ascii"),
                }
            ).encode()
            event = NewEvent(
                SNAPSHOT_EVENT_TYPE,
                state.model_dump_json().encode(),
                metadata,
                id=uuid.uuid5(_SNAPSHOT_NAMESPACE, f"{stream}/{version}/{schema}"),
            )
            # An exact expected version, never ANY: EventStoreDB recognises an ANY re-append
            # only while its bounded cache of recent ids remembers it (a restart empties it).
            last = self._last_snapshot_record(stream)
            if last is not None and last.id == event.id:
                logger.debug("snapshot.already_written", stream=stream, version=version)
                return
            expected = StreamState.NO_STREAM if last is None else last.revision
            self._store.append(stream, [event], expected_version=expected)
        except WrongExpectedVersionError:
            # Another process snapshotted this aggregate meanwhile: its snapshot serves as well.
            logger.debug("snapshot.skipped", stream=stream, version=version, reason="written concurrently")
            return
        except Exception:  # the events are stored; a failed snapshot only costs replay time
            logger.warning("snapshot.write_failed", stream=stream, version=version, exc_info=True)
            return
        logger.debug("snapshot.written", stream=stream, version=version)

    def _last_snapshot_record(self, stream: str) -> RecordedEvent | None:
        try:
            return next(iter(self._store.read_stream(stream, backwards=True, limit=1)), None)
        except StreamNotFoundError:
            return None

    def _recent_ids_of(self, aggregate: A) -> bytes:
        """The ids of the aggregate's last ``dedup_window`` events: remembered since its load,
        or (for an aggregate loaded from a snapshot that did not carry them) read back."""
        known: bytes | None = aggregate.__dict__.get(_RECENT_IDS_ATTRIBUTE)
        if known is not None or not self._dedup_window:
            return known or b""
        version = aggregate.version
        first = max(0, version - self._dedup_window + 1)
        records = self._store.read_stream(
            self.stream_name(aggregate.id), from_revision=first, limit=version - first + 1
        )
        known = b"".join(recorded.id.bytes for recorded in records)
        aggregate.__dict__[_RECENT_IDS_ATTRIBUTE] = known
        return known

    def _latest_snapshot(self, aggregate_id: str, at_most: int | None) -> _Snapshot | None:
        stream = self.snapshot_stream_name(aggregate_id)
        snapshot_type = self._type.snapshot_type
        assert snapshot_type is not None
        try:
            records = self._store.read_stream(
                stream, backwards=True, limit=None if at_most is not None else 1
            )
        except (StreamNotFoundError, StreamDeletedError):
            return None
        for recorded in records:
            try:
                metadata = json.loads(recorded.metadata)
                version = int(metadata[_AGGREGATE_VERSION_KEY])
                schema = metadata[_SNAPSHOT_VERSION_KEY]
            except (ValueError, TypeError, KeyError):
                logger.warning(
                    "snapshot.ignored", stream=stream, revision=recorded.revision, reason="bad metadata"
                )
                return None
            if at_most is not None and version > at_most:
                continue
            if recorded.type != SNAPSHOT_EVENT_TYPE or schema != self._type.snapshot_version:
                logger.info(
                    "snapshot.ignored",
                    stream=stream,
                    revision=recorded.revision,
                    reason=f"snapshot version {schema!r}, current {self._type.snapshot_version}",
                )
                return None
            try:
                state = snapshot_type.model_validate_json(recorded.data)
            except ValidationError as exc:
                logger.warning("snapshot.ignored", stream=stream, revision=recorded.revision, reason=str(exc))
                return None
            return _Snapshot(state, version, _decoded_ids(metadata.get(_RECENT_IDS_KEY)))
        return None

    def _check_recent(
        self, stream: str, revision: int, recent: bytes | None, check: _RedeliveryCheck
    ) -> None:
        """Look for the command's first event among the last ``dedup_window`` up to ``revision``,
        whose ids are ``recent`` (a snapshot's or a cached aggregate's).

        With the ids it is a search in memory; the stream is read only when the id is there (a
        redelivery), from that event on, for the original result. Without them (``None``: a
        snapshot written by an earlier version) the ``dedup_window`` events before are read.
        """
        if recent is not None:
            index = _find_id(recent, check.next_id.bytes)
            if index is None:
                return
            first = revision - len(recent) // _ID_SIZE + 1 + index
        else:
            first = max(0, revision - self._dedup_window + 1)
        try:
            records = self._store.read_stream(stream, from_revision=first, limit=revision - first + 1)
        except (StreamNotFoundError, StreamDeletedError):
            return
        for recorded in records:
            check.see(recorded)


def _decoded_ids(value: object) -> bytes | None:
    """The ids a snapshot's metadata carries, or ``None`` if it carries none (or garbage)."""
    if not isinstance(value, str):
        return None
    try:
        ids = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return ids if len(ids) % _ID_SIZE == 0 else None
