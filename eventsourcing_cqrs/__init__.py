"""Event-sourced CQRS for Python on EventStoreDB, with embedded stores that behave the same.

The write side at a glance: :class:`DomainEvent`, :class:`Command` and :class:`Query` are frozen
pydantic models; an :class:`Aggregate` decides and applies events; a :class:`Repository` loads
and saves it with optimistic concurrency and snapshots; a :class:`CommandBus` runs handlers
with correlation, authorization, retries and idempotency; a :class:`QueryBus` answers queries
from read models; an :class:`AuditTrail` replays what happened to an entity. Every exception a
caller may catch is importable from here, rooted at :class:`CQRSError` (the tree is drawn in
:mod:`eventsourcing_cqrs.errors`). The event store port and its adapters live in
:mod:`eventsourcing_cqrs.event_store`; test helpers in :mod:`eventsourcing_cqrs.testing`.
"""

from eventsourcing_cqrs.aggregate import Aggregate
from eventsourcing_cqrs.audit import AggregateSpec, AuditTrail
from eventsourcing_cqrs.bus import (
    Authorize,
    CommandBus,
    CommandMetrics,
    CommandResult,
    Middleware,
    QueryBus,
    RetryPolicy,
)
from eventsourcing_cqrs.errors import (
    AggregateAlreadyExistsError,
    AggregateNotFoundError,
    AuthorizationError,
    CommandValidationError,
    ConcurrencyRetriesExhaustedError,
    CorruptEventError,
    CQRSError,
    DomainError,
    EventStoreAccessDeniedError,
    EventStoreAuthenticationError,
    EventStoreCorruptedError,
    EventStoreError,
    EventStoreLockedError,
    EventStoreTimeoutError,
    EventStoreTLSError,
    EventStoreUnavailableError,
    HandlerNotFoundError,
    InvalidInputError,
    NoEventsAtTimeError,
    SerializationError,
    StreamDeletedError,
    StreamNotFoundError,
    SubscriptionStoppedError,
    UnknownEventTypeError,
    UpcastError,
    WrongExpectedVersionError,
)
from eventsourcing_cqrs.messages import Command, DomainEvent, Metadata, Query
from eventsourcing_cqrs.repository import Repository
from eventsourcing_cqrs.serialization import EventEnvelope, EventRegistry, Upcaster
from eventsourcing_cqrs.unit_of_work import CommandContext

__all__ = [
    "Aggregate",
    "AggregateAlreadyExistsError",
    "AggregateNotFoundError",
    "AggregateSpec",
    "AuditTrail",
    "AuthorizationError",
    "Authorize",
    "CQRSError",
    "Command",
    "CommandBus",
    "CommandContext",
    "CommandMetrics",
    "CommandResult",
    "CommandValidationError",
    "ConcurrencyRetriesExhaustedError",
    "CorruptEventError",
    "DomainError",
    "DomainEvent",
    "EventEnvelope",
    "EventRegistry",
    "EventStoreAccessDeniedError",
    "EventStoreAuthenticationError",
    "EventStoreCorruptedError",
    "EventStoreError",
    "EventStoreLockedError",
    "EventStoreTLSError",
    "EventStoreTimeoutError",
    "EventStoreUnavailableError",
    "HandlerNotFoundError",
    "InvalidInputError",
    "Metadata",
    "Middleware",
    "NoEventsAtTimeError",
    "Query",
    "QueryBus",
    "Repository",
    "RetryPolicy",
    "SerializationError",
    "StreamDeletedError",
    "StreamNotFoundError",
    "SubscriptionStoppedError",
    "UnknownEventTypeError",
    "UpcastError",
    "Upcaster",
    "WrongExpectedVersionError",
]
