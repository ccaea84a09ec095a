"""Schema version 2 of the SQLite event store, and the in-place migration of version-1 files."""

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from eventsourcing_cqrs.errors import EventStoreCorruptedError, StreamDeletedError, StreamNotFoundError
from eventsourcing_cqrs.event_store import NewEvent, StreamState
from eventsourcing_cqrs.event_store.sqlite import APPLICATION_ID, SCHEMA_VERSION, SQLiteEventStore
from eventsourcing_cqrs.testing.contracts import new_events

DELETED = 2**63 - 1

#: Version 1 of the schema, as the library wrote it before version 2.
V1_SCHEMA = (
    "CREATE TABLE events (position INTEGER PRIMARY KEY, stream TEXT NOT NULL, revision INTEGER NOT NULL, "
    "id BLOB NOT NULL, type TEXT NOT NULL, data BLOB NOT NULL, metadata BLOB NOT NULL, "
    "content_type TEXT NOT NULL, recorded_at INTEGER NOT NULL)",
    "CREATE UNIQUE INDEX events_by_stream ON events (stream, revision)",
    "CREATE INDEX events_by_id ON events (id)",
    "CREATE TABLE streams (name TEXT PRIMARY KEY, last_revision INTEGER NOT NULL, "
    "visible_from INTEGER NOT NULL DEFAULT 0, tombstoned INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID",
)

#: The ids of the live stream's events in the version-1 file, for the idempotency checks.
LIVE_IDS = [uuid.UUID(int=n + 1) for n in range(3)]


def _write_v1(path: Path, *, damaged: bool = False) -> None:
    """A version-1 file as the old library left it: a live stream, a soft-deleted one, one
    recreated after a delete (truncated), a tombstoned one, and the ``$$`` metadata streams."""
    rows: list[tuple[str, int, bytes, str, bytes]] = []

    def event(stream: str, revision: int, type_: str = "Happened", data: bytes = b"{}") -> None:
        event_id = LIVE_IDS[revision].bytes if stream == "Order-1" else uuid.uuid4().bytes
        rows.append((stream, revision, event_id, type_, data))

    for revision in range(3):
        event("Order-1", revision)
    for revision in range(2):
        event("Order-2", revision)
    event("$$Order-2", 0, "$metadata", json.dumps({"$tb": DELETED}).encode())
    for revision in range(2):
        event("Order-3", revision)
    event("$$Order-3", 0, "$metadata", json.dumps({"$tb": DELETED}).encode())
    event("$$Order-3", 1, "$metadata", json.dumps({"$tb": 2}).encode())
    event("Order-3", 2)
    event("Order-4", 0)
    event("Order-4", DELETED, "$streamDeleted", b"")
    streams = [
        ("Order-1", 5 if damaged else 2, 0, 0),
        ("Order-2", 1, DELETED, 0),
        ("$$Order-2", 0, 0, 0),
        ("Order-3", 2, 2, 0),
        ("$$Order-3", 1, 0, 0),
        ("Order-4", 0, 0, 1),
    ]
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("BEGIN")
        for statement in V1_SCHEMA:
            connection.execute(statement)
        connection.executemany(
            "INSERT INTO events (stream, revision, id, type, data, metadata, content_type, recorded_at) "
            "VALUES (?, ?, ?, ?, ?, x'', 'application/json', 1700000000000000)",
            rows,
        )
        connection.executemany("INSERT INTO streams VALUES (?, ?, ?, ?)", streams)
        connection.execute(f"PRAGMA application_id={APPLICATION_ID}")
        connection.execute("PRAGMA user_version=1")
        connection.execute("COMMIT")


def _layout(path: Path) -> tuple[int, set[str], list[str], list[tuple[object, ...]], int]:
    """(user_version, index names, streams columns, streams rows, events count), read-only."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as reader:
        (version,) = reader.execute("PRAGMA user_version").fetchone()
        indexes = {name for (name,) in reader.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        columns = [row[1] for row in reader.execute("PRAGMA table_info(streams)")]
        streams = reader.execute("SELECT * FROM streams ORDER BY name").fetchall()
        (events,) = reader.execute("SELECT count(*) FROM events").fetchone()
    return version, indexes, columns, streams, events


def _assert_migrated_contents(store: SQLiteEventStore) -> None:
    assert [e.id for e in store.read_stream("Order-1")] == LIVE_IDS
    assert store.stream_version("Order-1") == 2
    with pytest.raises(StreamNotFoundError):
        store.read_stream("Order-2")
    assert store.stream_version("Order-2") is None
    assert [e.revision for e in store.read_stream("Order-3")] == [2]
    assert store.stream_version("Order-3") == 2
    with pytest.raises(StreamDeletedError):
        store.read_stream("Order-4")
    assert [e.revision for e in store.read_stream("$$Order-3")] == [0, 1]


def test_a_version_1_file_is_migrated_in_place_keeping_every_stream_state(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    _write_v1(path)
    store = SQLiteEventStore(path)
    try:
        version, indexes, columns, streams, events = _layout(path)
        assert version == SCHEMA_VERSION == 2
        assert "events_by_id" not in indexes
        assert "events_by_stream" in indexes
        assert columns == ["name", "visible_from", "tombstoned"]
        assert streams == [("Order-2", DELETED, 0), ("Order-3", 2, 0), ("Order-4", 0, 1)]
        assert events == 13
        _assert_migrated_contents(store)
        # Writes go on from the migrated state, with their checks and idempotency.
        again = store.append("Order-1", [_same_event(n) for n in range(1, 3)], expected_version=0)
        assert (again.revision, again.already_written) == (2, True)
        assert store.append("Order-1", new_events(1), expected_version=2).revision == 3
        assert store.append("Order-2", new_events(1), expected_version=StreamState.NO_STREAM).revision == 2
        assert [e.revision for e in store.read_stream("Order-2")] == [2]
        with pytest.raises(StreamDeletedError):
            store.append("Order-4", new_events(1), expected_version=StreamState.ANY)
    finally:
        store.close()


def _same_event(revision: int) -> NewEvent:
    return NewEvent("Happened", b"{}", b"", id=LIVE_IDS[revision])


def test_a_damaged_version_1_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    _write_v1(path, damaged=True)
    before = _layout(path)
    with pytest.raises(EventStoreCorruptedError, match=r"'Order-1' at revision 5.*not migrated"):
        SQLiteEventStore(path)
    assert _layout(path) == before
    assert before[0] == 1


_KILL_MID_MIGRATION = """
import os, signal, sqlite3, sys

real_connect = sqlite3.connect

def connect(*args, **kwargs):
    connection = real_connect(*args, **kwargs)

    def trace(statement):
        # After the id index and the new streams table are gone/made, inside the transaction.
        if statement.startswith("DROP TABLE streams"):
            os.kill(os.getpid(), signal.SIGKILL)

    connection.set_trace_callback(trace)
    return connection

sqlite3.connect = connect
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
SQLiteEventStore(sys.argv[1])
print("migration finished without being killed")
"""


def test_a_process_killed_mid_migration_leaves_a_version_1_file_that_migrates_next_time(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    _write_v1(path)
    before = _layout(path)
    child = subprocess.run(
        [sys.executable, "-c", _KILL_MID_MIGRATION, str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    assert _layout(path) == before  # still version 1, id index and old streams table intact
    store = SQLiteEventStore(path)
    try:
        assert _layout(path)[0] == SCHEMA_VERSION
        _assert_migrated_contents(store)
    finally:
        store.close()


def test_a_newer_schema_is_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    SQLiteEventStore(path).close()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        connection.commit()
    with pytest.raises(EventStoreCorruptedError, match="newer than this library"):
        SQLiteEventStore(path)


def test_appends_write_no_streams_row_and_deletes_do(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path)
    try:
        store.append("Order-1", new_events(2), expected_version=StreamState.NO_STREAM)
        store.append("Order-1", new_events(1), expected_version=1)
        store.append("Order-2", new_events(1), expected_version=StreamState.ANY)
        assert _layout(path)[3] == []
        store.delete_stream("Order-2", expected_version=0)
        store.tombstone_stream("Order-1", expected_version=2)
        assert _layout(path)[3] == [("Order-1", 0, 1), ("Order-2", DELETED, 0)]
    finally:
        store.close()
