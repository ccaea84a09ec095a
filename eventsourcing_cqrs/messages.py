"""The messages of the write side: commands, queries, domain events, and event metadata.

All three are frozen pydantic v2 models that forbid unknown fields, so a message is a value:
it validates on construction, compares by content and cannot be changed after the fact.

* A :class:`DomainEvent` names its stored type explicitly (``event_type``) and carries a
  ``schema_version``; both are class variables, never derived from the module path, so moving
  or renaming a class never orphans stored events. Bump ``schema_version`` when the payload
  changes shape and register an upcaster for the old one (see :mod:`eventsourcing_cqrs.serialization`).
* A :class:`Command` carries a ``command_id``. Deliver the same command twice (same id) and
  the second delivery writes nothing: event ids are derived from it. Constructing a command
  with invalid fields raises :class:`~eventsourcing_cqrs.errors.CommandValidationError`
  listing every field at fault.
* A :class:`Query` is parametrised by the DTO its handler returns, so
  ``QueryBus.ask(GetBalance(...))`` is typed.
* :class:`Metadata` is what the framework writes beside each event: EventStoreDB's
  ``$correlationId`` and ``$causationId`` plus our own keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from eventsourcing_cqrs.errors import CommandValidationError
from eventsourcing_cqrs.event_store.port import CAUSATION_ID_KEY, CORRELATION_ID_KEY

__all__ = [
    "ACTOR_KEY",
    "CAUSATION_ID_KEY",
    "COMMAND_ID_KEY",
    "CORRELATION_ID_KEY",
    "SCHEMA_VERSION_KEY",
    "Command",
    "DomainEvent",
    "Metadata",
    "Query",
]

#: Our metadata key for the id of the command that caused an event.
COMMAND_ID_KEY = "commandId"
#: Our metadata key for the actor (user, service) on whose behalf an event was written.
ACTOR_KEY = "actor"
#: Our metadata key for the schema version of the event's payload.
SCHEMA_VERSION_KEY = "schemaVersion"

R = TypeVar("R")


def _validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """``(field, reason)`` pairs from a pydantic error, with dotted paths for nested fields."""
    errors = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "(command)"
        errors.append((field, error["msg"]))
    return errors


class DomainEvent(BaseModel):
    """A fact that happened in the domain; the unit that is stored.

    Subclasses set ``event_type`` (stable, explicit; it is the type name in the store) and,
    when the payload has changed shape over time, ``schema_version``::

        class MoneyDeposited(DomainEvent):
            event_type: ClassVar[str] = "MoneyDeposited"
            schema_version: ClassVar[int] = 2

            account_id: str
            amount: Decimal
            balance: Decimal
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: The event's stored type name. Required on every concrete event class.
    event_type: ClassVar[str]
    #: The version of the payload's shape that this class reads and writes.
    schema_version: ClassVar[int] = 1


class Command(BaseModel):
    """An intention addressed to the write side; handled by exactly one handler.

    ``command_id`` identifies one intention: retries and redeliveries of the same command keep
    it, and the events the command writes have ids derived from it, so the command takes effect
    once. It defaults to a fresh UUID; pass your own (an idempotency key from the request) when
    the caller may deliver it twice.

    Constructing a command with invalid fields raises
    :class:`~eventsourcing_cqrs.errors.CommandValidationError` (a ``ValueError``), listing each
    field and why.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: uuid.UUID = Field(default_factory=uuid.uuid4)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise CommandValidationError(type(self).__name__, _validation_errors(exc)) from None

    @classmethod
    def parse(cls, data: Mapping[str, Any] | str | bytes) -> Self:
        """Validate a command from a mapping or a JSON document (an API request body, a message).

        Raises :class:`~eventsourcing_cqrs.errors.CommandValidationError` listing every field at fault.
        """
        try:
            if isinstance(data, str | bytes):
                return cls.model_validate_json(data)
            return cls.model_validate(data)
        except ValidationError as exc:
            raise CommandValidationError(cls.__name__, _validation_errors(exc)) from None


class Query(BaseModel, Generic[R]):
    """A question for the read side, parametrised by the DTO type its handler returns::

    class GetAccount(Query[AccountSummary]):
        account_id: str
    """

    model_config = ConfigDict(frozen=True, extra="forbid")


class Metadata(BaseModel):
    """What the framework records beside each event (the event's JSON metadata).

    Keys follow EventStoreDB (``$correlationId``, ``$causationId``, so its
    ``$by_correlation_id`` projection works) plus ours: ``commandId``, ``actor`` and
    ``schemaVersion``. Unknown keys written by other tools are kept (``extra="allow"``), because
    metadata is shared with every other writer of the store.
    """

    model_config = ConfigDict(frozen=True, extra="allow", validate_by_name=True, validate_by_alias=True)

    correlation_id: str | None = Field(default=None, alias=CORRELATION_ID_KEY)
    causation_id: str | None = Field(default=None, alias=CAUSATION_ID_KEY)
    command_id: str | None = Field(default=None, alias=COMMAND_ID_KEY)
    actor: str | None = Field(default=None, alias=ACTOR_KEY)
    schema_version: int = Field(default=1, alias=SCHEMA_VERSION_KEY)

    def to_json(self) -> bytes:
        """The metadata as stored: JSON with EventStoreDB's keys, empty fields left out."""
        return self.model_dump_json(by_alias=True, exclude_none=True).encode()
