"""The event store contract against EsdbEventStore, over gRPC to the in-process test server
(or to the EventStoreDB named by ``ESDB_URI``)."""

from __future__ import annotations

import functools
import socket
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from eventsourcing_cqrs.errors import (
    EventStoreTimeoutError,
    EventStoreUnavailableError,
    InvalidInputError,
)
from eventsourcing_cqrs.event_store.esdb import EsdbEventStore
from eventsourcing_cqrs.event_store.port import (
    CaughtUp,
    EventFilter,
    RecordedEvent,
    StreamState,
    Subscription,
    SubscriptionItem,
)
from eventsourcing_cqrs.testing.contracts import (
    EventStoreContract,
    StoreFactory,
    new_events,
    unique_stream,
)
from eventsourcing_cqrs.testing.esdb_fixtures import EsdbEndpoint, esdb_server
from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer
from projections.read_model_store.sqlite import SQLiteReadModelStore
from projections.runner import ProjectionRunner, RunOutcome
from projections.testing.contracts import Tally, append_tallied

__all__ = ["TestEsdbEventStore", "esdb_server"]


class TestEsdbEventStore(EventStoreContract):
    # Through gRPC to a server in this same process (both traced by tracemalloc) 100 000
    # events take ~35 s on two shared cores; 20 000 show the same flat profile.
    LARGE_CATCH_UP = 20_000

    @pytest.fixture
    def store_factory(self, esdb_server: EsdbEndpoint) -> StoreFactory:
        return functools.partial(EsdbEventStore, esdb_server.uri)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _collect(
    subscription: Subscription, until: Callable[[list[SubscriptionItem]], bool]
) -> list[SubscriptionItem]:
    items: list[SubscriptionItem] = []
    while not until(items):
        item = subscription.poll(10.0)
        assert item is not None, f"nothing delivered for 10 s after {items[-3:]}"
        items.append(item)
    return items


def _revisions(items: list[SubscriptionItem], stream: str) -> list[int]:
    return [i.revision for i in items if isinstance(i, RecordedEvent) and i.stream == stream]


def test_subscriber_resumes_after_a_server_restart_with_no_event_lost_or_doubled() -> None:
    stream = unique_stream("Fault")
    with EsdbTestServer(strict=True) as server, EsdbEventStore(server.uri) as store:
        store.append(stream, new_events(200), expected_version=StreamState.NO_STREAM)
        mine = EventFilter.for_stream_prefixes([stream])
        with capture_logs() as logs, store.subscribe(filter=mine) as subscription:
            before = _collect(subscription, lambda got: len(_revisions(got, stream)) >= 20)

            server.stop()
            server.start()
            store.append(stream, new_events(100), expected_version=199)

            after = _collect(subscription, lambda got: len(_revisions(before + got, stream)) >= 300)

    assert _revisions(before + after, stream) == list(range(300))
    events = [logged["event"] for logged in logs]
    assert "event_store.subscription_dropped" in events
    assert "event_store.subscription_resumed" in events


def test_subscriber_resumes_after_consumer_too_slow_with_no_event_lost_or_doubled() -> None:
    stream = unique_stream("Slow")
    with EsdbTestServer(strict=True) as server, EsdbEventStore(server.uri, subscription_buffer=8) as store:
        store.append(stream, new_events(100), expected_version=StreamState.NO_STREAM)
        mine = EventFilter.for_stream_prefixes([stream])
        with capture_logs() as logs, store.subscribe(filter=mine) as subscription:
            before = _collect(subscription, lambda got: len(_revisions(got, stream)) >= 10)

            server.drop_subscriptions()
            store.append(stream, new_events(50), expected_version=99)

            after = _collect(subscription, lambda got: len(_revisions(before + got, stream)) >= 150)

    assert _revisions(before + after, stream) == list(range(150))
    dropped = [entry for entry in logs if entry["event"] == "event_store.subscription_dropped"]
    assert [entry["error"] for entry in dropped] == ["ConsumerTooSlow"]


def test_a_deadline_gives_a_timeout_error_naming_the_operation() -> None:
    stream = unique_stream("Deadline")
    with EsdbTestServer(strict=True) as server, EsdbEventStore(server.uri, timeout=0.2) as store:
        server.latency = 1.0
        with pytest.raises(EventStoreTimeoutError) as caught:
            store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        server.latency = 0.0

        assert store.stream_version(stream) is None
    message = str(caught.value)
    assert isinstance(caught.value, TimeoutError)
    assert f"did not complete append on stream {stream!r} within the 0.2 s deadline" in message


def test_an_unreachable_server_is_reported_without_credentials() -> None:
    uri = f"esdb://admin:s3cret@127.0.0.1:{_free_port()}?Tls=false"
    with capture_logs() as logs, EsdbEventStore(uri) as store:
        with pytest.raises(EventStoreUnavailableError) as caught:
            store.stream_version(unique_stream())
        shown = [str(caught.value), repr(store), *map(str, logs)]

    assert isinstance(caught.value, ConnectionError)
    assert not [text for text in shown if "s3cret" in text or "admin" in text]


def test_a_malformed_connection_string_is_refused_without_echoing_credentials() -> None:
    with pytest.raises(InvalidInputError) as caught:
        EsdbEventStore("esdb://admin:s3cret@127.0.0.1:2113?Tls=false&Bogus=1")

    assert "BOGUS" in str(caught.value)
    assert "s3cret" not in str(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"timeout": 0}, "timeout"),
        ({"timeout": "5"}, "timeout"),
        ({"subscription_buffer": 0}, "subscription_buffer"),
        ({"subscription_buffer": True}, "subscription_buffer"),
    ],
)
def test_wrong_options_are_refused_before_connecting(options: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        EsdbEventStore("esdb://localhost:2113?Tls=false", **options)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_a_subscription_to_a_server_without_caught_up_reports_caught_up_at_the_head() -> None:
    # EventStoreDB before 23.10 sends no caught_up message (nor an end-of-catch-up checkpoint).
    stream = unique_stream("Legacy")
    with EsdbTestServer(strict=True, caught_up=False) as server, EsdbEventStore(server.uri) as store:
        last = store.append(stream, new_events(30), expected_version=StreamState.NO_STREAM).position
        store.append(unique_stream("Other"), new_events(5), expected_version=StreamState.NO_STREAM)
        mine = EventFilter.for_stream_prefixes([stream])
        with store.subscribe(filter=mine) as subscription:
            items = _collect(subscription, lambda got: any(isinstance(i, CaughtUp) for i in got))
            store.append(stream, new_events(3), expected_version=29)
            live = _collect(subscription, lambda got: len(_revisions(got, stream)) >= 3)

    caught_up = [i for i in items if isinstance(i, CaughtUp)]
    assert caught_up == [CaughtUp(last)]
    assert isinstance(items[-1], CaughtUp), "everything up to the head comes before caught-up"
    assert _revisions(items, stream) == list(range(30))
    assert _revisions(live, stream) == [30, 31, 32]


def test_run_until_caught_up_ends_against_a_server_without_caught_up(tmp_path: Path) -> None:
    event_type = f"Legacy{uuid.uuid4().hex}"
    stream = unique_stream("LegacyRun")
    with EsdbTestServer(strict=True, caught_up=False) as server, EsdbEventStore(server.uri) as events:
        append_tallied(events, stream, 12, event_type)
        store = SQLiteReadModelStore(tmp_path / "views.db", durable=False)
        runner = ProjectionRunner(Tally(event_type), events, store, batch_delay=0.01)
        outcome: list[RunOutcome] = []
        thread = threading.Thread(
            target=lambda: outcome.append(runner.run(until_caught_up=True)), daemon=True
        )
        thread.start()
        thread.join(20)
        if thread.is_alive():
            runner.stop()
            thread.join(10)
        assert outcome == [RunOutcome.CAUGHT_UP], "run(until_caught_up=True) did not end within 20 s"
        with store.read("tally") as view:
            assert view.table("streams").get(stream) == {
                "count": 12,
                "last_revision": 11,
                "version": 1,
                "in_order": True,
            }
        store.close()
