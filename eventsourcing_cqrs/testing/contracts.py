"""Contract test suites that every adapter of a port must pass.

Subclass :class:`EventStoreContract` once per event store adapter and provide a
``store_factory`` fixture returning a zero-argument callable that opens a new connection to
*one shared* store (it must be picklable when ``SUPPORTS_PROCESSES`` is true, because the
process tests call it in child processes)::

    class TestSQLiteEventStore(EventStoreContract):
        @pytest.fixture
        def store_factory(self, tmp_path):
            return functools.partial(SQLiteEventStore, tmp_path / "events.db")

The suite never assumes an empty store: every test uses fresh stream names and reads the head
position at its start, so it also runs against a shared EventStoreDB server.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import pytest

from eventsourcing_cqrs.errors import (
    InvalidInputError,
    StreamDeletedError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)
from eventsourcing_cqrs.event_store._reading import read_after as read_events_after
from eventsourcing_cqrs.event_store.port import (
    CaughtUp,
    Checkpoint,
    EventFilter,
    EventStore,
    NewEvent,
    RecordedEvent,
    StreamState,
    Subscription,
    SubscriptionItem,
)

__all__ = ["EventStoreContract", "new_events", "unique_stream"]

StoreFactory = Callable[[], EventStore]


def unique_stream(category: str = "Contract") -> str:
    """A stream name no other test uses."""
    return f"{category}-{uuid.uuid4().hex}"


def new_events(count: int, type_: str = "Happened", **payload: Any) -> list[NewEvent]:
    """``count`` JSON events numbered in their payload."""
    return [
        NewEvent(type=type_, data=json.dumps({"n": n, **payload}).encode(), metadata=b"{}")
        for n in range(count)
    ]


def collect(
    subscription: Subscription, until: Callable[[list[SubscriptionItem]], bool]
) -> list[SubscriptionItem]:
    """Read items until ``until(items)`` holds; fail after 10 s without an item or 60 s in all."""
    items: list[SubscriptionItem] = []
    deadline = time.monotonic() + 60
    while not until(items):
        item = subscription.poll(10.0)
        if item is None:
            pytest.fail(f"subscription delivered nothing for 10 s; got so far: {items[-5:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met after 60 s and {len(items)} items; last: {items[-5:]}")
        items.append(item)
    return items


def read_after(store: EventStore, position: int, **options: Any) -> list[RecordedEvent]:
    """``$all`` after ``position`` as a list (the port's :func:`~eventsourcing_cqrs.event_store.read_after`:
    EventStoreDB accepts only positions where a record sits, so tests never invent one)."""
    return list(read_events_after(store, position, **options))


def events_of(items: list[SubscriptionItem], stream: str | None = None) -> list[RecordedEvent]:
    return [i for i in items if isinstance(i, RecordedEvent) and (stream is None or i.stream == stream)]


# Child-process entry points must be importable module-level functions.


def _append_in_child(factory: StoreFactory, stream: str, expected: int, barrier: Any, results: Any) -> None:
    store = factory()
    try:
        barrier.wait()
        store.append(stream, new_events(1, "Raced"), expected_version=expected)
        results.put("won")
    except WrongExpectedVersionError as exc:
        results.put(f"lost:{exc.stream}:{exc.expected}:{exc.actual}")
    finally:
        store.close()


def _append_later_in_child(factory: StoreFactory, stream: str, count: int, ready: Any) -> None:
    store = factory()
    try:
        ready.wait()
        for n in range(count):
            store.append(stream, new_events(1, "FromChild", n=n), expected_version=StreamState.ANY)
            time.sleep(0.01)
    finally:
        store.close()


class EventStoreContract:
    """Every sentence of the event store port, as tests. See the module docstring."""

    #: Whether ``store_factory`` can be called in other processes (false for in-memory stores).
    SUPPORTS_PROCESSES: ClassVar[bool] = True
    #: How many events the flat-memory catch-up test appends and reads.
    LARGE_CATCH_UP: ClassVar[int] = 100_000

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        raise NotImplementedError("subclasses provide a store_factory fixture")

    @pytest.fixture
    def store(self, store_factory: StoreFactory) -> Iterator[EventStore]:
        store = store_factory()
        yield store
        store.close()

    # ------------------------------------------------------------------ append: expected version

    def test_append_with_no_stream_creates_the_stream_at_revision_zero(self, store: EventStore) -> None:
        stream = unique_stream()
        result = store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        assert (result.stream, result.revision) == (stream, 0)
        assert result.position > 0
        assert store.stream_version(stream) == 0

    def test_append_of_several_events_returns_the_last_revision_and_position(self, store: EventStore) -> None:
        stream = unique_stream()
        result = store.append(stream, new_events(3), expected_version=StreamState.NO_STREAM)
        recorded = list(store.read_stream(stream))
        assert [e.revision for e in recorded] == [0, 1, 2]
        assert result.revision == 2
        assert result.position == recorded[-1].position
        assert recorded[0].position < recorded[1].position < recorded[2].position

    def test_append_with_no_stream_to_an_existing_stream_fails_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        stream = unique_stream()
        store.append(stream, new_events(2), expected_version=StreamState.NO_STREAM)
        with pytest.raises(WrongExpectedVersionError) as caught:
            store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        assert (caught.value.stream, caught.value.expected, caught.value.actual) == (
            stream,
            StreamState.NO_STREAM,
            1,
        )
        assert stream in str(caught.value)
        assert store.stream_version(stream) == 1

    def test_append_with_any_writes_to_new_and_existing_streams(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(1), expected_version=StreamState.ANY)
        result = store.append(stream, new_events(1), expected_version=StreamState.ANY)
        assert result.revision == 1

    def test_append_with_stream_exists_to_a_missing_stream_fails(self, store: EventStore) -> None:
        stream = unique_stream()
        with pytest.raises(WrongExpectedVersionError) as caught:
            store.append(stream, new_events(1), expected_version=StreamState.STREAM_EXISTS)
        assert caught.value.actual is None
        assert store.stream_version(stream) is None

    def test_append_with_stream_exists_to_an_existing_stream_succeeds(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        result = store.append(stream, new_events(1), expected_version=StreamState.STREAM_EXISTS)
        assert result.revision == 1

    def test_append_at_the_exact_revision_succeeds(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(2), expected_version=StreamState.NO_STREAM)
        result = store.append(stream, new_events(1), expected_version=1)
        assert result.revision == 2

    def test_append_at_a_stale_revision_names_stream_expected_and_actual_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        stream = unique_stream()
        store.append(stream, new_events(3), expected_version=StreamState.NO_STREAM)
        with pytest.raises(WrongExpectedVersionError) as caught:
            store.append(stream, new_events(2), expected_version=0)
        error = caught.value
        assert (error.stream, error.expected, error.actual) == (stream, 0, 2)
        assert "expected version 0" in str(error)
        assert "at 2" in str(error)
        assert len(list(store.read_stream(stream))) == 3

    def test_append_at_a_revision_ahead_of_the_stream_fails(self, store: EventStore) -> None:
        stream = unique_stream()
        with pytest.raises(WrongExpectedVersionError) as caught:
            store.append(stream, new_events(1), expected_version=5)
        assert caught.value.actual is None
        store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        with pytest.raises(WrongExpectedVersionError):
            store.append(stream, new_events(1), expected_version=1)

    def test_positions_increase_across_streams(self, store: EventStore) -> None:
        first = store.append(unique_stream(), new_events(1), expected_version=StreamState.ANY)
        second = store.append(unique_stream(), new_events(1), expected_version=StreamState.ANY)
        assert second.position > first.position

    def test_recorded_events_keep_id_type_data_metadata_and_time(self, store: EventStore) -> None:
        stream = unique_stream()
        event = NewEvent("Shaped", b'{"a": 1}', b'{"$correlationId": "c"}')
        before = time.time()
        store.append(stream, [event], expected_version=StreamState.NO_STREAM)
        (recorded,) = store.read_stream(stream)
        assert (recorded.id, recorded.type, recorded.data, recorded.metadata) == (
            event.id,
            "Shaped",
            b'{"a": 1}',
            b'{"$correlationId": "c"}',
        )
        assert (recorded.stream, recorded.revision) == (stream, 0)
        assert recorded.recorded_at.tzinfo is not None
        assert before - 5 <= recorded.recorded_at.timestamp() <= time.time() + 5

    # ------------------------------------------------------------------ append: idempotency

    def test_reappending_the_same_events_at_the_same_expected_version_writes_nothing(
        self, store: EventStore
    ) -> None:
        stream = unique_stream()
        events = new_events(2)
        first = store.append(stream, events, expected_version=StreamState.NO_STREAM)
        again = store.append(stream, events, expected_version=StreamState.NO_STREAM)
        assert again == first
        more = new_events(1)
        second = store.append(stream, more, expected_version=1)
        assert store.append(stream, more, expected_version=1) == second
        assert len(list(store.read_stream(stream))) == 3

    def test_a_reappended_creation_says_it_was_already_written(self, store: EventStore) -> None:
        stream = unique_stream()
        events = new_events(2)
        first = store.append(stream, events, expected_version=StreamState.NO_STREAM)
        again = store.append(stream, events, expected_version=StreamState.NO_STREAM)
        assert (first.already_written, again.already_written) == (False, True)
        other = unique_stream()
        fresh = store.append(other, new_events(1), expected_version=StreamState.NO_STREAM)
        assert not fresh.already_written

    def test_reappending_the_same_events_with_any_writes_nothing(self, store: EventStore) -> None:
        stream = unique_stream()
        events = new_events(2)
        first = store.append(stream, events, expected_version=StreamState.ANY)
        assert store.append(stream, events, expected_version=StreamState.ANY) == first
        assert store.stream_version(stream) == 1

    def test_reappending_a_prefix_of_written_events_returns_the_prefix_result(
        self, store: EventStore
    ) -> None:
        stream = unique_stream()
        events = new_events(3)
        for n, event in enumerate(events):
            store.append(stream, [event], expected_version=n - 1 if n else StreamState.NO_STREAM)
        positions = [e.position for e in store.read_stream(stream)]
        again = store.append(stream, events[:2], expected_version=StreamState.NO_STREAM)
        assert (again.revision, again.position) == (1, positions[1])
        again = store.append(stream, events[1:], expected_version=0)
        assert (again.revision, again.position) == (2, positions[2])

    def test_reappending_written_events_followed_by_a_new_one_fails(self, store: EventStore) -> None:
        stream = unique_stream()
        events = new_events(2)
        store.append(stream, events, expected_version=StreamState.NO_STREAM)
        with pytest.raises(WrongExpectedVersionError):
            store.append(stream, [*events, *new_events(1)], expected_version=StreamState.NO_STREAM)
        assert store.stream_version(stream) == 1

    # ------------------------------------------------------------------ read a stream

    def test_read_stream_forwards_from_a_revision_with_a_limit(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(10), expected_version=StreamState.NO_STREAM)
        assert [e.revision for e in store.read_stream(stream)] == list(range(10))
        assert [e.revision for e in store.read_stream(stream, from_revision=4, limit=3)] == [4, 5, 6]
        assert list(store.read_stream(stream, from_revision=10)) == []

    def test_read_stream_backwards_from_the_end_or_a_revision(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(5), expected_version=StreamState.NO_STREAM)
        assert [e.revision for e in store.read_stream(stream, backwards=True)] == [4, 3, 2, 1, 0]
        assert [e.revision for e in store.read_stream(stream, backwards=True, limit=1)] == [4]
        assert [e.revision for e in store.read_stream(stream, from_revision=2, backwards=True)] == [2, 1, 0]

    def test_read_stream_pages_through_long_streams(self, store: EventStore) -> None:
        stream = unique_stream()
        for _ in range(3):
            store.append(stream, new_events(700), expected_version=StreamState.ANY)
        revisions = [e.revision for e in store.read_stream(stream)]
        assert revisions == list(range(2100))
        assert [e.revision for e in store.read_stream(stream, backwards=True)] == revisions[::-1]

    def test_reading_a_missing_stream_raises_when_called(self, store: EventStore) -> None:
        stream = unique_stream()
        with pytest.raises(StreamNotFoundError) as caught:
            store.read_stream(stream)
        assert caught.value.stream == stream
        assert stream in str(caught.value)
        assert store.stream_version(stream) is None

    # ------------------------------------------------------------------ read $all

    def test_read_all_forwards_includes_the_start_position(self, store: EventStore) -> None:
        stream = unique_stream()
        result = store.append(stream, new_events(3), expected_version=StreamState.NO_STREAM)
        written = list(store.read_stream(stream))
        read = list(store.read_all(from_position=written[0].position, limit=3))
        assert [e.id for e in read] == [e.id for e in written]
        assert read[-1].position == result.position

    def test_read_all_backwards_excludes_the_start_position(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(3), expected_version=StreamState.NO_STREAM)
        written = list(store.read_stream(stream))
        read = list(store.read_all(from_position=written[2].position, backwards=True, limit=2))
        assert [e.id for e in read] == [written[1].id, written[0].id]
        last = next(store.read_all(backwards=True, limit=1))
        assert last.id == written[2].id

    def test_read_all_pages_through_many_events_in_order(self, store: EventStore) -> None:
        start = store.head_position()
        stream = unique_stream()
        store.append(stream, new_events(1200), expected_version=StreamState.NO_STREAM)
        mine = [e for e in read_after(store, start) if e.stream == stream]
        assert [e.revision for e in mine] == list(range(1200))
        positions = [e.position for e in mine]
        assert positions == sorted(set(positions))

    def test_read_all_filters_by_event_type_prefix_and_regex(self, store: EventStore) -> None:
        start = store.head_position()
        tag = uuid.uuid4().hex[:8]
        stream = unique_stream()
        store.append(
            stream,
            [
                NewEvent(f"Alpha{tag}One", b"{}"),
                NewEvent(f"Beta{tag}", b"{}"),
                NewEvent(f"Alpha{tag}Two", b"{}"),
            ],
            expected_version=StreamState.NO_STREAM,
        )
        by_prefix = read_after(store, start, filter=EventFilter(prefixes=(f"Alpha{tag}",)))
        assert [e.type for e in by_prefix] == [f"Alpha{tag}One", f"Alpha{tag}Two"]
        by_regex = read_after(store, start, filter=EventFilter(regex=f"^Beta{tag}$"))
        assert [e.type for e in by_regex] == [f"Beta{tag}"]
        exact = read_after(store, start, filter=EventFilter.for_event_types([f"Alpha{tag}Two"]))
        assert [e.type for e in exact] == [f"Alpha{tag}Two"]

    def test_read_all_filters_by_stream_name_prefix_and_regex(self, store: EventStore) -> None:
        start = store.head_position()
        category = f"Cat{uuid.uuid4().hex[:8]}"
        ours, other = f"{category}-1", f"{category}x-2"
        store.append(ours, new_events(2), expected_version=StreamState.NO_STREAM)
        store.append(other, new_events(1), expected_version=StreamState.NO_STREAM)
        by_category = read_after(store, start, filter=EventFilter.for_categories([category]))
        assert {e.stream for e in by_category} == {ours}
        by_regex = store.read_all(
            from_position=start, filter=EventFilter(by="stream_name", regex=f"^{category}x-")
        )
        assert [e.stream for e in by_regex] == [other]

    def test_read_all_limit_counts_matching_events(self, store: EventStore) -> None:
        start = store.head_position()
        tag = uuid.uuid4().hex[:8]
        stream = unique_stream()
        store.append(
            stream, new_events(5, "Noise") + new_events(3, f"Wanted{tag}"), expected_version=StreamState.ANY
        )
        read = list(read_after(store, start, limit=2, filter=EventFilter(prefixes=(f"Wanted{tag}",))))
        assert len(read) == 2

    def test_system_events_are_excluded_from_all_unless_asked_for(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        start = store.head_position(EventFilter(include_system_events=True))
        store.delete_stream(stream, expected_version=StreamState.ANY)
        assert [e for e in read_after(store, start) if e.is_system] == []
        everything = list(read_after(store, start, filter=EventFilter(include_system_events=True)))
        assert any(e.type == "$metadata" and e.stream == f"$${stream}" for e in everything)

    def test_head_position_is_the_position_of_the_last_append(self, store: EventStore) -> None:
        result = store.append(unique_stream(), new_events(2), expected_version=StreamState.ANY)
        assert store.head_position() == result.position
        tag = uuid.uuid4().hex
        assert store.head_position(EventFilter(prefixes=(f"Never{tag}",))) == 0

    # ------------------------------------------------------------------ soft delete and tombstone

    def test_a_soft_deleted_stream_reads_as_not_found_but_stays_in_all(self, store: EventStore) -> None:
        stream = unique_stream()
        written = store.append(stream, new_events(2), expected_version=StreamState.NO_STREAM)
        store.delete_stream(stream, expected_version=1)
        with pytest.raises(StreamNotFoundError):
            store.read_stream(stream)
        assert store.stream_version(stream) is None
        in_all = [e.revision for e in store.read_all(from_position=written.position) if e.stream == stream]
        assert 1 in in_all

    def test_a_soft_deleted_stream_is_recreated_with_revisions_continuing(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(2), expected_version=StreamState.NO_STREAM)
        store.delete_stream(stream, expected_version=StreamState.ANY)
        result = store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        assert result.revision == 2
        assert [e.revision for e in store.read_stream(stream)] == [2]
        assert store.stream_version(stream) == 2

    def test_a_soft_deleted_stream_is_recreated_by_any(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        store.delete_stream(stream, expected_version=0)
        store.append(stream, new_events(1), expected_version=StreamState.ANY)
        assert [e.revision for e in store.read_stream(stream)] == [1]

    def test_appending_with_stream_exists_to_a_soft_deleted_stream_says_deleted(
        self, store: EventStore
    ) -> None:
        stream = unique_stream()
        store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        store.delete_stream(stream, expected_version=StreamState.ANY)
        with pytest.raises(StreamDeletedError):
            store.append(stream, new_events(1), expected_version=StreamState.STREAM_EXISTS)

    def test_deleting_at_a_stale_version_fails_and_keeps_the_stream(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(3), expected_version=StreamState.NO_STREAM)
        with pytest.raises(WrongExpectedVersionError) as caught:
            store.delete_stream(stream, expected_version=0)
        assert caught.value.actual == 2
        assert store.stream_version(stream) == 2

    def test_deleting_a_missing_stream_says_not_found(self, store: EventStore) -> None:
        with pytest.raises(StreamNotFoundError):
            store.delete_stream(unique_stream(), expected_version=StreamState.ANY)

    def test_a_tombstoned_stream_can_never_be_read_or_written_again(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(2), expected_version=StreamState.NO_STREAM)
        store.tombstone_stream(stream, expected_version=1)
        with pytest.raises(StreamDeletedError) as caught:
            store.read_stream(stream)
        assert caught.value.stream == stream
        with pytest.raises(StreamDeletedError):
            store.stream_version(stream)
        for expected in (StreamState.ANY, StreamState.NO_STREAM, StreamState.STREAM_EXISTS, 1):
            with pytest.raises(StreamDeletedError):
                store.append(stream, new_events(1), expected_version=expected)
        with pytest.raises(StreamDeletedError):
            store.tombstone_stream(stream, expected_version=StreamState.ANY)

    def test_tombstoning_at_a_stale_version_fails(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(2), expected_version=StreamState.NO_STREAM)
        with pytest.raises(WrongExpectedVersionError):
            store.tombstone_stream(stream, expected_version=0)
        assert store.stream_version(stream) == 1

    # ------------------------------------------------------------------ subscriptions

    def test_subscription_catches_up_then_delivers_live_events(self, store: EventStore) -> None:
        start = store.head_position(EventFilter(include_system_events=True))
        stream = unique_stream()
        store.append(stream, new_events(3), expected_version=StreamState.NO_STREAM)
        with store.subscribe(from_position=start) as subscription:
            items = collect(subscription, lambda got: any(isinstance(i, CaughtUp) for i in got))
            assert [e.revision for e in events_of(items, stream)] == [0, 1, 2]
            store.append(stream, new_events(2), expected_version=2)
            live = collect(subscription, lambda got: len(events_of(got, stream)) == 2)
            assert [e.revision for e in events_of(live, stream)] == [3, 4]

    def test_subscription_start_position_is_exclusive(self, store: EventStore) -> None:
        stream = unique_stream()
        first = store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        store.append(stream, new_events(1), expected_version=0)
        with store.subscribe(from_position=first.position) as subscription:
            items = collect(subscription, lambda got: len(events_of(got, stream)) == 1)
            assert events_of(items, stream)[0].revision == 1

    def test_subscription_has_no_gap_and_no_duplicate_across_the_switch_to_live(
        self, store: EventStore
    ) -> None:
        start = store.head_position(EventFilter(include_system_events=True))
        stream = unique_stream()
        store.append(stream, new_events(300), expected_version=StreamState.NO_STREAM)
        total = 600
        writer_done = threading.Event()

        def write() -> None:
            for _ in range(30):
                store.append(stream, new_events(10), expected_version=StreamState.ANY)
            writer_done.set()

        with store.subscribe(from_position=start) as subscription:
            writer = threading.Thread(target=write)
            writer.start()
            items = collect(subscription, lambda got: len(events_of(got, stream)) >= total)
            writer.join()
        revisions = [e.revision for e in events_of(items, stream)]
        assert revisions == list(range(total))
        positions = [i.position for i in items if isinstance(i, RecordedEvent)]
        assert positions == sorted(set(positions))

    def test_filtered_subscription_emits_checkpoints_so_idle_consumers_advance(
        self, store: EventStore
    ) -> None:
        start = store.head_position(EventFilter(include_system_events=True))
        stream = unique_stream()
        store.append(stream, new_events(120), expected_version=StreamState.NO_STREAM)
        nothing = EventFilter(prefixes=(f"Never{uuid.uuid4().hex}",))
        with store.subscribe(from_position=start, filter=nothing, checkpoint_interval=32) as subscription:
            items = collect(subscription, lambda got: any(isinstance(i, CaughtUp) for i in got))
            checkpoints = [i.position for i in items if isinstance(i, Checkpoint)]
            assert checkpoints, "a filtered catch-up must emit checkpoints"
            head = store.head_position(EventFilter(include_system_events=True))
            assert checkpoints == sorted(checkpoints)
            assert start < checkpoints[-1] <= head
            last = store.append(stream, new_events(200), expected_version=StreamState.ANY)
            live = collect(
                subscription,
                lambda got: any(isinstance(i, Checkpoint) and i.position > checkpoints[-1] for i in got),
            )
            assert all(i.position <= last.position for i in live if isinstance(i, Checkpoint))
            assert events_of(live) == []

    def test_checkpoints_never_pass_an_undelivered_matching_event(self, store: EventStore) -> None:
        start = store.head_position(EventFilter(include_system_events=True))
        tag = uuid.uuid4().hex[:8]
        stream = unique_stream()
        events = new_events(40, "Noise") + new_events(1, f"Rare{tag}") + new_events(40, "Noise")
        store.append(stream, events, expected_version=StreamState.NO_STREAM)
        rare = EventFilter(prefixes=(f"Rare{tag}",))
        with store.subscribe(from_position=start, filter=rare, checkpoint_interval=10) as subscription:
            items = collect(subscription, lambda got: any(isinstance(i, CaughtUp) for i in got))
        (event,) = events_of(items)
        delivered_at = items.index(event)
        assert all(i.position < event.position for i in items[:delivered_at] if isinstance(i, Checkpoint))

    def test_stopping_a_subscription_from_another_thread_ends_a_blocked_iteration(
        self, store: EventStore
    ) -> None:
        subscription = store.subscribe(
            from_position=store.head_position(EventFilter(include_system_events=True))
        )
        seen: list[SubscriptionItem] = []
        reader = threading.Thread(target=lambda: seen.extend(subscription))
        reader.start()
        time.sleep(0.2)
        subscription.stop()
        reader.join(timeout=10)
        assert not reader.is_alive()
        assert subscription.stopped
        assert all(not isinstance(i, RecordedEvent) for i in seen)

    def test_a_subscriber_in_another_process_receives_new_events(self, store_factory: StoreFactory) -> None:
        if not self.SUPPORTS_PROCESSES:
            pytest.skip("this store lives in one process")
        store = store_factory()
        stream = unique_stream()
        context = multiprocessing.get_context("spawn")
        ready = context.Event()
        child = context.Process(target=_append_later_in_child, args=(store_factory, stream, 5, ready))
        try:
            with store.subscribe(
                from_position=store.head_position(EventFilter(include_system_events=True))
            ) as sub:
                collect(sub, lambda got: any(isinstance(i, CaughtUp) for i in got))
                child.start()
                ready.set()
                items = collect(sub, lambda got: len(events_of(got, stream)) == 5)
            assert [e.revision for e in events_of(items, stream)] == [0, 1, 2, 3, 4]
        finally:
            child.join(timeout=30)
            store.close()
        assert child.exitcode == 0

    def test_large_catch_up_keeps_memory_flat(self, store: EventStore) -> None:
        count = self.LARGE_CATCH_UP
        start = store.head_position(EventFilter(include_system_events=True))
        stream = unique_stream()
        payload = "x" * 200
        batch = 1000
        for _ in range(0, count, batch):
            store.append(stream, new_events(batch, payload=payload), expected_version=StreamState.ANY)
        stored_bytes = count * (len(payload) + 20)
        gc.collect()
        tracemalloc.start()
        try:
            seen = 0
            with store.subscribe(from_position=start) as subscription:
                for item in subscription:
                    if isinstance(item, RecordedEvent) and item.stream == stream:
                        seen += 1
                    if isinstance(item, CaughtUp):
                        break
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert seen == count
        assert peak < stored_bytes / 4, f"catch-up of {count} events peaked at {peak} bytes"

    # ------------------------------------------------------------------ concurrency

    def test_threads_appending_at_the_same_version_exactly_one_wins(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        barrier = threading.Barrier(8)

        def attempt(_: int) -> str:
            barrier.wait()
            try:
                store.append(stream, new_events(1, "Raced"), expected_version=0)
            except WrongExpectedVersionError as exc:
                return f"lost:{exc.stream}:{exc.expected}:{exc.actual}"
            return "won"

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(attempt, range(8)))
        assert outcomes.count("won") == 1
        assert sorted(outcomes)[:7] == [f"lost:{stream}:0:1"] * 7
        assert store.stream_version(stream) == 1

    def test_processes_appending_at_the_same_version_exactly_one_wins(
        self, store: EventStore, store_factory: StoreFactory
    ) -> None:
        if not self.SUPPORTS_PROCESSES:
            pytest.skip("this store lives in one process")
        stream = unique_stream()
        store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        context = multiprocessing.get_context("spawn")
        barrier = context.Barrier(4)
        results = context.Queue()
        children = [
            context.Process(target=_append_in_child, args=(store_factory, stream, 0, barrier, results))
            for _ in range(4)
        ]
        for child in children:
            child.start()
        outcomes = [results.get(timeout=60) for _ in children]
        for child in children:
            child.join(timeout=30)
        assert outcomes.count("won") == 1, outcomes
        assert sorted(outcomes)[:3] == [f"lost:{stream}:0:1"] * 3
        assert store.stream_version(stream) == 1

    # ------------------------------------------------------------------ bad input

    @pytest.mark.parametrize("name", ["", "x" * 1001, "bad\nname", "tab\tname", "nul\x00name"])
    def test_invalid_stream_names_are_refused_and_nothing_is_written(
        self, store: EventStore, name: str
    ) -> None:
        head = store.head_position(EventFilter(include_system_events=True))
        with pytest.raises(InvalidInputError) as caught:
            store.append(name, new_events(1), expected_version=StreamState.ANY)
        assert caught.value.field == "stream name"
        assert caught.value.value == name
        with pytest.raises(InvalidInputError):
            store.read_stream(name)
        assert store.head_position(EventFilter(include_system_events=True)) == head

    def test_negative_revisions_and_positions_are_refused(self, store: EventStore) -> None:
        stream = unique_stream()
        with pytest.raises(InvalidInputError, match="-1"):
            store.append(stream, new_events(1), expected_version=-1)
        store.append(stream, new_events(1), expected_version=StreamState.ANY)
        with pytest.raises(InvalidInputError, match="from_revision"):
            store.read_stream(stream, from_revision=-3)
        with pytest.raises(InvalidInputError, match="from_position"):
            store.read_all(from_position=-1)
        with pytest.raises(InvalidInputError, match="limit"):
            store.read_stream(stream, limit=-1)
        with pytest.raises(InvalidInputError):
            store.append(stream, new_events(1), expected_version="0")  # type: ignore[arg-type]
        assert store.stream_version(stream) == 0

    @pytest.mark.parametrize("name", ["Account-\ud800", "\udfffAccount-1", "Account-a\udc80b"])
    def test_stream_names_with_a_lone_surrogate_are_refused_and_nothing_is_written(
        self, store: EventStore, name: str
    ) -> None:
        head = store.head_position(EventFilter(include_system_events=True))
        for call in (
            lambda: store.append(name, new_events(1), expected_version=StreamState.ANY),
            lambda: store.read_stream(name),
            lambda: store.stream_version(name),
            lambda: store.delete_stream(name, expected_version=StreamState.ANY),
            lambda: store.tombstone_stream(name, expected_version=StreamState.ANY),
        ):
            with pytest.raises(InvalidInputError, match="surrogate") as caught:
                call()
            assert (caught.value.field, caught.value.value) == ("stream name", name)
        assert store.head_position(EventFilter(include_system_events=True)) == head

    def test_event_types_and_content_types_with_a_lone_surrogate_are_refused(self, store: EventStore) -> None:
        with pytest.raises(InvalidInputError, match="surrogate") as caught:
            NewEvent("Opened\ud800", b"{}")
        assert caught.value.field == "event type"
        with pytest.raises(InvalidInputError, match="surrogate") as caught:
            NewEvent("Opened", b"{}", content_type="application/\udcffjson")
        assert caught.value.field == "content type"
        # Valid text outside the BMP (a surrogate *pair* in UTF-16, one code point here) is fine.
        stream = unique_stream("Emoji\U0001f600")
        store.append(stream, [NewEvent("Opened\U0001f600", b"{}")], expected_version=StreamState.NO_STREAM)
        assert [(e.stream, e.type) for e in store.read_stream(stream)] == [(stream, "Opened\U0001f600")]

    def test_revisions_of_2_to_the_63_and_positions_of_2_to_the_64_are_refused(
        self, store: EventStore
    ) -> None:
        stream = unique_stream()
        store.append(stream, new_events(2), expected_version=StreamState.NO_STREAM)
        too_big: list[tuple[str, Callable[[], object]]] = [
            ("expected version", lambda: store.append(stream, new_events(1), expected_version=2**63)),
            ("expected version", lambda: store.delete_stream(stream, expected_version=2**64)),
            ("from_revision", lambda: store.read_stream(stream, from_revision=2**63)),
            ("from_revision", lambda: store.read_stream(stream, from_revision=10**30, backwards=True)),
            ("from_position", lambda: store.read_all(from_position=2**64)),
            ("from_position", lambda: store.subscribe(from_position=2**64)),
        ]
        for field, call in too_big:
            with pytest.raises(InvalidInputError, match=r"2\*\*6[34]") as caught:
                call()
            assert caught.value.field == field, (field, caught.value)
        assert [e.revision for e in store.read_stream(stream)] == [0, 1]

    def test_the_largest_revisions_and_positions_are_accepted(self, store: EventStore) -> None:
        stream = unique_stream()
        written = store.append(stream, new_events(2), expected_version=StreamState.NO_STREAM)
        with pytest.raises(WrongExpectedVersionError):
            store.append(stream, new_events(1), expected_version=2**63 - 1)
        with pytest.raises(WrongExpectedVersionError):
            store.append(stream, new_events(3), expected_version=2**63 - 2)
        assert list(store.read_stream(stream, from_revision=2**63 - 1)) == []
        backwards = store.read_stream(stream, from_revision=2**63 - 1, backwards=True)
        assert [e.revision for e in backwards] == [1, 0]
        for position in (2**63 - 1, 2**63, 2**64 - 1):
            assert list(store.read_all(from_position=position, limit=1)) == []
        last = list(store.read_all(from_position=2**63, backwards=True, limit=1))
        assert last
        assert last[0].position >= written.position
        assert [e.revision for e in store.read_stream(stream)] == [0, 1]

    def test_events_must_have_uuid_ids_and_bytes_data(self) -> None:
        with pytest.raises(InvalidInputError, match="event id"):
            NewEvent("T", b"{}", id="not-a-uuid")  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="event data"):
            NewEvent("T", '{"text": "not bytes"}')  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="event metadata"):
            NewEvent("T", b"{}", metadata={"a": 1})  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="event type"):
            NewEvent("", b"{}")

    def test_duplicate_ids_in_one_append_are_refused(self, store: EventStore) -> None:
        stream = unique_stream()
        event = NewEvent("T", b"{}")
        with pytest.raises(InvalidInputError, match="distinct"):
            store.append(stream, [event, event], expected_version=StreamState.ANY)
        assert store.stream_version(stream) is None

    def test_a_single_event_instead_of_a_sequence_is_refused(self, store: EventStore) -> None:
        with pytest.raises(InvalidInputError, match="sequence"):
            store.append(unique_stream(), NewEvent("T", b"{}"), expected_version=StreamState.ANY)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ bad input, checked by the port

    def test_subscribe_rejects_a_checkpoint_interval_below_one(self, store: EventStore) -> None:
        for interval in (0, -1):
            with pytest.raises(InvalidInputError, match="at least 1") as caught:
                store.subscribe(checkpoint_interval=interval)
            assert (caught.value.field, caught.value.value) == ("checkpoint_interval", interval)

    def test_subscribe_rejects_a_checkpoint_interval_given_as_a_string(self, store: EventStore) -> None:
        with pytest.raises(InvalidInputError, match="must be an integer, not str") as caught:
            store.subscribe(checkpoint_interval="10")  # type: ignore[arg-type]
        assert caught.value.field == "checkpoint_interval"

    @pytest.mark.parametrize("interval", [True, False, 1.5, None])
    def test_subscribe_rejects_a_checkpoint_interval_that_is_a_bool_or_not_an_int(
        self, store: EventStore, interval: object
    ) -> None:
        with pytest.raises(InvalidInputError) as caught:
            store.subscribe(checkpoint_interval=interval)  # type: ignore[arg-type]
        assert caught.value.field == "checkpoint_interval"

    def test_subscribe_rejects_a_bad_start_position(self, store: EventStore) -> None:
        for position in (-1, "5", True):
            with pytest.raises(InvalidInputError) as caught:
                store.subscribe(from_position=position)  # type: ignore[arg-type]
            assert caught.value.field == "from_position"

    def test_a_filter_must_be_an_event_filter(self, store: EventStore) -> None:
        not_a_filter: Any = "Order-"
        with pytest.raises(InvalidInputError, match="EventFilter") as caught:
            store.read_all(filter=not_a_filter)
        assert caught.value.field == "filter"
        with pytest.raises(InvalidInputError, match="EventFilter"):
            store.subscribe(filter=not_a_filter)
        with pytest.raises(InvalidInputError, match="EventFilter"):
            store.head_position(not_a_filter)

    def test_backwards_must_be_a_bool(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        for backwards in ("yes", 1, None):
            with pytest.raises(InvalidInputError) as caught:
                store.read_stream(stream, backwards=backwards)  # type: ignore[arg-type]
            assert caught.value.field == "backwards"
            with pytest.raises(InvalidInputError):
                store.read_all(backwards=backwards)  # type: ignore[arg-type]

    def test_wrong_typed_revisions_positions_and_limits_are_refused(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(2), expected_version=StreamState.NO_STREAM)
        bad: list[tuple[str, Callable[[], object]]] = [
            ("from_revision", lambda: store.read_stream(stream, from_revision="0")),  # type: ignore[arg-type]
            ("from_revision", lambda: store.read_stream(stream, from_revision=True)),
            ("limit", lambda: store.read_stream(stream, limit="3")),  # type: ignore[arg-type]
            ("limit", lambda: store.read_stream(stream, limit=True)),
            ("from_position", lambda: store.read_all(from_position="0")),  # type: ignore[arg-type]
            ("from_position", lambda: store.read_all(from_position=1.0)),  # type: ignore[arg-type]
            ("limit", lambda: store.read_all(limit=-1)),
            ("limit", lambda: store.read_all(limit=2.0)),  # type: ignore[arg-type]
        ]
        for field, call in bad:
            with pytest.raises(InvalidInputError) as caught:
                call()
            assert caught.value.field == field, (field, caught.value)

    def test_delete_and_tombstone_check_their_arguments_and_change_nothing(self, store: EventStore) -> None:
        stream = unique_stream()
        store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
        for delete in (store.delete_stream, store.tombstone_stream):
            with pytest.raises(InvalidInputError) as caught:
                delete("", expected_version=StreamState.ANY)
            assert caught.value.field == "stream name"
            with pytest.raises(InvalidInputError) as caught:
                delete(stream, expected_version=-1)
            assert caught.value.field == "expected version"
            with pytest.raises(InvalidInputError):
                delete(stream, expected_version="0")  # type: ignore[arg-type]
            with pytest.raises(InvalidInputError):
                delete(stream, expected_version=True)
        assert store.stream_version(stream) == 0
        with pytest.raises(InvalidInputError):
            store.stream_version("bad\nname")
