"""A read model store in a SQLite file: the embedded default.

Each generation's document table is a real table, ``rm_{projection}__g{n}__{table}`` with
columns ``key TEXT PRIMARY KEY`` and ``doc TEXT`` (JSON), plus one expression index per
declared field, so raw SQL can use ``json_extract(doc, '$.field')``. Bookkeeping lives in
``rm_projections``, ``rm_generations`` and ``rm_parked``.

The file is opened in WAL mode, so queries read a consistent snapshot while a runner writes,
and several processes may share it. A unit of work is one ``BEGIN IMMEDIATE`` transaction.
Leases are ``flock`` locks on files beside the database (``{path}.{projection}.{role}.lock``),
released by the kernel when their process dies. ``durable=False`` uses
``synchronous=NORMAL``: crash-safe, but the last transactions may be lost on power failure.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import structlog

from eventsourcing_cqrs.event_store.port import RecordedEvent
from projections.errors import (
    GenerationChangedError,
    ParkedEventNotFoundError,
    ProjectionNotFoundError,
    ReadModelStoreError,
    ReadModelStoreLockedError,
    ReadModelStoreUnavailableError,
)
from projections.read_model_store._buffered import BufferedUnitOfWork, ReadOnlyView, Where
from projections.read_model_store._documents import decode_document
from projections.read_model_store._names import (
    index_name,
    physical_table_name,
    quote,
    validate_projection_name,
)
from projections.read_model_store._sql import (
    PARKED_COLUMNS,
    as_datetime,
    check_writer,
    generation_from_row,
    now,
    parked_from_row,
    state_from_text,
)
from projections.read_model_store.port import (
    Document,
    Generation,
    Lease,
    LeaseRole,
    ParkedEvent,
    ProjectionRecord,
    ProjectionState,
    TableSpec,
    tables_to_json,
)

__all__ = ["SQLiteReadModelStore"]

logger = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rm_projections (
    name TEXT PRIMARY KEY,
    live_generation INTEGER,
    building_generation INTEGER,
    next_generation INTEGER NOT NULL DEFAULT 1,
    run_epoch INTEGER NOT NULL DEFAULT 0,
    rebuild_epoch INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL DEFAULT 'new',
    last_error TEXT,
    last_error_at TEXT,
    updated_at TEXT
);
CREATE TABLE IF NOT EXISTS rm_generations (
    projection TEXT NOT NULL,
    generation INTEGER NOT NULL,
    version INTEGER NOT NULL,
    tables TEXT NOT NULL,
    checkpoint INTEGER,
    events_applied INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    PRIMARY KEY (projection, generation)
);
CREATE TABLE IF NOT EXISTS rm_parked (
    projection TEXT NOT NULL,
    generation INTEGER NOT NULL,
    position INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    stream TEXT NOT NULL,
    revision INTEGER NOT NULL,
    data BLOB NOT NULL,
    metadata BLOB NOT NULL,
    content_type TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    parked_at TEXT NOT NULL,
    retry_requested INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (projection, generation, position)
);
"""

_GENERATION_COLUMNS = "generation, version, tables, checkpoint, events_applied, created_at"


@contextmanager
def _translated(path: str) -> Iterator[None]:
    """Turn sqlite3 errors into the read side's errors (the one place that does)."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        message = str(exc)
        if "locked" in message or "busy" in message:
            raise ReadModelStoreLockedError(
                f"The read model database {path!r} stayed locked: {message}."
            ) from exc
        if "unable to open" in message:
            raise ReadModelStoreUnavailableError(
                f"The read model database {path!r} cannot be opened: {message}."
            ) from exc
        raise ReadModelStoreError(f"The read model database {path!r} failed: {message}.") from exc
    except sqlite3.DatabaseError as exc:
        raise ReadModelStoreError(f"The read model database {path!r} failed: {exc}.") from exc


def _json_path(field_name: str) -> str:
    # Field names are validated identifiers, safe inside a string literal.
    return f"'$.{field_name}'"


def _where_sql(where: Where) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for field_name, value in where:
        path = _json_path(field_name)
        extract = f"json_extract(doc, {path})"
        if value is None:
            clauses.append(f"{extract} IS NULL")
        elif isinstance(value, bool):
            clauses.append(f"({extract} = ? AND json_type(doc, {path}) IN ('true', 'false'))")
            params.append(int(value))
        elif isinstance(value, int | float):
            clauses.append(f"({extract} = ? AND json_type(doc, {path}) IN ('integer', 'real'))")
            params.append(value)
        else:
            clauses.append(f"({extract} = ? AND json_type(doc, {path}) = 'text')")
            params.append(value)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class _Connections:
    """One connection per thread (a SQLite connection must not be shared by two threads at once)."""

    def __init__(self, path: str, *, durable: bool, busy_timeout: float) -> None:
        self._path = path
        self._durable = durable
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def get(self, kind: str) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, kind, None)
        if connection is None:
            with _translated(self._path):
                connection = sqlite3.connect(
                    self._path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
                )
                connection.execute("PRAGMA journal_mode=WAL")
                connection.execute(f"PRAGMA synchronous={'FULL' if self._durable else 'NORMAL'}")
            setattr(self._local, kind, connection)
            with self._lock:
                self._all.append(connection)
            # A thread that ends takes its connection with it (no leak under thread-per-request).
            weakref.finalize(threading.current_thread(), self._forget, connection)
        return connection

    def _forget(self, connection: sqlite3.Connection) -> None:
        with self._lock:
            if connection not in self._all:
                return
            self._all.remove(connection)
        with contextlib.suppress(sqlite3.Error):
            connection.close()

    def close(self) -> None:
        with self._lock:
            connections, self._all = self._all, []
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
        self._local = threading.local()


class _FileLease:
    """A ``flock`` on ``{database}.{projection}.{role}.lock``; the kernel releases it on death."""

    def __init__(self, store: SQLiteReadModelStore, projection: str, role: LeaseRole) -> None:
        self._store = store
        self._projection = validate_projection_name(projection)
        self._role = role
        self._path = store._lock_path(projection, role)
        self._fd: int | None = None
        self._epoch = 0

    def __repr__(self) -> str:
        return f"<file lease {self._path!r} held={self.held}>"

    @property
    def projection(self) -> str:
        return self._projection

    @property
    def role(self) -> LeaseRole:
        return self._role

    @property
    def held(self) -> bool:
        return self._fd is not None

    @property
    def epoch(self) -> int:
        return self._epoch

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._epoch = self._store._bump_epoch(self._projection, self._role)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        logger.debug("projection.lease_acquired", projection=self._projection, role=self._role.value)
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class _SQLiteView(ReadOnlyView):
    def __init__(self, connection: sqlite3.Connection, generation: Generation, path: str) -> None:
        super().__init__(generation)
        self._connection = connection
        self._path = path

    def _load(self, table: str, key: str) -> str | None:
        with _translated(self._path):
            row = self._connection.execute(
                f"SELECT doc FROM {self.sql_table(table)} WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else str(row[0])

    def _select(
        self, table: str, where: Where, order_by: str | None, descending: bool, limit: int | None
    ) -> list[Document]:
        clause, params = _where_sql(where)
        order = "key"
        if order_by is not None:
            order = f"json_extract(doc, {_json_path(order_by)}) {'DESC' if descending else 'ASC'}, key"
        sql = f"SELECT doc FROM {self.sql_table(table)}{clause} ORDER BY {order}"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with _translated(self._path):
            rows = self._connection.execute(sql, params).fetchall()
        return [decode_document(row[0]) for row in rows]

    def _select_count(self, table: str, where: Where) -> int:
        clause, params = _where_sql(where)
        with _translated(self._path):
            row = self._connection.execute(
                f"SELECT count(*) FROM {self.sql_table(table)}{clause}", params
            ).fetchone()
        return int(row[0])

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with _translated(self._path):
            return [tuple(row) for row in self._connection.execute(sql, tuple(params)).fetchall()]


class _SQLiteTransaction(BufferedUnitOfWork):
    def __init__(self, connection: sqlite3.Connection, generation: Generation, path: str) -> None:
        super().__init__(generation)
        self._connection = connection
        self._path = path
        self._view = _SQLiteView(connection, generation, path)

    def _load(self, table: str, key: str) -> str | None:
        return self._view._load(table, key)

    def _select(
        self, table: str, where: Where, order_by: str | None, descending: bool, limit: int | None
    ) -> list[Document]:
        return self._view._select(table, where, order_by, descending, limit)

    def _select_count(self, table: str, where: Where) -> int:
        return self._view._select_count(table, where)

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._view._execute(sql, params)

    def _write(self, table: str, upserts: list[tuple[str, str]], deletes: list[str]) -> None:
        name = self.sql_table(table)
        with _translated(self._path):
            if upserts:
                self._connection.executemany(
                    f"INSERT INTO {name} (key, doc) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET doc = excluded.doc",
                    upserts,
                )
            if deletes:
                self._connection.executemany(f"DELETE FROM {name} WHERE key = ?", [(k,) for k in deletes])

    def set_checkpoint(self, position: int, applied: int) -> None:
        self.flush()
        with _translated(self._path):
            self._connection.execute(
                "UPDATE rm_generations SET checkpoint = max(coalesce(checkpoint, 0), ?), "
                "events_applied = events_applied + ? WHERE projection = ? AND generation = ?",
                (position, applied, self.generation.projection, self.generation.number),
            )

    def park(self, event: RecordedEvent, error: str, attempts: int) -> None:
        with _translated(self._path):
            self._connection.execute(
                f"INSERT OR REPLACE INTO rm_parked ({PARKED_COLUMNS}) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    self.generation.projection,
                    self.generation.number,
                    event.position,
                    str(event.id),
                    event.type,
                    event.stream,
                    event.revision,
                    event.data,
                    event.metadata,
                    event.content_type,
                    event.recorded_at.isoformat(),
                    error,
                    attempts,
                    now().isoformat(),
                ),
            )

    def parked_for_retry(self) -> list[ParkedEvent]:
        with _translated(self._path):
            rows = self._connection.execute(
                f"SELECT {PARKED_COLUMNS} FROM rm_parked WHERE projection = ? AND generation = ? "
                "AND retry_requested = 1 ORDER BY position",
                (self.generation.projection, self.generation.number),
            ).fetchall()
        return [parked_from_row(row) for row in rows]

    def unpark(self, position: int) -> None:
        with _translated(self._path):
            cursor = self._connection.execute(
                "DELETE FROM rm_parked WHERE projection = ? AND generation = ? AND position = ?",
                (self.generation.projection, self.generation.number, position),
            )
        if cursor.rowcount == 0:
            raise ParkedEventNotFoundError(self.generation.projection, position)

    def parked_failed_again(self, position: int, error: str, attempts: int) -> None:
        with _translated(self._path):
            cursor = self._connection.execute(
                "UPDATE rm_parked SET error = ?, attempts = attempts + ?, retry_requested = 0 "
                "WHERE projection = ? AND generation = ? AND position = ?",
                (error, attempts, self.generation.projection, self.generation.number, position),
            )
        if cursor.rowcount == 0:
            raise ParkedEventNotFoundError(self.generation.projection, position)


class SQLiteReadModelStore:
    """The read model store port over one SQLite file (WAL mode, shareable between processes).

    Its methods are those of :class:`~projections.read_model_store.port.ReadModelStore`, documented there.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, durable: bool = True, busy_timeout: float = 30.0
    ) -> None:
        self._path = os.fspath(path)
        if self._path in ("", ":memory:") or self._path.startswith("file:"):
            raise ReadModelStoreUnavailableError(
                f"SQLiteReadModelStore needs a file path, not {self._path!r}; use InMemoryReadModelStore."
            )
        self._connections = _Connections(self._path, durable=durable, busy_timeout=busy_timeout)
        connection = self._connections.get("write")
        with _translated(self._path):
            connection.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        connection.execute(statement)
                connection.execute("COMMIT")
            except BaseException:
                connection.execute("ROLLBACK")
                raise

    def __repr__(self) -> str:
        return f"SQLiteReadModelStore({self._path!r})"

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _write_transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connections.get("write")
        with _translated(self._path):
            connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
        except BaseException:
            if connection.in_transaction:
                with _translated(self._path):
                    connection.execute("ROLLBACK")
            raise
        with _translated(self._path):
            connection.execute("COMMIT")

    def _ensure_row(self, connection: sqlite3.Connection, projection: str) -> None:
        with _translated(self._path):
            connection.execute(
                "INSERT OR IGNORE INTO rm_projections (name) VALUES (?)",
                (validate_projection_name(projection),),
            )

    def _row(self, connection: sqlite3.Connection, projection: str) -> tuple[Any, ...] | None:
        with _translated(self._path):
            row: tuple[Any, ...] | None = connection.execute(
                "SELECT live_generation, building_generation, run_epoch, rebuild_epoch, next_generation, "
                "state, last_error, last_error_at, updated_at FROM rm_projections WHERE name = ?",
                (validate_projection_name(projection),),
            ).fetchone()
        return row

    def _generation(
        self, connection: sqlite3.Connection, projection: str, number: int | None
    ) -> Generation | None:
        if number is None:
            return None
        with _translated(self._path):
            row = connection.execute(
                f"SELECT {_GENERATION_COLUMNS} FROM rm_generations WHERE projection = ? AND generation = ?",
                (projection, number),
            ).fetchone()
        return None if row is None else generation_from_row(projection, row)

    def _check(
        self, connection: sqlite3.Connection, projection: str, lease: Lease, generation: int | None
    ) -> tuple[Any, ...]:
        self._ensure_row(connection, projection)
        row = self._row(connection, projection)
        assert row is not None
        check_writer(
            projection,
            lease,
            run_epoch=row[2],
            rebuild_epoch=row[3],
            live=row[0],
            building=row[1],
            generation=generation,
        )
        return row

    def _drop(self, connection: sqlite3.Connection, projection: str, number: int) -> None:
        generation = self._generation(connection, projection, number)
        with _translated(self._path):
            if generation is not None:
                for spec in generation.tables:
                    connection.execute(
                        f"DROP TABLE IF EXISTS {quote(physical_table_name(projection, number, spec.name))}"
                    )
            connection.execute(
                "DELETE FROM rm_generations WHERE projection = ? AND generation = ?", (projection, number)
            )
            connection.execute(
                "DELETE FROM rm_parked WHERE projection = ? AND generation = ?", (projection, number)
            )

    # -- records --------------------------------------------------------------------------

    def describe(self, projection: str) -> ProjectionRecord:
        connection = self._connections.get("read")
        nested = connection.in_transaction
        with _translated(self._path):
            if not nested:
                connection.execute("BEGIN")
            try:
                row = self._row(connection, projection)
                if row is None:
                    return ProjectionRecord(projection, None, None, ProjectionState.NEW, None, None, None)
                return ProjectionRecord(
                    name=projection,
                    live=self._generation(connection, projection, row[0]),
                    building=self._generation(connection, projection, row[1]),
                    state=state_from_text(row[5]),
                    last_error=row[6],
                    last_error_at=None if row[7] is None else as_datetime(row[7]),
                    updated_at=None if row[8] is None else as_datetime(row[8]),
                )
            finally:
                if not nested:
                    connection.execute("COMMIT")

    def projection_names(self) -> list[str]:
        connection = self._connections.get("read")
        with _translated(self._path):
            return [
                str(row[0]) for row in connection.execute("SELECT name FROM rm_projections ORDER BY name")
            ]

    def set_state(self, projection: str, state: ProjectionState, *, error: str | None = None) -> None:
        stamp = now().isoformat()
        with self._write_transaction() as connection:
            self._ensure_row(connection, projection)
            with _translated(self._path):
                if error is None:
                    connection.execute(
                        "UPDATE rm_projections SET state = ?, updated_at = ? WHERE name = ?",
                        (state.value, stamp, projection),
                    )
                else:
                    connection.execute(
                        "UPDATE rm_projections SET state = ?, updated_at = ?, last_error = ?, "
                        "last_error_at = ? WHERE name = ?",
                        (state.value, stamp, error, stamp, projection),
                    )

    # -- leases ---------------------------------------------------------------------------

    def _lock_path(self, projection: str, role: LeaseRole) -> str:
        return f"{self._path}.{validate_projection_name(projection)}.{role.value}.lock"

    def _bump_epoch(self, projection: str, role: LeaseRole) -> int:
        column = "run_epoch" if role is LeaseRole.RUN else "rebuild_epoch"
        with self._write_transaction() as connection:
            self._ensure_row(connection, projection)
            with _translated(self._path):
                connection.execute(
                    f"UPDATE rm_projections SET {column} = {column} + 1 WHERE name = ?", (projection,)
                )
                row = connection.execute(
                    f"SELECT {column} FROM rm_projections WHERE name = ?", (projection,)
                ).fetchone()
        return int(row[0])

    def lease(self, projection: str, role: LeaseRole) -> _FileLease:
        return _FileLease(self, projection, role)

    def lease_held(self, projection: str, role: LeaseRole) -> bool:
        fd = os.open(self._lock_path(projection, role), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    # -- generations ----------------------------------------------------------------------

    def create_generation(
        self, projection: str, version: int, tables: Sequence[TableSpec], *, lease: Lease
    ) -> Generation:
        with self._write_transaction() as connection:
            row = self._check(connection, projection, lease, None)
            live, building, number = row[0], row[1], int(row[4])
            if lease.role is LeaseRole.RUN and live is not None:
                raise GenerationChangedError(projection, live)
            if lease.role is LeaseRole.REBUILD and building is not None:
                self._drop(connection, projection, building)
            with _translated(self._path):
                connection.execute(
                    "INSERT INTO rm_generations (projection, generation, version, tables, created_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (projection, number, int(version), tables_to_json(tables), now().isoformat()),
                )
                for spec in tables:
                    physical = physical_table_name(projection, number, spec.name)
                    connection.execute(
                        f"CREATE TABLE {quote(physical)} "
                        "(key TEXT PRIMARY KEY, doc TEXT NOT NULL) WITHOUT ROWID"
                    )
                    for field_name in spec.indexes:
                        connection.execute(
                            f"CREATE INDEX {quote(index_name(physical, field_name))} ON {quote(physical)} "
                            f"(json_extract(doc, {_json_path(field_name)}))"
                        )
                column = "live_generation" if lease.role is LeaseRole.RUN else "building_generation"
                connection.execute(
                    f"UPDATE rm_projections SET {column} = ?, next_generation = ? WHERE name = ?",
                    (number, number + 1, projection),
                )
            generation = self._generation(connection, projection, number)
        assert generation is not None
        logger.info(
            "projection.generation_created", projection=projection, generation=number, role=lease.role.value
        )
        return generation

    def switch_generation(self, projection: str, generation: int, *, lease: Lease) -> None:
        with self._write_transaction() as connection:
            row = self._check(connection, projection, lease, generation)
            old = row[0]
            with _translated(self._path):
                connection.execute(
                    "UPDATE rm_projections SET live_generation = ?, building_generation = NULL "
                    "WHERE name = ?",
                    (generation, projection),
                )
            if old is not None:
                self._drop(connection, projection, old)
        logger.info(
            "projection.generation_switched", projection=projection, generation=generation, dropped=old
        )

    def drop_generation(self, projection: str, generation: int, *, lease: Lease) -> None:
        with self._write_transaction() as connection:
            self._check(connection, projection, lease, generation)
            with _translated(self._path):
                connection.execute(
                    "UPDATE rm_projections SET building_generation = NULL WHERE name = ?", (projection,)
                )
            self._drop(connection, projection, generation)

    # -- units of work --------------------------------------------------------------------

    @contextmanager
    def transaction(self, projection: str, generation: int, *, lease: Lease) -> Iterator[_SQLiteTransaction]:
        with self._write_transaction() as connection:
            self._check(connection, projection, lease, generation)
            info = self._generation(connection, projection, generation)
            assert info is not None
            transaction = _SQLiteTransaction(connection, info, self._path)
            yield transaction
            transaction.flush()

    @contextmanager
    def read(self, projection: str) -> Iterator[_SQLiteView]:
        connection = self._connections.get("read")
        nested = connection.in_transaction
        with _translated(self._path):
            if not nested:
                connection.execute("BEGIN")
        try:
            row = self._row(connection, projection)
            generation = self._generation(connection, projection, None if row is None else row[0])
            if generation is None:
                raise ProjectionNotFoundError(projection)
            yield _SQLiteView(connection, generation, self._path)
        finally:
            if not nested and connection.in_transaction:
                with _translated(self._path):
                    connection.execute("COMMIT")

    # -- parked events --------------------------------------------------------------------

    def parked_events(self, projection: str) -> list[ParkedEvent]:
        connection = self._connections.get("read")
        with _translated(self._path):
            rows = connection.execute(
                f"SELECT {PARKED_COLUMNS} FROM rm_parked WHERE projection = ? AND generation = "
                "(SELECT live_generation FROM rm_projections WHERE name = ?) ORDER BY position",
                (validate_projection_name(projection), projection),
            ).fetchall()
        return [parked_from_row(row) for row in rows]

    def request_retry(self, projection: str, positions: Sequence[int] | None = None) -> int:
        with self._write_transaction() as connection:
            row = self._row(connection, projection)
            live = None if row is None else row[0]
            with _translated(self._path):
                existing = {
                    int(r[0])
                    for r in connection.execute(
                        "SELECT position FROM rm_parked WHERE projection = ? AND generation = ?",
                        (projection, live),
                    )
                }
                wanted = sorted(existing) if positions is None else list(positions)
                for position in wanted:
                    if position not in existing:
                        raise ParkedEventNotFoundError(projection, position)
                connection.executemany(
                    "UPDATE rm_parked SET retry_requested = 1 "
                    "WHERE projection = ? AND generation = ? AND position = ?",
                    [(projection, live, position) for position in wanted],
                )
        return len(wanted)

    def close(self) -> None:
        self._connections.close()
