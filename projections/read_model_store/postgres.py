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

Install the ``postgres`` extra (``psycopg[binary]``, ``psycopg-pool``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import psycopg_pool
import structlog

from eventsourcing_cqrs.event_store.port import RecordedEvent
from projections.errors import (
    GenerationChangedError,
    ParkedEventNotFoundError,
    ProjectionNotFoundError,
    ReadModelStoreError,
    ReadModelStoreLockedError,
    ReadModelStoreUnavailableError,
)
from projections.read_model_store._buffered import BufferedUnitOfWork, ReadOnlyView, Where
from projections.read_model_store._documents import decode_document
from projections.read_model_store._names import (
    index_name,
    physical_table_name,
    quote,
    validate_projection_name,
    validate_schema_name,
)
from projections.read_model_store._sql import (
    PARKED_COLUMNS,
    check_writer,
    generation_from_row,
    now,
    parked_from_row,
    state_from_text,
)
from projections.read_model_store.port import (
    Document,
    Generation,
    Lease,
    LeaseRole,
    ParkedEvent,
    ProjectionRecord,
    ProjectionState,
    TableSpec,
    tables_to_json,
)

__all__ = ["PostgresReadModelStore"]

logger = structlog.get_logger(__name__)

_GENERATION_COLUMNS = "generation, version, tables, checkpoint, events_applied, created_at"


def _schema_sql(schema: str) -> list[str]:
    s = quote(schema)
    return [
        f"CREATE SCHEMA IF NOT EXISTS {s}",
        f"""CREATE TABLE IF NOT EXISTS {s}.rm_projections (
            name TEXT PRIMARY KEY,
            live_generation BIGINT,
            building_generation BIGINT,
            next_generation BIGINT NOT NULL DEFAULT 1,
            run_epoch BIGINT NOT NULL DEFAULT 0,
            rebuild_epoch BIGINT NOT NULL DEFAULT 0,
            state TEXT NOT NULL DEFAULT 'new',
            last_error TEXT,
            last_error_at TIMESTAMPTZ,
            updated_at TIMESTAMPTZ)""",
        f"""CREATE TABLE IF NOT EXISTS {s}.rm_generations (
            projection TEXT NOT NULL,
            generation BIGINT NOT NULL,
            version BIGINT NOT NULL,
            tables TEXT NOT NULL,
            checkpoint BIGINT,
            events_applied BIGINT NOT NULL DEFAULT 0,
            created_at TIMESTAMPTZ NOT NULL,
            PRIMARY KEY (projection, generation))""",
        f"""CREATE TABLE IF NOT EXISTS {s}.rm_parked (
            projection TEXT NOT NULL,
            generation BIGINT NOT NULL,
            position BIGINT NOT NULL,
            event_id TEXT NOT NULL,
            event_type TEXT NOT NULL,
            stream TEXT NOT NULL,
            revision BIGINT NOT NULL,
            data BYTEA NOT NULL,
            metadata BYTEA NOT NULL,
            content_type TEXT NOT NULL,
            recorded_at TIMESTAMPTZ NOT NULL,
            error TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            parked_at TIMESTAMPTZ NOT NULL,
            retry_requested BOOLEAN NOT NULL DEFAULT FALSE,
            PRIMARY KEY (projection, generation, position))""",
    ]


@contextmanager
def _translated(where: str) -> Iterator[None]:
    """Turn psycopg errors into the read side's errors (the one place that does)."""
    try:
        yield
    except psycopg_pool.PoolTimeout as exc:
        raise ReadModelStoreUnavailableError(f"No PostgreSQL connection for {where}: {exc}.") from exc
    except psycopg.errors.LockNotAvailable as exc:
        raise ReadModelStoreLockedError(f"PostgreSQL kept {where} locked: {exc}.") from exc
    except psycopg.OperationalError as exc:
        raise ReadModelStoreUnavailableError(f"PostgreSQL is unavailable for {where}: {exc}.") from exc
    except psycopg.Error as exc:
        raise ReadModelStoreError(f"PostgreSQL failed in {where}: {exc}.") from exc


def _lock_key(*parts: str) -> int:
    digest = hashlib.blake2b(".".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


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


class _AdvisoryLease:
    """A session advisory lock on a dedicated connection; released when that connection ends."""

    def __init__(self, store: PostgresReadModelStore, projection: str, role: LeaseRole) -> None:
        self._store = store
        self._projection = validate_projection_name(projection)
        self._role = role
        self._key = store._lease_key(projection, role)
        self._connection: psycopg.Connection[Any] | None = None
        self._epoch = 0

    def __repr__(self) -> str:
        return f"<advisory lease {self._projection!r} {self._role.value} held={self.held}>"

    @property
    def projection(self) -> str:
        return self._projection

    @property
    def role(self) -> LeaseRole:
        return self._role

    @property
    def held(self) -> bool:
        return self._connection is not None and not self._connection.closed

    @property
    def epoch(self) -> int:
        return self._epoch

    def try_acquire(self) -> bool:
        if self.held:
            return True
        with _translated(f"the {self._role.value} lease of {self._projection!r}"):
            connection = psycopg.connect(self._store._conninfo, autocommit=True)
            try:
                row = connection.execute("SELECT pg_try_advisory_lock(%s)", (self._key,)).fetchone()
                if row is None or not row[0]:
                    connection.close()
                    return False
                self._epoch = self._store._bump_epoch(self._projection, self._role)
            except BaseException:
                connection.close()
                raise
        self._connection = connection
        logger.debug("projection.lease_acquired", projection=self._projection, role=self._role.value)
        return True

    def release(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.closed:
            try:
                connection.execute("SELECT pg_advisory_unlock(%s)", (self._key,))
            except psycopg.Error:
                logger.warning("projection.lease_release_failed", projection=self._projection)
            finally:
                connection.close()


class _PostgresView(ReadOnlyView):
    def __init__(self, connection: psycopg.Connection[Any], generation: Generation, schema: str) -> None:
        super().__init__(generation)
        self._connection = connection
        self._schema = schema

    def sql_table(self, name: str) -> str:
        return f"{quote(self._schema)}.{quote(self.physical(name))}"

    def _load(self, table: str, key: str) -> str | None:
        with _translated(f"a read of table {table!r}"):
            row = self._connection.execute(
                f"SELECT doc::text FROM {self.sql_table(table)} WHERE key = %s", (key,)
            ).fetchone()
        return None if row is None else str(row[0])

    def _select(
        self, table: str, where: Where, order_by: str | None, descending: bool, limit: int | None
    ) -> list[Document]:
        clause, params = _where_sql(where)
        order = _order_sql(order_by, descending)
        sql = f"SELECT doc::text FROM {self.sql_table(table)}{clause} ORDER BY {order}"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        with _translated(f"a query of table {table!r}"):
            rows = self._connection.execute(sql, params).fetchall()
        return [decode_document(row[0]) for row in rows]

    def _select_count(self, table: str, where: Where) -> int:
        clause, params = _where_sql(where)
        with _translated(f"a count of table {table!r}"):
            row = self._connection.execute(
                f"SELECT count(*) FROM {self.sql_table(table)}{clause}",
                params,
            ).fetchone()
        assert row is not None
        return int(row[0])

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with _translated("raw SQL"):
            cursor = self._connection.execute(sql, tuple(params))
            if cursor.description is None:
                return []
            return [tuple(row) for row in cursor.fetchall()]


class _PostgresTransaction(BufferedUnitOfWork):
    def __init__(self, connection: psycopg.Connection[Any], generation: Generation, schema: str) -> None:
        super().__init__(generation)
        self._connection = connection
        self._schema = schema
        self._view = _PostgresView(connection, generation, schema)
        self._meta = quote(schema)

    def sql_table(self, name: str) -> str:
        return self._view.sql_table(name)

    def _load(self, table: str, key: str) -> str | None:
        return self._view._load(table, key)

    def _select(
        self, table: str, where: Where, order_by: str | None, descending: bool, limit: int | None
    ) -> list[Document]:
        return self._view._select(table, where, order_by, descending, limit)

    def _select_count(self, table: str, where: Where) -> int:
        return self._view._select_count(table, where)

    def _execute(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self._view._execute(sql, params)

    def _write(self, table: str, upserts: list[tuple[str, str]], deletes: list[str]) -> None:
        name = self.sql_table(table)
        with _translated(f"a write to table {table!r}"), self._connection.cursor() as cursor:
            if upserts:
                cursor.executemany(
                    f"INSERT INTO {name} (key, doc) VALUES (%s, %s::jsonb) "
                    "ON CONFLICT (key) DO UPDATE SET doc = EXCLUDED.doc",
                    upserts,
                )
            if deletes:
                cursor.execute(f"DELETE FROM {name} WHERE key = ANY(%s)", (deletes,))

    def set_checkpoint(self, position: int, applied: int) -> None:
        self.flush()
        with _translated("a checkpoint"):
            self._connection.execute(
                f"UPDATE {self._meta}.rm_generations SET "
                "checkpoint = GREATEST(COALESCE(checkpoint, 0), %s), events_applied = events_applied + %s "
                "WHERE projection = %s AND generation = %s",
                (position, applied, self.generation.projection, self.generation.number),
            )

    def park(self, event: RecordedEvent, error: str, attempts: int) -> None:
        with _translated("parking an event"):
            self._connection.execute(
                f"INSERT INTO {self._meta}.rm_parked ({PARKED_COLUMNS}) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, FALSE) "
                "ON CONFLICT (projection, generation, position) DO UPDATE SET error = EXCLUDED.error, "
                "attempts = EXCLUDED.attempts, parked_at = EXCLUDED.parked_at, retry_requested = FALSE",
                (
                    self.generation.projection,
                    self.generation.number,
                    event.position,
                    str(event.id),
                    event.type,
                    event.stream,
                    event.revision,
                    event.data,
                    event.metadata,
                    event.content_type,
                    event.recorded_at,
                    error,
                    attempts,
                    now(),
                ),
            )

    def parked_for_retry(self) -> list[ParkedEvent]:
        with _translated("listing parked events"):
            rows = self._connection.execute(
                f"SELECT {PARKED_COLUMNS} FROM {self._meta}.rm_parked "
                "WHERE projection = %s AND generation = %s AND retry_requested ORDER BY position",
                (self.generation.projection, self.generation.number),
            ).fetchall()
        return [parked_from_row(row) for row in rows]

    def unpark(self, position: int) -> None:
        with _translated("unparking an event"):
            cursor = self._connection.execute(
                f"DELETE FROM {self._meta}.rm_parked "
                "WHERE projection = %s AND generation = %s AND position = %s",
                (self.generation.projection, self.generation.number, position),
            )
        if cursor.rowcount == 0:
            raise ParkedEventNotFoundError(self.generation.projection, position)

    def parked_failed_again(self, position: int, error: str, attempts: int) -> None:
        with _translated("updating a parked event"):
            cursor = self._connection.execute(
                f"UPDATE {self._meta}.rm_parked "
                "SET error = %s, attempts = attempts + %s, retry_requested = FALSE "
                "WHERE projection = %s AND generation = %s AND position = %s",
                (error, attempts, self.generation.projection, self.generation.number, position),
            )
        if cursor.rowcount == 0:
            raise ParkedEventNotFoundError(self.generation.projection, position)


class PostgresReadModelStore:
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
        self._conninfo = conninfo
        self._schema = validate_schema_name(schema)
        self._meta = quote(self._schema)
        self._closed = False
        self._pool: psycopg_pool.ConnectionPool[Any] = psycopg_pool.ConnectionPool(
            conninfo,
            min_size=min_connections,
            max_size=max_connections,
            open=False,
            name=f"read-models-{self._schema}",
        )
        with _translated("opening the read model store"):
            self._pool.open(wait=True, timeout=connect_timeout)
        try:
            with self._connection("creating the schema") as connection:
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key("schema", self._schema),))
                for statement in _schema_sql(self._schema):
                    connection.execute(statement)
        except BaseException:
            self._pool.close()
            raise

    def __repr__(self) -> str:
        return f"PostgresReadModelStore(schema={self._schema!r})"

    @property
    def schema(self) -> str:
        """The schema holding this store's tables."""
        return self._schema

    # -- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _connection(self, what: str) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection inside one transaction, committed on a clean exit."""
        with _translated(what), self._pool.connection() as connection, connection.transaction():
            yield connection

    def _row(
        self, connection: psycopg.Connection[Any], projection: str, *, lock: bool
    ) -> tuple[Any, ...] | None:
        suffix = " FOR SHARE" if lock else ""
        row: tuple[Any, ...] | None = connection.execute(
            "SELECT live_generation, building_generation, run_epoch, rebuild_epoch, next_generation, "
            f"state, last_error, last_error_at, updated_at FROM {self._meta}.rm_projections "
            f"WHERE name = %s{suffix}",
            (validate_projection_name(projection),),
        ).fetchone()
        return row

    def _ensure_row(self, connection: psycopg.Connection[Any], projection: str) -> None:
        connection.execute(
            f"INSERT INTO {self._meta}.rm_projections (name) VALUES (%s) ON CONFLICT DO NOTHING",
            (validate_projection_name(projection),),
        )

    def _generation(
        self, connection: psycopg.Connection[Any], projection: str, number: int | None
    ) -> Generation | None:
        if number is None:
            return None
        row = connection.execute(
            f"SELECT {_GENERATION_COLUMNS} FROM {self._meta}.rm_generations "
            "WHERE projection = %s AND generation = %s",
            (projection, number),
        ).fetchone()
        return None if row is None else generation_from_row(projection, row)

    def _check(
        self, connection: psycopg.Connection[Any], projection: str, lease: Lease, generation: int | None
    ) -> tuple[Any, ...]:
        self._ensure_row(connection, projection)
        row = self._row(connection, projection, lock=True)
        assert row is not None
        check_writer(
            projection,
            lease,
            run_epoch=row[2],
            rebuild_epoch=row[3],
            live=row[0],
            building=row[1],
            generation=generation,
        )
        return row

    def _physical(self, projection: str, number: int, table: str) -> str:
        return f"{self._meta}.{quote(physical_table_name(projection, number, table))}"

    def _drop(self, connection: psycopg.Connection[Any], projection: str, number: int) -> None:
        generation = self._generation(connection, projection, number)
        if generation is not None:
            for spec in generation.tables:
                connection.execute(f"DROP TABLE IF EXISTS {self._physical(projection, number, spec.name)}")
        connection.execute(
            f"DELETE FROM {self._meta}.rm_generations WHERE projection = %s AND generation = %s",
            (projection, number),
        )
        connection.execute(
            f"DELETE FROM {self._meta}.rm_parked WHERE projection = %s AND generation = %s",
            (projection, number),
        )

    def _readers_key(self, projection: str) -> int:
        return _lock_key(self._schema, projection, "readers")

    # -- records --------------------------------------------------------------------------

    def describe(self, projection: str) -> ProjectionRecord:
        with self._connection(f"describing {projection!r}") as connection:
            row = self._row(connection, projection, lock=False)
            if row is None:
                return ProjectionRecord(projection, None, None, ProjectionState.NEW, None, None, None)
            return ProjectionRecord(
                name=projection,
                live=self._generation(connection, projection, row[0]),
                building=self._generation(connection, projection, row[1]),
                state=state_from_text(row[5]),
                last_error=row[6],
                last_error_at=row[7],
                updated_at=row[8],
            )

    def projection_names(self) -> list[str]:
        with self._connection("listing projections") as connection:
            rows = connection.execute(
                f"SELECT name FROM {self._meta}.rm_projections ORDER BY name"
            ).fetchall()
        return [str(row[0]) for row in rows]

    def set_state(self, projection: str, state: ProjectionState, *, error: str | None = None) -> None:
        stamp = now()
        with self._connection(f"recording the state of {projection!r}") as connection:
            self._ensure_row(connection, projection)
            if error is None:
                connection.execute(
                    f"UPDATE {self._meta}.rm_projections SET state = %s, updated_at = %s WHERE name = %s",
                    (state.value, stamp, projection),
                )
            else:
                connection.execute(
                    f"UPDATE {self._meta}.rm_projections SET state = %s, updated_at = %s, "
                    "last_error = %s, last_error_at = %s WHERE name = %s",
                    (state.value, stamp, error, stamp, projection),
                )

    # -- leases ---------------------------------------------------------------------------

    def _lease_key(self, projection: str, role: LeaseRole) -> int:
        return _lock_key(self._schema, validate_projection_name(projection), role.value)

    def _bump_epoch(self, projection: str, role: LeaseRole) -> int:
        column = "run_epoch" if role is LeaseRole.RUN else "rebuild_epoch"
        with self._connection(f"taking the {role.value} lease of {projection!r}") as connection:
            self._ensure_row(connection, projection)
            row = connection.execute(
                f"UPDATE {self._meta}.rm_projections SET {column} = {column} + 1 "
                f"WHERE name = %s RETURNING {column}",
                (projection,),
            ).fetchone()
        assert row is not None
        return int(row[0])

    def lease(self, projection: str, role: LeaseRole) -> _AdvisoryLease:
        return _AdvisoryLease(self, projection, role)

    def lease_held(self, projection: str, role: LeaseRole) -> bool:
        key = self._lease_key(projection, role) & 0xFFFF_FFFF_FFFF_FFFF
        with self._connection(f"checking the {role.value} lease of {projection!r}") as connection:
            row = connection.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1)",
                (key >> 32, key & 0xFFFF_FFFF),
            ).fetchone()
        return bool(row and row[0])

    # -- generations ----------------------------------------------------------------------

    def create_generation(
        self, projection: str, version: int, tables: Sequence[TableSpec], *, lease: Lease
    ) -> Generation:
        with self._connection(f"creating a generation of {projection!r}") as connection:
            row = self._check(connection, projection, lease, None)
            live, building, number = row[0], row[1], int(row[4])
            if lease.role is LeaseRole.RUN and live is not None:
                raise GenerationChangedError(projection, live)
            if lease.role is LeaseRole.REBUILD and building is not None:
                self._drop(connection, projection, building)
            connection.execute(
                f"INSERT INTO {self._meta}.rm_generations "
                "(projection, generation, version, tables, created_at) VALUES (%s, %s, %s, %s, %s)",
                (projection, number, int(version), tables_to_json(tables), now()),
            )
            for spec in tables:
                physical = physical_table_name(projection, number, spec.name)
                connection.execute(
                    f"CREATE TABLE {self._meta}.{quote(physical)} (key TEXT PRIMARY KEY, doc JSONB NOT NULL)"
                )
                for field_name in spec.indexes:
                    connection.execute(
                        f"CREATE INDEX {quote(index_name(physical, field_name))} "
                        f"ON {self._meta}.{quote(physical)} ({_path(field_name)})"
                    )
            column = "live_generation" if lease.role is LeaseRole.RUN else "building_generation"
            connection.execute(
                f"UPDATE {self._meta}.rm_projections SET {column} = %s, next_generation = %s WHERE name = %s",
                (number, number + 1, projection),
            )
            generation = self._generation(connection, projection, number)
        assert generation is not None
        logger.info(
            "projection.generation_created", projection=projection, generation=number, role=lease.role.value
        )
        return generation

    def switch_generation(self, projection: str, generation: int, *, lease: Lease) -> None:
        with self._connection(f"switching {projection!r} to generation {generation}") as connection:
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (self._readers_key(projection),))
            row = self._check(connection, projection, lease, generation)
            old = row[0]
            connection.execute(
                f"UPDATE {self._meta}.rm_projections SET live_generation = %s, building_generation = NULL "
                "WHERE name = %s",
                (generation, projection),
            )
            if old is not None:
                self._drop(connection, projection, old)
        logger.info(
            "projection.generation_switched", projection=projection, generation=generation, dropped=old
        )

    def drop_generation(self, projection: str, generation: int, *, lease: Lease) -> None:
        with self._connection(f"dropping generation {generation} of {projection!r}") as connection:
            self._check(connection, projection, lease, generation)
            connection.execute(
                f"UPDATE {self._meta}.rm_projections SET building_generation = NULL WHERE name = %s",
                (projection,),
            )
            self._drop(connection, projection, generation)

    # -- units of work --------------------------------------------------------------------

    @contextmanager
    def transaction(
        self, projection: str, generation: int, *, lease: Lease
    ) -> Iterator[_PostgresTransaction]:
        with self._connection(f"a unit of work of {projection!r}") as connection:
            self._check(connection, projection, lease, generation)
            info = self._generation(connection, projection, generation)
            assert info is not None
            transaction = _PostgresTransaction(connection, info, self._schema)
            yield transaction
            transaction.flush()

    @contextmanager
    def read(self, projection: str) -> Iterator[_PostgresView]:
        with (
            _translated(f"a read of {projection!r}"),
            self._pool.connection() as connection,
            connection.transaction(),
        ):
            connection.execute("SET TRANSACTION READ ONLY")
            connection.execute("SELECT pg_advisory_xact_lock_shared(%s)", (self._readers_key(projection),))
            row = self._row(connection, projection, lock=False)
            generation = self._generation(connection, projection, None if row is None else row[0])
            if generation is None:
                raise ProjectionNotFoundError(projection)
            yield _PostgresView(connection, generation, self._schema)

    # -- parked events --------------------------------------------------------------------

    def parked_events(self, projection: str) -> list[ParkedEvent]:
        with self._connection(f"listing parked events of {projection!r}") as connection:
            rows = connection.execute(
                f"SELECT {PARKED_COLUMNS} FROM {self._meta}.rm_parked WHERE projection = %s "
                f"AND generation = (SELECT live_generation FROM {self._meta}.rm_projections "
                "WHERE name = %s) ORDER BY position",
                (validate_projection_name(projection), projection),
            ).fetchall()
        return [parked_from_row(row) for row in rows]

    def request_retry(self, projection: str, positions: Sequence[int] | None = None) -> int:
        with self._connection(f"requesting retries of {projection!r}") as connection:
            row = self._row(connection, projection, lock=False)
            live = None if row is None else row[0]
            existing = {
                int(r[0])
                for r in connection.execute(
                    f"SELECT position FROM {self._meta}.rm_parked WHERE projection = %s AND generation = %s",
                    (projection, live),
                ).fetchall()
            }
            wanted = sorted(existing) if positions is None else list(positions)
            for position in wanted:
                if position not in existing:
                    raise ParkedEventNotFoundError(projection, position)
            connection.execute(
                f"UPDATE {self._meta}.rm_parked SET retry_requested = TRUE "
                "WHERE projection = %s AND generation = %s AND position = ANY(%s)",
                (projection, live, wanted),
            )
        return len(wanted)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()
