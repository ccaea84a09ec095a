"""The read model store port: value types and protocols. No I/O.

A projection writes *documents* (JSON objects) into *tables* that it declares, through a
:class:`ReadModelWriter`. The same projection runs unchanged on every adapter (memory, SQLite,
PostgreSQL) because this API is the whole of what it may rely on:

* ``put`` / ``get`` / ``update`` / ``delete`` a document by its string key;
* ``find`` documents by field equality (``where={"owner": "ada"}``), ordered by one field,
  with a limit and an offset (paging); ``count`` them;
* raw SQL (:meth:`ReadModelWriter.execute`) as the escape hatch, on the SQL adapters only, against
  the physical table names given by :meth:`ReadModelWriter.sql_table`.

Documents are JSON: ``Decimal``, ``UUID``, ``date`` and ``datetime`` values are stored as
strings and read back as strings. ``where`` compares with JSON types (``1`` matches ``1`` and
``1.0``, never ``"1"`` nor ``true``); ``None`` matches a null or missing field. Ordering is
portable for a field whose values are all numbers or all strings (strings in code-point
order); missing values sort first ascending and last descending; ties go by key.

Every store holds the same documents: no string in a document (at any depth), no field name
and no key may contain a NUL character (``\\x00``) or a lone surrogate (``\\ud800``...), which
PostgreSQL's JSONB refuses and UTF-8 cannot encode. ``put`` and ``update`` refuse such a
document at once, inside the handler, with :class:`~eventsourcing_cqrs.errors.InvalidInputError`
naming the table, the key and the path of the field (``address.lines[1]``), so the event that
wrote it fails (and is retried, then stops the runner or is parked) and no batch commit does.

Each projection's data lives in *generations*. The *live* generation serves queries
(:meth:`ReadModelStore.read`); a rebuild fills a *building* generation beside it, then
:meth:`ReadModelStore.switch_generation` makes it live and drops the old one in one
transaction. A generation's checkpoint is written in the same transaction as the documents,
by :meth:`ProjectionTransaction.set_checkpoint`, so a crash never applies an event twice nor
skips one.

Writers are fenced by a :class:`Lease`: each acquisition bumps an *epoch* in the store, and a
transaction opened with a superseded lease fails with
:class:`~projections.errors.LeaseLostError`, so a runner that lost its lease cannot commit.

**Segments.** A generation created with ``segments=N`` (N > 1) is written by N independent
writers, one per segment, each with its own lease (``lease(projection, role, segment=i)``, with
its own epoch), its own checkpoint and its own parked events; the documents are shared. A
transaction opened with a segment's lease moves that segment's checkpoint only. The
generation's :attr:`Generation.checkpoint` is then the lowest of its segments' (every event up
to it was considered by every segment), and :attr:`Generation.segment_progress` holds each one.
Which events belong to which segment is the runner's business (a hash of the event's
sequencing key), not the store's.

**Ordered parking.** Every parked event carries its *sequencing key* (the stream by default).
A runner parks the later events of a key that has a parked event *held back* behind it
(:attr:`ParkedEvent.held_back`, recorded and never attempted), and a retry request for one
parked event of a key is a request for all of that key's, replayed in order.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from eventsourcing_cqrs.event_store.port import RecordedEvent
from projections.errors import ProjectionDefinitionError
from projections.read_model_store._names import validate_field_name, validate_table_name

__all__ = [
    "MAX_SEGMENTS",
    "Document",
    "Generation",
    "Lease",
    "LeaseRole",
    "ParkedEvent",
    "ProjectionRecord",
    "ProjectionState",
    "ProjectionTransaction",
    "ReadModelStore",
    "ReadModelWriter",
    "ReadView",
    "SegmentProgress",
    "Table",
    "TableReader",
    "TableSpec",
    "WhereValue",
]

#: A stored document: a JSON object.
Document = dict[str, Any]
#: What ``where`` may compare a field with.
WhereValue = str | int | float | bool | None


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A document table a projection declares, with the fields to index for ``find``.

    Names are lowercase identifiers (``[a-z][a-z0-9_]*``, at most 20 characters, no double
    underscore) because they become part of SQL table names.
    """

    name: str
    indexes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        validate_table_name(self.name)
        if isinstance(self.indexes, str):
            raise ProjectionDefinitionError(
                f"table {self.name!r}",
                f"give indexes as a tuple of field names, not the string {self.indexes!r}",
            )
        for field_name in self.indexes:
            validate_field_name(field_name)

    def to_json(self) -> dict[str, Any]:
        """The spec as stored beside its generation."""
        return {"name": self.name, "indexes": list(self.indexes)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TableSpec:
        """Inverse of :meth:`to_json`."""
        return cls(str(data["name"]), tuple(str(f) for f in data.get("indexes", ())))


def tables_to_json(tables: Sequence[TableSpec]) -> str:
    """The stored form of a generation's tables."""
    return json.dumps([table.to_json() for table in tables])


def tables_from_json(text: str) -> tuple[TableSpec, ...]:
    """Inverse of :func:`tables_to_json`."""
    return tuple(TableSpec.from_json(item) for item in json.loads(text))


#: The most segments a generation may have (and the most workers a segmented runner counts).
MAX_SEGMENTS = 256


class LeaseRole(enum.Enum):
    """Which writer a lease admits: the runner of the live generation, or the builder of the next.

    ``WORKER`` leases (always with a segment number, the worker's *slot*) fence nothing: a
    segmented runner holds one while it runs so that the others can count the live workers.
    """

    RUN = "run"
    REBUILD = "rebuild"
    WORKER = "worker"


@dataclass(frozen=True, slots=True)
class SegmentProgress:
    """How far one segment of a segmented generation is."""

    segment: int
    #: The position of the last event this segment considered (``None`` before its first batch).
    checkpoint: int | None
    events_applied: int
    #: Whether this segment of a building generation has caught up once (it may then switch).
    caught_up: bool
    #: Who last took this segment's lease for the generation's role (``host:pid``), if anyone.
    owner: str | None


class ProjectionState(enum.Enum):
    """What a projection's runner was last doing, as recorded in the store."""

    NEW = "new"
    WAITING_FOR_LEASE = "waiting_for_lease"
    CATCHING_UP = "catching_up"
    LIVE = "live"
    REBUILDING = "rebuilding"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Generation:
    """One copy of a projection's tables, with the checkpoint of the events applied to it."""

    projection: str
    number: int
    version: int
    tables: tuple[TableSpec, ...]
    #: The position of the last event considered (``None`` before the first batch).
    checkpoint: int | None
    #: How many events have been applied to this generation.
    events_applied: int
    created_at: datetime
    #: How many segments write it (1: one writer, the generation's own checkpoint).
    segments: int = 1
    #: One entry per segment when ``segments > 1``, by segment number.
    segment_progress: tuple[SegmentProgress, ...] = ()

    def with_progress(self, progress: tuple[SegmentProgress, ...]) -> Generation:
        """This generation as its segments stand: the lowest checkpoint (``None`` while any segment
        has none, since every event up to it was considered by every segment) and the sum applied."""
        if not progress:
            return self
        checkpoints = [segment.checkpoint for segment in progress]
        return replace(
            self,
            checkpoint=None if None in checkpoints else min(c for c in checkpoints if c is not None),
            events_applied=sum(segment.events_applied for segment in progress),
            segment_progress=progress,
        )


@dataclass(frozen=True, slots=True)
class ProjectionRecord:
    """What the store knows of a projection: its generations, state and last error."""

    name: str
    live: Generation | None
    building: Generation | None
    state: ProjectionState
    last_error: str | None
    last_error_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class ParkedEvent:
    """An event that kept failing and was set aside so that the projection could go on.

    It keeps the whole recorded event, so it can be retried even if its stream is deleted.
    """

    projection: str
    generation: int
    position: int
    event_id: uuid.UUID
    event_type: str
    stream: str
    revision: int
    data: bytes
    metadata: bytes
    content_type: str
    recorded_at: datetime
    error: str
    attempts: int
    parked_at: datetime
    retry_requested: bool
    #: The sequencing key the runner parked it under (the stream, unless the projection says).
    key: str = ""
    #: The segment that parked it (``None`` for an unsegmented generation).
    segment: int | None = None
    #: Parked only because an earlier event of its key is parked: never attempted yet.
    held_back: bool = False

    def to_recorded(self) -> RecordedEvent:
        """The event as the store recorded it."""
        return RecordedEvent(
            id=self.event_id,
            type=self.event_type,
            data=self.data,
            metadata=self.metadata,
            stream=self.stream,
            revision=self.revision,
            position=self.position,
            recorded_at=self.recorded_at,
            content_type=self.content_type,
        )


class TableReader(Protocol):
    """Reading one document table."""

    @property
    def name(self) -> str:
        """The table's declared (logical) name."""
        ...

    def get(self, key: str) -> Document | None:
        """The document at ``key``, or ``None``."""
        ...

    def find(
        self,
        where: Mapping[str, WhereValue] | None = None,
        *,
        order_by: str | None = None,
        descending: bool = False,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Document]:
        """Documents whose fields equal ``where``'s values, ordered by ``order_by`` then key.

        ``offset`` skips that many documents of the ordered result before ``limit`` applies, so
        ``find(where, order_by="title", limit=20, offset=40)`` is the third page of 20; with
        :meth:`count` for the total, that is the whole of paging.
        """
        ...

    def count(self, where: Mapping[str, WhereValue] | None = None) -> int:
        """How many documents match ``where``."""
        ...


class Table(TableReader, Protocol):
    """Reading and writing one document table inside a unit of work."""

    def put(self, key: str, document: Mapping[str, Any]) -> None:
        """Store ``document`` at ``key``, replacing what was there."""
        ...

    def update(self, key: str, changes: Mapping[str, Any]) -> Document:
        """Merge ``changes`` into the document at ``key`` (top-level fields) and return it.

        Raises :class:`~projections.errors.DocumentNotFoundError` if there is none.
        """
        ...

    def delete(self, key: str) -> bool:
        """Remove the document at ``key``; whether there was one."""
        ...


class ReadView(Protocol):
    """A read-only view of a projection's live generation, for query handlers."""

    @property
    def generation(self) -> Generation:
        """The generation being read (with its checkpoint)."""
        ...

    def table(self, name: str) -> TableReader:
        """One of the generation's tables."""
        ...

    def sql_table(self, name: str) -> str:
        """The quoted physical name of a table, for :meth:`execute`."""
        ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run raw SQL (the adapter's dialect and parameter style) and return its rows.

        Raises :class:`~projections.errors.UnsupportedOperationError` on the memory store.
        """
        ...


class ReadModelWriter(Protocol):
    """What a projection's handlers write through: every write commits with the checkpoint."""

    def table(self, name: str) -> Table:
        """One of the projection's declared tables, in the generation being written."""
        ...

    def sql_table(self, name: str) -> str:
        """The quoted physical name of a table, for :meth:`execute`."""
        ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run raw SQL inside the transaction (the adapter's dialect and parameter style).

        Raises :class:`~projections.errors.UnsupportedOperationError` on the memory store.
        """
        ...


class ProjectionTransaction(ReadModelWriter, Protocol):
    """The runner's side of a unit of work: checkpoint and parked events, same transaction."""

    @property
    def generation(self) -> Generation:
        """The generation being written, as it was when the transaction began."""
        ...

    def set_checkpoint(self, position: int, applied: int) -> None:
        """Record that every event up to ``position`` was considered, ``applied`` of them now.

        With a segment's lease, the segment's checkpoint.
        """
        ...

    def mark_caught_up(self) -> None:
        """Record that the lease's segment caught up (building generations: every one must)."""
        ...

    def park(
        self,
        event: RecordedEvent,
        error: str,
        attempts: int,
        *,
        key: str | None = None,
        held_back: bool = False,
    ) -> None:
        """Set ``event`` aside with the error that made it fail, under its sequencing ``key``.

        ``key`` defaults to the event's stream; ``held_back`` says it was never attempted because
        an earlier event of its key is parked.
        """
        ...

    def parked_keys(self) -> set[str]:
        """The sequencing keys with parked events (in the lease's segment)."""
        ...

    def parked_for_retry(self) -> list[ParkedEvent]:
        """Parked events (of the lease's segment) whose retry was requested, by position."""
        ...

    def unpark(self, position: int) -> None:
        """Remove the parked event at ``position`` (it was retried successfully)."""
        ...

    def parked_failed_again(self, position: int, error: str, attempts: int) -> None:
        """Record that a retried parked event failed again (or stays held back, ``attempts`` 0).

        Clears its retry request; an event that was attempted (``attempts`` > 0) is no longer
        held back.
        """
        ...


class Lease(Protocol):
    """Exclusive right to write a projection's generation in one role, across processes.

    The lock is released when the holder closes it or its process dies. Acquiring bumps the
    role's epoch in the store; transactions check it.
    """

    @property
    def projection(self) -> str: ...

    @property
    def role(self) -> LeaseRole: ...

    @property
    def segment(self) -> int | None:
        """The segment it admits a writer of (``None``: the whole projection)."""
        ...

    @property
    def held(self) -> bool:
        """Whether this object holds the lease."""
        ...

    @property
    def epoch(self) -> int:
        """The fencing epoch this acquisition got (0 before the first acquisition)."""
        ...

    def try_acquire(self) -> bool:
        """Take the lease if it is free; never waits."""
        ...

    def release(self) -> None:
        """Give the lease up; idempotent."""
        ...


class ReadModelStore(Protocol):
    """Where projections keep their documents, generations, checkpoints, parked events and leases."""

    def describe(self, projection: str) -> ProjectionRecord:
        """Everything the store knows of ``projection`` (state ``NEW`` if it never ran)."""
        ...

    def projection_names(self) -> list[str]:
        """Every projection this store has a record of, sorted."""
        ...

    def create_generation(
        self,
        projection: str,
        version: int,
        tables: Sequence[TableSpec],
        *,
        lease: Lease,
        segments: int = 1,
    ) -> Generation:
        """Create an empty generation and its tables, written by ``segments`` segments.

        With a :attr:`LeaseRole.RUN` lease it becomes live (only when none is); with a
        :attr:`LeaseRole.REBUILD` lease it becomes the building generation, replacing (and
        dropping) any previous one. The lease is the whole projection's (no segment).
        """
        ...

    def switch_generation(self, projection: str, generation: int, *, lease: Lease) -> None:
        """Make the building ``generation`` live and drop the old live one, atomically."""
        ...

    def drop_generation(self, projection: str, generation: int, *, lease: Lease) -> None:
        """Drop the building ``generation`` (it is abandoned)."""
        ...

    def transaction(
        self, projection: str, generation: int, *, lease: Lease
    ) -> AbstractContextManager[ProjectionTransaction]:
        """A unit of work on ``generation``: commits on a clean exit, rolls back on an exception.

        Raises :class:`~projections.errors.LeaseLostError` if ``lease`` was superseded and
        :class:`~projections.errors.GenerationChangedError` if ``generation`` is no longer the
        one ``lease``'s role writes.
        """
        ...

    def read(self, projection: str) -> AbstractContextManager[ReadView]:
        """A read-only view of the live generation.

        Raises :class:`~projections.errors.ProjectionNotFoundError` if there is none yet.
        """
        ...

    def parked_events(self, projection: str) -> list[ParkedEvent]:
        """The live generation's parked events, by position."""
        ...

    def request_retry(
        self,
        projection: str,
        positions: Sequence[int] | None = None,
        *,
        keys: Sequence[str] | None = None,
    ) -> int:
        """Ask the runner to retry parked events; how many were marked.

        All of them by default; else those at ``positions`` and those of ``keys``. Each marked
        event marks every parked event of its sequencing key (and segment), since a key's
        events are replayed together, in order. Raises
        :class:`~projections.errors.ParkedEventNotFoundError` for an unknown position or a key
        with no parked event.
        """
        ...

    def set_state(self, projection: str, state: ProjectionState, *, error: str | None = None) -> None:
        """Record the runner's state (and, when given, its last error)."""
        ...

    def lease(self, projection: str, role: LeaseRole, *, segment: int | None = None) -> Lease:
        """A lease object for ``projection`` in ``role``, of one segment or all (not yet acquired)."""
        ...

    def lease_held(self, projection: str, role: LeaseRole, *, segment: int | None = None) -> bool:
        """Whether anyone (in any process) holds the lease."""
        ...

    def leases_held(self, projection: str, role: LeaseRole, segments: int) -> set[int]:
        """Which of segments ``0 .. segments - 1`` have their ``role`` lease held, by anyone."""
        ...

    def drop_projection(self, projection: str) -> bool:
        """Forget ``projection``: drop all its generations, parked events and record.

        Its next run builds it from scratch (as version 1 would), which is the way back after a
        version bump. Whether the store had anything of it. Raises
        :class:`~projections.errors.ProjectionRunningError` while a runner, in any process,
        holds its run or rebuild lease.
        """
        ...

    def close(self) -> None:
        """Release connections; idempotent."""
        ...
