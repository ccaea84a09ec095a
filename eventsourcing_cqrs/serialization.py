"""Turning domain events into stored events and back: the event-type registry, upcasters, JSON.

An :class:`EventRegistry` maps stored type names to :class:`~eventsourcing_cqrs.messages.DomainEvent`
classes. Encoding uses pydantic's ``model_dump_json`` and decoding ``model_validate_json``
(both run in pydantic-core, without building Python dicts), except when a stored payload is
older than its class: then the payload is parsed, passed through the chain of upcasters
registered for its type (v1 → v2 → v3 ...), and validated.

The payload's schema version is kept in the event's metadata (``schemaVersion``); an event
without one (written by another tool) counts as version 1. Decoding does not parse the metadata
to find it when the metadata ends with ``,"schemaVersion":N}`` (or is ``{"schemaVersion":N}``) for
the class's current version N, which is how this library writes it: in a valid JSON object that
ending can only be its last top-level member, the one a JSON parser keeps. Any other metadata is
parsed (and reported as corrupt if it is not a JSON object). The metadata itself is decoded only
when asked for (:meth:`EventRegistry.decode_metadata`, :meth:`EventRegistry.decode_envelope`).

Every decoding failure raises a :class:`~eventsourcing_cqrs.errors.SerializationError` that
names the stream, revision and type of the stored event:

* :class:`~eventsourcing_cqrs.errors.UnknownEventTypeError` — no class registered for the type;
* :class:`~eventsourcing_cqrs.errors.CorruptEventError` — the payload or metadata is not valid
  JSON, or does not validate;
* :class:`~eventsourcing_cqrs.errors.UpcastError` — an upcaster is missing or failed, or the
  stored version is newer than the code.

Example::

    registry = EventRegistry([AccountOpened, MoneyDeposited])

    @registry.upcaster("MoneyDeposited", from_version=1)
    def _add_currency(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "currency": "EUR"}

    new_event = registry.encode(MoneyDeposited(...), Metadata(actor="alice"))
    event = registry.decode(recorded_event)
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, NamedTuple, TypeVar

import pydantic_core
from pydantic import ValidationError

from eventsourcing_cqrs.errors import (
    CorruptEventError,
    InvalidInputError,
    UnknownEventTypeError,
    UpcastError,
)
from eventsourcing_cqrs.event_store.port import NewEvent, RecordedEvent
from eventsourcing_cqrs.messages import SCHEMA_VERSION_KEY, DomainEvent, Metadata

__all__ = ["EventEnvelope", "EventRegistry", "FastPath", "Upcaster"]

E = TypeVar("E", bound=DomainEvent)
E_co = TypeVar("E_co", bound=DomainEvent, covariant=True)

#: Turns the JSON payload of version N of an event type into version N + 1.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_JSON = "application/json"


@functools.cache
def _version_marks(version: int) -> tuple[bytes, bytes]:
    """How metadata written by this library ends for ``version``: after other keys, or alone."""
    key = SCHEMA_VERSION_KEY.encode()
    return b',"%s":%d}' % (key, version), b'{"%s":%d}' % (key, version)


@dataclass(frozen=True, slots=True)
class EventEnvelope(Generic[E_co]):
    """A decoded event with its metadata and where it is stored."""

    event: E_co
    metadata: Metadata
    id: uuid.UUID
    stream: str
    revision: int
    position: int
    recorded_at: datetime

    @property
    def event_type(self) -> str:
        """The event's stored type name."""
        return self.event.event_type


class FastPath(NamedTuple):
    """How to decode a stored event of one type written at its class's current schema version
    (from :meth:`EventRegistry.fast_path`); unpack it once, outside the loop."""

    event_class: type[DomainEvent]
    #: ``event_class``'s pydantic-core ``validate_json``: the payload bytes to the event.
    validate: Callable[[bytes], Any]
    #: How metadata written by this library at the current version ends, after other keys ...
    tail: bytes
    #: ... or when it holds the schema version alone.
    alone: bytes

    def matches(self, recorded: RecordedEvent) -> bool:
        """Whether ``recorded`` is JSON whose metadata says it is at the current version."""
        metadata = recorded.metadata
        return recorded.content_type == _JSON and (metadata == self.alone or metadata.endswith(self.tail))


def _not_recorded(value: object) -> InvalidInputError:
    return InvalidInputError(
        "recorded event", value, f"decode a RecordedEvent read from the store, not {type(value).__name__}"
    )


def _summarise(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"])
        parts.append(f"{where}: {error['msg']}" if where else error["msg"])
    return "; ".join(parts)


class EventRegistry:
    """Stored type names ↔ event classes, plus the upcasters of each type.

    Thread-safe for reading once set up; register everything at start-up.
    """

    def __init__(self, events: Iterable[type[DomainEvent]] = ()) -> None:
        if isinstance(events, str | type) or not isinstance(events, Iterable):
            raise InvalidInputError("events", events, "give an iterable of DomainEvent subclasses")
        self._classes: dict[str, type[DomainEvent]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        #: The registries that included this one: what is added here later reaches them too.
        self._includers: list[EventRegistry] = []
        for event_class in events:
            self.register(event_class)

    def __repr__(self) -> str:
        return f"EventRegistry({sorted(self._classes)!r})"

    def __contains__(self, event_type: object) -> bool:
        return event_type in self._classes

    # -- setting up -----------------------------------------------------------------------

    def register(self, event_class: type[E], *, aliases: Sequence[str] = ()) -> type[E]:
        """Register ``event_class`` under its ``event_type`` (and any former names in ``aliases``).

        Returns the class unchanged, so it may also be used as a class decorator.
        Raises :class:`~eventsourcing_cqrs.errors.InvalidInputError` if the class does not
        declare its own ``event_type`` or a name is already taken by another class.
        """
        if not (isinstance(event_class, type) and issubclass(event_class, DomainEvent)):
            raise InvalidInputError("event class", event_class, "register DomainEvent subclasses")
        name = event_class.__dict__.get("event_type")
        if not isinstance(name, str) or not name:
            raise InvalidInputError(
                "event class",
                event_class,
                f"{event_class.__name__} must declare its own stable event_type "
                '(event_type: ClassVar[str] = "...")',
            )
        if name.startswith("$"):
            raise InvalidInputError("event type", name, "types starting with '$' are reserved for the store")
        if isinstance(aliases, str) or not isinstance(aliases, Iterable):
            raise InvalidInputError("aliases", aliases, "give a sequence of former type names")
        aliases = tuple(aliases)
        for alias in aliases:
            if not isinstance(alias, str) or not alias:
                raise InvalidInputError("alias", alias, "an alias is a non-empty type name")
        version = event_class.schema_version
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise InvalidInputError(
                "schema version", version, f"{event_class.__name__}.schema_version must be an int >= 1"
            )
        for registry in self._reached():
            for key in (name, *aliases):
                existing = registry._classes.get(key)
                if existing is not None and existing is not event_class:
                    raise InvalidInputError(
                        "event type",
                        key,
                        f"already registered to {existing.__module__}.{existing.__qualname__}",
                    )
        for registry in self._reached():
            for key in (name, *aliases):
                registry._classes[key] = event_class
        return event_class

    def _reached(self) -> list[EventRegistry]:
        """This registry and every registry that included it, directly or not."""
        reached: list[EventRegistry] = []
        waiting = [self]
        while waiting:
            registry = waiting.pop()
            if all(registry is not seen for seen in reached):
                reached.append(registry)
                waiting.extend(registry._includers)
        return reached

    def add_upcaster(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        """Register ``upcaster`` to turn version ``from_version`` of ``event_type`` into the next one."""
        if not isinstance(event_type, str) or not event_type:
            raise InvalidInputError("event type", event_type, "an event type is a non-empty string")
        if not callable(upcaster):
            raise InvalidInputError(
                "upcaster", upcaster, "an upcaster is a function from a payload dict to a payload dict"
            )
        if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
            raise InvalidInputError("from_version", from_version, "a schema version is an int >= 1")
        key = (event_type, from_version)
        if key in self._upcasters:
            raise InvalidInputError(
                "upcaster", key, f"{event_type} already has an upcaster from version {from_version}"
            )
        reached = self._reached()
        for registry in reached:
            if registry._upcasters.get(key, upcaster) is not upcaster:
                raise InvalidInputError(
                    "upcaster",
                    key,
                    f"{event_type} already has another upcaster from version {from_version} in a "
                    "registry that includes this one",
                )
        for registry in reached:
            registry._upcasters[key] = upcaster

    def upcaster(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        """Decorator form of :meth:`add_upcaster`; returns the function unchanged."""

        def decorate(function: Upcaster) -> Upcaster:
            self.add_upcaster(event_type, from_version, function)
            return function

        return decorate

    def include(self, other: EventRegistry) -> None:
        """Add every class, alias and upcaster of ``other`` (to decode several domains' events).

        The inclusion is live: a class or upcaster registered in ``other`` later reaches this
        registry too (and those that include it), with the same conflict checks.
        """
        if not isinstance(other, EventRegistry):
            raise InvalidInputError("registry", other, "include another EventRegistry")
        for key, event_class in other._classes.items():
            existing = self._classes.get(key)
            if existing is not None and existing is not event_class:
                raise InvalidInputError("event type", key, "registered to different classes")
        for step, upcaster in other._upcasters.items():
            if self._upcasters.get(step, upcaster) is not upcaster:
                raise InvalidInputError("upcaster", step, "registered twice with different functions")
        if any(registry is other for registry in self._reached()):
            raise InvalidInputError(
                "registry", other, "a registry cannot include itself, nor a registry that includes it"
            )
        for registry in self._reached():
            registry._classes.update(other._classes)
            registry._upcasters.update(other._upcasters)
        if all(includer is not self for includer in other._includers):
            other._includers.append(self)

    # -- looking up -----------------------------------------------------------------------

    @property
    def event_types(self) -> tuple[str, ...]:
        """Every registered type name, aliases included, sorted (for subscription filters)."""
        return tuple(sorted(self._classes))

    def event_class(self, event_type: str) -> type[DomainEvent]:
        """The class registered for ``event_type``; raises :class:`UnknownEventTypeError`."""
        if not isinstance(event_type, str):
            raise InvalidInputError("event type", event_type, "an event type is a string")
        try:
            return self._classes[event_type]
        except KeyError:
            raise UnknownEventTypeError(f"No event class is registered for type {event_type!r}.") from None

    # -- encoding -------------------------------------------------------------------------

    def encode(
        self,
        event: DomainEvent,
        metadata: Metadata | None = None,
        *,
        event_id: uuid.UUID | None = None,
    ) -> NewEvent:
        """The :class:`NewEvent` to append for ``event``; its schema version goes into the metadata.

        Raises :class:`UnknownEventTypeError` if the event's class is not registered here, so an
        event that could not be read back is never written.
        """
        if metadata is not None and not isinstance(metadata, Metadata):
            raise InvalidInputError("metadata", metadata, "give a Metadata instance (or None)")
        meta = metadata or Metadata()

        def metadata_for(schema_version: int) -> bytes:
            if meta.schema_version == schema_version:
                return meta.to_json()
            return meta.model_copy(update={"schema_version": schema_version}).to_json()

        return self.encode_with(event, metadata_for, event_id=event_id or uuid.uuid4())

    def encode_with(
        self, event: DomainEvent, metadata_for: Callable[[int], bytes], *, event_id: uuid.UUID
    ) -> NewEvent:
        """Like :meth:`encode`, with the stored metadata from ``metadata_for(schema_version)``.

        ``metadata_for`` returns the metadata JSON for the event class's schema version (so a
        command's metadata is encoded once, not once per event; see
        :meth:`~eventsourcing_cqrs.unit_of_work.UnitOfWork.metadata_json`).
        """
        event_class = type(event)
        name = event_class.event_type if "event_type" in event_class.__dict__ else None
        if name is None or self._classes.get(name) is not event_class:
            raise UnknownEventTypeError(
                f"Cannot encode {event_class.__qualname__}: its type is not registered in this registry."
            )
        return NewEvent(
            name,
            event.model_dump_json().encode(),
            metadata_for(event_class.schema_version),
            event_id,
        )

    # -- decoding -------------------------------------------------------------------------

    def decode(self, recorded: RecordedEvent) -> DomainEvent:
        """The domain event stored in ``recorded``, upcast to its class's current schema version.

        Raises :class:`UnknownEventTypeError`, :class:`CorruptEventError` or :class:`UpcastError`,
        each naming the stream, revision and type.
        """
        try:
            event_class = self._classes.get(recorded.type)
        except AttributeError:
            raise _not_recorded(recorded) from None
        if event_class is None:
            raise UnknownEventTypeError(
                f"No event class is registered for type {recorded.type!r}.",
                stream=recorded.stream,
                revision=recorded.revision,
                event_type=recorded.type,
            )
        if recorded.content_type != _JSON:
            raise self._corrupt(recorded, f"its content type is {recorded.content_type!r}, not JSON")
        current = event_class.schema_version
        tail, alone = _version_marks(current)
        metadata = recorded.metadata
        # The version as written by this library is read off the metadata's last bytes (see the
        # module docstring); other metadata is parsed.
        stored_version = (
            current if metadata == alone or metadata.endswith(tail) else self._stored_version(recorded)
        )
        if stored_version == current:
            try:
                # What model_validate_json calls, without its wrapper: a third of the cost of
                # validating a small event, paid once per replayed or projected event.
                return event_class.__pydantic_validator__.validate_json(recorded.data)  # type: ignore[no-any-return]
            except ValidationError as exc:
                raise self._corrupt(recorded, f"its payload does not validate: {_summarise(exc)}") from None
        return self._upcast(recorded, event_class, stored_version)

    def fast_path(self, event_type: str) -> FastPath:
        """What a hot loop needs to decode stored events of ``event_type`` at their current version.

        For replaying a stream: the class's validator and how the metadata of an event written
        at the class's current schema version ends (see the module docstring), looked up once.
        An event that :meth:`FastPath.matches` is decoded by ``validate(recorded.data)``; any
        other goes through :meth:`decode`, and so does one whose ``validate`` raises
        ``ValidationError``, for the error naming its stream and revision.
        Raises :class:`UnknownEventTypeError` if no class is registered for ``event_type``.
        """
        event_class = self.event_class(event_type)
        tail, alone = _version_marks(event_class.schema_version)
        return FastPath(event_class, event_class.__pydantic_validator__.validate_json, tail, alone)

    def decode_metadata(self, recorded: RecordedEvent) -> Metadata:
        """The :class:`Metadata` stored with ``recorded`` (empty metadata gives the defaults)."""
        if not isinstance(recorded, RecordedEvent):
            raise _not_recorded(recorded)
        if not recorded.metadata:
            return Metadata()
        try:
            return Metadata.model_validate_json(recorded.metadata)
        except ValidationError as exc:
            raise self._corrupt(recorded, f"its metadata does not validate: {_summarise(exc)}") from None

    def decode_envelope(self, recorded: RecordedEvent) -> EventEnvelope[DomainEvent]:
        """The decoded event with its metadata and position (for audit, projections, process managers)."""
        return EventEnvelope(
            event=self.decode(recorded),
            metadata=self.decode_metadata(recorded),
            id=recorded.id,
            stream=recorded.stream,
            revision=recorded.revision,
            position=recorded.position,
            recorded_at=recorded.recorded_at,
        )

    def _stored_version(self, recorded: RecordedEvent) -> int:
        if not recorded.metadata:
            return 1
        try:
            # pydantic-core's parser: this runs once per replayed event, and is ~5x faster than json.
            metadata = pydantic_core.from_json(recorded.metadata)
        except ValueError:
            raise self._corrupt(recorded, "its metadata is not valid JSON") from None
        if not isinstance(metadata, dict):
            raise self._corrupt(recorded, "its metadata is not a JSON object")
        version = metadata.get(SCHEMA_VERSION_KEY, 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise self._corrupt(recorded, f"its schema version {version!r} is not an int >= 1")
        return version

    def _upcast(self, recorded: RecordedEvent, event_class: type[DomainEvent], stored: int) -> DomainEvent:
        current = event_class.schema_version
        canonical = event_class.event_type
        if stored > current:
            raise self._upcast_error(
                recorded,
                f"it was written with schema version {stored} but {event_class.__qualname__} "
                f"reads version {current}; was it written by newer code?",
            )
        try:
            payload = json.loads(recorded.data)
        except ValueError:
            raise self._corrupt(recorded, "its payload is not valid JSON") from None
        for version in range(stored, current):
            upcaster = self._upcasters.get((canonical, version))
            if upcaster is None:
                raise self._upcast_error(
                    recorded,
                    f"no upcaster is registered from schema version {version} to {version + 1}",
                )
            if not isinstance(payload, dict):
                raise self._upcast_error(recorded, f"the version {version} payload is not a JSON object")
            try:
                payload = upcaster(payload)
            except Exception as exc:
                raise self._upcast_error(
                    recorded, f"the upcaster from version {version} failed: {exc!r}"
                ) from exc
        try:
            # Back through JSON so an upcast payload validates exactly as a current one would.
            document = json.dumps(payload)
        except (TypeError, ValueError) as exc:
            raise self._upcast_error(
                recorded, f"an upcaster returned values that are not JSON: {exc}"
            ) from exc
        try:
            return event_class.model_validate_json(document)
        except ValidationError as exc:
            raise self._upcast_error(
                recorded,
                f"the payload upcast from version {stored} to {current} does not validate: {_summarise(exc)}",
            ) from None

    @staticmethod
    def _corrupt(recorded: RecordedEvent, reason: str) -> CorruptEventError:
        return CorruptEventError(
            f"Stored event {recorded.id} cannot be decoded: {reason}.",
            stream=recorded.stream,
            revision=recorded.revision,
            event_type=recorded.type,
        )

    @staticmethod
    def _upcast_error(recorded: RecordedEvent, reason: str) -> UpcastError:
        return UpcastError(
            f"Stored event {recorded.id} cannot be upcast: {reason}.",
            stream=recorded.stream,
            revision=recorded.revision,
            event_type=recorded.type,
        )
