"""Appends multiplexed over one BatchAppend call (``event_store/_esdb_appends.py``), over gRPC to
the strict test server: concurrent writers share the call, each gets its own answer, a revision
costs no extra call, and a dropped connection loses and doubles nothing."""

from __future__ import annotations

import random
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from esdbclient.protos.Grpc import shared_pb2
from structlog.testing import capture_logs

from eventsourcing_cqrs.errors import (
    EventStoreTimeoutError,
    EventStoreUnavailableError,
    StreamDeletedError,
    WrongExpectedVersionError,
)
from eventsourcing_cqrs.event_store._esdb_appends import _correlation_key
from eventsourcing_cqrs.event_store.esdb import EsdbEventStore
from eventsourcing_cqrs.event_store.port import AppendResult, NewEvent, StreamState
from eventsourcing_cqrs.testing.contracts import new_events, unique_stream
from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer
from eventsourcing_cqrs.testing.esdb_server._interceptors import ServerInterceptor


class CallCounter(ServerInterceptor):
    """Counts the calls the server is asked to serve, by method name (``Read``, ``BatchAppend``)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        with self._lock:
            self.calls[handler_call_details.method.rsplit("/", 1)[-1]] += 1
        return continuation(handler_call_details)


@pytest.fixture
def counted() -> Iterator[tuple[EsdbTestServer, CallCounter]]:
    counter = CallCounter()
    with EsdbTestServer(strict=True, interceptors=[counter]) as server:
        yield server, counter


def test_concurrent_writers_share_one_call_and_each_gets_its_own_answer(
    counted: tuple[EsdbTestServer, CallCounter],
) -> None:
    server, counter = counted
    with EsdbEventStore(server.uri) as store:
        deleted = unique_stream("Deleted")
        store.append(deleted, new_events(1), expected_version=StreamState.NO_STREAM)
        store.tombstone_stream(deleted, expected_version=0)
        counter.calls.clear()
        outcomes: dict[int, list[object]] = {}
        start = threading.Barrier(16)

        def writer(number: int) -> None:
            stream = unique_stream(f"Writer{number}")
            seen: list[object] = []
            revision = -1
            start.wait()
            for n in range(20):
                try:
                    if n % 5 == 4:  # a wrong expected version: refused, for this writer only
                        store.append(stream, new_events(1), expected_version=n + 7)
                    elif n % 7 == 6:  # a tombstoned stream: refused, for this writer only
                        store.append(deleted, new_events(1), expected_version=StreamState.ANY)
                    else:
                        expected = StreamState.NO_STREAM if revision < 0 else revision
                        result = store.append(stream, new_events(1), expected_version=expected)
                        revision = result.revision
                        seen.append(result)
                except (WrongExpectedVersionError, StreamDeletedError) as exc:
                    seen.append(exc)
            outcomes[number] = seen

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        # The BatchAppend call the set-up opened carried all 16 writers' 320 appends; the only
        # reads are the creations' (whether a NO_STREAM append's events are already there),
        # none to learn a revision.
        assert counter.calls == Counter({"Read": 16})

        assert len(outcomes) == 16
        for number, seen in outcomes.items():
            results = [o for o in seen if isinstance(o, AppendResult)]
            refusals = [o for o in seen if not isinstance(o, AppendResult)]
            assert [r.revision for r in results] == list(range(len(results))), number
            assert len({r.stream for r in results}) == 1
            assert all(not r.already_written for r in results)
            assert [type(o) for o in refusals] == [
                StreamDeletedError if n % 7 == 6 and n % 5 != 4 else WrongExpectedVersionError
                for n in range(20)
                if n % 5 == 4 or n % 7 == 6
            ]
            for refusal in refusals:
                if isinstance(refusal, WrongExpectedVersionError):
                    assert refusal.stream == results[0].stream  # its own stream, no one else's
            stored = list(store.read_stream(results[0].stream))
            assert [(e.revision, e.position) for e in stored] == [(r.revision, r.position) for r in results]


def test_the_revision_of_an_any_or_stream_exists_append_comes_with_the_answer(
    counted: tuple[EsdbTestServer, CallCounter],
) -> None:
    server, counter = counted
    with EsdbEventStore(server.uri) as store:
        stream = unique_stream("Any")
        store.append(stream, new_events(2), expected_version=StreamState.NO_STREAM)
        counter.calls.clear()
        first = store.append(stream, new_events(3), expected_version=StreamState.ANY)
        second = store.append(stream, new_events(1), expected_version=StreamState.STREAM_EXISTS)
        assert (first.revision, second.revision) == (4, 5)
        assert second.position > first.position
        assert counter.calls == Counter({})  # the open call carried both; nothing was read
        assert store.stream_version(stream) == 5


def test_an_append_after_the_server_restarted_goes_over_a_new_call(
    counted: tuple[EsdbTestServer, CallCounter],
) -> None:
    server, counter = counted
    with EsdbEventStore(server.uri) as store:
        stream = unique_stream("Restart")
        store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        server.stop()
        server.start()
        result = store.append(stream, new_events(1), expected_version=0)
        assert result.revision == 1
        assert counter.calls["BatchAppend"] == 2


def test_an_append_unanswered_in_time_times_out_after_one_attempt_and_its_late_write_is_kept(
    counted: tuple[EsdbTestServer, CallCounter],
) -> None:
    server, _ = counted
    with EsdbEventStore(server.uri, timeout=0.3) as store:
        stream = unique_stream("Slow")
        store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        server.latency = 1.0
        started = time.monotonic()
        with pytest.raises(EventStoreTimeoutError, match=r"within the 0\.3 s deadline"):
            store.append(stream, new_events(1), expected_version=0)
        # One attempt (esdbclient's own retries would take 4 x 0.3 + 0.3 = 1.5 s).
        assert time.monotonic() - started < 0.9
        server.latency = 0.0
        deadline = time.monotonic() + 10
        while store.stream_version(stream) != 1 and time.monotonic() < deadline:
            time.sleep(0.05)  # the slow append lands later: its outcome was unknown, not lost
        assert store.stream_version(stream) == 1
        assert store.append(stream, new_events(1), expected_version=1).revision == 2


def test_a_server_restarted_under_concurrent_writers_loses_and_doubles_nothing() -> None:
    rng = random.Random(18)
    with EsdbTestServer(strict=True) as server, EsdbEventStore(server.uri, timeout=2.0) as store:
        writers, appends = 8, 60
        streams = [unique_stream(f"Writer{k}") for k in range(writers)]
        written: dict[str, list[NewEvent]] = {stream: [] for stream in streams}
        results: dict[str, list[AppendResult]] = {stream: [] for stream in streams}
        outages: Counter[str] = Counter()
        done = threading.Event()

        def writer(stream: str) -> None:
            n = 0
            while n < appends or not done.is_set():  # until every restart has hit the writers
                events = new_events(rng.choice((1, 1, 2)))
                expected = StreamState.NO_STREAM if n == 0 else results[stream][-1].revision
                while True:  # what a caller does with an outage: send the same append again
                    try:
                        result = store.append(stream, events, expected_version=expected)
                    except (EventStoreUnavailableError, EventStoreTimeoutError):
                        outages[stream] += 1
                        time.sleep(0.02)
                        continue
                    break
                written[stream].extend(events)
                results[stream].append(result)
                n += 1

        threads = [threading.Thread(target=writer, args=(stream,)) for stream in streams]
        for thread in threads:
            thread.start()

        def restarts() -> None:
            for _ in range(10):
                time.sleep(rng.uniform(0.02, 0.12))
                server.stop()
                time.sleep(rng.uniform(0.0, 0.05))
                server.start()
            done.set()

        with capture_logs() as logs:
            restarter = threading.Thread(target=restarts)
            restarter.start()
            for thread in threads:
                thread.join(timeout=120)
                assert not thread.is_alive()
            restarter.join()

        for stream in streams:
            stored = list(store.read_stream(stream))
            assert [e.id for e in stored] == [e.id for e in written[stream]]  # none lost, none doubled
            assert [e.revision for e in stored] == list(range(len(stored)))
            revisions = [r.revision for r in results[stream]]
            assert revisions == sorted(set(revisions))
            assert revisions[-1] == len(stored) - 1
        # The restarts met appends in flight: sent again by the store, or by the writer.
        resent = sum(1 for line in logs if line["event"] == "event_store.append_retried")
        assert resent + sum(outages.values()) > 0


@pytest.mark.parametrize(
    "value",
    [
        uuid.UUID(int=0),
        uuid.UUID(int=2**128 - 1),
        uuid.UUID("f47ac10b-58cc-4372-a567-0e02b2c3d479"),  # both halves negative as int64
        uuid.UUID("0a7b5c3e-1d2f-4e6a-8b9c-7d1e2f3a4b5c"),
    ],
)
def test_an_answer_is_matched_to_its_request_in_either_uuid_encoding(value: uuid.UUID) -> None:
    # EventStoreDB echoes the request's correlation id; a server may answer in the structured
    # form (two signed 64-bit halves) as well as the string form the requests use.
    most, least = struct.unpack(">qq", value.bytes)
    structured = shared_pb2.UUID(
        structured=shared_pb2.UUID.Structured(most_significant_bits=most, least_significant_bits=least)
    )
    assert _correlation_key(structured) == value
    assert _correlation_key(shared_pb2.UUID(string=str(value))) == value
