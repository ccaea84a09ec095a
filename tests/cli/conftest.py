"""The ``escqrs`` console script, run in subprocesses against an SQLite file and EventStoreDB.

Start-up of a subprocess is the cost of these tests, so the bank's data is written once per
backend (by ``escqrs demo --store ...``, which is itself under test) and shared by the tests
that only read it.
"""

from __future__ import annotations

import pytest

from cli._helpers import Backend, escqrs, newest_account, ok
from eventsourcing_cqrs.testing.esdb_fixtures import EsdbEndpoint, esdb_server

__all__ = ["backend", "esdb_server"]


@pytest.fixture(scope="session", params=["sqlite", "esdb"])
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    directory = tmp_path_factory.mktemp(f"cli-{request.param}")
    if request.param == "esdb":
        endpoint: EsdbEndpoint = request.getfixturevalue("esdb_server")
        store = endpoint.uri
    else:
        store = f"sqlite:///{directory / 'events.db'}"
    read_models = f"sqlite:///{directory / 'read_models.db'}"
    ok(escqrs("demo", "--store", store, "--read-models", read_models))
    ada, correlation = newest_account(store, "Ada Lovelace")
    grace, _ = newest_account(store, "Grace Hopper")
    return Backend(request.param, store, read_models, ada, grace, correlation)
