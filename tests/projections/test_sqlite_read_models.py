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
        assert view.table("streams").get("Tally-1") == {"count": 3, "last_revision": 2, "version": 1}
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
