"""Audit-trail replay: what happened to an entity, who caused it, what it looked like then.

:class:`AuditTrail` answers the auditor's questions from any event store (memory, SQLite,
EventStoreDB), reading only:

* :meth:`AuditTrail.history` — every event of a stream with its revision, ``$all`` position,
  recorded time, type, actor and correlation id (from the event's metadata);
* :meth:`AuditTrail.state` — the aggregate's state at version N or at time T, rebuilt by its
  :class:`~eventsourcing_cqrs.repository.Repository` (from a snapshot when there is one);
* :meth:`AuditTrail.diff` — which fields changed between two versions, and which events
  changed each;
* :meth:`AuditTrail.export` — a stream, or the whole of ``$all``, as JSON lines or CSV,
  streamed: memory stays flat however long the history;
* :meth:`AuditTrail.trace` — every event of one correlation (the chain of commands and events
  that a first command set off), in commit order, with its depth in the causation chain;
* :meth:`AuditTrail.streams` — the streams of the store, with their sizes.

Example::

    audit = AuditTrail(store, app.aggregates)
    for entry in audit.history("Account-42"):
        print(entry.revision, entry.event_type, entry.actor, entry.correlation_id)
    print(audit.state("Account-42", at_version=3).fields)   # {'owner': 'Ada', 'balance': ...}
    with open("account-42.jsonl", "w") as out:
        audit.export(out, stream="Account-42")

**Costs.** History, state, diff and export read what they show (a diff keeps the events between
its two versions in memory; the others stream). :meth:`~AuditTrail.trace` and
:meth:`~AuditTrail.streams` scan ``$all`` from the start (or from ``from_position``): their cost
grows with the size of the store, not of the answer. Events whose raw metadata does not contain
the correlation id are skipped before parsing, so a trace reads at the store's page speed.
On EventStoreDB with the ``$by_correlation_id`` system projection enabled, the server keeps the
same answer in the ``$bc-{correlationId}`` streams (link events), which this port does not
resolve; the scan gives the same events on every store. A stream listing keeps one small record
per stream in memory.

Audit tools read events as stored. :meth:`~AuditTrail.history`, :meth:`~AuditTrail.export` and
:meth:`~AuditTrail.trace` never decode event payloads with the application's classes, so a stream
holding unknown or corrupt events can still be inspected; metadata that is not a JSON object is
reported in :attr:`AuditEntry.metadata_error` rather than raised. :meth:`~AuditTrail.state` and
:meth:`~AuditTrail.diff` decode (and upcast) through the aggregate's registry, like the write side.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import enum
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, Generic, Literal, TextIO, TypeVar

import structlog
from pydantic import BaseModel

from eventsourcing_cqrs.aggregate import Aggregate, event_classes_of
from eventsourcing_cqrs.errors import (
    AggregateNotFoundError,
    CorruptEventError,
    InvalidInputError,
    NoEventsAtTimeError,
    StreamDeletedError,
    StreamNotFoundError,
)
from eventsourcing_cqrs.event_store.port import (
    CAUSATION_ID_KEY,
    CORRELATION_ID_KEY,
    EventFilter,
    EventStore,
    RecordedEvent,
    StreamName,
    validate_limit,
    validate_position,
    validate_revision,
)
from eventsourcing_cqrs.messages import ACTOR_KEY, COMMAND_ID_KEY, SCHEMA_VERSION_KEY
from eventsourcing_cqrs.repository import Repository
from eventsourcing_cqrs.serialization import EventRegistry

__all__ = [
    "EXPORT_COLUMNS",
    "AggregateSpec",
    "AggregateState",
    "AuditEntry",
    "AuditTrail",
    "ExportFormat",
    "FieldChange",
    "StateDiff",
    "StreamSummary",
    "TraceStep",
    "jsonable",
]

logger = structlog.get_logger(__name__)

#: The two export formats.
ExportFormat = Literal["jsonl", "csv"]

#: The columns of a CSV export, in order (``data`` and ``metadata`` hold compact JSON).
EXPORT_COLUMNS = (
    "position",
    "stream",
    "revision",
    "recorded_at",
    "type",
    "id",
    "actor",
    "correlation_id",
    "causation_id",
    "command_id",
    "data",
    "metadata",
)

_JSON = "application/json"


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON types: decimals and ids as strings, times in ISO 8601, models as dicts.

    Decimals become strings so that amounts keep their exact digits (as the event payloads do).
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, set | frozenset):
        return sorted((jsonable(item) for item in value), key=repr)
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    return repr(value)


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


A = TypeVar("A", bound=Aggregate[Any])


@dataclass(frozen=True, slots=True)
class AggregateSpec(Generic[A]):
    """One aggregate type of an application: its class, the registry decoding its events, and
    how its state is shown by audit tools.

    ``state`` turns an aggregate into the fields an auditor sees; by default they are the
    aggregate's public instance attributes (those not starting with ``_``), or its snapshot
    when it keeps its state in slots.
    """

    aggregate: type[A]
    registry: EventRegistry | None = None
    snapshot_every: int | None = None
    state: Callable[[A], Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.aggregate, type) and issubclass(self.aggregate, Aggregate)):
            raise InvalidInputError("aggregate", self.aggregate, "give an Aggregate subclass")
        category = getattr(self.aggregate, "category", None)
        StreamName.for_aggregate(category or "", "x")  # a clear error for a missing or bad category
        event_classes_of(self.aggregate)  # and for an aggregate without Aggregate[Events]

    @property
    def category(self) -> str:
        """The stream category of this aggregate (``Account`` for ``Account-42``)."""
        category: str = self.aggregate.category
        return category

    def repository(self, store: EventStore) -> Repository[A]:
        """A repository of these aggregates in ``store``."""
        return Repository(store, self.aggregate, self.registry, snapshot_every=self.snapshot_every)

    def state_of(self, aggregate: A) -> dict[str, Any]:
        """The fields an auditor sees of ``aggregate`` (Python values, not yet JSON)."""
        if self.state is not None:
            return dict(self.state(aggregate))
        attributes = getattr(aggregate, "__dict__", None)
        if attributes is not None:
            return {name: value for name, value in attributes.items() if not name.startswith("_")}
        if self.aggregate.snapshot_type is not None:
            return dict(aggregate.snapshot())
        raise InvalidInputError(
            "aggregate",
            self.aggregate.__name__,
            "its state is not in public attributes; give AggregateSpec(state=...) to show it",
        )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One stored event as an auditor sees it: where, when, what, who and why.

    ``metadata`` is the event's metadata parsed as a JSON object (empty when there is none);
    when it is not a JSON object, it is empty and ``metadata_error`` says why.
    """

    recorded: RecordedEvent
    metadata: Mapping[str, Any]
    metadata_error: str | None = None

    @classmethod
    def of(cls, recorded: RecordedEvent) -> AuditEntry:
        """The entry of a stored event (never raises on bad metadata)."""
        if not recorded.metadata:
            return cls(recorded, {})
        try:
            parsed = json.loads(recorded.metadata)
        except (ValueError, UnicodeDecodeError):
            return cls(recorded, {}, "the metadata is not valid JSON")
        if not isinstance(parsed, dict):
            return cls(recorded, {}, "the metadata is not a JSON object")
        return cls(recorded, parsed)

    @property
    def stream(self) -> str:
        """The event's stream."""
        return self.recorded.stream

    @property
    def revision(self) -> int:
        """The event's revision in its stream (from 0)."""
        return self.recorded.revision

    @property
    def position(self) -> int:
        """The event's commit position in ``$all``."""
        return self.recorded.position

    @property
    def recorded_at(self) -> datetime:
        """When the store recorded the event."""
        return self.recorded.recorded_at

    @property
    def event_type(self) -> str:
        """The event's stored type name."""
        return self.recorded.type

    @property
    def event_id(self) -> uuid.UUID:
        """The event's id."""
        return self.recorded.id

    @property
    def actor(self) -> str | None:
        """Who the event was written for (metadata ``actor``)."""
        return _text(self.metadata.get(ACTOR_KEY))

    @property
    def correlation_id(self) -> str | None:
        """The business transaction the event belongs to (metadata ``$correlationId``)."""
        return _text(self.metadata.get(CORRELATION_ID_KEY))

    @property
    def causation_id(self) -> str | None:
        """The id of the command or event that caused it (metadata ``$causationId``)."""
        return _text(self.metadata.get(CAUSATION_ID_KEY))

    @property
    def command_id(self) -> str | None:
        """The id of the command that wrote it (metadata ``commandId``)."""
        return _text(self.metadata.get(COMMAND_ID_KEY))

    @property
    def schema_version(self) -> int:
        """The schema version of the payload (1 when the metadata does not say)."""
        version = self.metadata.get(SCHEMA_VERSION_KEY, 1)
        return version if isinstance(version, int) and not isinstance(version, bool) else 1

    def data(self) -> Any:
        """The payload parsed as JSON, or ``None`` when it is not JSON (see :meth:`to_dict`)."""
        if self.recorded.content_type != _JSON:
            return None
        try:
            return json.loads(self.recorded.data) if self.recorded.data else None
        except (ValueError, UnicodeDecodeError):
            return None

    def to_dict(self, *, payload: bool = True) -> dict[str, Any]:
        """The entry as JSON types, in a stable key order.

        With ``payload``, ``data`` holds the parsed payload and ``metadata`` the parsed
        metadata; a payload that is not JSON is given as ``data_base64`` instead, so an export
        loses nothing.
        """
        entry: dict[str, Any] = {
            "position": self.position,
            "stream": self.stream,
            "revision": self.revision,
            "recorded_at": self.recorded_at.isoformat(),
            "type": self.event_type,
            "id": str(self.event_id),
            "actor": self.actor,
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "command_id": self.command_id,
        }
        if payload:
            data = self.data()
            if data is None and self.recorded.data:
                entry["data_base64"] = base64.b64encode(self.recorded.data).decode("ascii")
                entry["content_type"] = self.recorded.content_type
            else:
                entry["data"] = data
            entry["metadata"] = dict(self.metadata)
            if self.metadata_error is not None:
                entry["metadata_error"] = self.metadata_error
                entry["metadata_base64"] = base64.b64encode(self.recorded.metadata).decode("ascii")
        return entry


@dataclass(frozen=True, slots=True)
class AggregateState:
    """An aggregate's state as of one version of its stream.

    ``fields`` holds JSON types (see :func:`jsonable`); ``recorded_at`` is when the event at
    ``version`` was recorded.
    """

    stream: str
    aggregate_type: str
    aggregate_id: str
    version: int
    recorded_at: datetime
    fields: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The state as JSON types."""
        return {
            "stream": self.stream,
            "aggregate_type": self.aggregate_type,
            "aggregate_id": self.aggregate_id,
            "version": self.version,
            "recorded_at": self.recorded_at.isoformat(),
            "fields": dict(self.fields),
        }


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field that changed between two versions, and the events that changed it, in order.

    A field that changed and changed back is listed too (``before == after``): its events
    still tell what happened.
    """

    field: str
    before: Any
    after: Any
    changed_by: tuple[AuditEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        """The change as JSON types; each event as its revision, type and recorded time."""
        return {
            "field": self.field,
            "before": self.before,
            "after": self.after,
            "changed_by": [
                {"revision": e.revision, "type": e.event_type, "recorded_at": e.recorded_at.isoformat()}
                for e in self.changed_by
            ],
        }


@dataclass(frozen=True, slots=True)
class StateDiff:
    """What happened to an aggregate between two versions: the states, the events, the changes."""

    before: AggregateState
    after: AggregateState
    events: tuple[AuditEntry, ...]
    changes: tuple[FieldChange, ...]

    def to_dict(self) -> dict[str, Any]:
        """The diff as JSON types."""
        return {
            "stream": self.before.stream,
            "from_version": self.before.version,
            "to_version": self.after.version,
            "before": self.before.to_dict(),
            "after": self.after.to_dict(),
            "events": [entry.to_dict() for entry in self.events],
            "changes": [change.to_dict() for change in self.changes],
        }


@dataclass(frozen=True, slots=True)
class TraceStep:
    """An event in a correlation trace, with its depth in the causation chain.

    Depth 0 is the events of the first command; an event written by a command that reacted to
    an event (or was dispatched by a command) of depth ``d`` has depth ``d + 1``.
    """

    entry: AuditEntry
    depth: int

    def to_dict(self) -> dict[str, Any]:
        """The step as JSON types."""
        return {"depth": self.depth, **self.entry.to_dict()}


@dataclass(frozen=True, slots=True)
class StreamSummary:
    """A stream as seen in ``$all``: how many events, its last revision, and when it was written.

    ``events`` counts the stream's events in ``$all`` (a soft-deleted stream's events stay
    there until scavenged, as on EventStoreDB); ``deleted`` says the stream now reads as not
    found (soft-deleted) or is tombstoned.
    """

    stream: str
    events: int
    last_revision: int
    first_position: int
    last_position: int
    first_recorded_at: datetime
    last_recorded_at: datetime
    deleted: bool = False

    @property
    def category(self) -> str:
        """The part of the name before the first ``-``."""
        return self.stream.split("-", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON types."""
        return {
            "stream": self.stream,
            "category": self.category,
            "events": self.events,
            "last_revision": self.last_revision,
            "first_position": self.first_position,
            "last_position": self.last_position,
            "first_recorded_at": self.first_recorded_at.isoformat(),
            "last_recorded_at": self.last_recorded_at.isoformat(),
            "deleted": self.deleted,
        }


class AuditTrail:
    """Audit-trail replay over an event store (see the module docstring).

    ``aggregates`` are needed only for :meth:`state` and :meth:`diff`: they say which aggregate
    class owns a stream's category (usually ``app.aggregates`` of an
    :class:`~escqrs.app.AppSpec`).
    """

    def __init__(self, events: EventStore, aggregates: Iterable[AggregateSpec[Any]] = ()) -> None:
        if not all(callable(getattr(events, method, None)) for method in ("read_stream", "read_all")):
            raise InvalidInputError(
                "event store", events, "give an event store (memory, SQLite or EventStoreDB adapter)"
            )
        if isinstance(aggregates, str) or not isinstance(aggregates, Iterable):
            raise InvalidInputError("aggregates", aggregates, "give an iterable of AggregateSpec")
        self._events = events
        self._aggregates: dict[str, AggregateSpec[Any]] = {}
        for spec in aggregates:
            if not isinstance(spec, AggregateSpec):
                raise InvalidInputError(
                    "aggregates", spec, "each item must be an AggregateSpec (AggregateSpec(Account))"
                )
            self._aggregates[spec.category] = spec

    # -- reading --------------------------------------------------------------------------

    def history(
        self,
        stream: str,
        *,
        from_revision: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
    ) -> Iterator[AuditEntry]:
        """The events of ``stream`` in revision order (newest first when ``backwards``).

        Raises :class:`~eventsourcing_cqrs.errors.StreamNotFoundError` when the stream has no
        events (or was soft-deleted) and :class:`~eventsourcing_cqrs.errors.StreamDeletedError`
        when it was tombstoned, at the call, not at the first iteration.
        """
        name = StreamName(stream)
        if from_revision is not None:
            validate_revision(from_revision, "from_revision")
        records = self._events.read_stream(
            name, from_revision=from_revision, backwards=backwards, limit=validate_limit(limit)
        )
        return (AuditEntry.of(recorded) for recorded in records)

    def read_all(
        self,
        *,
        from_position: int | None = None,
        limit: int | None = None,
        backwards: bool = False,
        filter: EventFilter | None = None,
    ) -> Iterator[AuditEntry]:
        """Events of ``$all`` in commit order, as audit entries (the port's ``read_all``)."""
        if from_position is not None:
            validate_position(from_position, "from_position")
        records = self._events.read_all(
            from_position=from_position, limit=validate_limit(limit), backwards=backwards, filter=filter
        )
        return (AuditEntry.of(recorded) for recorded in records)

    def streams(
        self,
        *,
        prefix: str | None = None,
        include_system: bool = False,
        check_deleted: bool = True,
    ) -> list[StreamSummary]:
        """Every stream with events in ``$all`` (whose name starts with ``prefix``), by name.

        Scans ``$all`` (see the module docstring for the cost). With ``check_deleted``, one
        ``stream_version`` call per stream marks the streams deleted since.
        """
        if prefix is not None:
            filter_ = EventFilter(by="stream_name", prefixes=(prefix,), include_system_events=include_system)
        else:
            filter_ = EventFilter(include_system_events=include_system)
        found: dict[str, list[Any]] = {}
        for recorded in self._events.read_all(filter=filter_):
            row = found.get(recorded.stream)
            if row is None:
                found[recorded.stream] = [
                    1,
                    recorded.revision,
                    recorded.position,
                    recorded.position,
                    recorded.recorded_at,
                    recorded.recorded_at,
                ]
            else:
                row[0] += 1
                row[1] = max(row[1], recorded.revision)
                row[3] = recorded.position
                row[5] = recorded.recorded_at
        summaries = []
        for name in sorted(found):
            count, revision, first, last, first_at, last_at = found[name]
            deleted = False
            if check_deleted:
                try:
                    deleted = self._events.stream_version(name) is None
                except StreamDeletedError:
                    deleted = True
            summaries.append(StreamSummary(name, count, revision, first, last, first_at, last_at, deleted))
        return summaries

    # -- past states ----------------------------------------------------------------------

    def _aggregate_for(self, stream: str) -> tuple[AggregateSpec[Any], str]:
        name = StreamName(stream)
        category, separator, aggregate_id = name.partition("-")
        spec = self._aggregates.get(category)
        if spec is None or not separator or not aggregate_id:
            known = ", ".join(sorted(self._aggregates)) or "none was given"
            raise InvalidInputError(
                "stream",
                stream,
                "it is not the stream of a known aggregate, so its state cannot be rebuilt "
                f"(a stream is '{{Category}}-{{id}}'; known categories: {known})",
            )
        return spec, aggregate_id

    def _recorded_at(self, stream: str, version: int) -> datetime:
        for recorded in self._events.read_stream(stream, from_revision=version, limit=1):
            return recorded.recorded_at
        raise StreamNotFoundError(stream)  # pragma: no cover - the repository has just read it

    def state(
        self,
        stream: str,
        *,
        at_version: int | None = None,
        at_time: datetime | None = None,
    ) -> AggregateState:
        """The state of the aggregate stored in ``stream``: now, at version ``at_version`` (the
        stream revision of its last event), or as of ``at_time`` (timezone-aware; events recorded
        at or before it).

        Raises :class:`~eventsourcing_cqrs.errors.AggregateNotFoundError` when the stream has no
        events (:class:`~eventsourcing_cqrs.errors.NoEventsAtTimeError`, naming the time of its
        first event, when it has none by ``at_time``) and
        :class:`~eventsourcing_cqrs.errors.InvalidInputError` for a version beyond the last one
        or a stream of no known aggregate.
        """
        spec, aggregate_id = self._aggregate_for(stream)
        try:
            aggregate = spec.repository(self._events).load(
                aggregate_id, at_version=at_version, at_time=at_time
            )
        except AggregateNotFoundError as exc:
            if at_time is None:
                raise
            first = next(iter(self._events.read_stream(stream, limit=1)), None)
            if first is None:
                raise
            raise NoEventsAtTimeError(
                spec.aggregate.__name__, aggregate_id, stream, at_time, first.recorded_at
            ) from exc
        logger.debug("audit.state_loaded", stream=stream, version=aggregate.version)
        return AggregateState(
            stream=str(aggregate.stream),
            aggregate_type=spec.aggregate.__name__,
            aggregate_id=aggregate_id,
            version=aggregate.version,
            recorded_at=self._recorded_at(aggregate.stream, aggregate.version),
            fields=jsonable(spec.state_of(aggregate)),
        )

    def diff(self, stream: str, from_version: int, to_version: int) -> StateDiff:
        """What changed in the aggregate of ``stream`` from version ``from_version`` to ``to_version``.

        Loads the state at ``from_version``, then applies the events up to ``to_version`` one
        by one, noting after each which fields it changed. Raises
        :class:`~eventsourcing_cqrs.errors.InvalidInputError` when ``from_version`` is after
        ``to_version`` or ``to_version`` is beyond the stream's last version.
        """
        validate_revision(from_version, "from version")
        validate_revision(to_version, "to version")
        if from_version > to_version:
            raise InvalidInputError(
                "from version", from_version, f"it must not be after the to version {to_version}"
            )
        spec, aggregate_id = self._aggregate_for(stream)
        repository = spec.repository(self._events)
        # Loading the later version first checks that it exists before any work is done.
        after_state = repository.load(aggregate_id, at_version=to_version)
        aggregate = repository.load(aggregate_id, at_version=from_version)
        name = aggregate.stream
        # States are compared in their JSON form: a fresh copy each time, so that a field the
        # aggregate mutates in place (a list, a dict) is still seen to change.
        before_fields: dict[str, Any] = jsonable(spec.state_of(aggregate))
        before = AggregateState(
            str(name),
            spec.aggregate.__name__,
            aggregate_id,
            from_version,
            self._recorded_at(name, from_version),
            before_fields,
        )
        allowed = event_classes_of(spec.aggregate)
        decode = repository.registry.decode
        current = before_fields
        touched: dict[str, list[AuditEntry]] = {}
        entries: list[AuditEntry] = []
        count = to_version - from_version
        records = self._events.read_stream(name, from_revision=from_version + 1, limit=count) if count else ()
        for recorded in records:
            event = decode(recorded)
            if not isinstance(event, allowed):
                raise CorruptEventError(
                    f"{spec.aggregate.__name__} does not handle {recorded.type!r} events.",
                    stream=recorded.stream,
                    revision=recorded.revision,
                    event_type=recorded.type,
                )
            # ``when`` is the aggregate's own state transition, the same one replay uses.
            aggregate.when(event)
            entry = AuditEntry.of(recorded)
            entries.append(entry)
            now: dict[str, Any] = jsonable(spec.state_of(aggregate))
            for field_name in dict.fromkeys([*current, *now]):
                if current.get(field_name, _MISSING) != now.get(field_name, _MISSING):
                    touched.setdefault(field_name, []).append(entry)
            current = now
        final = current
        after = AggregateState(
            str(name),
            spec.aggregate.__name__,
            aggregate_id,
            after_state.version,
            entries[-1].recorded_at if entries else before.recorded_at,
            final,
        )
        changes = tuple(
            FieldChange(
                field=field_name,
                before=before.fields.get(field_name),
                after=final.get(field_name),
                changed_by=tuple(changed_by),
            )
            for field_name, changed_by in touched.items()
        )
        return StateDiff(before=before, after=after, events=tuple(entries), changes=changes)

    # -- export and trace -----------------------------------------------------------------

    def export(
        self,
        out: TextIO,
        *,
        stream: str | None = None,
        format: ExportFormat = "jsonl",
        from_position: int | None = None,
        include_system: bool = False,
    ) -> int:
        """Write ``stream``'s events (or all of ``$all`` when ``stream`` is ``None``) to ``out``.

        ``jsonl`` writes one JSON object per event (:meth:`AuditEntry.to_dict`); ``csv`` writes
        a header row then :data:`EXPORT_COLUMNS`, ``data`` and ``metadata`` as compact JSON.
        Events are read in pages and written one by one, so memory stays flat. Returns the
        number of events written. ``from_position`` and ``include_system`` apply to ``$all``.
        """
        if format not in ("jsonl", "csv"):
            raise InvalidInputError("export format", format, "use 'jsonl' or 'csv'")
        if stream is not None:
            if from_position is not None or include_system:
                raise InvalidInputError(
                    "export", stream, "from_position and include_system apply to $all, not to one stream"
                )
            entries = self.history(stream)
        else:
            filter_ = EventFilter(include_system_events=include_system)
            entries = self.read_all(from_position=from_position, filter=filter_)
        count = 0
        if format == "jsonl":
            for entry in entries:
                out.write(json.dumps(entry.to_dict(), ensure_ascii=False, separators=(",", ":")))
                out.write("\n")
                count += 1
        else:
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(EXPORT_COLUMNS)
            for entry in entries:
                writer.writerow(_csv_row(entry))
                count += 1
        logger.info("audit.exported", stream=stream or "$all", format=format, events=count)
        return count

    def trace(self, correlation_id: str, *, from_position: int | None = None) -> Iterator[TraceStep]:
        """Every event whose ``$correlationId`` is ``correlation_id``, in commit order, with depths.

        Scans ``$all`` from ``from_position`` (default: the start); see the module docstring.
        The correlation id of a command chain is, unless the first command was given another
        one, the first command's id.
        """
        if not isinstance(correlation_id, str) or not correlation_id:
            raise InvalidInputError("correlation id", correlation_id, "give a non-empty string")
        if from_position is not None:
            validate_position(from_position, "from_position")
        needle = json.dumps(correlation_id, ensure_ascii=False)[1:-1].encode()
        # A cheap byte test rules out most events before any JSON is parsed; ids that JSON might
        # spell differently (escapes) are matched by parsing every event instead.
        prefilter = needle if needle == correlation_id.encode() and b"\\" not in needle else None
        return self._trace(correlation_id, prefilter, from_position)

    def _trace(
        self, correlation_id: str, prefilter: bytes | None, from_position: int | None
    ) -> Iterator[TraceStep]:
        depth_of_event: dict[str, int] = {}
        depth_of_command: dict[str, int] = {}
        scanned = matched = 0
        for recorded in self._events.read_all(from_position=from_position):
            scanned += 1
            if prefilter is not None and prefilter not in recorded.metadata:
                continue
            entry = AuditEntry.of(recorded)
            if entry.correlation_id != correlation_id:
                continue
            matched += 1
            command = entry.command_id
            if command is not None and command in depth_of_command:
                depth = depth_of_command[command]
            else:
                cause = entry.causation_id
                if cause is not None and cause in depth_of_event:
                    depth = depth_of_event[cause] + 1
                elif cause is not None and cause != command and cause in depth_of_command:
                    depth = depth_of_command[cause] + 1
                else:
                    depth = 0
                if command is not None:
                    depth_of_command[command] = depth
            depth_of_event[str(entry.event_id)] = depth
            yield TraceStep(entry, depth)
        logger.debug("audit.traced", correlation_id=correlation_id, scanned=scanned, matched=matched)


_MISSING = object()


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _csv_row(entry: AuditEntry) -> list[Any]:
    data = entry.data()
    if data is None and entry.recorded.data:
        data_text = _compact({"base64": base64.b64encode(entry.recorded.data).decode("ascii")})
    else:
        data_text = _compact(data)
    return [
        entry.position,
        entry.stream,
        entry.revision,
        entry.recorded_at.isoformat(),
        entry.event_type,
        str(entry.event_id),
        entry.actor or "",
        entry.correlation_id or "",
        entry.causation_id or "",
        entry.command_id or "",
        data_text,
        _compact(dict(entry.metadata)),
    ]
