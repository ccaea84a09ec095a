"""The embedded default: an event store in one SQLite file, with EventStoreDB's semantics.

* **WAL mode**, so readers never block the writer; several threads and several processes may
  use one file at once. Each thread gets its own connection, closed when the thread ends;
  appends take SQLite's write lock (``BEGIN IMMEDIATE``) so they are serialised, and commit
  positions (the table's rowid) are therefore strictly increasing in commit order: a reader
  never sees position N+1 before N.
* **Durable by default** (``synchronous=FULL``: a committed append survives a power cut).
  ``durable=False`` (``sqlite:///events.db?durable=false``) uses ``synchronous=NORMAL``: an
  append survives the process crashing but the last ones may be lost if the machine loses
  power. It is several times faster for one-event appends.
* **Subscriptions** read in pages after their last position; an append in this process wakes
  them at once, one in another process is seen within ``poll_interval`` (20 ms by default).
* Soft delete and tombstone behave as on EventStoreDB, including the ``$metadata`` events in
  ``$${stream}`` and the ``$streamDeleted`` record, which appear in ``$all`` as system events.
  The embedded store does not interpret other stream metadata (``$maxAge``, ``$maxCount``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog

from eventsourcing_cqrs._sqlite_connections import ThreadConnections
from eventsourcing_cqrs.errors import (
    EventStoreCorruptedError,
    EventStoreError,
    EventStoreLockedError,
    EventStoreUnavailableError,
    InvalidInputError,
    StreamDeletedError,
    StreamNotFoundError,
)
from eventsourcing_cqrs.event_store._commit import (
    DELETED_REVISION,
    AlreadyWritten,
    StreamInfo,
    check_delete,
    decide,
)
from eventsourcing_cqrs.event_store._subscription import Notifier, PollingSubscription
from eventsourcing_cqrs.event_store.port import (
    AppendResult,
    EventFilter,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StreamName,
    StreamState,
    checked_append,
    checked_delete,
    checked_read_all,
    checked_read_stream,
    checked_subscribe,
    validate_seconds,
)

__all__ = ["SQLiteEventStore"]

logger = structlog.get_logger(__name__)

#: Written into the file header so that a foreign SQLite file is recognised ("ESCQ").
APPLICATION_ID = 0x45534351
SCHEMA_VERSION = 1
PAGE_SIZE = 500

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    position     INTEGER PRIMARY KEY,
    stream       TEXT    NOT NULL,
    revision     INTEGER NOT NULL,
    id           BLOB    NOT NULL,
    type         TEXT    NOT NULL,
    data         BLOB    NOT NULL,
    metadata     BLOB    NOT NULL,
    content_type TEXT    NOT NULL,
    recorded_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS events_by_stream ON events (stream, revision);
CREATE INDEX IF NOT EXISTS events_by_id ON events (id);
CREATE TABLE IF NOT EXISTS streams (
    name          TEXT    PRIMARY KEY,
    last_revision INTEGER NOT NULL,
    visible_from  INTEGER NOT NULL DEFAULT 0,
    tombstoned    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""

#: The tables of the schema: a non-empty file without them is another application's.
_OWN_TABLES = frozenset({"events", "streams"})

_COLUMNS = "position, stream, revision, id, type, data, metadata, content_type, recorded_at"

_INSERT = (
    "INSERT INTO events (stream, revision, id, type, data, metadata, content_type, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

#: Claims the next revisions of a live stream at exactly the expected revision (not soft-deleted,
#: not tombstoned); no row changed means the stream is in another state.
_CLAIM_AT = (
    "UPDATE streams SET last_revision = ? "
    "WHERE name = ? AND last_revision = ? AND visible_from <> ? AND tombstoned = 0"
)
#: Creates the row of a stream that has none; no row changed means it exists in some state.
_CLAIM_NEW = (
    "INSERT INTO streams (name, last_revision, visible_from, tombstoned) VALUES (?, ?, 0, 0) "
    "ON CONFLICT (name) DO NOTHING"
)

#: A stream's state and the first page of its events (see ``read_stream``).
_FIRST_PAGE_FORWARDS = (
    "SELECT s.last_revision, s.visible_from, s.tombstoned, "
    "e.position, e.stream, e.revision, e.id, e.type, e.data, e.metadata, e.content_type, e.recorded_at "
    "FROM streams AS s LEFT JOIN events AS e "
    "ON e.stream = s.name AND e.revision >= max(?, s.visible_from) AND e.revision < ? "
    "WHERE s.name = ? ORDER BY e.revision LIMIT ?"
)
_FIRST_PAGE_BACKWARDS = (
    "SELECT s.last_revision, s.visible_from, s.tombstoned, "
    "e.position, e.stream, e.revision, e.id, e.type, e.data, e.metadata, e.content_type, e.recorded_at "
    "FROM streams AS s LEFT JOIN events AS e "
    "ON e.stream = s.name AND e.revision <= min(?, s.last_revision) AND e.revision >= s.visible_from "
    "WHERE s.name = ? ORDER BY e.revision DESC LIMIT ?"
)
_NEXT_PAGE_FORWARDS = (
    f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND revision >= ? AND revision < ? "
    "ORDER BY revision LIMIT ?"
)
_NEXT_PAGE_BACKWARDS = (
    f"SELECT {_COLUMNS} FROM events WHERE stream = ? AND revision <= ? AND revision >= ? "
    "ORDER BY revision DESC LIMIT ?"
)

_Row = tuple[int, str, int, bytes, str, bytes, bytes, str, int]

#: How :meth:`SQLiteEventStore._translated` classes SQLite's primary result codes; any other
#: code is a plain :class:`~eventsourcing_cqrs.errors.EventStoreError` (or, for an error that is
#: not an ``OperationalError``, such as a constraint violation, a corrupted store).
_ERROR_KINDS: dict[int, str] = {
    sqlite3.SQLITE_BUSY: "locked",
    sqlite3.SQLITE_LOCKED: "locked",
    sqlite3.SQLITE_CANTOPEN: "unavailable",
    sqlite3.SQLITE_READONLY: "unavailable",
    sqlite3.SQLITE_IOERR: "unavailable",
    sqlite3.SQLITE_FULL: "unavailable",
    sqlite3.SQLITE_PERM: "unavailable",
    sqlite3.SQLITE_NOLFS: "unavailable",
    sqlite3.SQLITE_CORRUPT: "corrupted",
    sqlite3.SQLITE_NOTADB: "corrupted",
    sqlite3.SQLITE_FORMAT: "corrupted",
}

#: The largest rowid, so the largest commit position, of this store (SQLite INTEGER is signed
#: 64-bit); the port allows start positions up to 2**64 - 1, read here as "after every event".
_LAST_ROWID = 2**63 - 1

#: How many event types a reader's filter remembers its verdict for (see :func:`_matcher`).
_MAX_REMEMBERED_TYPES = 10_000


def _to_event_plainly(row: _Row) -> RecordedEvent:
    # Positional arguments in RecordedEvent's field order, and UUID(int=...), which skips the
    # argument checks of UUID(bytes=...).
    position, stream, revision, event_id, type_, data, metadata, content_type, micros = row
    return RecordedEvent(
        uuid.UUID(int=int.from_bytes(event_id)),
        type_,
        data,
        metadata,
        stream,
        revision,
        position,
        datetime.fromtimestamp(micros / 1_000_000, UTC),
        content_type,
    )


def _fast_to_event() -> Callable[[_Row], RecordedEvent]:
    """:func:`_to_event_plainly` at half the cost, or itself where that would not be exact.

    It runs once per event read (replay, catch-up). The frozen dataclass's ``__init__`` and
    ``UUID.__init__`` each spend most of their time in Python-level checks and
    ``object.__setattr__`` calls; this fills the same slots through their descriptors instead.
    It is used only if it builds objects equal, field by field, to what the constructors
    build on this Python.
    """
    names = (
        "id",
        "type",
        "data",
        "metadata",
        "stream",
        "revision",
        "position",
        "recorded_at",
        "content_type",
    )
    try:
        if tuple(field.name for field in dataclasses.fields(RecordedEvent)) != names or hasattr(
            RecordedEvent, "__post_init__"
        ):
            return _to_event_plainly
        slots = vars(RecordedEvent)
        s_id, s_type, s_data, s_meta, s_stream, s_rev, s_pos, s_at, s_content = (
            slots[name].__set__ for name in names
        )
        uuid_int, uuid_safe = vars(uuid.UUID)["int"].__set__, vars(uuid.UUID)["is_safe"].__set__
    except (KeyError, AttributeError, TypeError):
        return _to_event_plainly
    new, from_bytes, unknown, from_timestamp = (
        object.__new__,
        int.from_bytes,
        uuid.SafeUUID.unknown,
        datetime.fromtimestamp,
    )
    uuid_class = uuid.UUID

    def to_event(row: _Row) -> RecordedEvent:
        position, stream, revision, event_id, type_, data, metadata, content_type, micros = row
        ident = new(uuid_class)
        uuid_int(ident, from_bytes(event_id))
        uuid_safe(ident, unknown)
        event = new(RecordedEvent)
        s_id(event, ident)
        s_type(event, type_)
        s_data(event, data)
        s_meta(event, metadata)
        s_stream(event, stream)
        s_rev(event, revision)
        s_pos(event, position)
        s_at(event, from_timestamp(micros / 1_000_000, UTC))
        s_content(event, content_type)
        return event

    sample: _Row = (
        7,
        "Account-1",
        3,
        uuid.uuid4().bytes,
        "Opened",
        b"{}",
        b"",
        "application/json",
        1_700_000_000_123_456,
    )
    try:
        fast, plain = to_event(sample), _to_event_plainly(sample)
        same = (
            fast == plain
            and hash(fast.id) == hash(plain.id)
            and fast.id.is_safe is plain.id.is_safe
            and all(getattr(fast, name) == getattr(plain, name) for name in names)
        )
    except Exception:  # noqa: BLE001 - any surprise means: use the constructors
        return _to_event_plainly
    return to_event if same else _to_event_plainly


#: A stored row as a :class:`RecordedEvent`.
_to_event = _fast_to_event()


def _matcher(predicate: EventFilter) -> Callable[[str, str], bool]:
    """``predicate.matches``, remembered per event type when only the type decides.

    A filter on event types (a projection's) then costs one dict lookup per record read
    instead of a regex search. Stream-name filters are asked each time.
    """
    if predicate.by != "event_type":
        return predicate.matches
    known: dict[str, bool] = {}

    def matches(event_type: str, stream: str) -> bool:
        found = known.get(event_type)
        if found is None:
            found = predicate.matches(event_type, stream)
            if len(known) < _MAX_REMEMBERED_TYPES:
                known[event_type] = found
        return found

    return matches


def _may_be_repeated(expected: ExpectedVersion, last_revision: int) -> bool:
    """Whether :func:`decide` may look for the appended ids among the stream's events.

    It does for a retried append (expected ``ANY``, ``STREAM_EXISTS``, ``NO_STREAM`` or a
    revision behind the stream's end); an append expected exactly at the end is a plain write,
    so the usual command path skips that query.
    """
    if last_revision < 0:
        return False
    return isinstance(expected, StreamState) or expected < last_revision


class SQLiteEventStore:
    """The event store port over one SQLite file (see the module docstring).

    :param path: the database file; created with its schema if absent.
    :param durable: ``synchronous=FULL`` (default) or the faster ``NORMAL``.
    :param busy_timeout: seconds to wait for another connection's write lock before raising
        :class:`~eventsourcing_cqrs.errors.EventStoreLockedError`.
    :param poll_interval: how often an idle subscription looks for appends by other processes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durable: bool = True,
        busy_timeout: float = 10.0,
        poll_interval: float = 0.02,
    ) -> None:
        if not isinstance(path, str | os.PathLike) or not str(path) or str(path) == ":memory:":
            raise InvalidInputError(
                "database path", path, "give a file path (use InMemoryEventStore for memory)"
            )
        if not isinstance(durable, bool):
            raise InvalidInputError("durable", durable, "give True or False")
        self.path = Path(path)
        self.durable = durable
        self._busy_timeout = validate_seconds(busy_timeout, "busy_timeout", zero_allowed=True)
        self._poll_interval = validate_seconds(poll_interval, "poll_interval")
        self._connections = ThreadConnections(self._open_connection)
        self._notifier = Notifier()
        self._closed = False
        self._initialise()

    def __repr__(self) -> str:
        return f"SQLiteEventStore({str(self.path)!r}, durable={self.durable})"

    # -- connections ----------------------------------------------------------------------

    @contextlib.contextmanager
    def _translate(self, operation: str) -> Iterator[None]:
        """Translate sqlite3's errors into ours, naming the file and the operation."""
        try:
            yield
        except EventStoreError:
            raise
        except sqlite3.DatabaseError as exc:
            raise self._translated(exc, operation) from exc

    def _translated(self, exc: sqlite3.DatabaseError, operation: str) -> EventStoreError:
        """Our error for sqlite3's ``exc`` raised during ``operation``, by SQLite's primary result code.

        An error without a code (raised by the ``sqlite3`` module itself) is classed by its
        exception type: an ``OperationalError`` is a plain failure, anything else a database
        that is not what it should be.
        """
        message = str(exc)
        code = getattr(exc, "sqlite_errorcode", None)
        kind = _ERROR_KINDS.get(code & 0xFF) if isinstance(code, int) else None
        if kind is None:
            kind = "failed" if isinstance(exc, sqlite3.OperationalError) else "corrupted"
        if kind == "locked":
            return EventStoreLockedError(
                f"Event store {str(self.path)!r} stayed locked by another connection for more "
                f"than {self._busy_timeout:g} s during {operation}."
            )
        if kind == "unavailable":
            return EventStoreUnavailableError(
                f"Cannot use event store file {str(self.path)!r} for {operation}: {message}."
            )
        if kind == "corrupted":
            return EventStoreCorruptedError(
                f"Event store file {str(self.path)!r} is not a valid SQLite database "
                f"({message}); nothing was written."
            )
        return EventStoreError(f"SQLite failed during {operation} on {str(self.path)!r}: {message}.")

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection (closed when the thread ends: see ``_sqlite_connections``)."""
        connection = self._connections.get()
        if connection is not None:
            return connection
        if self._closed:
            raise EventStoreUnavailableError(f"Event store {str(self.path)!r} is closed.")
        with self._translate("opening the database"):
            return self._connections.open()

    def _open_connection(self) -> sqlite3.Connection:
        connection = sqlite3.connect(
            self.path,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
            connection.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
        except BaseException:
            connection.close()
            raise
        return connection

    @contextlib.contextmanager
    def _write(self, operation: str) -> Iterator[sqlite3.Connection]:
        connection = self._connect()
        with self._translate(operation):
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise

    def _inspect(self) -> tuple[int, int, list[str]]:
        """The file's application id, schema version and tables, read without writing anything.

        A connection of its own, without the WAL and ``synchronous`` settings (which would
        change a file that turns out not to be ours), closed at once.
        """
        with self._translate("opening the database"):
            probe = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
            try:
                (application_id,) = probe.execute("PRAGMA application_id").fetchone()
                (version,) = probe.execute("PRAGMA user_version").fetchone()
                tables = [
                    name
                    for (name,) in probe.execute(
                        "SELECT name FROM sqlite_master WHERE type = 'table' "
                        "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name"
                    )
                ]
            finally:
                probe.close()
        return int(application_id), int(version), tables

    def _initialise(self) -> None:
        """Check the file is an event store (or empty, or new) and create the schema if needed.

        A file that holds other tables (a read model store's, say) and not the event store's
        is refused with :class:`~eventsourcing_cqrs.errors.EventStoreCorruptedError` naming
        it, before anything is written to it.
        """
        parent = self.path.parent
        if not parent.is_dir():
            raise EventStoreUnavailableError(
                f"Cannot create event store file {str(self.path)!r}: "
                f"directory {str(parent)!r} does not exist."
            )
        application_id, version, tables = self._inspect()
        if application_id == APPLICATION_ID and version == SCHEMA_VERSION:
            return
        if application_id not in (0, APPLICATION_ID):
            raise EventStoreCorruptedError(
                f"File {str(self.path)!r} is a SQLite database of another application "
                f"(application_id {application_id:#x}); refusing to use it as an event store."
            )
        if application_id == APPLICATION_ID and version > SCHEMA_VERSION:
            raise EventStoreCorruptedError(
                f"Event store {str(self.path)!r} has schema version {version}, newer than this "
                f"library's {SCHEMA_VERSION}; upgrade eventsourcing-cqrs."
            )
        if tables and not set(tables) >= _OWN_TABLES:
            shown = ", ".join(tables[:10]) + (f" and {len(tables) - 10} more" if len(tables) > 10 else "")
            hint = (
                " (those of a read model store: give the event store's own file)"
                if all(table.startswith("rm_") for table in tables)
                else ""
            )
            raise EventStoreCorruptedError(
                f"{str(self.path)!r} is not an event store file: it holds tables {shown}{hint}; "
                "nothing was written."
            )
        with self._write("creating the schema") as connection:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA application_id={APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        logger.debug("event_store.schema_ready", path=str(self.path))

    # -- writing --------------------------------------------------------------------------

    @staticmethod
    def _stream_info(connection: sqlite3.Connection, stream: str) -> StreamInfo:
        row = connection.execute(
            "SELECT last_revision, visible_from, tombstoned FROM streams WHERE name = ?", (stream,)
        ).fetchone()
        if row is None:
            return StreamInfo()
        last, visible_from, tombstoned = row
        return StreamInfo(last, visible_from == DELETED_REVISION, bool(tombstoned))

    def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        name, expected, new = checked_append(stream, events, expected_version)
        connection = self._connect()
        try:
            connection.execute("BEGIN IMMEDIATE")
            try:
                result = self._append(connection, name, expected, new)
                connection.execute("COMMIT")
            except BaseException:
                if connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
        except sqlite3.DatabaseError as exc:
            raise self._translated(exc, f"append to {name!r}") from exc
        if isinstance(result, AppendResult):  # the events were already in the stream
            return result
        self._notifier.notify()
        revision, position = result
        if position is None:
            position = self.head_position(EventFilter(include_system_events=True))
        return AppendResult(name, revision, position)

    def _append(
        self, connection: sqlite3.Connection, name: str, expected: ExpectedVersion, new: list[NewEvent]
    ) -> tuple[int, int | None] | AppendResult:
        """Write ``new`` in the open transaction: its ``(revision, position)``, or the original
        result when the same events are already in the stream.

        The usual command appends events to a live stream at exactly its last revision (or
        creates it): the stream's row is then claimed with one guarded statement, and
        :func:`decide` would only say "write". Anything else (a stream in another state, a
        retried append, ``ANY``/``STREAM_EXISTS``) reads the stream's state and asks it.
        """
        if new and type(expected) is int and expected + len(new) < DELETED_REVISION:
            revision = expected + len(new)
            if connection.execute(_CLAIM_AT, (revision, name, expected, DELETED_REVISION)).rowcount:
                return revision, self._insert(connection, self._rows(name, expected, new))
        elif new and expected is StreamState.NO_STREAM:
            revision = len(new) - 1
            if connection.execute(_CLAIM_NEW, (name, revision)).rowcount:
                return revision, self._insert(connection, self._rows(name, -1, new))
        info = self._stream_info(connection, name)
        ids = [event.id for event in new]
        existing: dict[uuid.UUID, tuple[int, int]] = {}
        if ids and _may_be_repeated(expected, info.last_revision):
            marks = ",".join("?" * len(ids))
            for event_id, found_revision, found_position in connection.execute(
                f"SELECT id, revision, position FROM events WHERE id IN ({marks}) AND stream = ?",
                [i.bytes for i in ids] + [name],
            ):
                existing[uuid.UUID(bytes=event_id)] = (found_revision, found_position)
        decision = decide(name, expected, ids, info, existing)
        if isinstance(decision, AlreadyWritten):
            return AppendResult(name, decision.revision, decision.position, already_written=True)
        last = info.last_revision
        if decision.undelete:
            self._write_metadata(connection, name, {"$tb": last + 1})
        position = self._insert(connection, self._rows(name, last, new))
        revision = last + len(new)
        self._set_stream(
            connection,
            name,
            last_revision=revision,
            visible_from=last + 1 if decision.undelete else None,
        )
        return revision, position

    @staticmethod
    def _rows(name: str, last_revision: int, new: list[NewEvent]) -> list[tuple[Any, ...]]:
        now = _now_micros()
        return [
            (
                name,
                revision,
                event.id.bytes,
                event.type,
                event.data,
                event.metadata,
                event.content_type,
                now,
            )
            for revision, event in enumerate(new, last_revision + 1)
        ]

    @staticmethod
    def _insert(connection: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> int | None:
        if not rows:
            return None
        if len(rows) == 1:  # the usual command: one event, whose rowid is its position
            position = connection.execute(_INSERT, rows[0]).lastrowid
        else:
            connection.executemany(_INSERT, rows)
            (position,) = connection.execute("SELECT max(position) FROM events").fetchone()
        assert position is not None
        return int(position)

    @staticmethod
    def _set_stream(
        connection: sqlite3.Connection,
        stream: str,
        *,
        last_revision: int | None = None,
        visible_from: int | None = None,
        tombstoned: bool = False,
    ) -> None:
        connection.execute(
            "INSERT INTO streams (name, last_revision, visible_from, tombstoned) "
            "VALUES (?, coalesce(?, -1), coalesce(?, 0), ?) "
            "ON CONFLICT (name) DO UPDATE SET "
            "last_revision = coalesce(?, last_revision), "
            "visible_from = coalesce(?, visible_from), "
            "tombstoned = max(tombstoned, ?)",
            (stream, last_revision, visible_from, tombstoned, last_revision, visible_from, tombstoned),
        )

    def _write_metadata(self, connection: sqlite3.Connection, stream: str, metadata: dict[str, int]) -> None:
        meta_stream = "$$" + stream
        info = self._stream_info(connection, meta_stream)
        revision = info.last_revision + 1
        data = json.dumps(metadata).encode()
        self._insert(
            connection,
            [
                (
                    meta_stream,
                    revision,
                    uuid.uuid4().bytes,
                    "$metadata",
                    data,
                    b"",
                    "application/json",
                    _now_micros(),
                )
            ],
        )
        self._set_stream(connection, meta_stream, last_revision=revision)

    def delete_stream(self, stream: str, *, expected_version: ExpectedVersion) -> None:
        name, expected = checked_delete(stream, expected_version)
        with self._write(f"delete {name!r}") as connection:
            info = self._stream_info(connection, name)
            check_delete(name, expected, info, tombstone=False)
            self._write_metadata(connection, name, {"$tb": DELETED_REVISION})
            self._set_stream(connection, name, visible_from=DELETED_REVISION)
        self._notifier.notify()
        logger.info("event_store.stream_deleted", stream=name)

    def tombstone_stream(self, stream: str, *, expected_version: ExpectedVersion) -> None:
        name, expected = checked_delete(stream, expected_version)
        with self._write(f"tombstone {name!r}") as connection:
            info = self._stream_info(connection, name)
            check_delete(name, expected, info, tombstone=True)
            self._insert(
                connection,
                [
                    (
                        name,
                        DELETED_REVISION,
                        uuid.uuid4().bytes,
                        "$streamDeleted",
                        b"",
                        b"",
                        "application/octet-stream",
                        _now_micros(),
                    )
                ],
            )
            self._set_stream(connection, name, tombstoned=True)
        self._notifier.notify()
        logger.info("event_store.stream_tombstoned", stream=name)

    # -- reading --------------------------------------------------------------------------

    def read_stream(
        self,
        stream: str,
        *,
        from_revision: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> Iterator[RecordedEvent]:
        name, from_revision, backwards, limit = checked_read_stream(stream, from_revision, backwards, limit)
        page = PAGE_SIZE if limit is None else min(PAGE_SIZE, limit)
        # The stream's state and its first page in one statement: the stream row, joined with
        # its events in range (one row of NULL events if there are none).
        if backwards:
            query = _FIRST_PAGE_BACKWARDS
            top = DELETED_REVISION - 1 if from_revision is None else from_revision
            parameters: tuple[Any, ...] = (top, name, max(page, 1))
        else:
            query = _FIRST_PAGE_FORWARDS
            parameters = (from_revision or 0, DELETED_REVISION, name, max(page, 1))
        try:
            rows = self._connect().execute(query, parameters).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._translated(exc, f"read {name!r}") from exc
        if not rows:
            raise StreamNotFoundError(name)
        last_revision, visible_from, tombstoned = rows[0][:3]
        if tombstoned:
            raise StreamDeletedError(name)
        if last_revision < 0 or visible_from == DELETED_REVISION:
            raise StreamNotFoundError(name)
        if page == 0 or rows[0][3] is None:
            return iter(())
        return self._stream_pages(name, [row[3:] for row in rows], visible_from, backwards, limit)

    def _stream_pages(
        self, stream: str, rows: list[_Row], visible_from: int, backwards: bool, limit: int | None
    ) -> Iterator[RecordedEvent]:
        """The events of the first page, ``rows``, then of the following pages."""
        remaining = limit
        if backwards:
            query = _NEXT_PAGE_BACKWARDS
            bound = visible_from
        else:
            query = _NEXT_PAGE_FORWARDS
            bound = DELETED_REVISION
        while True:
            for row in rows:
                yield _to_event(row)
            page = PAGE_SIZE if remaining is None else min(PAGE_SIZE, remaining)
            if len(rows) < page:
                return
            if remaining is not None:
                remaining -= len(rows)
                if remaining <= 0:
                    return
                page = min(PAGE_SIZE, remaining)
            start = rows[-1][2] + (-1 if backwards else 1)
            with self._translate(f"read {stream!r}"):
                rows = self._connect().execute(query, (stream, start, bound, page)).fetchall()

    def read_all(
        self,
        *,
        from_position: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        filter: EventFilter | None = None,
    ) -> Iterator[RecordedEvent]:
        from_position, backwards, limit, predicate = checked_read_all(from_position, backwards, limit, filter)
        return self._all_pages(from_position, backwards, limit, predicate)

    def _all_pages(
        self, from_position: int | None, backwards: bool, limit: int | None, predicate: EventFilter
    ) -> Iterator[RecordedEvent]:
        count = 0
        matches = _matcher(predicate)
        if backwards:
            query = f"SELECT {_COLUMNS} FROM events WHERE position < ? ORDER BY position DESC LIMIT ?"
            cursor = _LAST_ROWID if from_position is None else min(from_position, _LAST_ROWID)
        else:
            query = f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"
            cursor = min((from_position or 0) - 1, _LAST_ROWID)
        while True:
            with self._translate("read $all"):
                rows = self._connect().execute(query, (cursor, PAGE_SIZE)).fetchall()
            for row in rows:
                if matches(row[4], row[1]):
                    if limit is not None and count >= limit:
                        return
                    count += 1
                    yield _to_event(row)
            if len(rows) < PAGE_SIZE or (limit is not None and count >= limit):
                return
            cursor = rows[-1][0]

    def stream_version(self, stream: str) -> int | None:
        name = StreamName(stream)
        connection = self._connect()
        with self._translate(f"read the version of {name!r}"):
            info = self._stream_info(connection, name)
        if info.tombstoned:
            raise StreamDeletedError(name)
        if info.soft_deleted or info.last_revision < 0:
            return None
        return info.last_revision

    def head_position(self, filter: EventFilter | None = None) -> int:
        return next((e.position for e in self.read_all(backwards=True, filter=filter, limit=1)), 0)

    def subscribe(
        self,
        *,
        from_position: int | None = None,
        filter: EventFilter | None = None,
        checkpoint_interval: int = 150,
    ) -> PollingSubscription:
        from_position, predicate, checkpoint_interval = checked_subscribe(
            from_position, filter, checkpoint_interval
        )
        matches = _matcher(predicate)
        query = f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"

        def fetch(after: int, page: int) -> tuple[list[RecordedEvent], int | None, int]:
            with self._translate("subscription read"):
                rows = self._connect().execute(query, (min(after, _LAST_ROWID), page)).fetchall()
            if not rows:
                return [], None, 0
            matching = [_to_event(row) for row in rows if matches(row[4], row[1])]
            return matching, rows[-1][0], len(rows)

        return PollingSubscription(
            fetch,
            self._notifier,
            from_position=from_position,
            checkpoint_interval=checkpoint_interval,
            poll_interval=self._poll_interval,
        )

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection this store opened; idempotent."""
        self._closed = True
        self._notifier.notify()
        self._connections.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _now_micros() -> int:
    return time.time_ns() // 1_000
