"""The event store contract against a SQLite file, and the SQLite-specific failures."""

import functools
from pathlib import Path

import pytest

from eventsourcing_cqrs.store.sqlite import SQLiteEventStore
from eventsourcing_cqrs.testing.contracts import EventStoreContract, StoreFactory


class TestSQLiteEventStore(EventStoreContract):
    @pytest.fixture
    def store_factory(self, tmp_path: Path) -> StoreFactory:
        return functools.partial(SQLiteEventStore, tmp_path / "events.db")
