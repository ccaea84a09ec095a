"""What the SQLite and PostgreSQL read model stores share: all their SQL, once.

Shared here, written once:

* :class:`SQLReadModelStore`, the whole :class:`~projections.read_model_store.port.ReadModelStore`
  port in terms of *sessions* (a connection inside an open transaction, see :class:`Session`):
  generation bookkeeping, ``create``/``switch``/``drop_generation``, transactions, reads,
  parked events and retry requests, status records and the lease epoch that fences writers;
* :class:`Catalog`, the bookkeeping tables (``rm_projections``, ``rm_generations``,
  ``rm_parked``, and for segments ``rm_segments`` and ``rm_leases``): their schema, its upgrade
  from earlier releases, and every statement on them;
* :class:`SQLDocuments`, a generation's document tables (the
  :class:`~projections.read_model_store._buffered.DocumentSink` of both adapters), and
  :class:`SQLLedger`, the checkpoint and parked events of a transaction;
* the rows those tables return, as named tuples (:class:`ProjectionRow`,
  :class:`GenerationRow`, :class:`ParkedRow`), so no reader counts columns.

What differs only in the SQL text is a :class:`Dialect`: the placeholder (``?`` or ``%s``),
the schema prefix, column types (``TEXT`` timestamps and ``INTEGER`` flags on SQLite,
``TIMESTAMPTZ`` and ``BOOLEAN`` on PostgreSQL), the document column (JSON text queried with
``json_extract`` and ``json_type``, or ``JSONB`` queried with ``->`` and ``jsonb_typeof``),
``max`` or ``GREATEST``, and the share lock (``FOR SHARE``) that PostgreSQL takes on a
projection's row.
Both speak the same upsert (``INSERT ... ON CONFLICT ... DO UPDATE SET x = excluded.x``,
SQLite 3.24 and later), so that is not in the dialect.

Kept apart, in the adapters, because it truly differs:

* connection handling: SQLite keeps one connection per thread on a file in WAL mode and writes
  in ``BEGIN IMMEDIATE`` transactions; PostgreSQL takes pooled connections;
* the locking protocols: SQLite leases are ``flock`` locks on files beside the database, and
  WAL snapshots keep a query's tables alive across a switch; PostgreSQL leases are session
  advisory locks, and queries hold a shared transaction-level advisory lock that a switch
  takes exclusively (:meth:`SQLReadModelStore._exclude_readers`);
* error translation: ``sqlite3`` result codes against psycopg's SQLSTATE classes.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import structlog

from eventsourcing_cqrs.event_store.port import RecordedEvent
from projections.errors import (
    GenerationChangedError,
    LeaseLostError,
    ParkedEventNotFoundError,
    ProjectionNotFoundError,
)
from projections.read_model_store._buffered import BufferedTransaction, ReadOnlyView, Where
from projections.read_model_store._documents import decode_document
from projections.read_model_store._lease import (
    holding_every_lease,
    refuse_segment_lease,
    validate_segment_count,
    writes_generation,
)
from projections.read_model_store._names import (
    index_name,
    physical_table_name,
    quote,
    validate_projection_name,
)
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
    tables_from_json,
    tables_to_json,
)

__all__ = [
    "Catalog",
    "Connection",
    "Dialect",
    "GenerationRow",
    "ParkedRow",
    "ProjectionRow",
    "SQLDocuments",
    "SQLLedger",
    "SQLReadModelStore",
    "Session",
    "as_datetime",
    "now",
]

logger = structlog.get_logger(__name__)


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_datetime(value: Any) -> datetime:
    """A stored timestamp (ISO text on SQLite, ``timestamptz`` on PostgreSQL) as a datetime."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


# -- what differs in the SQL text ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dialect:
    """How one database spells the shared statements.

    Shared statements are written with ``?`` placeholders; :meth:`sql` turns them into the
    database's own. The ``where`` and ``order`` functions write their own placeholders.
    """

    #: The database's parameter placeholder.
    placeholder: str
    #: What goes before a table name: ``""``, or a quoted schema and a dot.
    prefix: str
    #: Column types of the bookkeeping tables.
    integer: str
    timestamp_type: str
    binary: str
    boolean: str
    #: ``false`` as an SQL literal, for a column default.
    false: str
    #: The document column's type, and what follows a document table's column list.
    document_type: str
    document_table_options: str
    #: The document column as JSON text in a select list, and its parameter (with ``?``).
    document_text: str
    document_parameter: str
    #: The two-argument maximum function.
    greatest: str
    #: The LIMIT parameter that means no limit (an OFFSET needs a LIMIT on SQLite).
    no_limit: int | None
    #: What follows the select of a projection's row in a writer (a share lock, or nothing).
    row_lock: str
    #: ``(sql, params)`` listing a bookkeeping table's column names (for the schema upgrade).
    columns: Callable[[str], tuple[str, tuple[Any, ...]]]
    #: A datetime as the database stores it.
    timestamp: Callable[[datetime], Any]
    #: The SQL expression of a document field (indexed, and usable in raw SQL).
    field: Callable[[str], str]
    #: ``(" WHERE ...", params)`` for checked ``(field, value)`` pairs.
    where: Callable[[Where], tuple[str, list[Any]]]
    #: The ORDER BY list for ``order_by`` (``None``: by key), ties by key.
    order: Callable[[str | None, bool], str]

    def sql(self, text: str) -> str:
        """``text`` with its ``?`` placeholders in this database's style."""
        return text if self.placeholder == "?" else text.replace("?", self.placeholder)

    def table(self, name: str) -> str:
        """The quoted, schema-qualified name of table ``name`` (built from validated names)."""
        return f"{self.prefix}{quote(name)}"


class _Cursor(Protocol):
    @property
    def description(self) -> Any: ...

    @property
    def rowcount(self) -> int: ...

    def fetchall(self) -> list[Any]: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> object: ...

    def close(self) -> None: ...


class Connection(Protocol):
    """What a ``sqlite3`` and a psycopg connection both offer (after DB-API 2)."""

    def execute(self, sql: str, params: Sequence[Any], /) -> _Cursor: ...

    def cursor(self) -> _Cursor: ...


class Session:
    """One connection inside one open transaction, each call inside the adapter's translation.

    ``translated`` is the adapter's context manager that turns its driver's errors into the
    read side's (:class:`~projections.errors.ReadModelStoreError` and its kin).
    """

    def __init__(
        self, connection: Connection, translated: Callable[[], AbstractContextManager[None]]
    ) -> None:
        self._connection = connection
        self._translated = translated

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of a statement (none for a statement that returns none)."""
        with self._translated():
            cursor = self._connection.execute(sql, params)
            rows: list[tuple[Any, ...]] = [] if cursor.description is None else cursor.fetchall()
        return rows

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; how many rows it changed."""
        with self._translated():
            return self._connection.execute(sql, params).rowcount

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run a statement once for each parameter row."""
        with self._translated():
            cursor = self._connection.cursor()
            try:
                cursor.executemany(sql, rows)
            finally:
                cursor.close()

    def fetch_raw(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of a statement the caller wrote (raw SQL), which may write."""
        return self.fetch(sql, params)


class DeferredWrites(Session):
    """A unit of work that reads through a snapshot and takes the write lock at its first write.

    For a segment's batch on SQLite, whose one write lock would otherwise be held while the
    batch's handlers run, so that no two segments' handlers (in any process) could run at
    once. Reads go to ``reading`` (a read transaction: one consistent snapshot, which holds
    every batch this segment committed, and its segment's documents are written by no one
    else) until the first write; ``open_writer`` then begins the write transaction (checking
    the lease again, inside it) and every later statement, reads included, goes there.
    """

    def __init__(self, reading: Session, open_writer: Callable[[], Session]) -> None:
        # Not Session.__init__: this session has no connection of its own.
        self._reading = reading
        self._open_writer = open_writer
        self._writer: Session | None = None

    def _write(self) -> Session:
        if self._writer is None:
            self._writer = self._open_writer()
        return self._writer

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return (self._writer or self._reading).fetch(sql, params)

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._write().run(sql, params)

    def run_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._write().run_many(sql, rows)

    def fetch_raw(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self._write().fetch(sql, params)


# -- rows -----------------------------------------------------------------------------------


#: A parked row's segment column for an unsegmented generation (NULL cannot be compared with ``=``).
_NO_SEGMENT = -1


class ProjectionRow(NamedTuple):
    """A row of ``rm_projections`` (without its name)."""

    live_generation: int | None
    building_generation: int | None
    run_epoch: int
    rebuild_epoch: int
    next_generation: int
    state: str
    last_error: str | None
    last_error_at: Any
    updated_at: Any

    def epoch(self, role: LeaseRole) -> int:
        """The current epoch of ``role``'s lease."""
        return int(self.run_epoch if role is LeaseRole.RUN else self.rebuild_epoch)

    def written_by(self, role: LeaseRole) -> int | None:
        """The generation ``role`` writes: the live one, or the one being built."""
        return self.live_generation if role is LeaseRole.RUN else self.building_generation


class GenerationRow(NamedTuple):
    """A row of ``rm_generations`` (without its projection)."""

    generation: int
    version: int
    tables: str | bytes
    checkpoint: int | None
    events_applied: int
    created_at: Any
    segments: int

    def to_generation(self, projection: str, progress: tuple[SegmentProgress, ...] = ()) -> Generation:
        tables = self.tables if isinstance(self.tables, str) else bytes(self.tables).decode()
        return Generation(
            projection=projection,
            number=int(self.generation),
            version=int(self.version),
            tables=tables_from_json(tables),
            checkpoint=None if self.checkpoint is None else int(self.checkpoint),
            events_applied=int(self.events_applied),
            created_at=as_datetime(self.created_at),
            segments=int(self.segments),
        ).with_progress(progress)


class ParkedRow(NamedTuple):
    """A row of ``rm_parked``."""

    projection: str
    generation: int
    position: int
    event_id: str
    event_type: str
    stream: str
    revision: int
    data: bytes
    metadata: bytes
    content_type: str
    recorded_at: Any
    error: str
    attempts: int
    parked_at: Any
    retry_requested: bool | int
    key: str
    segment: int
    held_back: bool | int

    def to_event(self) -> ParkedEvent:
        return ParkedEvent(
            projection=str(self.projection),
            generation=int(self.generation),
            position=int(self.position),
            event_id=uuid.UUID(str(self.event_id)),
            event_type=str(self.event_type),
            stream=str(self.stream),
            revision=int(self.revision),
            data=bytes(self.data),
            metadata=bytes(self.metadata),
            content_type=str(self.content_type),
            recorded_at=as_datetime(self.recorded_at),
            error=str(self.error),
            attempts=int(self.attempts),
            parked_at=as_datetime(self.parked_at),
            retry_requested=bool(self.retry_requested),
            key=str(self.key),
            segment=None if int(self.segment) == _NO_SEGMENT else int(self.segment),
            held_back=bool(self.held_back),
        )


#: The select lists of the three row types, in their field order.
_PROJECTION_COLUMNS = ", ".join(ProjectionRow._fields)
_GENERATION_COLUMNS = ", ".join(GenerationRow._fields)
_PARKED_COLUMNS = ", ".join(ParkedRow._fields)


# -- the bookkeeping tables -----------------------------------------------------------------


class Catalog:
    """The bookkeeping tables and every statement on them, in one dialect."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.projections = f"{dialect.prefix}rm_projections"
        self.generations = f"{dialect.prefix}rm_generations"
        self.parked = f"{dialect.prefix}rm_parked"
        self.segments = f"{dialect.prefix}rm_segments"
        self.leases = f"{dialect.prefix}rm_leases"

    def upgrade(self, session: Session) -> None:
        """Add the columns later releases introduced to tables an earlier one created."""
        d = self.dialect
        added = {
            "rm_generations": [f"segments {d.integer} NOT NULL DEFAULT 1"],
            "rm_parked": [
                "key TEXT NOT NULL DEFAULT ''",
                f"segment {d.integer} NOT NULL DEFAULT {_NO_SEGMENT}",
                f"held_back {d.boolean} NOT NULL DEFAULT {d.false}",
            ],
        }
        for table, columns in added.items():
            sql, params = d.columns(table)
            present = {str(name) for (name,) in session.fetch(sql, params)}
            for column in columns:
                name = column.split()[0]
                if name not in present:
                    session.run(f"ALTER TABLE {d.prefix}{table} ADD COLUMN {column}")
                    if (table, name) == ("rm_parked", "key"):
                        # Parked before keys existed: under the default key, their stream.
                        session.run(f"UPDATE {self.parked} SET key = stream")

    def schema(self) -> list[str]:
        """``CREATE TABLE IF NOT EXISTS`` for the bookkeeping tables."""
        d = self.dialect
        return [
            f"""CREATE TABLE IF NOT EXISTS {self.projections} (
                name TEXT PRIMARY KEY,
                live_generation {d.integer},
                building_generation {d.integer},
                next_generation {d.integer} NOT NULL DEFAULT 1,
                run_epoch {d.integer} NOT NULL DEFAULT 0,
                rebuild_epoch {d.integer} NOT NULL DEFAULT 0,
                state TEXT NOT NULL DEFAULT 'new',
                last_error TEXT,
                last_error_at {d.timestamp_type},
                updated_at {d.timestamp_type})""",
            f"""CREATE TABLE IF NOT EXISTS {self.generations} (
                projection TEXT NOT NULL,
                generation {d.integer} NOT NULL,
                version {d.integer} NOT NULL,
                tables TEXT NOT NULL,
                checkpoint {d.integer},
                events_applied {d.integer} NOT NULL DEFAULT 0,
                created_at {d.timestamp_type} NOT NULL,
                segments {d.integer} NOT NULL DEFAULT 1,
                PRIMARY KEY (projection, generation))""",
            f"""CREATE TABLE IF NOT EXISTS {self.segments} (
                projection TEXT NOT NULL,
                generation {d.integer} NOT NULL,
                segment {d.integer} NOT NULL,
                checkpoint {d.integer},
                events_applied {d.integer} NOT NULL DEFAULT 0,
                caught_up {d.boolean} NOT NULL DEFAULT {d.false},
                PRIMARY KEY (projection, generation, segment))""",
            f"""CREATE TABLE IF NOT EXISTS {self.leases} (
                projection TEXT NOT NULL,
                role TEXT NOT NULL,
                segment {d.integer} NOT NULL,
                epoch {d.integer} NOT NULL,
                owner TEXT NOT NULL,
                acquired_at {d.timestamp_type} NOT NULL,
                PRIMARY KEY (projection, role, segment))""",
            f"""CREATE TABLE IF NOT EXISTS {self.parked} (
                projection TEXT NOT NULL,
                generation {d.integer} NOT NULL,
                position {d.integer} NOT NULL,
                event_id TEXT NOT NULL,
                event_type TEXT NOT NULL,
                stream TEXT NOT NULL,
                revision {d.integer} NOT NULL,
                data {d.binary} NOT NULL,
                metadata {d.binary} NOT NULL,
                content_type TEXT NOT NULL,
                recorded_at {d.timestamp_type} NOT NULL,
                error TEXT NOT NULL,
                attempts INTEGER NOT NULL,
                parked_at {d.timestamp_type} NOT NULL,
                retry_requested {d.boolean} NOT NULL DEFAULT {d.false},
                key TEXT NOT NULL DEFAULT '',
                segment {d.integer} NOT NULL DEFAULT {_NO_SEGMENT},
                held_back {d.boolean} NOT NULL DEFAULT {d.false},
                PRIMARY KEY (projection, generation, position))""",
        ]

    # -- projections ----------------------------------------------------------------------

    def ensure_row(self, session: Session, projection: str) -> None:
        session.run(
            self.dialect.sql(f"INSERT INTO {self.projections} (name) VALUES (?) ON CONFLICT DO NOTHING"),
            (validate_projection_name(projection),),
        )

    def row(self, session: Session, projection: str, *, lock: bool = False) -> ProjectionRow | None:
        """The projection's row; ``lock`` takes the dialect's share lock on it."""
        rows = session.fetch(
            self.dialect.sql(
                f"SELECT {_PROJECTION_COLUMNS} FROM {self.projections} WHERE name = ?"
                + (self.dialect.row_lock if lock else "")
            ),
            (validate_projection_name(projection),),
        )
        return ProjectionRow._make(rows[0]) if rows else None

    def check(self, session: Session, projection: str, lease: Lease, generation: int | None) -> ProjectionRow:
        """The projection's row, locked, after checking that ``lease`` may write ``generation``.

        Raises :class:`LeaseLostError` unless ``lease`` is current, and
        :class:`GenerationChangedError` unless its role writes ``generation`` (``None``: any).
        """
        if lease.segment is None:
            self.ensure_row(session, projection)
            row = self.row(session, projection, lock=True)
            assert row is not None
            current = row.epoch(lease.role)
        else:
            # A segment's fence is its own lease row. The projection's row is read without the
            # share lock: a batch holds its transaction open while its handlers run, and segments
            # holding that lock would queue every update of the row (state, epochs) behind all of
            # their batches, and every later batch behind that update. A switch that races with a
            # segment's commit only drops the generation that commit wrote to.
            current = self.segment_epoch(session, lease)
            found = self.row(session, projection)
            if found is None:
                raise GenerationChangedError(projection, generation or 0)
            row = found
        if not lease.held or lease.epoch != current:
            raise LeaseLostError(projection, lease.role.value, lease.epoch, current)
        if generation is not None and row.written_by(lease.role) != generation:
            raise GenerationChangedError(projection, generation)
        return row

    def segment_epoch(self, session: Session, lease: Lease) -> int:
        """The current epoch of a segment's lease (locked against a takeover, like the row)."""
        rows = session.fetch(
            self.dialect.sql(
                f"SELECT epoch FROM {self.leases} WHERE projection = ? AND role = ? AND segment = ?"
                + self.dialect.row_lock
            ),
            (lease.projection, lease.role.value, lease.segment),
        )
        return int(rows[0][0]) if rows else 0

    def describe(self, session: Session, projection: str) -> ProjectionRecord:
        row = self.row(session, projection)
        if row is None:
            return ProjectionRecord(projection, None, None, ProjectionState.NEW, None, None, None)
        return ProjectionRecord(
            name=projection,
            live=self.generation(session, projection, row.live_generation, LeaseRole.RUN),
            building=self.generation(session, projection, row.building_generation, LeaseRole.REBUILD),
            state=_state_from_text(row.state),
            last_error=row.last_error,
            last_error_at=None if row.last_error_at is None else as_datetime(row.last_error_at),
            updated_at=None if row.updated_at is None else as_datetime(row.updated_at),
        )

    def names(self, session: Session) -> list[str]:
        rows = session.fetch(f"SELECT name FROM {self.projections} ORDER BY name")
        return [str(name) for (name,) in rows]

    def set_state(self, session: Session, projection: str, state: ProjectionState, error: str | None) -> None:
        stamp = self.dialect.timestamp(now())
        self.ensure_row(session, projection)
        if error is None:
            session.run(
                self.dialect.sql(f"UPDATE {self.projections} SET state = ?, updated_at = ? WHERE name = ?"),
                (state.value, stamp, projection),
            )
        else:
            session.run(
                self.dialect.sql(
                    f"UPDATE {self.projections} SET state = ?, updated_at = ?, last_error = ?, "
                    "last_error_at = ? WHERE name = ?"
                ),
                (state.value, stamp, error, stamp, projection),
            )

    def bump_epoch(
        self, session: Session, projection: str, role: LeaseRole, segment: int | None, owner: str
    ) -> int:
        """Bump the epoch of ``role``'s lease (of ``segment``, if any) and return the new one."""
        self.ensure_row(session, projection)
        if segment is not None:
            d = self.dialect
            session.run(
                d.sql(
                    f"INSERT INTO {self.leases} (projection, role, segment, epoch, owner, acquired_at) "
                    "VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (projection, role, segment) DO UPDATE SET "
                    f"epoch = {self.leases}.epoch + 1, owner = excluded.owner, "
                    "acquired_at = excluded.acquired_at"
                ),
                (projection, role.value, segment, owner, d.timestamp(now())),
            )
            ((epoch,),) = session.fetch(
                d.sql(f"SELECT epoch FROM {self.leases} WHERE projection = ? AND role = ? AND segment = ?"),
                (projection, role.value, segment),
            )
            return int(epoch)
        column = "run_epoch" if role is LeaseRole.RUN else "rebuild_epoch"
        session.run(
            self.dialect.sql(f"UPDATE {self.projections} SET {column} = {column} + 1 WHERE name = ?"),
            (projection,),
        )
        ((epoch,),) = session.fetch(
            self.dialect.sql(f"SELECT {column} FROM {self.projections} WHERE name = ?"), (projection,)
        )
        return int(epoch)

    # -- generations ----------------------------------------------------------------------

    def generation(
        self, session: Session, projection: str, number: int | None, role: LeaseRole = LeaseRole.RUN
    ) -> Generation | None:
        """Generation ``number``, with its segments' progress (owners: of ``role``'s leases)."""
        if number is None:
            return None
        rows = session.fetch(
            self.dialect.sql(
                f"SELECT {_GENERATION_COLUMNS} FROM {self.generations} "
                "WHERE projection = ? AND generation = ?"
            ),
            (projection, number),
        )
        if not rows:
            return None
        row = GenerationRow._make(rows[0])
        progress: tuple[SegmentProgress, ...] = ()
        if row.segments > 1:
            segment_rows = session.fetch(
                self.dialect.sql(
                    f"SELECT s.segment, s.checkpoint, s.events_applied, s.caught_up, l.owner "
                    f"FROM {self.segments} s LEFT JOIN {self.leases} l ON l.projection = s.projection "
                    "AND l.role = ? AND l.segment = s.segment "
                    "WHERE s.projection = ? AND s.generation = ? ORDER BY s.segment"
                ),
                (role.value, projection, number),
            )
            progress = tuple(
                SegmentProgress(
                    segment=int(segment),
                    checkpoint=None if checkpoint is None else int(checkpoint),
                    events_applied=int(applied),
                    caught_up=bool(caught_up),
                    owner=None if owner is None else str(owner),
                )
                for segment, checkpoint, applied, caught_up, owner in segment_rows
            )
        return row.to_generation(projection, progress)

    def create_generation(
        self,
        session: Session,
        projection: str,
        version: int,
        tables: Sequence[TableSpec],
        lease: Lease,
        *,
        segments: int,
    ) -> Generation:
        d = self.dialect
        validate_segment_count(segments)
        refuse_segment_lease(lease)
        row = self.check(session, projection, lease, None)
        number = int(row.next_generation)
        if lease.role is LeaseRole.RUN and row.live_generation is not None:
            raise GenerationChangedError(projection, row.live_generation)
        if lease.role is LeaseRole.REBUILD and row.building_generation is not None:
            self.drop(session, projection, row.building_generation)
        session.run(
            d.sql(
                f"INSERT INTO {self.generations} "
                "(projection, generation, version, tables, created_at, segments) VALUES (?, ?, ?, ?, ?, ?)"
            ),
            (projection, number, int(version), tables_to_json(tables), d.timestamp(now()), segments),
        )
        if segments > 1:
            session.run_many(
                d.sql(f"INSERT INTO {self.segments} (projection, generation, segment) VALUES (?, ?, ?)"),
                [(projection, number, segment) for segment in range(segments)],
            )
        for spec in tables:
            physical = physical_table_name(projection, number, spec.name)
            table = d.table(physical)
            session.run(
                f"CREATE TABLE {table} (key TEXT PRIMARY KEY, doc {d.document_type} NOT NULL)"
                + d.document_table_options
            )
            for field_name in spec.indexes:
                index = quote(index_name(physical, field_name))
                session.run(f"CREATE INDEX {index} ON {table} ({d.field(field_name)})")
        column = "live_generation" if lease.role is LeaseRole.RUN else "building_generation"
        session.run(
            d.sql(f"UPDATE {self.projections} SET {column} = ?, next_generation = ? WHERE name = ?"),
            (number, number + 1, projection),
        )
        generation = self.generation(session, projection, number, lease.role)
        assert generation is not None
        return generation

    def switch(self, session: Session, projection: str, generation: int, lease: Lease) -> int | None:
        """Make the building ``generation`` live and drop the old live one; the old one's number."""
        old = self.check(session, projection, lease, generation).live_generation
        session.run(
            self.dialect.sql(
                f"UPDATE {self.projections} SET live_generation = ?, building_generation = NULL "
                "WHERE name = ?"
            ),
            (generation, projection),
        )
        if old is not None:
            self.drop(session, projection, old)
        return old

    def abandon(self, session: Session, projection: str, generation: int, lease: Lease) -> None:
        """Drop the building ``generation``."""
        self.check(session, projection, lease, generation)
        session.run(
            self.dialect.sql(f"UPDATE {self.projections} SET building_generation = NULL WHERE name = ?"),
            (projection,),
        )
        self.drop(session, projection, generation)

    def drop(self, session: Session, projection: str, number: int) -> None:
        """Drop a generation's tables, its record and its parked events."""
        generation = self.generation(session, projection, number)
        if generation is not None:
            for spec in generation.tables:
                table = self.dialect.table(physical_table_name(projection, number, spec.name))
                session.run(f"DROP TABLE IF EXISTS {table}")
        for bookkeeping in (self.generations, self.parked, self.segments):
            session.run(
                self.dialect.sql(f"DELETE FROM {bookkeeping} WHERE projection = ? AND generation = ?"),
                (projection, number),
            )

    def forget(self, session: Session, projection: str) -> None:
        """Drop every generation of ``projection``, its parked events and its row."""
        rows = session.fetch(
            self.dialect.sql(f"SELECT generation FROM {self.generations} WHERE projection = ?"),
            (validate_projection_name(projection),),
        )
        for (number,) in rows:
            self.drop(session, projection, int(number))
        session.run(self.dialect.sql(f"DELETE FROM {self.parked} WHERE projection = ?"), (projection,))
        session.run(self.dialect.sql(f"DELETE FROM {self.projections} WHERE name = ?"), (projection,))

    # -- parked events --------------------------------------------------------------------

    def parked_events(self, session: Session, projection: str) -> list[ParkedEvent]:
        """The live generation's parked events, by position."""
        rows = session.fetch(
            self.dialect.sql(
                f"SELECT {_PARKED_COLUMNS} FROM {self.parked} WHERE projection = ? AND generation = "
                f"(SELECT live_generation FROM {self.projections} WHERE name = ?) ORDER BY position"
            ),
            (validate_projection_name(projection), projection),
        )
        return [ParkedRow._make(row).to_event() for row in rows]

    def request_retry(
        self,
        session: Session,
        projection: str,
        positions: Sequence[int] | None,
        keys: Sequence[str] | None,
    ) -> int:
        row = self.row(session, projection)
        live = None if row is None else row.live_generation
        rows = session.fetch(
            self.dialect.sql(
                f"SELECT position, key, segment FROM {self.parked} WHERE projection = ? AND generation = ?"
            ),
            (projection, live),
        )
        existing = {int(position): (str(key), int(segment)) for position, key, segment in rows}
        wanted = retry_selection(projection, existing, positions, keys)
        if wanted:
            session.run_many(
                self.dialect.sql(
                    f"UPDATE {self.parked} SET retry_requested = ? "
                    "WHERE projection = ? AND generation = ? AND position = ?"
                ),
                [(True, projection, live, position) for position in wanted],
            )
        return len(wanted)


def _state_from_text(value: Any) -> ProjectionState:
    """A stored state name as a ProjectionState (unknown names read as stopped)."""
    try:
        return ProjectionState(str(value))
    except ValueError:
        return ProjectionState.STOPPED


# -- inside a transaction -------------------------------------------------------------------


class SQLDocuments:
    """A generation's document tables over one session: both SQL adapters' document sink."""

    def __init__(self, session: Session, dialect: Dialect, generation: Generation) -> None:
        self._session = session
        self._dialect = dialect
        self._generation = generation

    def sql_table(self, table: str) -> str:
        generation = self._generation
        return self._dialect.table(physical_table_name(generation.projection, generation.number, table))

    def load(self, table: str, key: str) -> str | None:
        d = self._dialect
        rows = self._session.fetch(
            d.sql(f"SELECT {d.document_text} FROM {self.sql_table(table)} WHERE key = ?"), (key,)
        )
        return next((str(text) for (text,) in rows), None)

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
        d = self._dialect
        clause, params = d.where(where)
        order = d.order(order_by, descending)
        sql = f"SELECT {d.document_text} FROM {self.sql_table(table)}{clause} ORDER BY {order}"
        if limit is not None or offset:
            sql += d.sql(" LIMIT ? OFFSET ?")
            params += [d.no_limit if limit is None else limit, offset]
        return [decode_document(text) for (text,) in self._session.fetch(sql, params)]

    def select_count(self, table: str, where: Where) -> int:
        clause, params = self._dialect.where(where)
        ((count,),) = self._session.fetch(f"SELECT count(*) FROM {self.sql_table(table)}{clause}", params)
        return int(count)

    def execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return [tuple(row) for row in self._session.fetch_raw(sql, tuple(params))]

    def write(self, table: str, upserts: list[tuple[str, str]], deletes: list[str]) -> None:
        d = self._dialect
        name = self.sql_table(table)
        if upserts:
            self._session.run_many(
                d.sql(
                    f"INSERT INTO {name} (key, doc) VALUES (?, {d.document_parameter}) "
                    "ON CONFLICT (key) DO UPDATE SET doc = excluded.doc"
                ),
                upserts,
            )
        if deletes:
            self._session.run_many(d.sql(f"DELETE FROM {name} WHERE key = ?"), [(key,) for key in deletes])


class SQLLedger:
    """The checkpoint and parked events of the generation a transaction writes."""

    def __init__(
        self, session: Session, catalog: Catalog, generation: Generation, segment: int | None = None
    ) -> None:
        self._session = session
        self._catalog = catalog
        self._dialect = catalog.dialect
        self._projection = generation.projection
        self._number = generation.number
        self._segment = segment
        self._stored_segment = _NO_SEGMENT if segment is None else segment
        self._key = (generation.projection, generation.number)  # the WHERE of every statement

    def set_checkpoint(self, position: int, applied: int) -> None:
        if self._segment is not None:
            self._session.run(
                self._dialect.sql(
                    f"UPDATE {self._catalog.segments} SET "
                    f"checkpoint = {self._dialect.greatest}(COALESCE(checkpoint, 0), ?), "
                    "events_applied = events_applied + ? "
                    "WHERE projection = ? AND generation = ? AND segment = ?"
                ),
                (position, applied, *self._key, self._segment),
            )
            return
        self._session.run(
            self._dialect.sql(
                f"UPDATE {self._catalog.generations} SET "
                f"checkpoint = {self._dialect.greatest}(COALESCE(checkpoint, 0), ?), "
                "events_applied = events_applied + ? WHERE projection = ? AND generation = ?"
            ),
            (position, applied, *self._key),
        )

    def mark_caught_up(self) -> None:
        if self._segment is not None:
            self._session.run(
                self._dialect.sql(
                    f"UPDATE {self._catalog.segments} SET caught_up = ? "
                    "WHERE projection = ? AND generation = ? AND segment = ?"
                ),
                (True, *self._key, self._segment),
            )

    def parked_keys(self) -> set[str]:
        rows = self._session.fetch(
            self._dialect.sql(
                f"SELECT DISTINCT key FROM {self._catalog.parked} "
                "WHERE projection = ? AND generation = ? AND segment = ?"
            ),
            (*self._key, self._stored_segment),
        )
        return {str(key) for (key,) in rows}

    def park(
        self,
        event: RecordedEvent,
        error: str,
        attempts: int,
        *,
        key: str | None = None,
        held_back: bool = False,
    ) -> None:
        timestamp = self._dialect.timestamp
        row = ParkedRow(
            self._projection,
            self._number,
            position=event.position,
            event_id=str(event.id),
            event_type=event.type,
            stream=event.stream,
            revision=event.revision,
            data=event.data,
            metadata=event.metadata,
            content_type=event.content_type,
            recorded_at=timestamp(event.recorded_at),
            error=error,
            attempts=attempts,
            parked_at=timestamp(now()),
            retry_requested=False,
            key=event.stream if key is None else key,
            segment=self._stored_segment,
            held_back=held_back,
        )
        self._session.run(
            self._dialect.sql(
                f"INSERT INTO {self._catalog.parked} ({_PARKED_COLUMNS}) "
                f"VALUES ({', '.join('?' * len(row))}) "
                "ON CONFLICT (projection, generation, position) DO UPDATE SET error = excluded.error, "
                "attempts = excluded.attempts, parked_at = excluded.parked_at, "
                "retry_requested = excluded.retry_requested, held_back = excluded.held_back"
            ),
            row,
        )

    def parked_for_retry(self) -> list[ParkedEvent]:
        rows = self._session.fetch(
            self._dialect.sql(
                f"SELECT {_PARKED_COLUMNS} FROM {self._catalog.parked} "
                "WHERE projection = ? AND generation = ? AND segment = ? AND retry_requested = ? "
                "ORDER BY position"
            ),
            (*self._key, self._stored_segment, True),
        )
        return [ParkedRow._make(row).to_event() for row in rows]

    def unpark(self, position: int) -> None:
        changed = self._session.run(
            self._dialect.sql(
                f"DELETE FROM {self._catalog.parked} WHERE projection = ? AND generation = ? AND position = ?"
            ),
            (*self._key, position),
        )
        if changed == 0:
            raise ParkedEventNotFoundError(self._projection, position)

    def parked_failed_again(self, position: int, error: str, attempts: int) -> None:
        changed = self._session.run(
            self._dialect.sql(
                f"UPDATE {self._catalog.parked} SET error = ?, attempts = attempts + ?, retry_requested = ?, "
                "held_back = held_back AND ? WHERE projection = ? AND generation = ? AND position = ?"
            ),
            (error, attempts, False, attempts == 0, *self._key, position),
        )
        if changed == 0:
            raise ParkedEventNotFoundError(self._projection, position)


# -- the port -------------------------------------------------------------------------------


class SQLReadModelStore(ABC):
    """The :class:`~projections.read_model_store.port.ReadModelStore` port over SQL sessions.

    An adapter provides its connections (:meth:`_writing`, :meth:`_reading`, and for queries of
    the live generation :meth:`_reading_live`), its leases, and, where its locking protocol
    needs it, :meth:`_exclude_readers`. Everything else is here, once.
    """

    def __init__(self, dialect: Dialect) -> None:
        self._dialect = dialect
        self._catalog = Catalog(dialect)

    # -- what an adapter provides ---------------------------------------------------------

    @abstractmethod
    def _writing(self, what: str) -> AbstractContextManager[Session]:
        """A session in a write transaction, committed on a clean exit; ``what`` names it in errors."""

    @abstractmethod
    def _reading(self, what: str) -> AbstractContextManager[Session]:
        """A session in a transaction that reads one consistent state."""

    def _reading_live(self, projection: str) -> AbstractContextManager[Session]:
        """A session for queries of ``projection``'s live generation (a switch must not drop it)."""
        return self._reading(f"a read of {projection!r}")

    def _exclude_readers(self, session: Session, projection: str) -> None:  # noqa: B027 -- a hook
        """Hook: wait for the queries of ``projection`` before a switch drops their tables."""

    def _defers_writes(self, lease: Lease) -> bool:
        """Hook: whether a unit of work under ``lease`` takes the write lock only at its first write."""
        del lease
        return False

    @abstractmethod
    def lease(self, projection: str, role: LeaseRole, *, segment: int | None = None) -> Lease: ...

    @abstractmethod
    def lease_held(self, projection: str, role: LeaseRole, *, segment: int | None = None) -> bool: ...

    @abstractmethod
    def leases_held(self, projection: str, role: LeaseRole, segments: int) -> set[int]: ...

    @abstractmethod
    def close(self) -> None: ...

    # -- records --------------------------------------------------------------------------

    def describe(self, projection: str) -> ProjectionRecord:
        with self._reading(f"describing {projection!r}") as session:
            return self._catalog.describe(session, projection)

    def projection_names(self) -> list[str]:
        with self._reading("listing projections") as session:
            return self._catalog.names(session)

    def set_state(self, projection: str, state: ProjectionState, *, error: str | None = None) -> None:
        with self._writing(f"recording the state of {projection!r}") as session:
            self._catalog.set_state(session, projection, state, error)

    def _bump_epoch(self, projection: str, role: LeaseRole, segment: int | None, owner: str) -> int:
        """A lease's acquisition: bump its epoch (see :class:`~._lease.LeaseBase`)."""
        with self._writing(f"taking the {role.value} lease of {projection!r}") as session:
            return self._catalog.bump_epoch(session, projection, role, segment, owner)

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
        with self._writing(f"creating a generation of {projection!r}") as session:
            generation = self._catalog.create_generation(
                session, projection, version, tables, lease, segments=segments
            )
        logger.info(
            "projection.generation_created",
            projection=projection,
            generation=generation.number,
            role=lease.role.value,
        )
        return generation

    def switch_generation(self, projection: str, generation: int, *, lease: Lease) -> None:
        with self._writing(f"switching {projection!r} to generation {generation}") as session:
            self._exclude_readers(session, projection)
            old = self._catalog.switch(session, projection, generation, lease)
        logger.info(
            "projection.generation_switched", projection=projection, generation=generation, dropped=old
        )

    def drop_generation(self, projection: str, generation: int, *, lease: Lease) -> None:
        with self._writing(f"dropping generation {generation} of {projection!r}") as session:
            self._catalog.abandon(session, projection, generation, lease)

    def drop_projection(self, projection: str) -> bool:
        existed = validate_projection_name(projection) in self.projection_names()
        with (
            holding_every_lease(self.lease, self.leases_held, projection),
            self._writing(f"dropping {projection!r}") as session,
        ):
            self._exclude_readers(session, projection)
            self._catalog.forget(session, projection)
        logger.info("projection.dropped", projection=projection, existed=existed)
        return existed

    # -- transactions and reads -----------------------------------------------------------

    @contextmanager
    def transaction(self, projection: str, generation: int, *, lease: Lease) -> Iterator[BufferedTransaction]:
        what = f"a unit of work of {projection!r}"
        with ExitStack() as stack:
            session: Session
            if self._defers_writes(lease):
                reading = stack.enter_context(self._reading(what))

                def open_writer() -> Session:
                    # Entered last, so left first: the write commits, then the read ends.
                    writer = stack.enter_context(self._writing(what))
                    self._catalog.check(writer, projection, lease, generation)
                    return writer

                session = DeferredWrites(reading, open_writer)
            else:
                session = stack.enter_context(self._writing(what))
            self._catalog.check(session, projection, lease, generation)
            info = self._catalog.generation(session, projection, generation, lease.role)
            assert info is not None
            if not writes_generation(lease, info.segments):
                raise GenerationChangedError(projection, generation)
            transaction = BufferedTransaction(
                info,
                SQLDocuments(session, self._dialect, info),
                SQLLedger(session, self._catalog, info, lease.segment),
            )
            yield transaction
            transaction.flush()

    @contextmanager
    def read(self, projection: str) -> Iterator[ReadOnlyView]:
        with self._reading_live(projection) as session:
            row = self._catalog.row(session, projection)
            live = None if row is None else row.live_generation
            generation = self._catalog.generation(session, projection, live)
            if generation is None:
                raise ProjectionNotFoundError(projection)
            yield ReadOnlyView(generation, SQLDocuments(session, self._dialect, generation))

    # -- parked events --------------------------------------------------------------------

    def parked_events(self, projection: str) -> list[ParkedEvent]:
        with self._reading(f"listing parked events of {projection!r}") as session:
            return self._catalog.parked_events(session, projection)

    def request_retry(
        self,
        projection: str,
        positions: Sequence[int] | None = None,
        *,
        keys: Sequence[str] | None = None,
    ) -> int:
        with self._writing(f"requesting retries of {projection!r}") as session:
            return self._catalog.request_retry(session, projection, positions, keys)
