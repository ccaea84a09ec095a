"""A read model store in this process's memory, for tests and short-lived tools.

It passes the same contract suite as the SQLite and PostgreSQL adapters: documents go through
JSON exactly as they do in a database, a unit of work is invisible to readers until it commits
and vanishes on rollback, and leases fence writers. It is thread-safe, but nothing is shared
between processes and nothing survives :meth:`InMemoryReadModelStore.close`. Raw SQL is not
available (:class:`~projections.errors.UnsupportedOperationError`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import structlog

from eventsourcing_cqrs.event_store.port import RecordedEvent
from projections.errors import (
    GenerationChangedError,
    LeaseLostError,
    ParkedEventNotFoundError,
    ProjectionNotFoundError,
    UnsupportedOperationError,
)
from projections.read_model_store._buffered import BufferedTransaction, ReadOnlyView, Where
from projections.read_model_store._documents import decode_document, matches, sort_documents
from projections.read_model_store._lease import (
    LeaseBase,
    holding_every_lease,
    refuse_segment_lease,
    validate_segment,
    validate_segment_count,
    writes_generation,
)
from projections.read_model_store._names import physical_table_name, validate_projection_name
from projections.read_model_store._parking import retry_selection
from projections.read_model_store.port import (
    Document,
    Generation,
    Lease,
    LeaseRole,
    ParkedEvent,
    ProjectionRecord,
    ProjectionState,
    SegmentProgress,
    TableSpec,
)

__all__ = ["InMemoryReadModelStore"]

logger = structlog.get_logger(__name__)

_ADAPTER = "InMemoryReadModelStore"


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass
class _GenerationData:
    info: Generation
    tables: dict[str, dict[str, str]]
    parked: dict[int, ParkedEvent] = field(default_factory=dict)
    #: Each segment's progress (owners filled in by ``describe``), when segmented.
    segments: dict[int, SegmentProgress] = field(default_factory=dict)


@dataclass
class _ProjectionData:
    name: str
    live: int | None = None
    building: int | None = None
    next_generation: int = 1
    epochs: dict[LeaseRole, int] = field(default_factory=lambda: dict.fromkeys(LeaseRole, 0))
    #: Segment leases: (role, segment) -> epoch, and who took each last.
    segment_epochs: dict[tuple[LeaseRole, int], int] = field(default_factory=dict)
    owners: dict[tuple[LeaseRole, int], str] = field(default_factory=dict)
    state: ProjectionState = ProjectionState.NEW
    last_error: str | None = None
    last_error_at: datetime | None = None
    updated_at: datetime | None = None
    generations: dict[int, _GenerationData] = field(default_factory=dict)


class _MemoryLease(LeaseBase):
    def __init__(
        self, store: InMemoryReadModelStore, projection: str, role: LeaseRole, segment: int | None
    ) -> None:
        super().__init__(projection, role, store._bump_epoch, segment)
        self._mutex = store._lease_lock(projection, role, self.segment)
        self._held = False

    def __repr__(self) -> str:
        return f"<memory lease {self.projection!r} {self.role.value} held={self._held}>"

    @property
    def held(self) -> bool:
        return self._held

    def _lock(self) -> bool:
        if not self._mutex.acquire(blocking=False):
            return False
        self._held = True
        return True

    def _unlock(self) -> None:
        self._held = False
        self._mutex.release()


class _CommittedTables:
    """The committed documents of one generation: a view's document source."""

    def __init__(self, store: InMemoryReadModelStore, data: _GenerationData) -> None:
        self._store = store
        self._data = data

    def load(self, table: str, key: str) -> str | None:
        with self._store._lock:
            return self._data.tables[table].get(key)

    def _rows(self, table: str) -> dict[str, str | None]:
        with self._store._lock:
            return dict(self._data.tables[table])

    def _items(self, table: str) -> list[tuple[str, Document]]:
        rows = self._rows(table)
        return [(key, decode_document(text)) for key, text in rows.items() if text is not None]

    def select(
        self,
        table: str,
        where: Where,
        order_by: str | None,
        descending: bool,
        *,
        limit: int | None,
        offset: int,
    ) -> list[Document]:
        found = [(key, doc) for key, doc in self._items(table) if matches(doc, where)]
        end = None if limit is None else offset + limit
        return [doc for _, doc in sort_documents(found, order_by, descending)[offset:end]]

    def select_count(self, table: str, where: Where) -> int:
        return sum(1 for _, doc in self._items(table) if matches(doc, where))

    def sql_table(self, table: str) -> str:
        raise UnsupportedOperationError(_ADAPTER, "raw SQL")

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        raise UnsupportedOperationError(_ADAPTER, "raw SQL")


class _StagedTables(_CommittedTables):
    """A transaction's document sink: writes staged over the committed documents until commit.

    The store's write lock is held for the whole transaction, so nothing else changes the
    committed documents meanwhile.
    """

    def __init__(self, store: InMemoryReadModelStore, data: _GenerationData) -> None:
        super().__init__(store, data)
        self._staged: dict[str, dict[str, str | None]] = {}

    def load(self, table: str, key: str) -> str | None:
        staged = self._staged.get(table)
        if staged is not None and key in staged:
            return staged[key]
        return self._data.tables[table].get(key)

    def _rows(self, table: str) -> dict[str, str | None]:
        rows: dict[str, str | None] = dict(self._data.tables[table])
        rows.update(self._staged.get(table, {}))
        return rows

    def write(self, table: str, upserts: list[tuple[str, str]], deletes: list[str]) -> None:
        staged = self._staged.setdefault(table, {})
        staged.update(upserts)
        staged.update(dict.fromkeys(deletes))

    def commit(self) -> None:
        for table, changes in self._staged.items():
            rows = self._data.tables[table]
            for key, text in changes.items():
                if text is None:
                    rows.pop(key, None)
                else:
                    rows[key] = text


class _MemoryLedger:
    """A transaction's checkpoint and parked events, staged until commit."""

    def __init__(self, data: _GenerationData, segment: int | None) -> None:
        self._data = data
        self._segment = segment
        self._checkpoint: tuple[int, int] | None = None
        self._caught_up = False
        self._parked_changes: dict[int, ParkedEvent | None] = {}

    def set_checkpoint(self, position: int, applied: int) -> None:
        previous = self._checkpoint[1] if self._checkpoint else 0
        self._checkpoint = (position, previous + applied)

    def mark_caught_up(self) -> None:
        self._caught_up = self._segment is not None

    def parked_keys(self) -> set[str]:
        return {event.key for event in self._parked().values() if event.segment == self._segment}

    def park(
        self,
        event: RecordedEvent,
        error: str,
        attempts: int,
        *,
        key: str | None = None,
        held_back: bool = False,
    ) -> None:
        self._parked_changes[event.position] = ParkedEvent(
            projection=self._data.info.projection,
            generation=self._data.info.number,
            position=event.position,
            event_id=event.id,
            event_type=event.type,
            stream=event.stream,
            revision=event.revision,
            data=event.data,
            metadata=event.metadata,
            content_type=event.content_type,
            recorded_at=event.recorded_at,
            error=error,
            attempts=attempts,
            parked_at=_now(),
            retry_requested=False,
            key=event.stream if key is None else key,
            segment=self._segment,
            held_back=held_back,
        )

    def _parked(self) -> dict[int, ParkedEvent]:
        parked = dict(self._data.parked)
        for position, change in self._parked_changes.items():
            if change is None:
                parked.pop(position, None)
            else:
                parked[position] = change
        return parked

    def parked_for_retry(self) -> list[ParkedEvent]:
        return sorted(
            (
                event
                for event in self._parked().values()
                if event.retry_requested and event.segment == self._segment
            ),
            key=lambda event: event.position,
        )

    def unpark(self, position: int) -> None:
        if position not in self._parked():
            raise ParkedEventNotFoundError(self._data.info.projection, position)
        self._parked_changes[position] = None

    def parked_failed_again(self, position: int, error: str, attempts: int) -> None:
        current = self._parked().get(position)
        if current is None:
            raise ParkedEventNotFoundError(self._data.info.projection, position)
        self._parked_changes[position] = replace(
            current,
            error=error,
            attempts=current.attempts + attempts,
            retry_requested=False,
            held_back=current.held_back and attempts == 0,
        )

    def commit(self) -> None:
        for position, change in self._parked_changes.items():
            if change is None:
                self._data.parked.pop(position, None)
            else:
                self._data.parked[position] = change
        if self._segment is not None:
            progress = self._data.segments[self._segment]
            if self._checkpoint is not None:
                position, applied = self._checkpoint
                progress = replace(
                    progress,
                    checkpoint=max(position, progress.checkpoint or 0),
                    events_applied=progress.events_applied + applied,
                )
            self._data.segments[self._segment] = replace(
                progress, caught_up=progress.caught_up or self._caught_up
            )
        elif self._checkpoint is not None:
            position, applied = self._checkpoint
            info = self._data.info
            self._data.info = replace(
                info,
                checkpoint=max(position, info.checkpoint or 0),
                events_applied=info.events_applied + applied,
            )


class InMemoryReadModelStore:
    """The read model store port over Python dictionaries.

    Its methods are those of :class:`~projections.read_model_store.port.ReadModelStore`, documented there.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._write_lock = threading.RLock()
        self._projections: dict[str, _ProjectionData] = {}
        self._lease_locks: dict[tuple[str, LeaseRole, int | None], threading.Lock] = {}
        self._closed = False

    def __repr__(self) -> str:
        return "InMemoryReadModelStore()"

    # -- records --------------------------------------------------------------------------

    def _record(self, projection: str) -> _ProjectionData:
        validate_projection_name(projection)
        data = self._projections.get(projection)
        if data is None:
            data = self._projections[projection] = _ProjectionData(projection)
        return data

    def _info(self, data: _ProjectionData, number: int | None, role: LeaseRole) -> Generation | None:
        """Generation ``number`` as the port describes it (segments' progress and owners included)."""
        if number is None:
            return None
        generation = data.generations[number]
        if not generation.segments:
            return generation.info
        progress = tuple(
            replace(segment, owner=data.owners.get((role, number_)))
            for number_, segment in sorted(generation.segments.items())
        )
        return generation.info.with_progress(progress)

    def describe(self, projection: str) -> ProjectionRecord:
        with self._lock:
            data = self._record(projection)
            live = self._info(data, data.live, LeaseRole.RUN)
            building = self._info(data, data.building, LeaseRole.REBUILD)
            return ProjectionRecord(
                name=projection,
                live=live,
                building=building,
                state=data.state,
                last_error=data.last_error,
                last_error_at=data.last_error_at,
                updated_at=data.updated_at,
            )

    def projection_names(self) -> list[str]:
        with self._lock:
            return sorted(self._projections)

    def set_state(self, projection: str, state: ProjectionState, *, error: str | None = None) -> None:
        with self._lock:
            data = self._record(projection)
            data.state = state
            data.updated_at = _now()
            if error is not None:
                data.last_error = error
                data.last_error_at = data.updated_at

    # -- leases ---------------------------------------------------------------------------

    def _lease_lock(self, projection: str, role: LeaseRole, segment: int | None = None) -> threading.Lock:
        with self._lock:
            return self._lease_locks.setdefault(
                (validate_projection_name(projection), role, validate_segment(role, segment)),
                threading.Lock(),
            )

    def _bump_epoch(self, projection: str, role: LeaseRole, segment: int | None, owner: str) -> int:
        with self._write_lock, self._lock:
            data = self._record(projection)
            if segment is None:
                data.epochs[role] += 1
                return data.epochs[role]
            epoch = data.segment_epochs[role, segment] = data.segment_epochs.get((role, segment), 0) + 1
            data.owners[role, segment] = owner
            return epoch

    def lease(self, projection: str, role: LeaseRole, *, segment: int | None = None) -> _MemoryLease:
        return _MemoryLease(self, projection, role, segment)

    def lease_held(self, projection: str, role: LeaseRole, *, segment: int | None = None) -> bool:
        return self._lease_lock(projection, role, segment).locked()

    def leases_held(self, projection: str, role: LeaseRole, segments: int) -> set[int]:
        validate_segment_count(segments)
        with self._lock:
            return {
                segment
                for (name, held_role, segment), lock in self._lease_locks.items()
                if name == projection
                and held_role is role
                and segment is not None
                and segment < segments
                and lock.locked()
            }

    def _check_lease(self, data: _ProjectionData, lease: Lease) -> None:
        if lease.segment is None:
            current = data.epochs[lease.role]
        else:
            current = data.segment_epochs.get((lease.role, lease.segment), 0)
        if not lease.held or lease.epoch != current:
            raise LeaseLostError(data.name, lease.role.value, lease.epoch, current)

    # -- generations ----------------------------------------------------------------------

    def create_generation(
        self,
        projection: str,
        version: int,
        tables: Sequence[TableSpec],
        *,
        lease: Lease,
        segments: int = 1,
    ) -> Generation:
        validate_segment_count(segments)
        refuse_segment_lease(lease)
        with self._write_lock, self._lock:
            data = self._record(projection)
            self._check_lease(data, lease)
            if lease.role is LeaseRole.RUN and data.live is not None:
                raise GenerationChangedError(projection, data.live)
            number = data.next_generation
            for spec in tables:
                physical_table_name(projection, number, spec.name)
            data.next_generation += 1
            info = Generation(
                projection=projection,
                number=number,
                version=version,
                tables=tuple(tables),
                checkpoint=None,
                events_applied=0,
                created_at=_now(),
                segments=segments,
            )
            data.generations[number] = _GenerationData(
                info,
                {spec.name: {} for spec in tables},
                segments={
                    segment: SegmentProgress(segment, None, 0, caught_up=False, owner=None)
                    for segment in range(segments)
                }
                if segments > 1
                else {},
            )
            if lease.role is LeaseRole.RUN:
                data.live = number
            else:
                if data.building is not None:
                    data.generations.pop(data.building, None)
                data.building = number
            logger.info("projection.generation_created", projection=projection, generation=number)
            described = self._info(data, number, lease.role)
            assert described is not None
            return described

    def switch_generation(self, projection: str, generation: int, *, lease: Lease) -> None:
        with self._write_lock, self._lock:
            data = self._record(projection)
            self._check_lease(data, lease)
            if data.building != generation:
                raise GenerationChangedError(projection, generation)
            old = data.live
            data.live, data.building = generation, None
            if old is not None:
                data.generations.pop(old, None)
            logger.info(
                "projection.generation_switched", projection=projection, generation=generation, dropped=old
            )

    def drop_generation(self, projection: str, generation: int, *, lease: Lease) -> None:
        with self._write_lock, self._lock:
            data = self._record(projection)
            self._check_lease(data, lease)
            if data.building != generation:
                raise GenerationChangedError(projection, generation)
            data.building = None
            data.generations.pop(generation, None)

    # -- units of work --------------------------------------------------------------------

    @contextmanager
    def transaction(self, projection: str, generation: int, *, lease: Lease) -> Iterator[BufferedTransaction]:
        # Writers are serialized for the whole unit of work (as SQLite's BEGIN IMMEDIATE does);
        # readers only wait for the short commit.
        with self._write_lock:
            with self._lock:
                data = self._record(projection)
                self._check_lease(data, lease)
                expected = data.live if lease.role is LeaseRole.RUN else data.building
                if expected != generation:
                    raise GenerationChangedError(projection, generation)
                written = data.generations[generation]
                if not writes_generation(lease, written.info.segments):
                    raise GenerationChangedError(projection, generation)
                documents, ledger = _StagedTables(self, written), _MemoryLedger(written, lease.segment)
                info = self._info(data, generation, lease.role)
                assert info is not None
                transaction = BufferedTransaction(info, documents, ledger)
            yield transaction
            with self._lock:
                transaction.flush()
                documents.commit()
                ledger.commit()

    @contextmanager
    def read(self, projection: str) -> Iterator[ReadOnlyView]:
        with self._lock:
            data = self._record(projection)
            if data.live is None:
                raise ProjectionNotFoundError(projection)
            generation = data.generations[data.live]
            info = self._info(data, data.live, LeaseRole.RUN)
            assert info is not None
        yield ReadOnlyView(info, _CommittedTables(self, generation))

    # -- parked events --------------------------------------------------------------------

    def parked_events(self, projection: str) -> list[ParkedEvent]:
        with self._lock:
            data = self._record(projection)
            if data.live is None:
                return []
            parked = data.generations[data.live].parked
            return [parked[position] for position in sorted(parked)]

    def request_retry(
        self,
        projection: str,
        positions: Sequence[int] | None = None,
        *,
        keys: Sequence[str] | None = None,
    ) -> int:
        with self._write_lock, self._lock:
            data = self._record(projection)
            parked = {} if data.live is None else data.generations[data.live].parked
            groups = {
                position: (event.key, -1 if event.segment is None else event.segment)
                for position, event in parked.items()
            }
            wanted = retry_selection(projection, groups, positions, keys)
            for position in wanted:
                parked[position] = replace(parked[position], retry_requested=True)
            return len(wanted)

    def drop_projection(self, projection: str) -> bool:
        validate_projection_name(projection)
        with self._lock:
            existed = projection in self._projections
        with holding_every_lease(self.lease, self.leases_held, projection), self._write_lock, self._lock:
            self._projections.pop(projection, None)
        logger.info("projection.dropped", projection=projection, existed=existed)
        return existed

    def close(self) -> None:
        self._closed = True
