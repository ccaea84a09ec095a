"""The event store contract against the in-memory adapter."""

import pytest

from eventsourcing_cqrs.event_store.memory import InMemoryEventStore
from eventsourcing_cqrs.testing.contracts import EventStoreContract, StoreFactory


class TestInMemoryEventStore(EventStoreContract):
    SUPPORTS_PROCESSES = False

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        shared = InMemoryEventStore()
        return lambda: shared
