"""The read model contracts against the in-memory store."""

import pytest

from projections.read_model_store.memory import InMemoryReadModelStore
from projections.testing.contracts import (
    ProjectionRunnerContract,
    ReadModelStoreContract,
    ReadModelStoreFactory,
)


class TestInMemoryReadModelStore(ReadModelStoreContract):
    SUPPORTS_RAW_SQL = False

    @pytest.fixture
    def read_model_store_factory(self) -> ReadModelStoreFactory:
        shared = InMemoryReadModelStore()
        return lambda: shared


class TestProjectionRunnerOnMemory(ProjectionRunnerContract):
    @pytest.fixture
    def read_model_store_factory(self) -> ReadModelStoreFactory:
        shared = InMemoryReadModelStore()
        return lambda: shared
