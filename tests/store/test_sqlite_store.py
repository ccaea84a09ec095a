"""The event store contract against a SQLite file, and the SQLite-specific failures."""

import functools
import sqlite3
from pathlib import Path

import pytest

from eventsourcing_cqrs.errors import (
    EventStoreCorruptedError,
    EventStoreLockedError,
    EventStoreUnavailableError,
    InvalidInputError,
)
from eventsourcing_cqrs.event_store import StreamState, connect
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from eventsourcing_cqrs.testing.contracts import EventStoreContract, StoreFactory, new_events


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
