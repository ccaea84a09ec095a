"""The read model store port and its adapters, and :func:`connect`, which picks one by URI.

* ``memory:`` — :class:`~projections.read_model_store.memory.InMemoryReadModelStore`
* ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (add ``?durable=false`` for
  ``synchronous=NORMAL``) — :class:`~projections.read_model_store.sqlite.SQLiteReadModelStore`
* ``postgresql://user@host:5432/db?schema=read_models`` —
  :class:`~projections.read_model_store.postgres.PostgresReadModelStore`, with the ``postgres`` extra
  installed (``schema`` is taken out of the URI; the rest goes to libpq)
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from eventsourcing_cqrs._uri import parse_sqlite_uri, redact_uri, refuse_ambiguous_userinfo
from eventsourcing_cqrs.errors import InvalidInputError
from projections.read_model_store.memory import InMemoryReadModelStore
from projections.read_model_store.port import (
    Document,
    Generation,
    Lease,
    LeaseRole,
    ParkedEvent,
    ProjectionRecord,
    ProjectionState,
    ProjectionTransaction,
    ReadModelStore,
    ReadModelWriter,
    ReadView,
    Table,
    TableReader,
    TableSpec,
    WhereValue,
)
from projections.read_model_store.sqlite import SQLiteReadModelStore

__all__ = [
    "Document",
    "Generation",
    "InMemoryReadModelStore",
    "Lease",
    "LeaseRole",
    "ParkedEvent",
    "ProjectionRecord",
    "ProjectionState",
    "ProjectionTransaction",
    "ReadModelStore",
    "ReadModelWriter",
    "ReadView",
    "SQLiteReadModelStore",
    "Table",
    "TableReader",
    "TableSpec",
    "WhereValue",
    "connect",
]


def connect(uri: str) -> ReadModelStore:
    """Open the read model store named by ``uri`` (see the module docstring for the schemes).

    Errors show the URI as :func:`~eventsourcing_cqrs._uri.redact_uri` does: never a password.
    """
    if not isinstance(uri, str) or not uri:
        shown = redact_uri(uri) if uri else uri
        raise InvalidInputError(
            "read model store URI", shown, "give memory:, sqlite:///path or postgresql://"
        )
    scheme = uri.split(":", 1)[0].lower()
    if scheme == "memory":
        return InMemoryReadModelStore()
    if scheme == "sqlite":
        parsed = parse_sqlite_uri(uri, what="read model store URI", example="views.db")
        parsed.refuse_other_options()
        return SQLiteReadModelStore(parsed.path, durable=parsed.durable)
    if scheme in ("postgresql", "postgres"):
        from projections.read_model_store.postgres import PostgresReadModelStore  # noqa: PLC0415 - psycopg is an extra

        refuse_ambiguous_userinfo(uri, "read model store URI")  # libpq would misread its hosts
        parts = urlsplit(uri)
        options = dict(parse_qsl(parts.query))
        schema = options.pop("schema", "read_models")
        conninfo = urlunsplit(parts._replace(query=urlencode(options)))
        return PostgresReadModelStore(conninfo, schema=schema)
    raise InvalidInputError(
        "read model store URI", redact_uri(uri), "the scheme must be memory:, sqlite:/// or postgresql://"
    )
