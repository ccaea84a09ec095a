""" "``EsdbEventStore(timeout=...)`` bounds the wait for the first answer of ``read_stream`` and
``read_all``, as it bounds writes and point reads."""

from __future__ import annotations

import time

import pytest

from eventsourcing_cqrs.errors import EventStoreTimeoutError
from eventsourcing_cqrs.event_store.esdb import EsdbEventStore
from eventsourcing_cqrs.event_store.port import StreamState
from eventsourcing_cqrs.testing.contracts import new_events, unique_stream
from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer

LATENCY = 3.0


@pytest.mark.parametrize("read", ["read_stream", "read_all"])
def test_a_slow_first_answer_gives_a_timeout_error_within_the_timeout(read: str) -> None:
    stream = unique_stream("FirstAnswer")
    with EsdbTestServer() as server, EsdbEventStore(server.uri, timeout=0.3) as store:
        store.append(stream, new_events(2), expected_version=StreamState.NO_STREAM)
        server.latency = LATENCY
        started = time.monotonic()
        # read_stream raises when called, read_all when iterated: list() covers both.
        reading = (lambda: store.read_stream(stream)) if read == "read_stream" else store.read_all
        with pytest.raises(EventStoreTimeoutError, match=f"did not answer {read}.* within the 0.3 s"):
            list(reading())
        assert time.monotonic() - started < LATENCY / 2
        server.latency = 0.0
        # The store is still usable, and a read that answers in time is not cut short.
        assert len(list(store.read_stream(stream))) == 2


def test_without_a_timeout_the_first_answer_is_awaited() -> None:
    stream = unique_stream("FirstAnswer")
    with EsdbTestServer() as server, EsdbEventStore(server.uri) as store:
        store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        server.latency = 0.5
        assert len(list(store.read_stream(stream))) == 1
