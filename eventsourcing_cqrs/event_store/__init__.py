"""The event store port and its adapters, and :func:`connect`, which picks one by URI.

* ``memory:`` — :class:`~eventsourcing_cqrs.event_store.memory.InMemoryEventStore`
* ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (add ``?durable=false`` for the
  faster, crash-safe but not power-loss-safe mode) —
  :class:`~eventsourcing_cqrs.event_store.sqlite.SQLiteEventStore`
* ``esdb://host:2113?Tls=false`` (and ``esdb+discover://``) —
  :class:`~eventsourcing_cqrs.event_store.esdb.EsdbEventStore`, with the ``esdb`` extra installed
"""

from __future__ import annotations

from eventsourcing_cqrs._uri import parse_sqlite_uri, redact_uri, refuse_ambiguous_userinfo
from eventsourcing_cqrs.errors import EventStoreUnavailableError, InvalidInputError
from eventsourcing_cqrs.event_store._reading import read_after
from eventsourcing_cqrs.event_store.memory import InMemoryEventStore
from eventsourcing_cqrs.event_store.port import (
    CAUSATION_ID_KEY,
    CORRELATION_ID_KEY,
    AppendResult,
    CaughtUp,
    Checkpoint,
    EventFilter,
    EventReader,
    EventStore,
    EventWriter,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StreamName,
    StreamState,
    Subscription,
    SubscriptionItem,
)

__all__ = [
    "CAUSATION_ID_KEY",
    "CORRELATION_ID_KEY",
    "AppendResult",
    "CaughtUp",
    "Checkpoint",
    "EventFilter",
    "EventReader",
    "EventStore",
    "EventWriter",
    "ExpectedVersion",
    "InMemoryEventStore",
    "NewEvent",
    "RecordedEvent",
    "StreamName",
    "StreamState",
    "Subscription",
    "SubscriptionItem",
    "connect",
    "read_after",
]


def connect(uri: str) -> EventStore:
    """Open the event store named by ``uri`` (see the module docstring for the schemes).

    Errors show the URI as :func:`~eventsourcing_cqrs._uri.redact_uri` does: never a password.
    """
    if not isinstance(uri, str) or not uri:
        shown = redact_uri(uri) if uri else uri
        raise InvalidInputError("event store URI", shown, "give memory:, sqlite:///path or esdb://host")
    scheme = uri.split(":", 1)[0].lower()
    if scheme == "memory":
        return InMemoryEventStore()
    if scheme == "sqlite":
        from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore  # noqa: PLC0415 - only what the URI needs

        parsed = parse_sqlite_uri(uri, what="event store URI", example="events.db")
        parsed.refuse_other_options()
        return SQLiteEventStore(parsed.path, durable=parsed.durable)
    if scheme in ("esdb", "esdb+discover"):
        refuse_ambiguous_userinfo(uri, "event store URI")  # esdbclient would misread its hosts
        try:
            from eventsourcing_cqrs.event_store.esdb import EsdbEventStore  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            raise EventStoreUnavailableError(
                "esdb:// needs the esdb extra: pip install 'eventsourcing-cqrs[esdb]'"
            ) from exc
        return EsdbEventStore(uri)
    raise InvalidInputError(
        "event store URI", redact_uri(uri), "the scheme must be memory:, sqlite:/// or esdb://"
    )
