"""The read model contracts against a SQLite file."""

import functools
import sqlite3
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from eventsourcing_cqrs.event_store.memory import InMemoryEventStore
from projections import Backoff, ProjectionRunner
from projections.errors import (
    ReadModelStoreError,
    ReadModelStoreLockedError,
    ReadModelStoreUnavailableError,
)
from projections.read_model_store.port import LeaseRole, TableSpec
from projections.read_model_store.sqlite import SQLiteReadModelStore
from projections.testing.contracts import (
    ProjectionRunnerContract,
    ReadModelStoreContract,
    ReadModelStoreFactory,
    Tally,
    append_tallied,
)


class TestSQLiteReadModelStore(ReadModelStoreContract):
    @pytest.fixture
    def read_model_store_factory(self, tmp_path: Path) -> ReadModelStoreFactory:
        return functools.partial(SQLiteReadModelStore, tmp_path / "views.db")


class TestProjectionRunnerOnSQLite(ProjectionRunnerContract):
    @pytest.fixture
    def read_model_store_factory(self, tmp_path: Path) -> ReadModelStoreFactory:
        return functools.partial(SQLiteReadModelStore, tmp_path / "views.db", durable=False)


def _locked(path: Path) -> sqlite3.Connection:
    """Another connection holding the database's write lock."""
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    return blocker


def test_a_locked_read_model_database_is_retried_until_it_frees_up(tmp_path: Path) -> None:
    events = InMemoryEventStore()
    store = SQLiteReadModelStore(tmp_path / "views.db", busy_timeout=0.02)
    runner = ProjectionRunner(
        Tally(),
        events,
        store,
        batch_delay=0.01,
        store_backoff=Backoff(max_attempts=1000, base_delay=0.01, max_delay=0.02),
    )
    runner.run(until_caught_up=True)
    blocker = _locked(tmp_path / "views.db")
    with capture_logs() as logs:
        runner.start()
        position = append_tallied(events, "Tally-1", 3)
        deadline = time.monotonic() + 10
        while not any(entry["event"] == "projection.store_unavailable" for entry in logs):
            assert time.monotonic() < deadline, "the runner never met the lock"
            time.sleep(0.01)
        blocker.execute("COMMIT")
        blocker.close()
        runner.wait_for(position, timeout=10)
        runner.stop()
        runner.join(10)
    with store.read("tally") as view:
        assert view.table("streams").get("Tally-1") == {
            "count": 3,
            "last_revision": 2,
            "version": 1,
            "in_order": True,
        }
    store.close()


def test_a_read_model_database_locked_for_too_long_stops_the_runner(tmp_path: Path) -> None:
    events = InMemoryEventStore()
    store = SQLiteReadModelStore(tmp_path / "views.db", busy_timeout=0.01)
    append_tallied(events, "Tally-1", 1)
    blocker = _locked(tmp_path / "views.db")
    try:
        runner = ProjectionRunner(
            Tally(), events, store, store_backoff=Backoff(max_attempts=3, base_delay=0.01)
        )
        with pytest.raises(ReadModelStoreLockedError, match=r"views\.db"):
            runner.run(until_caught_up=True)
    finally:
        blocker.close()
        store.close()


def test_a_database_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ReadModelStoreUnavailableError, match=r"missing") as raised:
        SQLiteReadModelStore(tmp_path / "missing" / "views.db")
    assert isinstance(raised.value.__cause__, sqlite3.OperationalError)
    assert raised.value.__cause__.sqlite_errorcode == sqlite3.SQLITE_CANTOPEN


def test_an_extended_busy_code_is_classified_as_locked(tmp_path: Path) -> None:
    store = SQLiteReadModelStore(tmp_path / "views.db", busy_timeout=0.01)
    lease = store.lease("tally", LeaseRole.RUN)
    assert lease.try_acquire()
    generation = store.create_generation("tally", 1, (TableSpec("streams"),), lease=lease)
    try:
        with store.read("tally") as view:
            table = view.sql_table("streams")
            assert view.execute(f"SELECT count(*) FROM {table}") == [(0,)]  # the view's snapshot
            with store.transaction("tally", generation.number, lease=lease) as transaction:
                transaction.table("streams").put("Tally-1", {"count": 1})
            # Writing from the now stale snapshot fails with SQLITE_BUSY_SNAPSHOT (BUSY | 2 << 8).
            with pytest.raises(ReadModelStoreLockedError) as raised:
                view.execute(f"INSERT INTO {table} (key, doc) VALUES ('Tally-2', '{{}}')")
        cause = raised.value.__cause__
        assert isinstance(cause, sqlite3.OperationalError)
        assert cause.sqlite_errorcode == sqlite3.SQLITE_BUSY_SNAPSHOT
    finally:
        lease.release()
        store.close()


def test_other_sqlite_errors_are_store_errors_naming_the_file(tmp_path: Path) -> None:
    store = SQLiteReadModelStore(tmp_path / "views.db")
    lease = store.lease("tally", LeaseRole.RUN)
    assert lease.try_acquire()
    store.create_generation("tally", 1, (TableSpec("streams"),), lease=lease)
    try:
        with store.read("tally") as view, pytest.raises(ReadModelStoreError, match=r"views\.db") as raised:
            view.execute("SELECT no_such_column FROM rm_projections")
        assert not isinstance(raised.value, ReadModelStoreLockedError | ReadModelStoreUnavailableError)
    finally:
        lease.release()
        store.close()


def test_a_lease_file_that_cannot_be_opened_is_unavailable_and_still_an_os_error(tmp_path: Path) -> None:
    store = SQLiteReadModelStore(tmp_path / "views.db")
    (tmp_path / "views.db.tally.run.lock").mkdir()  # a directory where the lock file should be
    try:
        with pytest.raises(ReadModelStoreUnavailableError, match=r"tally\.run\.lock") as raised:
            store.lease("tally", LeaseRole.RUN).try_acquire()
        assert isinstance(raised.value, OSError)
        with pytest.raises(ReadModelStoreUnavailableError):
            store.lease_held("tally", LeaseRole.RUN)
    finally:
        store.close()


# -- the store's own file, and a batch the store refuses at commit -------------------


def _file_state(path: Path) -> tuple[bytes, bytes]:
    """The database's bytes and its write-ahead log's (a reader may leave an empty one)."""
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes(), wal.read_bytes() if wal.exists() else b""


def test_an_event_store_file_is_refused_naming_it_and_left_as_it_was(tmp_path: Path) -> None:
    from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore  # noqa: PLC0415
    from projections.errors import NotAReadModelStoreError  # noqa: PLC0415 - new with this fix

    path = tmp_path / "views.db"
    events = SQLiteEventStore(path)
    append_tallied(events, "Tally-1", 2)
    events.close()
    before = _file_state(path)
    with pytest.raises(NotAReadModelStoreError) as raised:
        SQLiteReadModelStore(path)
    assert (
        str(raised.value)
        == f"{path} is an event store file, not a read model store; nothing was written to it."
    )
    assert raised.value.path == str(path)
    assert _file_state(path) == before
    with sqlite3.connect(path) as connection:
        tables = {
            name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
    assert not any(name.startswith("rm_") for name in tables)


def test_a_database_of_other_tables_is_refused_but_an_empty_one_is_used(tmp_path: Path) -> None:
    from projections.errors import NotAReadModelStoreError  # noqa: PLC0415 - new with this fix

    other = tmp_path / "app.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    connection.close()
    with pytest.raises(NotAReadModelStoreError, match=r"app\.db is a database of other tables \(customers\)"):
        SQLiteReadModelStore(other)
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    SQLiteReadModelStore(empty).close()
    SQLiteReadModelStore(empty).close()  # and its own file again


def test_a_batch_the_store_refuses_at_commit_is_split_to_name_the_event(tmp_path: Path) -> None:
    """A flush-time refusal (here a trigger) is no longer a store failure of the whole batch."""
    from projections import ProjectionFailedError  # noqa: PLC0415

    store = SQLiteReadModelStore(tmp_path / "views.db", durable=False)
    events = InMemoryEventStore()
    try:
        ProjectionRunner(Tally(), events, store).run(until_caught_up=True)
        lease = store.lease("tally", LeaseRole.RUN)
        assert lease.try_acquire()
        live = store.describe("tally").live
        assert live is not None
        with store.transaction("tally", live.number, lease=lease) as uow:
            table = uow.sql_table("streams")
            for when in ("INSERT", "UPDATE"):
                uow.execute(
                    f"CREATE TRIGGER refuse_{when.lower()} BEFORE {when} ON {table} "
                    "WHEN json_extract(NEW.doc, '$.count') >= 3 "
                    "BEGIN SELECT RAISE(ABORT, 'count too high'); END"
                )
        lease.release()
        last = append_tallied(events, "Tally-1", 5)
        runner = ProjectionRunner(
            Tally(), events, store, batch_size=100, backoff=Backoff(max_attempts=2, base_delay=0.001)
        )
        with capture_logs() as logs, pytest.raises(ProjectionFailedError) as raised:
            runner.run(until_caught_up=True)
        assert (raised.value.stream, raised.value.revision) == ("Tally-1", 2)
        assert "count too high" in str(raised.value)
        refused = next(entry for entry in logs if entry["event"] == "projection.batch_refused")
        assert (refused["events"], refused["last_position"]) == (5, last)
        assert "count too high" in refused["error"]
        with store.read("tally") as view:
            assert view.table("streams").get("Tally-1") == {
                "count": 2,
                "last_revision": 1,
                "version": 1,
                "in_order": True,
            }
    finally:
        store.close()
        events.close()
