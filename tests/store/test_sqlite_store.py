"""The event store contract against a SQLite file, and the SQLite-specific failures."""

import contextlib
import functools
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventsourcing_cqrs._uri import parse_sqlite_uri
from eventsourcing_cqrs.errors import (
    EventStoreCorruptedError,
    EventStoreLockedError,
    EventStoreUnavailableError,
    InvalidInputError,
)
from eventsourcing_cqrs.event_store import StreamState, connect
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from eventsourcing_cqrs.testing.contracts import EventStoreContract, StoreFactory, new_events
from projections.read_model_store.port import ProjectionState
from projections.read_model_store.sqlite import SQLiteReadModelStore


class TestSQLiteEventStore(EventStoreContract):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        return functools.partial(SQLiteEventStore, tmp_path / "events.db")


def test_connect_opens_a_sqlite_file_from_a_uri(tmp_path: Path) -> None:
    store = connect(f"sqlite:///{tmp_path}/via-uri.db?durable=false")
    assert isinstance(store, SQLiteEventStore)
    assert not store.durable
    store.append("Order-1", new_events(1), expected_version=StreamState.NO_STREAM)
    store.close()
    reopened = connect(f"sqlite:///{tmp_path}/via-uri.db")
    assert reopened.stream_version("Order-1") == 0
    reopened.close()


@pytest.mark.parametrize(
    ("uri", "field"),
    [
        ("", "event store URI"),
        ("sqlite://", "event store URI"),
        ("sqlite:///x.db?durable=maybe", "durable option"),
        ("sqlite:///x.db?cache=big", "event store URI"),
        ("postgres://localhost/x", "event store URI"),
    ],
)
def test_connect_refuses_malformed_uris_naming_them(uri: str, field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        connect(uri)
    assert caught.value.field == field


def test_a_missing_directory_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "dir" / "events.db"
    with pytest.raises(EventStoreUnavailableError, match=str(path.parent)):
        SQLiteEventStore(path)
    assert not path.parent.exists()


def test_an_unwritable_location_is_reported_with_the_file_path(tmp_path: Path) -> None:
    if Path("/proc").is_dir():
        path = Path("/proc/events.db")  # not writable even for root
    else:
        locked = tmp_path / "ro"
        locked.mkdir(mode=0o500)
        path = locked / "events.db"
    with pytest.raises(EventStoreUnavailableError, match=str(path)):
        SQLiteEventStore(path)


def test_a_directory_in_place_of_the_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(EventStoreUnavailableError, match=str(tmp_path)):
        SQLiteEventStore(tmp_path)


def test_a_file_that_is_not_a_database_is_reported_as_corrupt_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    garbage = b"this is not a SQLite database, just some text " * 200
    path.write_bytes(garbage)
    with pytest.raises(EventStoreCorruptedError, match=str(path)):
        SQLiteEventStore(path)
    assert path.read_bytes() == garbage


def test_another_applications_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    other = sqlite3.connect(path)
    other.execute("PRAGMA application_id = 1234")
    other.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    other.commit()
    other.close()
    with pytest.raises(EventStoreCorruptedError, match="another application"):
        SQLiteEventStore(path)
    check = sqlite3.connect(path)
    tables = {row[0] for row in check.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    check.close()
    assert tables == {"invoices"}


def test_a_database_locked_past_the_busy_timeout_raises_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path, busy_timeout=0.2)
    store.append("Order-1", new_events(1), expected_version=StreamState.NO_STREAM)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(EventStoreLockedError, match="locked") as caught:
            store.append("Order-1", new_events(1), expected_version=0)
        assert str(path) in str(caught.value)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.stream_version("Order-1") == 0
    store.append("Order-1", new_events(1), expected_version=0)
    assert store.stream_version("Order-1") == 1
    store.close()


def test_a_closed_store_says_so(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db")
    store.close()
    store.close()
    with pytest.raises(EventStoreUnavailableError, match="closed"):
        store.append("Order-1", new_events(1), expected_version=StreamState.ANY)


def test_the_memory_path_is_refused_with_a_pointer_to_the_memory_store() -> None:
    with pytest.raises(InvalidInputError, match="InMemoryEventStore"):
        SQLiteEventStore(":memory:")


# -- sqlite3 errors are classed by SQLite's result code (each test provokes a real one) ----------


def _written_store(path: Path, events: int = 1) -> None:
    store = SQLiteEventStore(path)
    store.append("Order-1", new_events(events, payload="x" * 200), expected_version=StreamState.NO_STREAM)
    store.close()


def test_a_damaged_page_is_reported_as_corrupt_when_read(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    _written_store(path, events=2000)
    with path.open("r+b") as file:  # the header stays valid: SQLITE_CORRUPT, not SQLITE_NOTADB
        file.seek(4096 * 3)
        file.write(b"\xff" * 4096 * 20)
    store = SQLiteEventStore(path)
    try:
        with pytest.raises(EventStoreCorruptedError, match="malformed") as caught:
            list(store.read_stream("Order-1"))
        cause = caught.value.__cause__
        assert isinstance(cause, sqlite3.DatabaseError)
        assert cause.sqlite_errorcode & 0xFF == sqlite3.SQLITE_CORRUPT
        assert str(path) in str(caught.value)
    finally:
        store.close()


def test_a_file_that_is_not_a_database_is_classed_by_its_result_code(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"not a database " * 300)
    with pytest.raises(EventStoreCorruptedError) as caught:
        SQLiteEventStore(path)
    cause = caught.value.__cause__
    assert isinstance(cause, sqlite3.DatabaseError)
    assert cause.sqlite_errorcode & 0xFF == sqlite3.SQLITE_NOTADB


def test_an_exclusive_lock_held_by_another_connection_is_reported_as_locked(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    _written_store(path)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")  # kept after the write: no one else may read
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("INSERT INTO streams (name) VALUES ('Other-1')")
        holder.execute("COMMIT")
        with pytest.raises(EventStoreLockedError, match="locked by another connection") as caught:
            SQLiteEventStore(path, busy_timeout=0.05)
        cause = caught.value.__cause__
        assert isinstance(cause, sqlite3.OperationalError)
        assert cause.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY
    finally:
        holder.close()
    reopened = SQLiteEventStore(path)
    assert reopened.stream_version("Order-1") == 0
    reopened.close()


@contextlib.contextmanager
def _read_only(path: Path) -> Iterator[None]:
    """Make ``path`` unwritable, even for root (an immutable file), for the block."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    chattr = shutil.which("chattr")
    made = (
        chattr is not None
        and not subprocess.run([chattr, "+i", str(path)], check=False, capture_output=True).returncode
    )
    if not made:
        pytest.skip("cannot make a file read-only for root here (no chattr +i)")
    try:
        yield
    finally:
        assert chattr is not None
        subprocess.run([chattr, "-i", str(path)], check=True)


def test_a_read_only_file_can_be_read_and_reports_unavailable_on_append(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    _written_store(path)
    with _read_only(path):
        store = SQLiteEventStore(path)
        try:
            assert store.stream_version("Order-1") == 0
            with pytest.raises(EventStoreUnavailableError, match="readonly") as caught:
                store.append("Order-1", new_events(1), expected_version=0)
            cause = caught.value.__cause__
            assert isinstance(cause, sqlite3.OperationalError)
            assert cause.sqlite_errorcode & 0xFF == sqlite3.SQLITE_READONLY
            assert str(path) in str(caught.value)
        finally:
            store.close()
    reopened = SQLiteEventStore(path)
    assert reopened.stream_version("Order-1") == 0
    reopened.close()


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"durable": "no"}, "durable"),
        ({"busy_timeout": "10"}, "busy_timeout"),
        ({"busy_timeout": -1}, "busy_timeout"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": float("nan")}, "poll_interval"),
    ],
)
def test_wrong_options_are_refused_before_the_file_is_created(
    tmp_path: Path, options: dict[str, object], field: str
) -> None:
    path = tmp_path / "events.db"
    with pytest.raises(InvalidInputError) as caught:
        SQLiteEventStore(path, **options)  # type: ignore[arg-type]
    assert caught.value.field == field
    assert not path.exists()


# -- the one sqlite: URI parser (event store, read model store and CLI) ---------------------------


@pytest.mark.parametrize(
    ("uri", "path", "durable"),
    [
        ("sqlite:///events.db", "events.db", True),
        ("sqlite:///dir/events.db", "dir/events.db", True),
        ("sqlite:////abs/events.db", "/abs/events.db", True),
        ("SQLite:///events.db?durable=false", "events.db", False),
        ("sqlite:///events.db?durable=OFF", "events.db", False),
        ("sqlite:///events.db?durable=0", "events.db", False),
        ("sqlite:///events.db?durable=no", "events.db", False),
        ("sqlite:///events.db?durable=yes", "events.db", True),
        ("sqlite:///events.db?durable=on&durable=1", "events.db", True),
    ],
)
def test_the_sqlite_uri_parser_accepts_relative_and_absolute_paths_and_durable_words(
    uri: str, path: str, durable: bool
) -> None:
    parsed = parse_sqlite_uri(uri)
    assert (parsed.path, parsed.durable, dict(parsed.options)) == (path, durable, {})
    assert parsed.file == Path(path)


def test_the_sqlite_uri_parser_returns_other_options_for_the_caller_to_judge(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/x.db?cache=big&durable=false"
    parsed = parse_sqlite_uri(uri, what="read model store URI")
    assert dict(parsed.options) == {"cache": "big"}
    assert not parsed.exists
    with pytest.raises(InvalidInputError, match=r"unknown options \['cache'\]") as caught:
        parsed.refuse_other_options()
    assert caught.value.field == "read model store URI"
    (tmp_path / "x.db").touch()
    assert parsed.exists


@pytest.mark.parametrize(
    ("uri", "field", "message"),
    [
        ("sqlite://", "{what}", "a sqlite URI needs a path: sqlite:///{example}"),
        ("sqlite:///x.db?durable=maybe", "durable option", "use true or false"),
        ("sqlite:///x.db?cache=big", "{what}", "unknown options ['cache']"),
        ("sqlite://[oops/x.db", "{what}", "it is not a valid URI"),
    ],
)
def test_the_parser_and_connect_refuse_malformed_sqlite_uris_with_the_same_messages(
    uri: str, field: str, message: str
) -> None:
    # The read model store's connect() calls the parser with these words; the event store's too.
    for what, example in (("event store URI", "events.db"), ("read model store URI", "views.db")):
        with pytest.raises(InvalidInputError) as caught:
            parse_sqlite_uri(uri, what=what, example=example).refuse_other_options()
        assert caught.value.field == field.format(what=what)
        assert message.format(example=example) in str(caught.value)
    with pytest.raises(InvalidInputError) as caught:
        connect(uri)
    assert caught.value.field == field.format(what="event store URI")
    assert message.format(example="events.db") in str(caught.value)


# -- a read model store's file given to the event store ----------------------------


def _file_state(path: Path) -> tuple[list[str], bytes, int, list[str]]:
    """The tables, bytes and mtime of ``path``, and the files beside it."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as reader:
        tables = [name for (name,) in reader.execute("SELECT name FROM sqlite_master ORDER BY name")]
    return tables, path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(path.parent))


def test_a_read_model_store_file_is_refused_naming_it_and_nothing_is_written(tmp_path: Path) -> None:
    views = tmp_path / "views.db"
    read_models = SQLiteReadModelStore(views)
    read_models.set_state("tally", ProjectionState.LIVE)
    read_models.close()
    before = _file_state(views)
    assert before[0]
    assert not {"events", "streams"} & set(before[0])

    with pytest.raises(EventStoreCorruptedError) as caught:
        SQLiteEventStore(views)
    message = str(caught.value)
    assert "views.db' is not an event store file: it holds tables rm_generations" in message
    assert "rm_projections" in message
    assert "read model store" in message
    assert _file_state(views) == before  # same tables, same bytes, same mtime, no new file

    # The read-only CLI path opens the store through connect() too: refused the same way.
    with pytest.raises(EventStoreCorruptedError, match="is not an event store file"):
        connect(f"sqlite:///{views}")
    assert _file_state(views) == before


def test_any_sqlite_file_with_other_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "inventory.db"
    with contextlib.closing(sqlite3.connect(path)) as other:
        other.execute("CREATE TABLE parts (id INTEGER PRIMARY KEY, name TEXT)")
        other.commit()
    before = _file_state(path)
    with pytest.raises(
        EventStoreCorruptedError, match=r"inventory\.db' is not an event store file: it holds tables parts;"
    ):
        SQLiteEventStore(path)
    assert _file_state(path) == before


def test_an_empty_file_and_an_existing_event_store_still_open(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    store = SQLiteEventStore(empty)
    store.append("Order-1", new_events(1), expected_version=StreamState.NO_STREAM)
    store.close()
    reopened = SQLiteEventStore(empty)
    assert reopened.stream_version("Order-1") == 0
    reopened.close()
