"""The read model contracts against a real PostgreSQL server (one schema per test)."""

import functools
import time
import uuid

import pytest

from projections.errors import ReadModelStoreUnavailableError
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


# -- a server that refuses the login, or cannot be reached ---------------------------


def _opening_fails(uri: str, **options: float) -> tuple[ReadModelStoreUnavailableError, float]:
    started = time.monotonic()
    with pytest.raises(ReadModelStoreUnavailableError) as raised:
        PostgresReadModelStore(uri, **options)  # type: ignore[arg-type]
    return raised.value, time.monotonic() - started


def test_a_database_that_does_not_exist_fails_at_once_with_the_servers_reason(postgres_uri: str) -> None:
    from projections.errors import ReadModelStoreRefusedError  # noqa: PLC0415 - new with this fix

    database = f"no_such_db_{uuid.uuid4().hex[:8]}"
    error, seconds = _opening_fails(f"postgresql://postgres@127.0.0.1:5432/{database}")
    assert seconds < 2
    assert isinstance(error, ReadModelStoreRefusedError)
    assert f'database "{database}" does not exist' in str(error)
    assert "\n" not in str(error)


def test_a_role_that_does_not_exist_fails_at_once_without_the_password(postgres_uri: str) -> None:
    from projections.errors import ReadModelStoreRefusedError  # noqa: PLC0415 - new with this fix

    role = f"nobody_{uuid.uuid4().hex[:8]}"
    error, seconds = _opening_fails(f"postgresql://{role}:s3cr3t-pw@127.0.0.1:5432/test")
    assert seconds < 2
    assert isinstance(error, ReadModelStoreRefusedError)
    assert f'role "{role}" does not exist' in str(error)
    assert "s3cr3t-pw" not in str(error)
    assert "\n" not in str(error)


def test_a_closed_port_is_waited_for_then_named(postgres_uri: str) -> None:
    error, seconds = _opening_fails("postgresql://postgres:s3cr3t-pw@127.0.0.1:1/test", connect_timeout=0.5)
    assert 0.4 < seconds < 3
    message = str(error)
    assert "127.0.0.1:1" in message
    assert "connection refused" in message.lower()
    assert "s3cr3t-pw" not in message
    assert "\n" not in message
