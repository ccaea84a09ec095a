"""A read model store in a SQLite file: the embedded default.

Each generation's document table is a real table, ``rm_{projection}__g{n}__{table}`` with
columns ``key TEXT PRIMARY KEY`` and ``doc TEXT`` (JSON), plus one expression index per
declared field, so raw SQL can use ``json_extract(doc, '$.field')``. Bookkeeping lives in
``rm_projections``, ``rm_generations`` and ``rm_parked``.

The file is opened in WAL mode, so queries read a consistent snapshot while a runner writes,
and several processes may share it. A unit of work is one ``BEGIN IMMEDIATE`` transaction.
Leases are ``flock`` locks on files beside the database (``{path}.{projection}.{role}.lock``,
and ``{path}.{projection}.{role}.{segment}.lock`` for a segment's), released by the kernel when
their process dies: segments share out between processes of one machine. ``durable=False`` uses
``synchronous=NORMAL``: crash-safe, but the last transactions may be lost on power failure.

The SQL itself is shared with the PostgreSQL adapter (:mod:`~projections.read_model_store._sql`);
this module holds SQLite's dialect, its connections, its file-lock leases and its error codes.
"""

from __future__ import annotations

import fcntl
import functools
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from eventsourcing_cqrs._sqlite_connections import ThreadConnections
from projections.errors import (
    NotAReadModelStoreError,
    ReadModelStoreError,
    ReadModelStoreLockedError,
    ReadModelStoreUnavailableError,
)
from projections.read_model_store._buffered import Where
from projections.read_model_store._lease import LeaseBase, validate_segment, validate_segment_count
from projections.read_model_store._names import validate_projection_name
from projections.read_model_store._sql import Dialect, Session, SQLReadModelStore
from projections.read_model_store.port import Lease, LeaseRole

__all__ = ["SQLiteReadModelStore"]

#: Primary result codes (``sqlite_errorcode & 0xFF`` strips the extended part).
_LOCKED_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_UNAVAILABLE_CODES = frozenset({sqlite3.SQLITE_CANTOPEN})


def _translate(exc: sqlite3.Error, path: str) -> ReadModelStoreError:
    """The read side's error for ``exc``, classified by its SQLite result code."""
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    primary = None if code is None else code & 0xFF
    if primary in _LOCKED_CODES:
        return ReadModelStoreLockedError(f"The read model database {path!r} stayed locked: {exc}.")
    if primary in _UNAVAILABLE_CODES:
        return ReadModelStoreUnavailableError(f"The read model database {path!r} cannot be opened: {exc}.")
    return ReadModelStoreError(f"The read model database {path!r} failed: {exc}.")


@contextmanager
def _translated(path: str) -> Iterator[None]:
    """Turn sqlite3 errors into the read side's errors (the one place that does)."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise _translate(exc, path) from exc


# -- the dialect ----------------------------------------------------------------------------


def _json_path(field_name: str) -> str:
    # Field names are validated identifiers, safe inside a string literal.
    return f"'$.{field_name}'"


def _field(field_name: str) -> str:
    return f"json_extract(doc, {_json_path(field_name)})"


def _where_sql(where: Where) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for field_name, value in where:
        path = _json_path(field_name)
        extract = _field(field_name)
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


def _order_sql(order_by: str | None, descending: bool) -> str:
    if order_by is None:
        return "key"
    return f"{_field(order_by)} {'DESC' if descending else 'ASC'}, key"


def _iso(value: datetime) -> str:
    return value.isoformat()


_DIALECT = Dialect(
    placeholder="?",
    prefix="",
    integer="INTEGER",
    timestamp_type="TEXT",
    binary="BLOB",
    boolean="INTEGER",
    false="0",
    document_type="TEXT",
    document_table_options=" WITHOUT ROWID",
    document_text="doc",
    document_parameter="?",
    greatest="max",
    no_limit=-1,
    row_lock="",
    columns=lambda table: ("SELECT name FROM pragma_table_info(?)", (table,)),
    timestamp=_iso,
    field=_field,
    where=_where_sql,
    order=_order_sql,
)


# -- connections ----------------------------------------------------------------------------


class _Connections:
    """One connection per thread and kind (a SQLite connection must not be shared by two threads
    at once), each closed when its thread ends (no leak under thread-per-request) or on ``close()``:
    the write side's :class:`~eventsourcing_cqrs._sqlite_connections.ThreadConnections`."""

    def __init__(self, path: str, *, durable: bool, busy_timeout: float) -> None:
        self._path = path
        self._durable = durable
        self._busy_timeout = busy_timeout
        self._by_kind = {kind: ThreadConnections(self._open) for kind in ("read", "write")}

    def _open(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self._path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={'FULL' if self._durable else 'NORMAL'}")
        except BaseException:
            connection.close()
            raise
        return connection

    def get(self, kind: str) -> sqlite3.Connection:
        connections = self._by_kind[kind]
        connection = connections.get()
        if connection is None:
            with _translated(self._path):
                connection = connections.open()
        return connection

    def close(self) -> None:
        for connections in self._by_kind.values():
            connections.close()


# -- leases ---------------------------------------------------------------------------------


def _open_lock_file(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ReadModelStoreUnavailableError(f"The lease file {path!r} cannot be opened: {exc}.") from exc


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _held_by_someone(path: str) -> bool:
    """Whether the lock file at ``path`` is locked (a missing file is not, and is not created)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ReadModelStoreUnavailableError(f"The lease file {path!r} cannot be opened: {exc}.") from exc
    try:
        return not _try_flock(fd)
    finally:
        os.close(fd)


class _FileLease(LeaseBase):
    """A ``flock`` on ``{database}.{projection}.{role}[.{segment}].lock``; the kernel releases it on death."""

    def __init__(
        self, store: SQLiteReadModelStore, projection: str, role: LeaseRole, segment: int | None
    ) -> None:
        super().__init__(projection, role, store._bump_epoch, segment)
        self._path = store._lock_path(projection, role, self.segment)
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"<file lease {self._path!r} held={self.held}>"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _lock(self) -> bool:
        fd = _open_lock_file(self._path)
        try:
            if not _try_flock(fd):
                os.close(fd)
                return False
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def _unlock(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


# -- the store ------------------------------------------------------------------------------


def _foreign_contents(path: str) -> str | None:
    """What the database at ``path`` seems to hold if it is not a read model store's, else ``None``.

    Read through a read-only connection, so a file that is refused is left as it was. An event
    store keeps ``events`` and ``streams`` (see :mod:`eventsourcing_cqrs.event_store.sqlite`);
    any other database with tables but no ``rm_projections`` is someone else's too.
    """
    if not os.path.isfile(path) or os.path.getsize(path) == 0:
        return None
    try:
        connection = sqlite3.connect(f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro", uri=True)
        try:
            rows = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            connection.close()
    except sqlite3.DatabaseError:
        return None  # not a database, or unreadable: opening it reports that
    tables = {str(name) for (name,) in rows}
    if not tables or "rm_projections" in tables:
        return None
    if {"events", "streams"} <= tables:
        return "an event store file"
    listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    return f"a database of other tables ({listed})"


class SQLiteReadModelStore(SQLReadModelStore):
    """The read model store port over one SQLite file (WAL mode, shareable between processes).

    Its methods are those of :class:`~projections.read_model_store.port.ReadModelStore`, documented there.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, durable: bool = True, busy_timeout: float = 30.0
    ) -> None:
        super().__init__(_DIALECT)
        self._path = os.fspath(path)
        if self._path in ("", ":memory:") or self._path.startswith("file:"):
            raise ReadModelStoreUnavailableError(
                f"SQLiteReadModelStore needs a file path, not {self._path!r}; use InMemoryReadModelStore."
            )
        holds = _foreign_contents(self._path)
        if holds is not None:
            raise NotAReadModelStoreError(self._path, holds)
        self._connections = _Connections(self._path, durable=durable, busy_timeout=busy_timeout)
        with self._writing("creating the schema") as session:
            for statement in self._catalog.schema():
                session.run(statement)
            self._catalog.upgrade(session)

    def __repr__(self) -> str:
        return f"SQLiteReadModelStore({self._path!r})"

    @property
    def path(self) -> str:
        """The database file."""
        return self._path

    def _session(self, connection: sqlite3.Connection) -> Session:
        return Session(connection, functools.partial(_translated, self._path))

    @contextmanager
    def _writing(self, what: str) -> Iterator[Session]:
        # One writer at a time: BEGIN IMMEDIATE takes the database's write lock up front.
        connection = self._connections.get("write")
        with _translated(self._path):
            connection.execute("BEGIN IMMEDIATE")
        try:
            yield self._session(connection)
        except BaseException:
            if connection.in_transaction:
                with _translated(self._path):
                    connection.execute("ROLLBACK")
            raise
        with _translated(self._path):
            connection.execute("COMMIT")

    @contextmanager
    def _reading(self, what: str) -> Iterator[Session]:
        # A deferred transaction reads one WAL snapshot; a read inside a read shares it.
        connection = self._connections.get("read")
        nested = connection.in_transaction
        if not nested:
            with _translated(self._path):
                connection.execute("BEGIN")
        try:
            yield self._session(connection)
        finally:
            if not nested and connection.in_transaction:
                with _translated(self._path):
                    connection.execute("COMMIT")

    def _defers_writes(self, lease: Lease) -> bool:
        # A segment's batch runs its handlers before it takes the file's one write lock, so
        # that segments in several processes run their handlers at the same time.
        return lease.segment is not None

    def _lock_path(self, projection: str, role: LeaseRole, segment: int | None = None) -> str:
        segment_part = "" if segment is None else f".{segment}"
        return f"{self._path}.{validate_projection_name(projection)}.{role.value}{segment_part}.lock"

    def lease(self, projection: str, role: LeaseRole, *, segment: int | None = None) -> _FileLease:
        return _FileLease(self, projection, role, segment)

    def lease_held(self, projection: str, role: LeaseRole, *, segment: int | None = None) -> bool:
        return _held_by_someone(self._lock_path(projection, role, validate_segment(role, segment)))

    def leases_held(self, projection: str, role: LeaseRole, segments: int) -> set[int]:
        return {
            segment
            for segment in range(validate_segment_count(segments))
            if _held_by_someone(self._lock_path(projection, role, segment))
        }

    def close(self) -> None:
        self._connections.close()
