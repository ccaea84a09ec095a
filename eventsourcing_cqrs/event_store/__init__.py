"""The event store port and its adapters, and :func:`connect`, which picks one by URI.

* ``memory:`` — :class:`~eventsourcing_cqrs.event_store.memory.InMemoryEventStore`
* ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` (add ``?durable=false`` for the
  faster, crash-safe but not power-loss-safe mode) —
  :class:`~eventsourcing_cqrs.event_store.sqlite.SQLiteEventStore`
* ``esdb://host:2113?Tls=false`` (and ``esdb+discover://``) —
  :class:`~eventsourcing_cqrs.event_store.esdb.EsdbEventStore`, with the ``esdb`` extra installed
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from eventsourcing_cqrs.errors import EventStoreUnavailableError, InvalidInputError
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
]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def connect(uri: str) -> EventStore:
    """Open the event store named by ``uri`` (see the module docstring for the schemes)."""
    if not isinstance(uri, str) or not uri:
        raise InvalidInputError("event store URI", uri, "give memory:, sqlite:///path or esdb://host")
    scheme = uri.split(":", 1)[0].lower()
    if scheme == "memory":
        return InMemoryEventStore()
    if scheme == "sqlite":
        from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore  # noqa: PLC0415 - only what the URI needs

        parts = urlsplit(uri)
        path = parts.path[1:] if parts.path.startswith("/") else parts.path
        if not path:
            raise InvalidInputError("event store URI", uri, "a sqlite URI needs a path: sqlite:///events.db")
        options = {k: v[-1].lower() for k, v in parse_qs(parts.query).items()}
        durable = options.pop("durable", "true")
        if durable not in _TRUE | _FALSE:
            raise InvalidInputError("durable option", durable, "use true or false")
        if options:
            raise InvalidInputError("event store URI", uri, f"unknown options {sorted(options)}")
        return SQLiteEventStore(path, durable=durable in _TRUE)
    if scheme in ("esdb", "esdb+discover"):
        try:
            from eventsourcing_cqrs.event_store.esdb import EsdbEventStore  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            raise EventStoreUnavailableError(
                "esdb:// needs the esdb extra: pip install 'eventsourcing-cqrs[esdb]'"
            ) from exc
        return EsdbEventStore(uri)
    raise InvalidInputError("event store URI", uri, "the scheme must be memory:, sqlite:/// or esdb://")
