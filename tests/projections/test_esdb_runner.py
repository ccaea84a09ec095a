"""The runner contract with EventStoreDB as the event store (the in-process test server over gRPC,
or a real server when ``ESDB_URI`` is set), writing a SQLite read model."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventsourcing_cqrs.event_store import connect
from eventsourcing_cqrs.event_store.port import EventStore
from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer
from projections.read_model_store.sqlite import SQLiteReadModelStore
from projections.testing.contracts import ProjectionRunnerContract, ReadModelStoreFactory


@pytest.fixture(scope="module")
def esdb_uri() -> Iterator[str]:
    """A server of this module's own, so catch-ups do not scan other modules' events."""
    external = os.environ.get("ESDB_URI")
    if external:
        yield external
        return
    with EsdbTestServer(strict=True) as server:
        yield server.uri


class TestProjectionRunnerOnEventStoreDB(ProjectionRunnerContract):
    CHECKPOINT_AT_CATCH_UP = False

    @pytest.fixture
    def event_store(self, esdb_uri: str) -> Iterator[EventStore]:
        events = connect(esdb_uri)
        yield events
        events.close()

    @pytest.fixture
    def read_model_store_factory(self, tmp_path: Path) -> ReadModelStoreFactory:
        return functools.partial(SQLiteReadModelStore, tmp_path / "views.db", durable=False)
