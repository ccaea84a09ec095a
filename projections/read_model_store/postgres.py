"""A read model store in PostgreSQL, through psycopg 3 and a connection pool.

Everything lives in one schema (``read_models`` by default; give each application, or each
test, its own). Each generation's document table is ``rm_{projection}__g{n}__{table}`` with
``key TEXT PRIMARY KEY`` and ``doc JSONB``, plus one expression index ``(doc -> 'field')`` per
declared field, so raw SQL can use every JSONB operator. A unit of work is one transaction
that first takes a share lock on the projection's row: a lease takeover or a generation switch
(both update that row) waits for it, so a superseded writer can never commit after its
successor has read the checkpoint.

Leases are session advisory locks held on a dedicated connection; PostgreSQL releases them
when that connection's process dies. Queries run in read-only transactions that hold a shared
transaction-level advisory lock on the projection, which a switch takes exclusively, so a query
never sees its tables dropped under it.

The SQL itself is shared with the SQLite adapter (:mod:`~projections.read_model_store._sql`);
this module holds PostgreSQL's dialect, its pool, its advisory locks and its error classes.

Install the ``postgres`` extra (``psycopg[binary]``, ``psycopg-pool``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any

import psycopg
import psycopg.conninfo
import psycopg.pq
import psycopg_pool
import structlog

from eventsourcing_cqrs._uri import redact_text, redact_uri
from eventsourcing_cqrs.errors import InvalidInputError
from projections.errors import (
    ReadModelStoreError,
    ReadModelStoreLockedError,
    ReadModelStoreRefusedError,
    ReadModelStoreUnavailableError,
)
from projections.read_model_store._buffered import Where
from projections.read_model_store._lease import LeaseBase, validate_segment, validate_segment_count
from projections.read_model_store._names import quote, validate_projection_name, validate_schema_name
from projections.read_model_store._sql import Dialect, Session, SQLReadModelStore
from projections.read_model_store.port import LeaseRole

__all__ = ["PostgresReadModelStore"]

logger = structlog.get_logger(__name__)


@contextmanager
def _translated(where: str) -> Iterator[None]:
    """Turn psycopg errors into the read side's errors (the one place that does), by class."""
    try:
        yield
    except psycopg_pool.PoolTimeout as exc:
        raise ReadModelStoreUnavailableError(f"No PostgreSQL connection for {where}: {exc}.") from exc
    except psycopg.errors.LockNotAvailable as exc:  # SQLSTATE 55P03
        raise ReadModelStoreLockedError(f"PostgreSQL kept {where} locked: {exc}.") from exc
    except psycopg.OperationalError as exc:  # SQLSTATE classes 08, 53, 57, ... and no connection
        raise ReadModelStoreUnavailableError(f"PostgreSQL is unavailable for {where}: {exc}.") from exc
    except psycopg.Error as exc:
        raise ReadModelStoreError(f"PostgreSQL failed in {where}: {exc}.") from exc


# -- the first connection -------------------------------------------------------------------

#: SQLSTATEs of a login the server refuses for good: no such database, role or password, no right.
_REFUSED_SQLSTATES = frozenset({"3D000", "28000", "28P01", "42501"})


def _decoded(value: bytes | None) -> str:
    return "" if value is None else value.decode(errors="replace")


def _target(conninfo: str, exc: psycopg.Error) -> str:
    """``user@host:port/dbname`` as libpq resolved them (never the password)."""
    pgconn = exc.pgconn
    if pgconn is not None:
        user, host, port, db = (_decoded(v) for v in (pgconn.user, pgconn.host, pgconn.port, pgconn.db))
    else:
        try:
            given = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError:
            given = {}
        user, host, port, db = (str(given.get(k, "")) for k in ("user", "host", "port", "dbname"))
    return f"{user}@{host}:{port}/{db}" if user else f"{host}:{port}/{db}"


def _reason(conninfo: str, exc: psycopg.Error) -> str:
    """libpq's reason for ``exc`` on one line, without its ``connection to server ... failed:`` preamble."""
    pgconn = exc.pgconn
    text = _decoded(pgconn.error_message) if pgconn is not None and pgconn.error_message else str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line[:1].isspace()]
    reason = lines[-1] if lines else type(exc).__name__
    reason = reason.rsplit(" failed: ", 1)[-1].removeprefix("connection failed: ")
    reason = reason.removeprefix("FATAL:").strip().rstrip(".")
    return redact_text(reason, conninfo)


def _refused_for_good(conninfo: str, exc: psycopg.OperationalError) -> bool:
    """Whether the server is up but refused this login (waiting will not help).

    By SQLSTATE when psycopg has one; otherwise (libpq keeps a failed login's SQLSTATE to
    itself) by libpq's ping, which classifies the server's answer by its SQLSTATE: ``OK`` means the
    server accepts connections, so it was ours it refused; ``NO_ATTEMPT`` means bad parameters.
    A server that is starting up (``REJECT``) or unreachable (``NO_RESPONSE``) may come.
    """
    if exc.sqlstate is not None:
        return exc.sqlstate in _REFUSED_SQLSTATES
    try:
        ping = psycopg.pq.PGconn.ping(psycopg.conninfo.make_conninfo(conninfo, connect_timeout=2).encode())
    except psycopg.Error:
        return False
    return ping in (psycopg.pq.Ping.OK, psycopg.pq.Ping.NO_ATTEMPT)


def _first_connection(conninfo: str, timeout: float) -> None:
    """Connect once, directly, before the pool does, so that a failure says why.

    A login the server refuses for good (no such database or role, a wrong password) raises
    :class:`~projections.errors.ReadModelStoreRefusedError` at once with the server's reason; a
    server that cannot be reached is tried again until ``timeout``, then
    :class:`~projections.errors.ReadModelStoreUnavailableError` names the cause.
    """
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        left = deadline - time.monotonic()
        try:
            connection = psycopg.connect(conninfo, autocommit=True, connect_timeout=max(2, math.ceil(left)))
        except psycopg.OperationalError as exc:
            where = _target(conninfo, exc)
            if _refused_for_good(conninfo, exc):
                raise ReadModelStoreRefusedError(
                    f"PostgreSQL refused the read model store's connection to {where}: "
                    f"{_reason(conninfo, exc)}."
                ) from exc
            left = deadline - time.monotonic()
            if left <= 0:
                raise ReadModelStoreUnavailableError(
                    f"Could not connect to PostgreSQL at {where} within {timeout:g} s: "
                    f"{_reason(conninfo, exc)}."
                ) from exc
            time.sleep(min(delay, left))
            delay = min(delay * 2, 1.0)
            continue
        except psycopg.Error as exc:
            raise ReadModelStoreUnavailableError(
                f"Could not connect to PostgreSQL at {_target(conninfo, exc)}: {_reason(conninfo, exc)}."
            ) from exc
        connection.close()
        return


def _lock_key(*parts: str) -> int:
    digest = hashlib.blake2b(".".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# -- the dialect ----------------------------------------------------------------------------


def _path(field_name: str) -> str:
    # Field names are validated identifiers, safe inside a string literal.
    return f"(doc -> '{field_name}')"


def _where_sql(where: Where) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    for field_name, value in where:
        path = _path(field_name)
        if value is None:
            clauses.append(f"({path} IS NULL OR {path} = 'null'::jsonb)")
        else:
            clauses.append(f"{path} = %s::jsonb")
            params.append(json.dumps(value))
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _order_sql(order_by: str | None, descending: bool) -> str:
    if order_by is None:
        return "key"
    path = _path(order_by)
    direction = "DESC" if descending else "ASC"
    # Mirror SQLite: null/missing < numbers (and booleans as 0/1) < strings (code-point order).
    rank = (
        f"CASE WHEN {path} IS NULL THEN 0 ELSE CASE jsonb_typeof({path}) WHEN 'null' THEN 0 "
        "WHEN 'number' THEN 1 WHEN 'boolean' THEN 1 WHEN 'string' THEN 2 ELSE 3 END END"
    )
    number = (
        f"CASE jsonb_typeof({path}) WHEN 'number' THEN ({path} #>> '{{}}')::numeric "
        f"WHEN 'boolean' THEN CASE WHEN {path} = 'true'::jsonb THEN 1 ELSE 0 END END"
    )
    text = f"(CASE jsonb_typeof({path}) WHEN 'string' THEN {path} #>> '{{}}' END) COLLATE \"C\""
    return f"{rank} {direction}, {number} {direction}, {text} {direction}, key"


def _as_is(value: datetime) -> datetime:
    return value


def _dialect(schema: str) -> Dialect:
    return Dialect(
        placeholder="%s",
        prefix=f"{quote(schema)}.",
        integer="BIGINT",
        timestamp_type="TIMESTAMPTZ",
        binary="BYTEA",
        boolean="BOOLEAN",
        false="FALSE",
        document_type="JSONB",
        document_table_options="",
        document_text="doc::text",
        document_parameter="?::jsonb",
        greatest="GREATEST",
        no_limit=None,
        row_lock=" FOR SHARE",
        columns=lambda table: (
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s",
            (schema, table),
        ),
        timestamp=_as_is,
        field=_path,
        where=_where_sql,
        order=_order_sql,
    )


# -- leases ---------------------------------------------------------------------------------


class _AdvisoryLease(LeaseBase):
    """A session advisory lock on a dedicated connection; released when that connection ends."""

    def __init__(
        self, store: PostgresReadModelStore, projection: str, role: LeaseRole, segment: int | None
    ) -> None:
        super().__init__(projection, role, store._bump_epoch, segment)
        self._conninfo = store._conninfo
        self._key = store._lease_key(projection, role, self.segment)
        self._connection: psycopg.Connection[Any] | None = None

    def __repr__(self) -> str:
        return f"<advisory lease {self.projection!r} {self.role.value} held={self.held}>"

    @property
    def held(self) -> bool:
        return self._connection is not None and not self._connection.closed

    def _lock(self) -> bool:
        with _translated(f"the {self.role.value} lease of {self.projection!r}"):
            connection = psycopg.connect(self._conninfo, autocommit=True)
            try:
                ((locked,),) = connection.execute("SELECT pg_try_advisory_lock(%s)", (self._key,))
            except BaseException:
                connection.close()
                raise
        if not locked:
            connection.close()
            return False
        self._connection = connection
        return True

    def _unlock(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            try:
                connection.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
            except psycopg.Error:
                logger.warning("projection.lease_release_failed", projection=self.projection)
            finally:
                connection.close()


# -- the store ------------------------------------------------------------------------------


def _checked_conninfo(conninfo: str) -> str:
    """``conninfo`` if libpq can read it; else an error that quotes none of its secrets.

    libpq's message may quote a password (``invalid percent-encoded token: "..."``), and the pool
    would log it on every attempt: read the string once here, before anything connects.
    """
    try:
        psycopg.conninfo.conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        reason = redact_text(str(exc).strip(), conninfo)
        raise InvalidInputError("PostgreSQL connection string", redact_uri(conninfo), reason) from None
    return conninfo


class PostgresReadModelStore(SQLReadModelStore):
    """The read model store port over one PostgreSQL schema.

    ``conninfo`` is a libpq connection string or URI (``postgresql://user@host/db``); the
    password, if any, comes from it or from the environment and is never logged. Its methods are
    those of :class:`~projections.read_model_store.port.ReadModelStore`, documented there.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        schema: str = "read_models",
        min_connections: int = 1,
        max_connections: int = 4,
        connect_timeout: float = 10.0,
    ) -> None:
        conninfo = _checked_conninfo(conninfo)
        self._schema = validate_schema_name(schema)
        super().__init__(_dialect(self._schema))
        self._conninfo = conninfo
        self._closed = False
        self._pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            conninfo,
            min_size=min_connections,
            max_size=max_connections,
            open=False,
            name=f"read-models-{self._schema}",
        )
        started = time.monotonic()
        try:
            _first_connection(conninfo, connect_timeout)
            with _translated("opening the read model store"):
                self._pool.open(wait=True, timeout=max(connect_timeout - (time.monotonic() - started), 1.0))
        except BaseException:
            self._pool.close()
            raise
        try:
            with self._writing("creating the schema") as session:
                session.fetch("SELECT pg_advisory_xact_lock(%s)", (_lock_key("schema", self._schema),))
                session.run(f"CREATE SCHEMA IF NOT EXISTS {quote(self._schema)}")
                for statement in self._catalog.schema():
                    session.run(statement)
                self._catalog.upgrade(session)
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresReadModelStore(schema={self._schema!r})"

    @property
    def schema(self) -> str:
        """The schema holding this store's tables."""
        return self._schema

    @contextmanager
    def _writing(self, what: str) -> Iterator[Session]:
        """A pooled connection inside one transaction, committed on a clean exit."""
        with _translated(what), self._pool.connection() as connection, connection.transaction():
            yield Session(connection, functools.partial(_translated, what))

    def _reading(self, what: str) -> AbstractContextManager[Session]:
        return self._writing(what)

    @contextmanager
    def _reading_live(self, projection: str) -> Iterator[Session]:
        # Read only, and sharing the readers' lock that a switch takes exclusively.
        what = f"a read of {projection!r}"
        with self._writing(what) as session:
            session.run("SET TRANSACTION READ ONLY")
            session.fetch("SELECT pg_advisory_xact_lock_shared(%s)", (self._readers_key(projection),))
            yield session

    def _exclude_readers(self, session: Session, projection: str) -> None:
        session.fetch("SELECT pg_advisory_xact_lock(%s)", (self._readers_key(projection),))

    def _readers_key(self, projection: str) -> int:
        return _lock_key(self._schema, projection, "readers")

    def _lease_key(self, projection: str, role: LeaseRole, segment: int | None = None) -> int:
        parts = [self._schema, validate_projection_name(projection), role.value]
        if segment is not None:
            parts.append(str(segment))
        return _lock_key(*parts)

    def lease(self, projection: str, role: LeaseRole, *, segment: int | None = None) -> _AdvisoryLease:
        return _AdvisoryLease(self, projection, role, segment)

    def lease_held(self, projection: str, role: LeaseRole, *, segment: int | None = None) -> bool:
        key = self._lease_key(projection, role, validate_segment(role, segment))
        return bool(self._held_keys(f"checking the {role.value} lease of {projection!r}", [key]))

    def leases_held(self, projection: str, role: LeaseRole, segments: int) -> set[int]:
        keys = {
            self._lease_key(projection, role, segment): segment
            for segment in range(validate_segment_count(segments))
        }
        held = self._held_keys(f"checking the {role.value} leases of {projection!r}", list(keys))
        return {keys[key] for key in held}

    def _held_keys(self, what: str, keys: list[int]) -> set[int]:
        """Which of the advisory lock ``keys`` someone holds (one look at ``pg_locks``)."""
        with self._reading(what) as session:
            rows = session.fetch(
                "SELECT classid::bigint, objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND objsubid = 1"
            )
        granted = {(int(high) << 32) | int(low) for high, low in rows}
        return {key for key in keys if key & 0xFFFF_FFFF_FFFF_FFFF in granted}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()
