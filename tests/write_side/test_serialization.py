"""The event registry: encoding, decoding, upcasting chains and the errors of bad stored events."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar

import pytest

from escqrs.examples.bank.events import AccountOpened, MoneyDeposited, registry
from eventsourcing_cqrs.errors import (
    CorruptEventError,
    InvalidInputError,
    UnknownEventTypeError,
    UpcastError,
)
from eventsourcing_cqrs.event_store.port import NewEvent, RecordedEvent
from eventsourcing_cqrs.messages import DomainEvent, Metadata
from eventsourcing_cqrs.serialization import EventRegistry


def recorded(new: NewEvent, stream: str = "Account-1", revision: int = 7) -> RecordedEvent:
    return RecordedEvent(
        id=new.id,
        type=new.type,
        data=new.data,
        metadata=new.metadata,
        stream=stream,
        revision=revision,
        position=100,
        recorded_at=datetime.now(UTC),
    )


def raw(event_type: str, data: bytes, metadata: bytes = b"") -> RecordedEvent:
    return recorded(NewEvent(event_type, data, metadata))


class Renamed(DomainEvent):
    """Version 3: ``name`` split into ``first`` and ``last``; ``vip`` added in version 2."""

    event_type: ClassVar[str] = "PersonRegistered"
    schema_version: ClassVar[int] = 3

    first: str
    last: str
    vip: bool


def person_registry() -> EventRegistry:
    people = EventRegistry([Renamed])

    @people.upcaster("PersonRegistered", from_version=1)
    def _add_vip(payload: dict[str, Any]) -> dict[str, Any]:
        return {**payload, "vip": False}

    @people.upcaster("PersonRegistered", from_version=2)
    def _split_name(payload: dict[str, Any]) -> dict[str, Any]:
        first, last = payload.pop("name").split(" ", 1)
        return {**payload, "first": first, "last": last}

    return people


def test_an_event_round_trips_through_the_registry_with_exact_decimals() -> None:
    event = MoneyDeposited(account_id="1", amount=Decimal("0.10"), balance=Decimal("100.20"))
    stored = registry.encode(event, Metadata(actor="alice"))
    decoded = registry.decode(recorded(stored))
    assert decoded == event
    assert isinstance(decoded, MoneyDeposited)
    assert str(decoded.amount) == "0.10"


def test_encoding_writes_the_explicit_type_name_and_schema_version() -> None:
    stored = registry.encode(AccountOpened(account_id="1", owner="Ann"))
    assert stored.type == "AccountOpened"
    assert json.loads(stored.metadata) == {"schemaVersion": 1}


def test_metadata_uses_eventstoredb_keys_and_round_trips() -> None:
    metadata = Metadata(correlation_id="c-1", causation_id="k-2", command_id="k-2", actor="bob")
    stored = registry.encode(AccountOpened(account_id="1", owner="Ann"), metadata)
    assert json.loads(stored.metadata) == {
        "$correlationId": "c-1",
        "$causationId": "k-2",
        "commandId": "k-2",
        "actor": "bob",
        "schemaVersion": 1,
    }
    assert registry.decode_metadata(recorded(stored)) == metadata


def test_metadata_keeps_keys_written_by_other_tools() -> None:
    event = raw(
        "AccountOpened", b'{"account_id":"1","owner":"A"}', b'{"traceparent":"00-ab","schemaVersion":1}'
    )
    assert registry.decode_metadata(event).model_extra == {"traceparent": "00-ab"}


def test_an_event_without_metadata_counts_as_schema_version_1() -> None:
    event = registry.decode(raw("AccountOpened", b'{"account_id":"1","owner":"A"}'))
    assert event == AccountOpened(account_id="1", owner="A")


def test_upcasters_chain_from_version_1_to_the_current_version() -> None:
    people = person_registry()
    stored = raw("PersonRegistered", b'{"name":"Ada Lovelace"}', b'{"schemaVersion":1}')
    assert people.decode(stored) == Renamed(first="Ada", last="Lovelace", vip=False)


def test_upcasting_starts_at_the_stored_version() -> None:
    people = person_registry()
    stored = raw("PersonRegistered", b'{"name":"Ada Lovelace","vip":true}', b'{"schemaVersion":2}')
    assert people.decode(stored) == Renamed(first="Ada", last="Lovelace", vip=True)


def test_an_unknown_event_type_names_stream_revision_and_type() -> None:
    with pytest.raises(UnknownEventTypeError) as caught:
        registry.decode(raw("AccountFrozen", b"{}"))
    assert (caught.value.stream, caught.value.revision, caught.value.event_type) == (
        "Account-1",
        7,
        "AccountFrozen",
    )
    assert "'Account-1'" in str(caught.value)
    assert "revision 7" in str(caught.value)
    assert "'AccountFrozen'" in str(caught.value)


def test_a_payload_that_is_not_json_is_reported_as_corrupt() -> None:
    with pytest.raises(CorruptEventError, match=r"stream 'Account-1', revision 7, type 'AccountOpened'"):
        registry.decode(raw("AccountOpened", b"{not json"))


def test_a_payload_missing_a_field_is_reported_as_corrupt_naming_the_field() -> None:
    with pytest.raises(CorruptEventError, match="owner: Field required"):
        registry.decode(raw("AccountOpened", b'{"account_id":"1"}'))


def test_corrupt_metadata_is_reported_as_corrupt() -> None:
    with pytest.raises(CorruptEventError, match="metadata is not valid JSON"):
        registry.decode(raw("AccountOpened", b'{"account_id":"1","owner":"A"}', b"\xff"))


def test_a_missing_upcaster_in_the_chain_is_an_upcast_error() -> None:
    people = EventRegistry([Renamed])
    people.add_upcaster("PersonRegistered", 1, lambda payload: {**payload, "vip": False})
    with pytest.raises(UpcastError, match="from schema version 2 to 3") as caught:
        people.decode(raw("PersonRegistered", b'{"name":"A B"}', b'{"schemaVersion":1}'))
    assert caught.value.revision == 7


def test_a_failing_upcaster_is_an_upcast_error_chained_to_its_cause() -> None:
    people = person_registry()
    stored = raw("PersonRegistered", b'{"name":"Plato","vip":false}', b'{"schemaVersion":2}')
    with pytest.raises(UpcastError, match="upcaster from version 2 failed") as caught:
        people.decode(stored)
    assert isinstance(caught.value.__cause__, ValueError)


def test_an_upcast_payload_that_does_not_validate_is_an_upcast_error() -> None:
    people = EventRegistry([Renamed])
    people.add_upcaster("PersonRegistered", 1, lambda payload: payload)
    people.add_upcaster("PersonRegistered", 2, lambda payload: payload)
    with pytest.raises(UpcastError, match="does not validate"):
        people.decode(raw("PersonRegistered", b'{"name":"A B"}', b'{"schemaVersion":1}'))


def test_an_event_newer_than_the_code_is_an_upcast_error() -> None:
    with pytest.raises(UpcastError, match="newer code"):
        registry.decode(raw("AccountOpened", b'{"account_id":"1","owner":"A"}', b'{"schemaVersion":2}'))


def test_an_alias_decodes_events_stored_under_a_former_name() -> None:
    class Opened(DomainEvent):
        event_type: ClassVar[str] = "Opened"
        account_id: str

    names = EventRegistry()
    names.register(Opened, aliases=["AccountCreated"])
    assert names.decode(raw("AccountCreated", b'{"account_id":"9"}')) == Opened(account_id="9")


def test_registering_a_class_without_its_own_event_type_is_refused() -> None:
    class Nameless(DomainEvent):
        value: int

    with pytest.raises(InvalidInputError, match="must declare its own stable event_type"):
        EventRegistry([Nameless])


def test_registering_two_classes_under_one_name_is_refused() -> None:
    class Impostor(DomainEvent):
        event_type: ClassVar[str] = "AccountOpened"

    people = EventRegistry([AccountOpened])
    with pytest.raises(InvalidInputError, match="already registered"):
        people.register(Impostor)


def test_encoding_an_unregistered_event_is_refused_before_anything_is_written() -> None:
    with pytest.raises(UnknownEventTypeError, match="not registered"):
        EventRegistry().encode(AccountOpened(account_id="1", owner="A"))


def test_decode_envelope_carries_metadata_and_position() -> None:
    stored = registry.encode(AccountOpened(account_id="1", owner="A"), Metadata(correlation_id="c"))
    envelope = registry.decode_envelope(recorded(stored))
    assert envelope.event_type == "AccountOpened"
    assert envelope.metadata.correlation_id == "c"
    assert (envelope.stream, envelope.revision, envelope.position) == ("Account-1", 7, 100)
    assert isinstance(envelope.id, uuid.UUID)


def test_events_are_frozen_and_forbid_unknown_fields() -> None:
    event = AccountOpened(account_id="1", owner="A")
    with pytest.raises(ValueError, match="frozen"):
        event.owner = "B"  # type: ignore[misc]
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        AccountOpened(account_id="1", owner="A", nickname="x")  # type: ignore[call-arg]


def test_include_is_live_for_upcasters_and_classes_added_later() -> None:
    class Renamed(DomainEvent):
        event_type: ClassVar[str] = "Renamed"
        schema_version: ClassVar[int] = 2
        name: str

    class Noted(DomainEvent):
        event_type: ClassVar[str] = "Noted"

    domain = EventRegistry([Renamed])
    application = EventRegistry()
    application.include(domain)
    outer = EventRegistry()
    outer.include(application)

    def upcast(payload: dict[str, Any]) -> dict[str, Any]:
        return {"name": payload["old_name"]}

    domain.add_upcaster("Renamed", 1, upcast)  # after the include
    domain.register(Noted)
    for including in (application, outer):
        assert including._upcasters[("Renamed", 1)] is upcast
        assert including.event_class("Noted") is Noted

    def other(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    application.add_upcaster("Noted", 1, other)
    with pytest.raises(InvalidInputError, match="another upcaster"):
        domain.add_upcaster("Noted", 1, upcast)
    with pytest.raises(InvalidInputError, match="itself"):
        domain.include(outer)
