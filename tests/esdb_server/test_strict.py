"""``EsdbTestServer(strict=True)``: what EventStoreDB 24.10 does where the default server is lenient.

Each test talks to the server through esdbclient, as an application would, and most show the
lenient contrast next to the strict behaviour (see ``_streams.py``, ``_log.py``,
``_idempotency.py``, ``_features.py`` for the 24.10 sources each behaviour follows).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import grpc
import pytest
from esdbclient import Checkpoint, EventStoreDBClient, NewEvent, StreamState
from esdbclient.exceptions import (
    BadRequestError,
    ExceptionThrownByHandler,
    GrpcError,
    UnknownError,
    WrongCurrentVersion,
)
from esdbclient.protos.Grpc import shared_pb2

from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer
from eventsourcing_cqrs.testing.esdb_server._features import SupportedMethods, features_of
from eventsourcing_cqrs.testing.esdb_server._idempotency import COMMITTED_EVENTS_MEM_CACHE_LIMIT, entry_cost

_END = 2**64 - 1


@pytest.fixture
def strict() -> Iterator[EventStoreDBClient]:
    with EsdbTestServer(strict=True) as server, EventStoreDBClient(server.uri) as client:
        yield client


@pytest.fixture
def lenient() -> Iterator[EventStoreDBClient]:
    with EsdbTestServer() as server, EventStoreDBClient(server.uri) as client:
        yield client


def _append(client: EventStoreDBClient, stream: str, *types: str) -> int:
    return client.append_events(
        stream,
        current_version=StreamState.ANY,
        events=[NewEvent(type=event_type, data=b"{}") for event_type in types],
    )


def _stream() -> str:
    return f"Strict-{uuid.uuid4()}"


# ----------------------------------------------------------------- 1. positions in $all


def test_reading_all_from_inside_a_record_fails_as_invalid_position(
    strict: EventStoreDBClient, lenient: EventStoreDBClient
) -> None:
    for client in (strict, lenient):
        _append(client, _stream(), "A", "B")
    inside = strict.get_commit_position() - 1

    # filter_exclude=[] asks for no filter at all; esdbclient's default exclude filter is a filter.
    with pytest.raises(UnknownError, match="Unexpected ReadAllResult: InvalidPosition"):
        list(strict.read_all(commit_position=inside, filter_exclude=[]))
    with pytest.raises(UnknownError, match="Unexpected ReadAllResult: InvalidPosition"):
        list(strict.read_all(commit_position=inside, backwards=True, filter_exclude=[]))
    with pytest.raises(UnknownError, match="Unexpected FilteredReadAllResult: InvalidPosition"):
        list(strict.read_all(commit_position=inside, filter_include=["B"]))
    with pytest.raises(UnknownError, match="Unexpected FilteredReadAllResult: InvalidPosition"):
        list(strict.read_all(commit_position=inside, backwards=True))
    # Positions below the seed record lie inside the system records a real node starts with.
    with pytest.raises(UnknownError, match="InvalidPosition"):
        list(strict.read_all(commit_position=1))

    inside = lenient.get_commit_position() - 1
    assert [e.type for e in lenient.read_all(commit_position=inside, filter_include=["B"])] == ["B"]


def test_reading_all_accepts_record_positions_the_start_and_the_end(strict: EventStoreDBClient) -> None:
    _append(strict, _stream(), "A")
    last = _append(strict, _stream(), "B")

    assert [e.type for e in strict.read_all(commit_position=last)] == ["B"]
    assert [e.type for e in strict.read_all(commit_position=last, backwards=True, filter_include=["A"])] == [
        "A"
    ]
    assert [e.type for e in strict.read_all(commit_position=0, filter_include=["A", "B"])] == ["A", "B"]
    assert [e.type for e in strict.read_all(commit_position=_END, backwards=True, limit=1)] == ["B"]


def test_reading_all_beyond_the_head_is_empty_forwards_and_an_error_backwards(
    strict: EventStoreDBClient,
) -> None:
    head = _append(strict, _stream(), "A")

    assert list(strict.read_all(commit_position=head + 1)) == []
    assert list(strict.read_all(commit_position=head + 10**9)) == []
    with pytest.raises(UnknownError, match="Unexpected ReadAllResult: Error"):
        list(strict.read_all(commit_position=head + 10**9, backwards=True, filter_exclude=[]))
    with pytest.raises(UnknownError, match="Unexpected FilteredReadAllResult: Error"):
        list(strict.read_all(commit_position=head + 10**9, backwards=True))
    with pytest.raises(UnknownError, match="InvalidPosition"):
        list(strict.read_all(commit_position=2**63))


def test_subscribing_to_all_from_inside_a_record_fails_after_the_confirmation(
    strict: EventStoreDBClient, lenient: EventStoreDBClient
) -> None:
    first = _append(strict, _stream(), "A")
    _append(strict, _stream(), "B")

    subscription = strict.subscribe_to_all(commit_position=first + 1, timeout=5)
    with pytest.raises(GrpcError) as raised:
        next(iter(subscription))
    assert "Trying to read from an invalid position." in str(raised.value)

    first = _append(lenient, _stream(), "A")
    _append(lenient, _stream(), "B")
    with lenient.subscribe_to_all(commit_position=first + 1, filter_include=["B"], timeout=5) as events:
        assert next(iter(events)).type == "B"


def test_subscribing_to_all_from_the_head_goes_live_without_a_checkpoint(strict: EventStoreDBClient) -> None:
    # At or after the last record's position, including inside that record. (From far beyond
    # the head it also goes live, and then skips every event up to that position.)
    for offset in (0, 1):
        start = _append(strict, _stream(), "A") + offset
        with strict.subscribe_to_all(
            commit_position=start,
            filter_include=["Live"],
            include_checkpoints=True,
            include_caught_up=True,
            timeout=5,
        ) as subscription:
            items = iter(subscription)
            assert type(next(items)).__name__ == "CaughtUp"
            _append(strict, _stream(), "Live")
            assert next(items).type == "Live"


# ------------------------------------------------- 2. end of a filtered catch-up from the start


def test_filtered_catch_up_from_the_start_that_delivers_nothing_checkpoints_at_position_end(
    strict: EventStoreDBClient, lenient: EventStoreDBClient
) -> None:
    for client, expected in ((strict, _END), (lenient, lenient.get_commit_position(filter_exclude=[]))):
        with client.subscribe_to_all(
            filter_include=["Nothing-Matches-This"],
            include_checkpoints=True,
            include_caught_up=True,
            timeout=5,
        ) as subscription:
            checkpoint = next(iter(subscription))
            assert isinstance(checkpoint, Checkpoint)
            assert checkpoint.commit_position == expected


# --------------------------------------------------------------------- 3. idempotency


def test_a_reappend_with_any_is_idempotent_while_its_ids_are_cached(strict: EventStoreDBClient) -> None:
    stream = _stream()
    event = NewEvent(type="A", data=b"{}")
    first = strict.append_events(stream, current_version=StreamState.ANY, events=[event])

    again = strict.append_events(stream, current_version=StreamState.ANY, events=[event])

    assert again == first
    assert len(strict.get_stream(stream)) == 1


def test_a_reappend_with_any_after_eviction_is_written_again_but_not_with_an_exact_version() -> None:
    with (
        EsdbTestServer(strict=True, idempotency_cache_bytes=1) as server,
        EventStoreDBClient(server.uri) as client,
    ):
        stream = _stream()
        e1, e2, e3 = (NewEvent(type=name, data=b"{}") for name in ("E1", "E2", "E3"))
        client.append_events(stream, current_version=StreamState.NO_STREAM, events=[e1, e2])
        # A 1-byte cache holds only the last id written (eviction happens before each insert).

        client.append_events(stream, current_version=StreamState.ANY, events=[e1, e2])
        assert [e.type for e in client.get_stream(stream)] == ["E1", "E2", "E1", "E2"]
        with pytest.raises(WrongCurrentVersion):  # e2 cached, e3 not: corrupted idempotency
            client.append_events(stream, current_version=StreamState.ANY, events=[e2, e3])
        # Exact expected versions are checked against the log, not the cache.
        client.append_events(stream, current_version=StreamState.NO_STREAM, events=[e1, e2])
        assert len(client.get_stream(stream)) == 4


def test_a_restart_forgets_the_idempotency_cache_but_keeps_the_data() -> None:
    with EsdbTestServer(strict=True) as server, EventStoreDBClient(server.uri) as client:
        stream = _stream()
        event = NewEvent(type="A", data=b"{}")
        client.append_events(stream, current_version=StreamState.ANY, events=[event])
        server.stop()
        server.start()

        client.append_events(stream, current_version=StreamState.ANY, events=[event])

        assert len(client.get_stream(stream)) == 2


def test_the_lenient_server_remembers_every_id_across_restarts() -> None:
    with EsdbTestServer(idempotency_cache_bytes=1) as server, EventStoreDBClient(server.uri) as client:
        stream = _stream()
        event = NewEvent(type="A", data=b"{}")
        client.append_events(stream, current_version=StreamState.ANY, events=[event])
        _append(client, _stream(), "Other")
        server.stop()
        server.start()

        client.append_events(stream, current_version=StreamState.ANY, events=[event])

        assert len(client.get_stream(stream)) == 1


def test_cache_entries_cost_what_the_real_index_writer_charges() -> None:
    # 16 (Guid) + 4 + IntPtr.Size + MemSizer.SizeOf(stream) = (20 + 2 * length + 1) rounded up to 8.
    assert entry_cost("") == 28
    assert entry_cost("abc") == 28 + 32
    assert entry_cost("a" * 6) == 28 + 40
    assert entry_cost("\U0001f600") == 28 + 32  # two UTF-16 code units
    assert COMMITTED_EVENTS_MEM_CACHE_LIMIT == 8 * 1024 * 1024


# ------------------------------------------------------- 4. .NET regexes, empty stream names


def test_filters_use_dotnet_named_groups_and_reject_python_only_syntax(
    strict: EventStoreDBClient, lenient: EventStoreDBClient
) -> None:
    for client in (strict, lenient):
        _append(client, _stream(), "OrderOrder", "Order")
    dotnet = [r"(?<word>Order)\k<word>"]
    python = [r"(?P<word>Order)(?P=word)"]

    assert [e.type for e in strict.read_all(filter_include=dotnet)] == ["OrderOrder"]
    with pytest.raises(ExceptionThrownByHandler):
        list(strict.read_all(filter_include=python))
    with pytest.raises(ExceptionThrownByHandler):
        strict.subscribe_to_all(filter_include=python, timeout=5)

    assert [e.type for e in lenient.read_all(filter_include=python)] == ["OrderOrder"]
    with pytest.raises(GrpcError):
        list(lenient.read_all(filter_include=dotnet))


def test_an_empty_stream_name_fails_every_call_as_the_real_server_does(
    strict: EventStoreDBClient, lenient: EventStoreDBClient
) -> None:
    event = NewEvent(type="A", data=b"{}")
    with pytest.raises(BadRequestError, match="Parameter 'eventStreamId'"):
        strict.append_events("", current_version=StreamState.ANY, events=[event])
    with pytest.raises(ExceptionThrownByHandler):
        strict.append_event("", current_version=StreamState.ANY, event=event)
    with pytest.raises(ExceptionThrownByHandler):
        strict.get_stream("")
    with pytest.raises(ExceptionThrownByHandler):
        strict.delete_stream("", current_version=StreamState.ANY)
    with pytest.raises(ExceptionThrownByHandler):
        strict.tombstone_stream("", current_version=StreamState.ANY)

    lenient.append_events("", current_version=StreamState.ANY, events=[event])
    assert [e.type for e in lenient.get_stream("")] == ["A"]


# ------------------------------------------------------------------- 5. ServerFeatures


def _decode(data: bytes) -> list[tuple[int, int | bytes]]:
    """A minimal protobuf wire-format reader: (field number, varint or bytes) pairs."""
    fields: list[tuple[int, int | bytes]] = []
    index = 0

    def varint() -> int:
        nonlocal index
        value = shift = 0
        while True:
            byte = data[index]
            index += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while index < len(data):
        key = varint()
        if key & 7 == 2:
            length = varint()
            fields.append((key >> 3, data[index : index + length]))
            index += length
        else:
            fields.append((key >> 3, varint()))
    return fields


def _supported_methods(server: EsdbTestServer) -> bytes:
    with grpc.insecure_channel(f"{server.host}:{server.port}") as channel:
        call = channel.unary_unary(
            "/event_store.client.server_features.ServerFeatures/GetSupportedMethods",
            request_serializer=shared_pb2.Empty.SerializeToString,
            response_deserializer=None,
        )
        answer = call(shared_pb2.Empty(), timeout=5)
        assert isinstance(answer, bytes)
        return answer


def _methods(raw: bytes) -> dict[tuple[str, str], list[str]]:
    methods: dict[tuple[str, str], list[str]] = {}
    for number, value in _decode(raw):
        if number == 1:
            assert isinstance(value, bytes)
            parts = _decode(value)
            texts = {n: [v.decode() for m, v in parts if m == n and isinstance(v, bytes)] for n in (1, 2, 3)}
            methods[(texts[2][0], texts[1][0])] = texts[3]
    return methods


def test_server_features_answer_as_24_10_on_the_wire() -> None:
    with EsdbTestServer(strict=True) as server:
        raw = _supported_methods(server)

    assert (2, b"24.10.4") in _decode(raw)
    methods = _methods(raw)
    assert methods[("event_store.client.streams.streams", "read")] == ["position", "events"]
    assert methods[("event_store.client.streams.streams", "batchappend")] == ["deadline_duration"]
    assert methods[("event_store.client.streams.streams", "append")] == []
    assert methods[("event_store.client.persistent_subscriptions.persistentsubscriptions", "create")] == [
        "stream",
        "all",
    ]
    assert ("event_store.client.users.users", "changepassword") in methods
    assert ("event_store.client.redaction.redaction", "switchchunks") in methods
    assert not any(service.startswith("event_store.cluster.") for service, _ in methods)
    assert not any("projections" in service for service, _ in methods)
    assert len(methods) == 8 + 8 + 5 + 7 + 1 + 1 + 1 + 2
    assert SupportedMethods.FromString(raw).event_store_server_version == "24.10.4"  # type: ignore[attr-defined]


def test_a_lenient_server_lists_only_the_methods_it_implements() -> None:
    with EsdbTestServer() as server:
        methods = _methods(_supported_methods(server))

    assert set(methods) == {
        ("event_store.client.streams.streams", name)
        for name in ("read", "append", "delete", "tombstone", "batchappend")
    } | {
        ("event_store.client.persistent_subscriptions.persistentsubscriptions", "list"),
        ("event_store.client.gossip.gossip", "read"),
        ("event_store.client.server_features.serverfeatures", "getsupportedmethods"),
    }
    assert features_of("event_store.client.projections.Projections", "Create") == ["track_emitted_streams"]
