"""The read model contracts against the in-memory store."""

import pytest

from eventsourcing_cqrs.testing.read_model_contracts import (
    ProjectionRunnerContract,
    ReadModelStoreContract,
    ReadModelStoreFactory,
)
from projections.stores.memory import InMemoryReadModelStore


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
