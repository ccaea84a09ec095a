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
* **Flat append cost** (schema version 2): a commit writes the event's row at the end of the
  table and one entry in the ``(stream, revision)`` index, nothing else, so it costs the same
  in a store of a million events as in an empty one. A file of schema version 1 is migrated in
  place, in one transaction, when first opened (a crash part-way leaves it at version 1).
* **Group commit**: appends from several threads of one process share one transaction, so one
  sync at ``synchronous=FULL``, each with its own expected-version check and outcome (see
  :class:`SQLiteEventStore`).
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
from eventsourcing_cqrs.event_store._group_commit import GroupCommitter, Pending
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
SCHEMA_VERSION = 2
PAGE_SIZE = 500

#: Version 2. A commit writes one row at the end of ``events`` and one entry in
#: ``events_by_stream``, near the stream's other entries, and nothing else: no index on random
#: event ids and no per-stream row to update, so its cost does not grow with the store. A
#: stream's last revision is its last entry in ``events_by_stream`` (below the tombstone's
#: revision); ``streams`` holds a row only for a stream that was soft-deleted (``visible_from``:
#: the first revision it shows, ``DELETED_REVISION`` while deleted) or tombstoned.
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
CREATE TABLE IF NOT EXISTS streams (
    name          TEXT    PRIMARY KEY,
    visible_from  INTEGER NOT NULL DEFAULT 0,
    tombstoned    INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
"""

#: Version 1 to 2, in one transaction (see ``_migrate``): drop the id index, keep the rows of
#: deleted and tombstoned streams only, without ``last_revision`` (read from the events now).
_MIGRATE_FROM_1 = (
    "DROP INDEX IF EXISTS events_by_id",
    "CREATE TABLE streams_v2 (name TEXT PRIMARY KEY, visible_from INTEGER NOT NULL DEFAULT 0, "
    "tombstoned INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID",
    "INSERT INTO streams_v2 (name, visible_from, tombstoned) "
    "SELECT name, visible_from, tombstoned FROM streams WHERE visible_from <> 0 OR tombstoned <> 0",
    "DROP TABLE streams",
    "ALTER TABLE streams_v2 RENAME TO streams",
)

#: Version 1 rows whose ``last_revision`` is not the stream's last event: a damaged file, which
#: the migration refuses rather than guess.
_V1_INCONSISTENT = (
    "SELECT name, last_revision FROM streams WHERE last_revision <> coalesce("
    "(SELECT revision FROM events WHERE stream = name AND revision < ? ORDER BY revision DESC LIMIT 1), -1) "
    "LIMIT 1"
)

#: The tables of the schema: a non-empty file without them is another application's.
_OWN_TABLES = frozenset({"events", "streams"})

_COLUMNS = "position, stream, revision, id, type, data, metadata, content_type, recorded_at"

_INSERT = (
    "INSERT INTO events (stream, revision, id, type, data, metadata, content_type, recorded_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)

#: A stream's last revision (-1 if none), ``visible_from`` and ``tombstoned``, as one row: the
#: last entry of the stream index below the tombstone, and the ``streams`` row if any.
_STREAM_STATE = (
    "SELECT coalesce((SELECT revision FROM events WHERE stream = ?1 AND revision < "
    f"{DELETED_REVISION} ORDER BY revision DESC LIMIT 1), -1), "
    "coalesce(s.visible_from, 0), coalesce(s.tombstoned, 0) "
    "FROM (SELECT 1) LEFT JOIN streams AS s ON s.name = ?1"
)

#: The ids and positions of a stream's events in a range of revisions (the commit decision's
#: ``existing``: see ``_append``).
_IDS_IN_RANGE = (
    "SELECT id, revision, position FROM events WHERE stream = ? AND revision >= ? AND revision <= ?"
)
#: The last revision and position of an event id among a stream's events after a revision.
_ID_IN_WINDOW = (
    "SELECT revision, position FROM events WHERE stream = ? AND revision > ? AND revision < "
    f"{DELETED_REVISION} AND id = ? ORDER BY revision DESC LIMIT 1"
)

#: With ``ANY`` or ``STREAM_EXISTS``, how many of a stream's last events a re-append is looked
#: for among (EventStoreDB also bounds this: see ``SQLiteEventStore``).
IDEMPOTENCY_WINDOW = 100

#: A stream's state (as ``_STREAM_STATE``) joined with the first page of its events (see
#: ``read_stream``): one row of NULL events if there are none. The page is selected (in index
#: order, with its limit) before the join, so that only its rows are sorted, not the stream's.
_STATE_COLUMNS = (
    "coalesce((SELECT revision FROM events WHERE stream = {name} AND revision < "
    f"{DELETED_REVISION} ORDER BY revision DESC LIMIT 1), -1)"
    ", coalesce((SELECT visible_from FROM streams WHERE name = {name}), 0)"
    ", coalesce((SELECT tombstoned FROM streams WHERE name = {name}), 0)"
)
_PAGE_COLUMNS = (
    "e.position, e.stream, e.revision, e.id, e.type, e.data, e.metadata, e.content_type, e.recorded_at"
)
_FIRST_PAGE_FORWARDS = (
    f"SELECT {_STATE_COLUMNS.format(name='?3')}, {_PAGE_COLUMNS} FROM (SELECT 1) LEFT JOIN "
    f"(SELECT {_COLUMNS} FROM events WHERE stream = ?3 AND revision >= max(?1, "
    "coalesce((SELECT visible_from FROM streams WHERE name = ?3), 0)) AND revision < ?2 "
    "ORDER BY revision LIMIT ?4) AS e ORDER BY e.revision"
)
_FIRST_PAGE_BACKWARDS = (
    f"SELECT {_STATE_COLUMNS.format(name='?2')}, {_PAGE_COLUMNS} FROM (SELECT 1) LEFT JOIN "
    # Above the last event there is only the tombstone: "below it" bounds the page as well.
    f"(SELECT {_COLUMNS} FROM events WHERE stream = ?2 AND revision <= ?1 AND revision < {DELETED_REVISION} "
    "AND revision >= coalesce((SELECT visible_from FROM streams WHERE name = ?2), 0) "
    "ORDER BY revision DESC LIMIT ?3) AS e ORDER BY e.revision DESC"
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

#: An append handed to the group committer (stream, expected version, events), and its outcome:
#: ``(revision, position)`` of a write, or the original result of a re-append.
_AppendWork = tuple[str, ExpectedVersion, list[NewEvent]]
_AppendOutcome = tuple[int, int | None] | AppendResult
_PendingAppend = Pending[_AppendWork, _AppendOutcome]

#: The most appends one group commit writes in one transaction.
MAX_GROUP = 128

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
    # The events of one append share their recorded time, so a page of rows mostly repeats
    # the previous row's: that datetime (immutable, so safe to share) is reused. One tuple,
    # read and replaced whole, so that threads reading at once never pair a time with another's.
    last: list[tuple[int, datetime]] = [(0, datetime.fromtimestamp(0, UTC))]

    def to_event(row: _Row) -> RecordedEvent:
        position, stream, revision, event_id, type_, data, metadata, content_type, micros = row
        last_micros, recorded_at = last[0]
        if micros != last_micros:
            recorded_at = from_timestamp(micros / 1_000_000, UTC)
            last[0] = (micros, recorded_at)
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
        s_at(event, recorded_at)
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


class _TypeVerdicts(dict[str, bool]):
    """Whether an event-type filter passes each type: a plain dict lookup per record read, the
    filter asked once per type (remembered for up to ``_MAX_REMEMBERED_TYPES`` types)."""

    def __init__(self, predicate: EventFilter) -> None:
        super().__init__()
        self._predicate = predicate

    def __missing__(self, event_type: str) -> bool:
        # The stream plays no part in an event-type filter (see EventFilter.matches).
        verdict = self._predicate.matches(event_type, "")
        if len(self) < _MAX_REMEMBERED_TYPES:
            self[event_type] = verdict
        return verdict


def _matcher(predicate: EventFilter) -> Callable[[str, str], bool]:
    """``predicate.matches``, remembered per event type when only the type decides.

    A filter on event types (a projection's) then costs one dict lookup per record read
    instead of a regex search. Stream-name filters are asked each time.
    """
    if predicate.by != "event_type":
        return predicate.matches
    verdicts = _TypeVerdicts(predicate)
    return lambda event_type, stream: verdicts[event_type]


def _page_selector(predicate: EventFilter) -> Callable[[list[_Row]], list[RecordedEvent]]:
    """The events among a page of rows that pass ``predicate``, in order (once per subscription page)."""
    to_event = _to_event
    if predicate.by != "event_type":
        matches = predicate.matches
        return lambda rows: [to_event(row) for row in rows if matches(row[4], row[1])]
    verdicts = _TypeVerdicts(predicate)
    return lambda rows: [to_event(row) for row in rows if verdicts[row[4]]]


class SQLiteEventStore:
    """The event store port over one SQLite file (see the module docstring).

    **Appends and idempotency.** A stream's last revision is read from the ``(stream,
    revision)`` index; a ``streams`` row exists only for a soft-deleted or tombstoned stream.
    There is no index on event ids: a re-append is recognised through the stream index. With an
    exact expected version (or ``NO_STREAM``) behind the stream's end, the events at the
    revisions the append would have taken are compared, so such retries are recognised however
    old. With ``ANY`` or ``STREAM_EXISTS`` the first event's id is looked for among the
    stream's last :data:`IDEMPOTENCY_WINDOW` (100) events only, like EventStoreDB's bounded
    cache of recent ids: an older re-append with those versions is written again.

    **Group commit** (``group_commit=True``; by default on when ``durable``, where there is an
    fsync per commit to share, and off at ``NORMAL``, where handing appends between threads
    costs more than the commits it saves). A thread that appends while no
    commit is under way commits at once, alone (a lone writer waits for no one). Threads that
    append meanwhile queue; when the running commit ends, the oldest of them commits the whole
    queue (up to :data:`MAX_GROUP` appends) in one ``BEGIN IMMEDIATE ... COMMIT``. Each append
    of a group runs in its own SAVEPOINT: one whose expected-version check (or any other check)
    fails is rolled back alone and raises in its own thread, the others are written; appends to
    one stream in one group are decided in queue order, so no update is lost. If the
    transaction itself fails (lock timeout, disk error, ``COMMIT``), every append of the group
    raises and none is written. Positions stay in commit order. Appends from other processes
    are not grouped with these: SQLite's write lock serialises them as before.
    ``group_commit=False`` commits each append alone in its caller's thread.

    :param path: the database file; created with its schema if absent.
    :param durable: ``synchronous=FULL`` (default) or the faster ``NORMAL``.
    :param busy_timeout: seconds to wait for another connection's write lock before raising
        :class:`~eventsourcing_cqrs.errors.EventStoreLockedError`.
    :param poll_interval: how often an idle subscription looks for appends by other processes.
    :param group_commit: share one transaction between concurrent appends of this store's
        threads (see above); ``None`` (the default): when ``durable``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durable: bool = True,
        busy_timeout: float = 10.0,
        poll_interval: float = 0.02,
        group_commit: bool | None = None,
    ) -> None:
        if not isinstance(path, str | os.PathLike) or not str(path) or str(path) == ":memory:":
            raise InvalidInputError(
                "database path", path, "give a file path (use InMemoryEventStore for memory)"
            )
        if not isinstance(durable, bool):
            raise InvalidInputError("durable", durable, "give True or False")
        if group_commit is not None and not isinstance(group_commit, bool):
            raise InvalidInputError("group_commit", group_commit, "give True, False or None")
        self.path = Path(path)
        self.durable = durable
        self._busy_timeout = validate_seconds(busy_timeout, "busy_timeout", zero_allowed=True)
        self._poll_interval = validate_seconds(poll_interval, "poll_interval")
        self._connections = ThreadConnections(self._open_connection)
        self._notifier = Notifier()
        self._committer: GroupCommitter[_AppendWork, _AppendOutcome] = GroupCommitter(
            self._commit_group, max_group=MAX_GROUP, enabled=durable if group_commit is None else group_commit
        )
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
        if application_id == APPLICATION_ID and version == 1:
            self._migrate()
            return
        with self._write("creating the schema") as connection:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA application_id={APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        logger.debug("event_store.schema_ready", path=str(self.path))

    def _migrate(self) -> None:
        """Migrate a version-1 file to this version in place, in one transaction.

        SQLite's schema changes are transactional, so a crash or an error part-way leaves the
        file as it was (version 1, readable by an older library, migrated on the next open).
        The version is read again under the write lock: another process may have migrated the
        file since :meth:`_inspect`. A version-1 row that disagrees with its stream's events is
        refused as corruption (nothing written) rather than guessed at.
        """
        started = time.perf_counter()
        with self._write("migrating the schema from version 1") as connection:
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            if version != 1:
                return
            wrong = connection.execute(_V1_INCONSISTENT, (DELETED_REVISION,)).fetchone()
            if wrong is not None:
                raise EventStoreCorruptedError(
                    f"Event store {str(self.path)!r} (schema version 1) records stream {wrong[0]!r} at "
                    f"revision {wrong[1]}, which its events do not match; not migrated, nothing was written."
                )
            for statement in _MIGRATE_FROM_1:
                connection.execute(statement)
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        logger.info(
            "event_store.schema_migrated",
            path=str(self.path),
            from_version=1,
            to_version=SCHEMA_VERSION,
            seconds=round(time.perf_counter() - started, 3),
        )

    # -- writing --------------------------------------------------------------------------

    @staticmethod
    def _stream_info(connection: sqlite3.Connection, stream: str) -> StreamInfo:
        last, visible_from, tombstoned = connection.execute(_STREAM_STATE, (stream,)).fetchone()
        return StreamInfo(last, visible_from == DELETED_REVISION, bool(tombstoned))

    def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        name, expected, new = checked_append(stream, events, expected_version)
        self._connect()  # a closed store fails here, in the caller's thread, not in a group
        result = self._committer.submit((name, expected, new))
        if isinstance(result, AppendResult):  # the events were already in the stream
            return result
        self._notifier.notify()
        revision, position = result
        if position is None:
            position = self.head_position(EventFilter(include_system_events=True))
        return AppendResult(name, revision, position)

    def _commit_group(self, group: list[_PendingAppend]) -> None:
        """Commit the appends of ``group`` in one transaction, each with its own outcome.

        Each append of a group of several runs inside a SAVEPOINT: one that fails its
        expected-version check (or any other check) is rolled back to it alone and reports its
        error, and the others go on. A failure of the transaction itself (``BEGIN``, a lost
        transaction, ``COMMIT``) fails every append of the group, none of which is written.
        """
        connection = self._connect()
        shared = len(group) > 1
        written = False
        try:
            connection.execute("BEGIN IMMEDIATE")
            for pending in group:
                name, expected, new = pending.work
                try:
                    if shared:
                        connection.execute("SAVEPOINT one_append")
                    pending.outcome = self._append(connection, name, expected, new)
                    if shared:
                        connection.execute("RELEASE one_append")
                    written = True
                except Exception as exc:
                    if not connection.in_transaction:
                        raise  # SQLite rolled the whole transaction back: the group fails
                    if shared:
                        connection.execute("ROLLBACK TO one_append")
                        connection.execute("RELEASE one_append")
                    pending.outcome = None
                    pending.error = (
                        self._caused(exc, f"append to {name!r}")
                        if isinstance(exc, sqlite3.DatabaseError)
                        else exc
                    )
            connection.execute("COMMIT" if written else "ROLLBACK")
        except BaseException as exc:
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            if not isinstance(exc, sqlite3.DatabaseError):
                raise
            for pending in group:
                pending.outcome = None
                pending.error = self._caused(exc, f"append to {pending.work[0]!r}")

    def _caused(self, exc: sqlite3.DatabaseError, operation: str) -> EventStoreError:
        """:meth:`_translated`, with ``exc`` as its cause (it is raised later, in the writer's thread)."""
        error = self._translated(exc, operation)
        error.__cause__ = exc
        return error

    def _append(
        self, connection: sqlite3.Connection, name: str, expected: ExpectedVersion, new: list[NewEvent]
    ) -> tuple[int, int | None] | AppendResult:
        """Write ``new`` in the open transaction: its ``(revision, position)``, or the original
        result when the same events are already in the stream.

        The usual command (events appended to a live stream at exactly its last revision)
        costs one indexed read of the stream's state and the insert. The ids the commit
        decision compares with are read through the stream index, never a global id index: for
        an exact expected version (or ``NO_STREAM``) behind the stream's end, the events at the
        revisions the append would have taken; for ``ANY`` and ``STREAM_EXISTS``, the
        occurrence of the first id among the stream's last :data:`IDEMPOTENCY_WINDOW` events
        (and, if found, the events from there).
        """
        info = self._stream_info(connection, name)
        ids = [event.id for event in new]
        existing: dict[uuid.UUID, tuple[int, int]] = {}
        last = info.last_revision
        if ids and last >= 0 and not info.tombstoned:
            first: int | None = None
            if type(expected) is int or expected is StreamState.NO_STREAM:
                wanted = -1 if expected is StreamState.NO_STREAM else expected
                assert isinstance(wanted, int)
                if wanted < last:
                    first = wanted + 1
            else:
                window = last - max(IDEMPOTENCY_WINDOW, len(ids))
                found = connection.execute(_ID_IN_WINDOW, (name, window, ids[0].bytes)).fetchone()
                if found is not None:
                    first = found[0]
            if first is not None:
                for event_id, found_revision, found_position in connection.execute(
                    _IDS_IN_RANGE, (name, first, min(first + len(ids) - 1, DELETED_REVISION - 1))
                ):
                    existing[uuid.UUID(bytes=event_id)] = (found_revision, found_position)
        decision = decide(name, expected, ids, info, existing)
        if isinstance(decision, AlreadyWritten):
            return AppendResult(name, decision.revision, decision.position, already_written=True)
        if decision.undelete:
            self._write_metadata(connection, name, {"$tb": last + 1})
            self._set_stream(connection, name, visible_from=last + 1)
        position = self._insert(connection, self._rows(name, last, new))
        return last + len(new), position

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
        visible_from: int | None = None,
        tombstoned: bool = False,
    ) -> None:
        """Record a deletion in the stream's ``streams`` row (only deletes write one)."""
        connection.execute(
            "INSERT INTO streams (name, visible_from, tombstoned) VALUES (?, coalesce(?, 0), ?) "
            "ON CONFLICT (name) DO UPDATE SET "
            "visible_from = coalesce(?, visible_from), tombstoned = max(tombstoned, ?)",
            (stream, visible_from, tombstoned, visible_from, tombstoned),
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
        select = _page_selector(predicate)
        query = f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?"

        def fetch(after: int, page: int) -> tuple[list[RecordedEvent], int | None, int]:
            with self._translate("subscription read"):
                rows = self._connect().execute(query, (min(after, _LAST_ROWID), page)).fetchall()
            if not rows:
                return [], None, 0
            return select(rows), rows[-1][0], len(rows)

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
