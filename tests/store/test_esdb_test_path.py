"""The EventStoreDB test path: the test server in a child process, its cached read responses, and
the adapter's subscription handing items over in bounded lists."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from esdbclient.protos.Grpc import shared_pb2, streams_pb2

from eventsourcing_cqrs.event_store.esdb import EsdbEventStore
from eventsourcing_cqrs.event_store.port import (
    CaughtUp,
    NewEvent,
    RecordedEvent,
    StreamState,
    SubscriptionItem,
)
from eventsourcing_cqrs.testing.contracts import new_events, unique_stream
from eventsourcing_cqrs.testing.esdb_fixtures import (
    ESDB_TEST_SERVER_ENV,
    ESDB_URI_ENV,
    EsdbEndpoint,
    esdb_server,
)
from eventsourcing_cqrs.testing.esdb_server import EsdbServerProcess, EsdbServerProcessError, EsdbTestServer

__all__ = ["esdb_server"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# -- the server in a child process ------------------------------------------------------------


def test_a_server_process_serves_and_exits_cleanly_on_stop() -> None:
    process = EsdbServerProcess(strict=True).start()
    pid = process.pid
    assert pid is not None
    try:
        with EsdbEventStore(process.uri) as store:
            stream = unique_stream("Child")
            store.append(stream, new_events(3), expected_version=StreamState.NO_STREAM)
            assert [event.revision for event in store.read_stream(stream)] == [0, 1, 2]
    finally:
        code = process.stop()

    assert code == 0, "SIGTERM is a clean shutdown"
    assert not _alive(pid)


def test_a_server_process_that_cannot_start_says_why_and_leaves_nothing_behind() -> None:
    process = EsdbServerProcess(args=("--user", "reader:secret"))  # --user without --tls

    with pytest.raises(EsdbServerProcessError, match="needs --tls"):
        process.start()

    assert process.pid is not None
    assert not _alive(process.pid)


def test_the_session_server_runs_in_its_own_process_by_default(esdb_server: EsdbEndpoint) -> None:
    if os.environ.get(ESDB_URI_ENV) or os.environ.get(ESDB_TEST_SERVER_ENV):
        pytest.skip("ESDB_URI or ESDB_TEST_SERVER chose another server.")
    assert esdb_server.process is not None
    assert esdb_server.server is None
    assert esdb_server.is_test_server
    assert esdb_server.process.pid != os.getpid()


# -- read responses serialised once -----------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[EsdbTestServer]:
    with EsdbTestServer(strict=True) as running:
        yield running


def _read_stream(uri: str, stream: str, *, structured: bool, resolve_links: bool = False) -> list[_Read]:
    """Streams.Read of a whole stream, with the UUID option esdbclient never sends (string)."""
    options = streams_pb2.ReadReq.Options(
        stream=streams_pb2.ReadReq.Options.StreamOptions(
            stream_identifier=shared_pb2.StreamIdentifier(stream_name=stream.encode()),
            start=shared_pb2.Empty(),
        ),
        read_direction=streams_pb2.ReadReq.Options.Forwards,
        resolve_links=resolve_links,
        count=100,
        no_filter=shared_pb2.Empty(),
        uuid_option=streams_pb2.ReadReq.Options.UUIDOption(
            **{"structured" if structured else "string": shared_pb2.Empty()}
        ),
    )
    target = uri.removeprefix("esdb://").split("?")[0]
    with grpc.insecure_channel(target) as channel:
        read = channel.unary_stream(
            "/event_store.client.streams.Streams/Read",
            request_serializer=streams_pb2.ReadReq.SerializeToString,
            response_deserializer=streams_pb2.ReadResp.FromString,
        )
        return [response.event for response in read(streams_pb2.ReadReq(options=options), timeout=10)]


_Read = streams_pb2.ReadResp.ReadEvent


def _event_id(read: _Read) -> uuid.UUID:
    value = read.event.id
    if value.WhichOneof("value") == "string":
        return uuid.UUID(value.string)
    high = value.structured.most_significant_bits.to_bytes(8, "big", signed=True)
    low = value.structured.least_significant_bits.to_bytes(8, "big", signed=True)
    return uuid.UUID(bytes=high + low)


def test_each_uuid_format_gets_its_own_response_however_often_an_event_is_read(
    server: EsdbTestServer,
) -> None:
    stream = unique_stream("Cached")
    events = new_events(3)
    with EsdbEventStore(server.uri) as store:
        store.append(stream, events, expected_version=StreamState.NO_STREAM)
    ids = [event.id for event in events]

    reads = [
        _read_stream(server.uri, stream, structured=structured) for structured in (True, False, True, False)
    ]

    kinds = [[read.event.id.WhichOneof("value") for read in batch] for batch in reads]
    assert kinds == [["structured"] * 3, ["string"] * 3] * 2
    assert all([_event_id(read) for read in batch] == ids for batch in reads)
    assert all([read.event.stream_revision for read in batch] == [0, 1, 2] for batch in reads)


def test_a_resolved_link_follows_its_target_deletion_after_being_read(server: EsdbTestServer) -> None:
    target, links = unique_stream("Target"), unique_stream("Links")
    with EsdbEventStore(server.uri) as store:
        store.append(target, new_events(1), expected_version=StreamState.NO_STREAM)
        store.append(links, [NewEvent("$>", f"0@{target}".encode())], expected_version=StreamState.NO_STREAM)
        before = _read_stream(server.uri, links, structured=True, resolve_links=True)
        store.delete_stream(target, expected_version=0)
    after = _read_stream(server.uri, links, structured=True, resolve_links=True)

    assert [(read.HasField("event"), read.HasField("link")) for read in before] == [(True, True)]
    assert before[0].event.stream_identifier.stream_name.decode() == target
    assert [(read.HasField("event"), read.HasField("link")) for read in after] == [(False, True)]


# -- the subscription hands items over in bounded lists ---------------------------------------


def test_a_subscription_buffers_at_most_one_and_a_half_buffers_for_a_consumer_that_waits() -> None:
    with EsdbTestServer(strict=True) as fresh, EsdbEventStore(fresh.uri, subscription_buffer=8) as store:
        stream = unique_stream("Bounded")
        for start in range(0, 400, 100):
            store.append(
                stream, new_events(100), expected_version=start - 1 if start else StreamState.NO_STREAM
            )
        positions = [event.position for event in store.read_stream(stream)]
        with store.subscribe() as subscription:
            time.sleep(1.0)  # the reader fills what it may, then waits for the consumer
            passed_on = sum(position <= subscription.position for position in positions)
            items: list[SubscriptionItem] = []
            while not items or not isinstance(items[-1], CaughtUp):
                item = subscription.poll(10.0)
                assert item is not None
                items.append(item)

    assert 0 < passed_on <= 12
    assert [i.revision for i in items if isinstance(i, RecordedEvent) and i.stream == stream] == list(
        range(400)
    )


def test_a_live_event_arrives_at_once_after_a_catch_up_shorter_than_a_hand_over(
    server: EsdbTestServer,
) -> None:
    stream = unique_stream("Live")
    with EsdbEventStore(server.uri) as store:
        store.append(stream, new_events(3), expected_version=StreamState.NO_STREAM)
        head = next(iter(store.read_stream(stream, backwards=True, limit=1))).position
        with store.subscribe(from_position=head) as subscription:
            first = subscription.poll(10.0)
            store.append(stream, new_events(1), expected_version=2)
            live = subscription.poll(5.0)

    assert isinstance(first, CaughtUp)
    assert isinstance(live, RecordedEvent)
    assert (live.stream, live.revision) == (stream, 3)
