"""Appends and reads through esdbclient, as GRPC_SPEC §4 to §9 describe them."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from esdbclient import EventStoreDBClient, NewEvent, StreamState
from esdbclient.exceptions import GrpcError, NotFound, WrongCurrentVersion


def _stream() -> str:
    return f"Test-{uuid.uuid4()}"


def _event(event_type: str = "Happened") -> NewEvent:
    return NewEvent(type=event_type, data=json.dumps({"n": str(uuid.uuid4())}).encode())


def test_appended_events_read_back_with_every_field(client: EventStoreDBClient) -> None:
    stream = _stream()
    json_event = NewEvent(type="Opened", data=b'{"a":1}', metadata=b'{"$correlationId":"c"}')
    binary_event = NewEvent(type="Blob", data=b"\x00\x01", content_type="application/octet-stream")
    first = client.append_event(stream, current_version=StreamState.NO_STREAM, event=json_event)
    last = client.append_events(stream, current_version=0, events=[binary_event])

    events = client.get_stream(stream)

    assert [(e.id, e.type, e.data, e.metadata) for e in events] == [
        (json_event.id, "Opened", b'{"a":1}', b'{"$correlationId":"c"}'),
        (binary_event.id, "Blob", b"\x00\x01", b""),
    ]
    assert [e.content_type for e in events] == ["application/json", "application/octet-stream"]
    assert [e.stream_name for e in events] == [stream, stream]
    assert [e.stream_position for e in events] == [0, 1]
    assert [e.commit_position for e in events] == [first, last]
    assert 0 < first < last
    assert all(e.prepare_position == e.commit_position for e in events)
    recorded_at = events[0].recorded_at
    assert recorded_at is not None
    assert abs(datetime.now(UTC) - recorded_at) < timedelta(seconds=30)


def test_positions_leave_gaps_between_consecutive_events(client: EventStoreDBClient) -> None:
    stream = _stream()
    client.append_events(stream, current_version=StreamState.NO_STREAM, events=[_event(), _event()])

    first, second = client.get_stream(stream)

    assert first.commit_position is not None
    assert second.commit_position is not None
    assert second.commit_position - first.commit_position > 1


def test_stream_reads_honour_direction_start_and_limit(client: EventStoreDBClient) -> None:
    stream = _stream()
    client.append_events(stream, current_version=StreamState.NO_STREAM, events=[_event() for _ in range(5)])

    def positions(**kwargs: object) -> list[int]:
        return [e.stream_position for e in client.get_stream(stream, **kwargs)]  # type: ignore[arg-type]

    assert positions(stream_position=2) == [2, 3, 4]
    assert positions(stream_position=2, limit=2) == [2, 3]
    assert positions(backwards=True) == [4, 3, 2, 1, 0]
    assert positions(backwards=True, stream_position=1) == [1, 0]
    assert positions(backwards=True, stream_position=99, limit=2) == [4, 3]
    assert positions(stream_position=9) == []
    assert client.get_current_version(stream) == 4


def test_reading_a_stream_that_never_existed_raises_not_found(client: EventStoreDBClient) -> None:
    stream = _stream()

    with pytest.raises(NotFound):
        client.get_stream(stream)
    assert client.get_current_version(stream) is StreamState.NO_STREAM


def test_idempotent_reappends_return_original_positions(client: EventStoreDBClient) -> None:
    # The table of GRPC_SPEC §4.1, from esdbclient's test_stream_append_event_with_current_version.
    stream = _stream()
    e1, e2, e3, e4 = _event(), _event(), _event(), _event()
    p1 = client.append_event(stream, current_version=StreamState.NO_STREAM, event=e1)
    p2 = client.append_event(stream, current_version=0, event=e2)
    p3 = client.append_event(stream, current_version=1, event=e3)

    assert client.append_event(stream, current_version=StreamState.NO_STREAM, event=e1) == p1
    assert client.append_event(stream, current_version=0, event=e2) == p2
    assert client.append_event(stream, current_version=1, event=e3) == p3
    assert client.append_events(stream, current_version=StreamState.NO_STREAM, events=[e1, e2]) == p2
    assert client.append_events(stream, current_version=0, events=[e2, e3]) == p3
    with pytest.raises(WrongCurrentVersion):
        client.append_events(stream, current_version=0, events=[e2, e3, e4])

    assert [e.id for e in client.get_stream(stream)] == [e1.id, e2.id, e3.id]


def test_idempotent_reappend_with_any_writes_nothing(client: EventStoreDBClient) -> None:
    stream = _stream()
    e1, e2 = _event(), _event()
    position = client.append_events(stream, current_version=StreamState.ANY, events=[e1, e2])

    again = client.append_events(stream, current_version=StreamState.ANY, events=[e1, e2])

    assert again == position
    assert len(client.get_stream(stream)) == 2


def test_wrong_expected_version_reaches_esdbclient_the_same_from_append_and_batch_append(
    client: EventStoreDBClient,
) -> None:
    stream = _stream()
    client.append_event(stream, current_version=StreamState.NO_STREAM, event=_event())

    # Append answers with an OK-status wrong_expected_version message.
    with pytest.raises(WrongCurrentVersion, match="Stream position of last event is 0 not 5"):
        client.append_event(stream, current_version=5, event=_event())
    # BatchAppend answers in-band with ALREADY_EXISTS and a packed WrongExpectedVersion.
    with pytest.raises(
        WrongCurrentVersion, match=r"Stream position of last event is 0 not StreamState\.NO_STREAM"
    ):
        client.append_events(stream, current_version=StreamState.NO_STREAM, events=[_event()])
    with pytest.raises(WrongCurrentVersion, match="does not exist"):
        client.append_events(_stream(), current_version=StreamState.EXISTS, events=[_event()])
    with pytest.raises(WrongCurrentVersion, match="does not exist"):
        client.append_event(_stream(), current_version=3, event=_event())


def test_wrong_expected_version_on_delete_is_a_failed_precondition_with_the_server_text(
    client: EventStoreDBClient,
) -> None:
    stream = _stream()
    client.append_events(stream, current_version=StreamState.NO_STREAM, events=[_event(), _event()])

    with pytest.raises(WrongCurrentVersion) as raised:
        client.delete_stream(stream, current_version=0)
    assert str(raised.value) == (
        f"Delete failed due to WrongExpectedVersion. Stream: {stream}, Expected version: 0, Actual version: 1"
    )
    with pytest.raises(WrongCurrentVersion, match="Expected version: 7, Actual version: 1"):
        client.tombstone_stream(stream, current_version=7)
    # Actual version -1 is how esdbclient recognises a missing stream.
    with pytest.raises(NotFound):
        client.delete_stream(_stream(), current_version=StreamState.ANY)
    with pytest.raises(NotFound):
        client.tombstone_stream(_stream(), current_version=StreamState.EXISTS)


def test_append_with_no_events_checks_the_expected_version_only(client: EventStoreDBClient) -> None:
    stream = _stream()
    client.append_events(stream, current_version=StreamState.NO_STREAM, events=[_event()])

    client.append_events(stream, current_version=0, events=[])
    client.append_events(_stream(), current_version=StreamState.NO_STREAM, events=[])
    with pytest.raises(WrongCurrentVersion):
        client.append_events(stream, current_version=StreamState.NO_STREAM, events=[])

    assert client.get_current_version(stream) == 0


def test_appends_over_the_maximum_append_size_are_rejected(client: EventStoreDBClient) -> None:
    stream = _stream()
    big = NewEvent(type="Big", data=b"x" * 1_100_000, content_type="application/octet-stream")

    # Append reports INVALID_ARGUMENT, which esdbclient raises as a generic GrpcError.
    with pytest.raises(GrpcError):
        client.append_event(stream, current_version=StreamState.ANY, event=big)
    assert client.get_current_version(stream) is StreamState.NO_STREAM


def test_read_all_from_a_position_includes_the_event_at_it(client: EventStoreDBClient) -> None:
    stream = _stream()
    e1, e2, e3 = _event(), _event(), _event()
    client.append_events(stream, current_version=StreamState.NO_STREAM, events=[e1, e2, e3])
    first = client.get_stream(stream)[0].commit_position

    forwards = client.read_all(commit_position=first, limit=3)
    backwards = client.read_all(commit_position=first, backwards=True, limit=1)

    assert [e.id for e in forwards] == [e1.id, e2.id, e3.id]
    assert [e.commit_position for e in backwards] != [first]


def test_commit_position_is_the_position_of_the_last_append(client: EventStoreDBClient) -> None:
    stream = _stream()
    position = client.append_events(
        stream, current_version=StreamState.NO_STREAM, events=[_event(), _event()]
    )

    assert client.get_commit_position() == position
    assert client.get_commit_position(filter_exclude=[".*"]) == 0


def test_read_all_filters_run_on_the_server(client: EventStoreDBClient) -> None:
    stream = _stream()
    start = client.get_commit_position()
    client.append_events(
        stream,
        current_version=StreamState.NO_STREAM,
        events=[_event("OrderPlaced"), _event("OrderShipped"), _event("Invoiced")],
    )
    other = _stream()
    client.append_events(other, current_version=StreamState.NO_STREAM, events=[_event("Invoiced")])

    by_type = client.read_all(commit_position=start, filter_include=["Order.*"])
    by_stream = client.read_all(commit_position=start, filter_include=[other], filter_by_stream_name=True)
    excluded = client.read_all(commit_position=start, filter_exclude=["Order.*"])

    assert [e.type for e in by_type] == ["OrderPlaced", "OrderShipped"]
    assert [e.stream_name for e in by_stream] == [other]
    # read_all from a position includes the event at it, which belongs to an earlier test.
    assert [e.type for e in excluded if e.stream_name in (stream, other)] == [
        "Invoiced",
        "Invoiced",
    ]


def test_system_events_are_hidden_from_read_all_by_default_only(client: EventStoreDBClient) -> None:
    stream = _stream()
    start = client.get_commit_position()
    client.append_event(stream, current_version=StreamState.NO_STREAM, event=_event())
    client.set_stream_metadata(stream, metadata={"$maxCount": 10})

    default = [e.type for e in client.read_all(commit_position=start)]
    unfiltered = [e.type for e in client.read_all(commit_position=start, filter_exclude=[])]

    assert "$metadata" not in default
    assert "$metadata" in unfiltered


def test_links_resolve_to_their_target_only_when_asked(client: EventStoreDBClient) -> None:
    target, links = _stream(), _stream()
    original = _event("Original")
    client.append_events(target, current_version=StreamState.NO_STREAM, events=[original])
    link = NewEvent(type="$>", data=f"0@{target}".encode(), content_type="application/octet-stream")
    client.append_events(links, current_version=StreamState.NO_STREAM, events=[link])

    (unresolved,) = client.get_stream(links)
    (resolved,) = client.get_stream(links, resolve_links=True)

    assert (unresolved.type, unresolved.link) == ("$>", None)
    assert (resolved.id, resolved.stream_name) == (original.id, target)
    assert resolved.link is not None
    assert (resolved.link.id, resolved.link.stream_name) == (link.id, links)
