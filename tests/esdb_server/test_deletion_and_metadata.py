"""Soft delete vs tombstone, and ``$$stream`` metadata, as GRPC_SPEC §7 and §8.3/§8.4 give them."""

from __future__ import annotations

import uuid

import pytest
from esdbclient import EventStoreDBClient, NewEvent, StreamState
from esdbclient.exceptions import FailedPrecondition, NotFound, StreamIsDeleted, WrongCurrentVersion

MAX_REVISION = 2**63 - 1


def _stream() -> str:
    return f"Test-{uuid.uuid4()}"


def _event() -> NewEvent:
    return NewEvent(type="Happened", data=b"{}")


def _stream_with_two_events(client: EventStoreDBClient) -> tuple[str, list[NewEvent]]:
    stream = _stream()
    events = [_event(), _event()]
    client.append_events(stream, current_version=StreamState.NO_STREAM, events=events)
    return stream, events


def test_soft_deleted_stream_reads_as_not_found(client: EventStoreDBClient) -> None:
    stream, _ = _stream_with_two_events(client)

    client.delete_stream(stream, current_version=1)

    with pytest.raises(NotFound):
        client.get_stream(stream)
    assert client.get_current_version(stream) is StreamState.NO_STREAM
    assert client.get_stream_metadata(stream) == ({"$tb": MAX_REVISION}, 0)


def test_tombstoned_stream_reads_as_deleted(client: EventStoreDBClient) -> None:
    stream, _ = _stream_with_two_events(client)

    client.tombstone_stream(stream, current_version=1)

    with pytest.raises(StreamIsDeleted):
        client.get_stream(stream)
    with pytest.raises(StreamIsDeleted):
        client.get_current_version(stream)
    with pytest.raises(StreamIsDeleted):
        client.get_stream_metadata(stream)


def test_soft_deleted_stream_is_recreated_with_numbering_continued(
    client: EventStoreDBClient,
) -> None:
    stream, _ = _stream_with_two_events(client)
    client.delete_stream(stream, current_version=1)
    e3, e4 = _event(), _event()

    client.append_events(stream, current_version=StreamState.NO_STREAM, events=[e3])
    client.append_event(stream, current_version=2, event=e4)

    events = client.get_stream(stream)
    assert [(e.id, e.stream_position) for e in events] == [(e3.id, 2), (e4.id, 3)]
    metadata, _ = client.get_stream_metadata(stream)
    assert metadata == {"$tb": 2}


def test_a_soft_deleted_stream_can_be_deleted_again_but_not_with_exists(
    client: EventStoreDBClient,
) -> None:
    stream, _ = _stream_with_two_events(client)
    client.delete_stream(stream, current_version=1)

    client.delete_stream(stream, current_version=1)
    with pytest.raises(WrongCurrentVersion):
        client.delete_stream(stream, current_version=0)
    with pytest.raises(StreamIsDeleted):
        client.delete_stream(stream, current_version=StreamState.EXISTS)
    with pytest.raises(WrongCurrentVersion):
        client.append_event(stream, current_version=0, event=_event())


def test_tombstoned_stream_rejects_appends_differently_per_call(client: EventStoreDBClient) -> None:
    stream, _ = _stream_with_two_events(client)
    client.tombstone_stream(stream, current_version=StreamState.ANY)

    # Batch append reports StreamDeleted in-band; Append sends FAILED_PRECONDITION.
    with pytest.raises(StreamIsDeleted):
        client.append_events(stream, current_version=StreamState.ANY, events=[_event()])
    with pytest.raises(FailedPrecondition):
        client.append_event(stream, current_version=StreamState.ANY, event=_event())
    with pytest.raises(StreamIsDeleted):
        client.delete_stream(stream, current_version=StreamState.ANY)
    with pytest.raises(StreamIsDeleted):
        client.tombstone_stream(stream, current_version=StreamState.ANY)


def test_subscribing_to_a_tombstoned_stream_raises_stream_is_deleted(
    client: EventStoreDBClient,
) -> None:
    stream = _stream()
    client.tombstone_stream(stream, current_version=StreamState.ANY)

    with pytest.raises(StreamIsDeleted):
        client.subscribe_to_stream(stream)


def test_deleted_and_tombstoned_events_stay_in_all(client: EventStoreDBClient) -> None:
    deleted, _ = _stream_with_two_events(client)
    tombstoned, _ = _stream_with_two_events(client)
    start = client.get_stream(deleted)[0].commit_position

    client.delete_stream(deleted, current_version=1)
    client.tombstone_stream(tombstoned, current_version=1)

    seen = [
        (e.stream_name, e.type, e.stream_position)
        for e in client.read_all(commit_position=start, filter_exclude=[])
        if e.stream_name in (deleted, tombstoned, "$$" + deleted)
    ]
    assert seen == [
        (deleted, "Happened", 0),
        (deleted, "Happened", 1),
        (tombstoned, "Happened", 0),
        (tombstoned, "Happened", 1),
        ("$$" + deleted, "$metadata", 0),
        (tombstoned, "$streamDeleted", MAX_REVISION),
    ]


def test_stream_metadata_round_trips_with_its_version(client: EventStoreDBClient) -> None:
    stream, _ = _stream_with_two_events(client)
    assert client.get_stream_metadata(stream) == ({}, StreamState.NO_STREAM)

    client.set_stream_metadata(stream, metadata={"owner": "alice"})
    client.set_stream_metadata(stream, metadata={"owner": "bob"}, current_version=0)

    assert client.get_stream_metadata(stream) == ({"owner": "bob"}, 1)
    with pytest.raises(WrongCurrentVersion):
        client.set_stream_metadata(stream, metadata={"owner": "eve"}, current_version=0)
    # A metastream keeps only its last event visible ($maxCount 1).
    assert [e.stream_position for e in client.get_stream("$$" + stream)] == [1]


def test_max_count_and_truncate_before_limit_what_a_read_sees(client: EventStoreDBClient) -> None:
    stream = _stream()
    client.append_events(stream, current_version=StreamState.NO_STREAM, events=[_event() for _ in range(5)])

    client.set_stream_metadata(stream, metadata={"$maxCount": 3})
    assert [e.stream_position for e in client.get_stream(stream)] == [2, 3, 4]
    client.set_stream_metadata(stream, metadata={"$maxCount": 3, "$tb": 4})
    assert [e.stream_position for e in client.get_stream(stream)] == [4]


def test_setting_metadata_on_a_soft_deleted_stream_undeletes_it(client: EventStoreDBClient) -> None:
    stream, _ = _stream_with_two_events(client)
    client.delete_stream(stream, current_version=1)

    client.set_stream_metadata(stream, metadata={"owner": "alice"})

    metadata, version = client.get_stream_metadata(stream)
    assert metadata == {"owner": "alice", "$tb": 2}
    assert version == 2
    # Undeleted but truncated before #2: the stream exists and reads as empty, not as missing.
    assert list(client.get_stream(stream)) == []


def test_metadata_of_a_tombstoned_stream_can_still_be_written(client: EventStoreDBClient) -> None:
    stream, _ = _stream_with_two_events(client)
    client.tombstone_stream(stream, current_version=1)

    client.set_stream_metadata(stream, metadata={"owner": "alice"})

    with pytest.raises(StreamIsDeleted):
        client.get_stream_metadata(stream)


@pytest.mark.parametrize(
    ("operation", "state", "expected", "outcome"),
    [
        ("delete", "missing", StreamState.ANY, NotFound),
        ("delete", "missing", StreamState.NO_STREAM, NotFound),
        ("delete", "existing", 0, WrongCurrentVersion),
        ("delete", "existing", 1, None),
        ("delete", "existing", StreamState.EXISTS, None),
        ("delete", "soft-deleted", 1, None),
        ("delete", "soft-deleted", StreamState.ANY, None),
        ("delete", "soft-deleted", StreamState.EXISTS, StreamIsDeleted),
        ("delete", "tombstoned", StreamState.ANY, StreamIsDeleted),
        ("tombstone", "missing", StreamState.ANY, None),
        ("tombstone", "missing", StreamState.EXISTS, NotFound),
        ("tombstone", "existing", 0, WrongCurrentVersion),
        ("tombstone", "existing", 1, None),
        ("tombstone", "tombstoned", StreamState.ANY, StreamIsDeleted),
    ],
)
def test_delete_and_tombstone_outcomes_follow_the_server_table(
    client: EventStoreDBClient,
    operation: str,
    state: str,
    expected: int | StreamState,
    outcome: type[Exception] | None,
) -> None:
    # GRPC_SPEC §7: "existing" streams hold events #0 and #1.
    stream = _stream()
    if state != "missing":
        client.append_events(stream, current_version=StreamState.NO_STREAM, events=[_event(), _event()])
    if state == "soft-deleted":
        client.delete_stream(stream, current_version=1)
    if state == "tombstoned":
        client.tombstone_stream(stream, current_version=1)
    act = client.delete_stream if operation == "delete" else client.tombstone_stream

    if outcome is None:
        act(stream, current_version=expected)
    else:
        with pytest.raises(outcome):
            act(stream, current_version=expected)


@pytest.mark.parametrize(
    ("expected", "outcome"),
    [
        (StreamState.NO_STREAM, None),
        (1, None),
        (StreamState.ANY, None),
        (0, WrongCurrentVersion),
        (StreamState.EXISTS, StreamIsDeleted),
    ],
)
def test_appending_to_a_soft_deleted_stream_follows_the_server_table(
    client: EventStoreDBClient, expected: int | StreamState, outcome: type[Exception] | None
) -> None:
    # GRPC_SPEC §8.3: recreation continues at the raw last revision + 1.
    stream, _ = _stream_with_two_events(client)
    client.delete_stream(stream, current_version=1)
    event = _event()

    if outcome is not None:
        with pytest.raises(outcome):
            client.append_events(stream, current_version=expected, events=[event])
        return
    client.append_events(stream, current_version=expected, events=[event])
    assert [(e.id, e.stream_position) for e in client.get_stream(stream)] == [(event.id, 2)]


def test_append_with_exists_to_a_soft_deleted_stream_fails_differently_per_call(
    client: EventStoreDBClient,
) -> None:
    stream, _ = _stream_with_two_events(client)
    client.delete_stream(stream, current_version=1)

    with pytest.raises(FailedPrecondition):
        client.append_event(stream, current_version=StreamState.EXISTS, event=_event())
