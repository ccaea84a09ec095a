"""The read model contracts against a SQLite file."""

import functools
from pathlib import Path

import pytest

from eventsourcing_cqrs.testing.read_model_contracts import (
    ProjectionRunnerContract,
    ReadModelStoreContract,
    ReadModelStoreFactory,
)
from projections.stores.sqlite import SQLiteReadModelStore


class TestSQLiteReadModelStore(ReadModelStoreContract):
    @pytest.fixture
    def read_model_store_factory(self, tmp_path: Path) -> ReadModelStoreFactory:
        return functools.partial(SQLiteReadModelStore, tmp_path / "views.db")


class TestProjectionRunnerOnSQLite(ProjectionRunnerContract):
    @pytest.fixture
    def read_model_store_factory(self, tmp_path: Path) -> ReadModelStoreFactory:
        return functools.partial(SQLiteReadModelStore, tmp_path / "views.db", durable=False)
