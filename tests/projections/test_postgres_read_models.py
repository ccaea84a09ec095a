"""The read model contracts against a real PostgreSQL server (one schema per test)."""

import functools

import pytest

from projections.read_model_store.postgres import PostgresReadModelStore
from projections.testing.contracts import (
    ProjectionRunnerContract,
    ReadModelStoreContract,
    ReadModelStoreFactory,
)

pytestmark = pytest.mark.postgres


class TestPostgresReadModelStore(ReadModelStoreContract):
    PARAMETER = "%s"

    @pytest.fixture
    def read_model_store_factory(self, postgres_uri: str, postgres_schema: str) -> ReadModelStoreFactory:
        return functools.partial(PostgresReadModelStore, postgres_uri, schema=postgres_schema)


class TestProjectionRunnerOnPostgres(ProjectionRunnerContract):
    @pytest.fixture
    def read_model_store_factory(self, postgres_uri: str, postgres_schema: str) -> ReadModelStoreFactory:
        return functools.partial(PostgresReadModelStore, postgres_uri, schema=postgres_schema)
