"""Catch-up subscriptions through esdbclient, as GRPC_SPEC §10 and §11 describe them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
from esdbclient import EventStoreDBClient, NewEvent, StreamState
from esdbclient.events import CaughtUp, Checkpoint, RecordedEvent
from esdbclient.exceptions import GrpcDeadlineExceeded, StreamIsDeleted

# A deadline on every subscription turns a hang into a failure.
SAFETY_TIMEOUT = 10.0


def _stream() -> str:
    return f"Test-{uuid.uuid4()}"


def _events(count: int, event_type: str = "Happened") -> list[NewEvent]:
    return [NewEvent(type=event_type, data=b"{}") for _ in range(count)]


def _until_caught_up(items: Iterator[RecordedEvent]) -> list[RecordedEvent]:
    seen: list[RecordedEvent] = []
    for item in items:
        if isinstance(item, CaughtUp):
            return seen
        seen.append(item)
    raise AssertionError("The subscription ended before it caught up.")


def _position(event: RecordedEvent) -> int:
    assert event.commit_position is not None
    return event.commit_position


def _head(client: EventStoreDBClient) -> int:
    return client.get_commit_position(filter_exclude=[])


def test_subscribing_to_all_from_a_position_excludes_the_event_at_it(
    client: EventStoreDBClient,
) -> None:
    stream = _stream()
    e1, e2, e3 = _events(3)
    client.append_events(stream, current_version=StreamState.NO_STREAM, events=[e1, e2, e3])
    first = client.get_stream(stream)[0].commit_position

    with client.subscribe_to_all(
        commit_position=first,
        filter_include=[stream],
        filter_by_stream_name=True,
        include_caught_up=True,
        timeout=SAFETY_TIMEOUT,
    ) as subscription:
        assert [e.id for e in _until_caught_up(subscription)] == [e2.id, e3.id]
    assert [e.id for e in client.read_all(commit_position=first, limit=1)] == [e1.id]


def test_subscribing_to_a_stream_from_a_revision_excludes_it(client: EventStoreDBClient) -> None:
    stream = _stream()
    events = _events(4)
    client.append_events(stream, current_version=StreamState.NO_STREAM, events=events)

    with client.subscribe_to_stream(
        stream, stream_position=1, include_caught_up=True, timeout=SAFETY_TIMEOUT
    ) as subscription:
        assert [e.stream_position for e in _until_caught_up(subscription)] == [2, 3]


def test_an_unfiltered_subscription_to_all_starts_with_a_system_event(
    client: EventStoreDBClient,
) -> None:
    with client.subscribe_to_all(filter_exclude=[], timeout=SAFETY_TIMEOUT) as subscription:
        first = next(iter(subscription))

    assert first.type.startswith("$")


def test_subscription_sees_events_appended_live_by_another_client(
    client: EventStoreDBClient,
) -> None:
    stream = _stream()
    client.append_events(stream, current_version=StreamState.NO_STREAM, events=_events(1))
    live = _events(2)

    with client.subscribe_to_stream(stream, include_caught_up=True, timeout=SAFETY_TIMEOUT) as subscription:
        items = iter(subscription)
        assert [e.stream_position for e in _until_caught_up(items)] == [0]
        with EventStoreDBClient(client.connection_spec.uri) as other:
            other.append_events(stream, current_version=0, events=live)
        assert [next(items).id, next(items).id] == [e.id for e in live]


def test_no_gap_and_no_duplicate_across_the_switch_to_live(client: EventStoreDBClient) -> None:
    stream = _stream()
    batches = [_events(5) for _ in range(40)]
    client.append_events(stream, current_version=StreamState.NO_STREAM, events=batches[0])

    def write_the_rest() -> None:
        for version, batch in enumerate(batches[1:], start=1):
            client.append_events(stream, current_version=version * 5 - 1, events=batch)

    writer = threading.Thread(target=write_the_rest)
    expected = [e.id for batch in batches for e in batch]
    with client.subscribe_to_stream(stream, timeout=SAFETY_TIMEOUT) as subscription:
        writer.start()
        received = []
        for event in subscription:
            received.append(event.id)
            if len(received) == len(expected):
                break
    writer.join()

    assert received == expected


def test_filtered_subscription_checkpoints_never_pass_an_undelivered_event(
    client: EventStoreDBClient,
) -> None:
    noise, wanted = _stream(), _stream()
    start = _head(client)
    for _ in range(6):
        client.append_events(noise, current_version=StreamState.ANY, events=_events(3))
        client.append_events(wanted, current_version=StreamState.ANY, events=_events(1))

    with client.subscribe_to_all(
        commit_position=start,
        filter_include=[wanted],
        filter_by_stream_name=True,
        include_checkpoints=True,
        include_caught_up=True,
        window_size=2,
        checkpoint_interval_multiplier=1,
        timeout=SAFETY_TIMEOUT,
    ) as subscription:
        items = _until_caught_up(subscription)

    wanted_positions = [_position(e) for e in client.get_stream(wanted)]
    delivered: list[int] = []
    checkpoints: list[int] = []
    for item in items:
        assert item.commit_position is not None
        if isinstance(item, Checkpoint):
            checkpoints.append(item.commit_position)
            assert [p for p in wanted_positions if p <= item.commit_position] == delivered
        else:
            delivered.append(item.commit_position)
    assert delivered == wanted_positions
    assert len(checkpoints) >= 2
    assert checkpoints == sorted(set(checkpoints))
    # The end-of-catch-up checkpoint sits at the last delivered event.
    assert isinstance(items[-1], Checkpoint)
    assert items[-1].commit_position == wanted_positions[-1]


def test_filtered_subscription_that_matches_nothing_still_checkpoints_within_the_head(
    client: EventStoreDBClient,
) -> None:
    start = _head(client)
    client.append_events(_stream(), current_version=StreamState.NO_STREAM, events=_events(3))
    head = _head(client)

    with client.subscribe_to_all(
        commit_position=start,
        filter_exclude=[".*"],
        include_checkpoints=True,
        include_caught_up=True,
        window_size=1,
        checkpoint_interval_multiplier=1,
        timeout=SAFETY_TIMEOUT,
    ) as subscription:
        items = _until_caught_up(subscription)

    assert items
    assert all(isinstance(item, Checkpoint) for item in items)
    assert all(start < (item.commit_position or 0) <= head for item in items)


def test_filtered_subscription_checkpoints_while_live(client: EventStoreDBClient) -> None:
    stream = _stream()
    with client.subscribe_to_all(
        from_end=True,
        filter_include=["NeverWritten"],
        include_checkpoints=True,
        include_caught_up=True,
        window_size=2,
        checkpoint_interval_multiplier=2,
        timeout=SAFETY_TIMEOUT,
    ) as subscription:
        items = iter(subscription)
        assert isinstance(next(items), CaughtUp)
        client.append_events(stream, current_version=StreamState.NO_STREAM, events=_events(4))
        checkpoint = next(items)

    assert isinstance(checkpoint, Checkpoint)
    assert checkpoint.commit_position == client.get_stream(stream)[-1].commit_position


def test_resuming_from_a_checkpoint_delivers_the_next_matching_event(
    client: EventStoreDBClient,
) -> None:
    stream = _stream()
    start = _head(client)
    client.append_events(_stream(), current_version=StreamState.NO_STREAM, events=_events(4))
    with client.subscribe_to_all(
        commit_position=start,
        filter_include=[stream],
        filter_by_stream_name=True,
        include_checkpoints=True,
        window_size=1,
        checkpoint_interval_multiplier=1,
        timeout=SAFETY_TIMEOUT,
    ) as subscription:
        checkpoint = next(iter(subscription))
    assert isinstance(checkpoint, Checkpoint)
    wanted = _events(1)
    client.append_events(stream, current_version=StreamState.NO_STREAM, events=wanted)

    with client.subscribe_to_all(
        commit_position=checkpoint.commit_position,
        filter_include=[stream],
        filter_by_stream_name=True,
        timeout=SAFETY_TIMEOUT,
    ) as resumed:
        assert next(iter(resumed)).id == wanted[0].id


def test_unfiltered_subscription_to_all_sends_no_checkpoints(client: EventStoreDBClient) -> None:
    start = _head(client)
    client.append_events(_stream(), current_version=StreamState.NO_STREAM, events=_events(3))

    with client.subscribe_to_all(
        commit_position=start,
        filter_exclude=[],
        include_checkpoints=True,
        include_caught_up=True,
        window_size=1,
        checkpoint_interval_multiplier=1,
        timeout=SAFETY_TIMEOUT,
    ) as subscription:
        items = _until_caught_up(subscription)

    assert not any(isinstance(item, Checkpoint) for item in items)


def test_stream_subscription_reports_a_tombstone_then_raises(client: EventStoreDBClient) -> None:
    stream = _stream()
    client.append_events(stream, current_version=StreamState.NO_STREAM, events=_events(1))

    with client.subscribe_to_stream(stream, include_caught_up=True, timeout=SAFETY_TIMEOUT) as subscription:
        items = iter(subscription)
        assert len(_until_caught_up(items)) == 1
        client.tombstone_stream(stream, current_version=0)
        assert next(items).type == "$streamDeleted"
        with pytest.raises(StreamIsDeleted):
            next(items)


def test_subscription_past_its_deadline_raises_deadline_exceeded(
    client: EventStoreDBClient,
) -> None:
    subscription = client.subscribe_to_all(from_end=True, timeout=0.3)

    with pytest.raises(GrpcDeadlineExceeded):
        list(subscription)
