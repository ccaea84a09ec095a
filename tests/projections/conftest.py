"""Fixtures for the read side: a PostgreSQL server when there is one, a fresh schema per test.

PostgreSQL tests are marked ``postgres``. Without a server they are skipped, saying why,
unless ``REQUIRE_POSTGRES=1``, where a missing server fails them (CI sets it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

POSTGRES_URI = os.environ.get("POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/test")


def _server_error() -> str | None:
    try:
        with psycopg.connect(POSTGRES_URI, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"{type(exc).__name__}: {exc}".strip()
    return None


@pytest.fixture(scope="session")
def postgres_uri() -> str:
    """The server's URI; skips (or fails with REQUIRE_POSTGRES=1) when it cannot be reached."""
    error = _server_error()
    if error is not None:
        message = f"no PostgreSQL server at {POSTGRES_URI} ({error}); set POSTGRES_URI or start one"
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail(f"REQUIRE_POSTGRES=1 but {message}")
        pytest.skip(message)
    return POSTGRES_URI


@pytest.fixture
def postgres_schema(postgres_uri: str) -> Iterator[str]:
    """A schema of its own for one test, dropped afterwards."""
    schema = f"rmtest_{uuid.uuid4().hex[:12]}"
    yield schema
    with psycopg.connect(postgres_uri, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
