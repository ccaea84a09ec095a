"""Replay reads the schema version off the metadata's last bytes: never a wrong version, same errors.

See the module docstring of :mod:`eventsourcing_cqrs.serialization`: metadata that ends with
``,"schemaVersion":N}`` (or is ``{"schemaVersion":N}``) for the current N is not parsed; any
other metadata is, so a version key elsewhere in it is never taken for the event's.
"""

from __future__ import annotations

import uuid

import pytest

from eventsourcing_cqrs.errors import CorruptEventError
from eventsourcing_cqrs.event_store.port import EventStore, NewEvent, StreamState
from eventsourcing_cqrs.messages import Metadata
from eventsourcing_cqrs.repository import Repository

from ._counter import Counter, Incremented, counter_registry


def stored(store: EventStore, *events: NewEvent) -> str:
    aggregate_id = uuid.uuid4().hex
    store.append(f"Counter-{aggregate_id}", list(events), expected_version=StreamState.NO_STREAM)
    return aggregate_id


@pytest.mark.parametrize(
    "metadata",
    [
        b'{"schemaVersion":1,"extra":{"schemaVersion":2}}',  # the current version, but nested
        b'{"schemaVersion":1, "note":"x,\\"schemaVersion\\":2"}',  # ... or inside a string
        b'{"schemaVersion":2,"schemaVersion":1}',  # duplicate keys: the last one counts
    ],
)
def test_a_version_key_that_is_not_the_last_top_level_member_is_not_taken_for_the_events(
    store: EventStore, metadata: bytes
) -> None:
    aggregate_id = stored(store, NewEvent("Incremented", b'{"amount": 4}', metadata))
    assert Repository(store, Counter, counter_registry()).load(aggregate_id).total == 4  # upcast from 1
    first = next(iter(store.read_stream(f"Counter-{aggregate_id}")))
    assert counter_registry().decode(first) == Incremented(by=4)


def test_events_written_by_the_registry_replay_at_the_current_version(store: EventStore) -> None:
    registry = counter_registry()
    commanded = Metadata(correlation_id="c", causation_id="c", command_id="c", actor="ann")
    aggregate_id = stored(
        store,
        registry.encode(Incremented(by=1)),
        registry.encode(Incremented(by=2), commanded),
        NewEvent("Incremented", b'{"by": 3}', b'{ "schemaVersion" : 2 }'),  # another writer's spacing
    )
    counter = Repository(store, Counter, registry).load(aggregate_id)
    assert (counter.total, counter.version) == (6, 2)


def test_a_payload_that_does_not_validate_at_the_current_version_names_stream_and_revision(
    store: EventStore,
) -> None:
    registry = counter_registry()
    aggregate_id = stored(
        store,
        registry.encode(Incremented(by=1)),
        NewEvent("Incremented", b'{"by": "many"}', b'{"schemaVersion":2}'),
    )
    with pytest.raises(
        CorruptEventError, match=rf"stream 'Counter-{aggregate_id}', revision 1, type 'Incremented'"
    ) as caught:
        Repository(store, Counter, registry).load(aggregate_id)
    assert "by: Input should be a valid integer" in str(caught.value)


def test_metadata_that_is_not_json_is_still_reported_on_replay(store: EventStore) -> None:
    aggregate_id = stored(store, NewEvent("Incremented", b'{"by": 1}', b"\xff"))
    with pytest.raises(CorruptEventError, match="metadata is not valid JSON"):
        Repository(store, Counter, counter_registry()).load(aggregate_id)
