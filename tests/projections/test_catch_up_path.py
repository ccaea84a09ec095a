"""The catch-up path's shortcuts keep the meaning of the plain code they replace.

The SQLite subscription decides its filter once per event type and reuses the recorded time of
the row before; the runner applies a batch through :meth:`Projection.applier`; merged changes
of plain scalars are normalised and checked in one loop. Each is checked here against what the
general code gives.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from eventsourcing_cqrs.errors import InvalidInputError
from eventsourcing_cqrs.event_store import NewEvent, StreamState
from eventsourcing_cqrs.event_store.port import CaughtUp, Checkpoint, EventFilter, RecordedEvent
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from projections import EventContext, Projection, ProjectionRunner
from projections.read_model_store import InMemoryReadModelStore
from projections.read_model_store._documents import decode_document, encode_document, merge_changes
from projections.read_model_store.port import ReadModelWriter


def _catch_up(store: SQLiteEventStore, flt: EventFilter, interval: int = 1000) -> list[Any]:
    items: list[Any] = []
    with store.subscribe(filter=flt, checkpoint_interval=interval) as subscription:
        for item in subscription:
            items.append(item)
            if isinstance(item, CaughtUp):
                return items
    raise AssertionError("the subscription ended before catching up")


def test_a_catch_up_whose_last_events_are_filtered_out_ends_with_a_checkpoint_at_the_last_one(
    tmp_path: Path,
) -> None:
    store = SQLiteEventStore(tmp_path / "events.db", durable=False)
    try:
        store.append(
            "S-1", [NewEvent("Kept", b"{}"), NewEvent("Noise", b"{}")], expected_version=StreamState.ANY
        )
        last = store.append("S-1", [NewEvent("Noise", b"{}")], expected_version=StreamState.ANY)
        items = _catch_up(store, EventFilter.for_event_types(["Kept"]))
    finally:
        store.close()
    assert [type(item) for item in items] == [RecordedEvent, Checkpoint, CaughtUp]
    assert items[1].position == last.position == items[2].position


def test_a_catch_up_that_delivered_the_last_event_adds_no_checkpoint(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db", durable=False)
    try:
        last = store.append(
            "S-1", [NewEvent("Kept", b"{}") for _ in range(3)], expected_version=StreamState.ANY
        )
        items = _catch_up(store, EventFilter.for_event_types(["Kept"]))
    finally:
        store.close()
    assert [type(item) for item in items] == [RecordedEvent] * 3 + [CaughtUp]
    assert items[-1].position == last.position


def test_an_event_type_filter_is_decided_per_type_system_events_excluded(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db", durable=False)
    try:
        types = ["A", "B", "$sys", "A", "AB", "$sys", "B"]
        store.append("S-1", [NewEvent(name, b"{}") for name in types], expected_version=StreamState.ANY)
        got = [
            item.type
            for item in _catch_up(store, EventFilter(prefixes=("A", "$")))
            if isinstance(item, RecordedEvent)
        ]
        everything = [
            item.type
            for item in _catch_up(store, EventFilter(include_system_events=True))
            if isinstance(item, RecordedEvent)
        ]
    finally:
        store.close()
    assert got == ["A", "A", "AB"]
    assert everything == types


def test_events_of_different_appends_keep_their_own_recorded_times(tmp_path: Path) -> None:
    store = SQLiteEventStore(tmp_path / "events.db", durable=False)
    try:
        for _ in range(3):
            store.append(
                "S-1", [NewEvent("E", b"{}"), NewEvent("E", b"{}")], expected_version=StreamState.ANY
            )
            time.sleep(0.002)
        subscribed = [i for i in _catch_up(store, EventFilter()) if isinstance(i, RecordedEvent)]
        read = list(store.read_stream("S-1"))
    finally:
        store.close()
    times = [event.recorded_at for event in subscribed]
    assert times == [event.recorded_at for event in read]
    assert times[0] == times[1] < times[2] == times[3] < times[4] == times[5]


class _Counting(Projection):
    name = "counting"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, str]] = []
        self.on_recorded("E", lambda event, context: self.seen.append((event.position, "handler")))


class _Overriding(_Counting):
    name = "overriding"

    def apply(self, recorded: RecordedEvent, uow: ReadModelWriter) -> bool:
        self.seen.append((recorded.position, "override"))
        return super().apply(recorded, uow)


@pytest.mark.parametrize(
    ("projection_class", "calls"), [(_Counting, ["handler"]), (_Overriding, ["override", "handler"])]
)
def test_the_runner_applies_through_apply_or_its_override(
    tmp_path: Path, projection_class: type[_Counting], calls: list[str]
) -> None:
    events = SQLiteEventStore(tmp_path / "events.db", durable=False)
    projection = projection_class()
    try:
        events.append("S-1", [NewEvent("E", b"{}") for _ in range(2)], expected_version=StreamState.ANY)
        ProjectionRunner(projection, events, InMemoryReadModelStore()).run(until_caught_up=True)
    finally:
        events.close()
    assert [what for _, what in projection.seen] == calls * 2


def test_an_applier_returns_false_for_a_type_without_handler_as_apply_does() -> None:
    projection = _Counting()
    writer: Any = object()  # never used: no handler runs
    unhandled = _recorded("Other")
    assert projection.applier(writer)(unhandled) is False
    assert projection.apply(unhandled, writer) is False
    assert projection.seen == []


def _recorded(event_type: str) -> RecordedEvent:
    return RecordedEvent(uuid.uuid4(), event_type, b"{}", b"", "S-1", 0, 1, datetime.now(UTC))


_CURRENT = {"owner": "ada", "balance": "0", "tags": ["x"], "closed": False}

SCALAR_CHANGES: list[dict[str, Any]] = [
    {"balance": Decimal("12.50")},
    {"balance": Decimal("-1E+3"), "closed": True, "count": 3, "note": None},
    {"owner": "Ada Lovelace \u00e9\u4e2d\U0001f600"},
    {"\u00e9": 1},
    {"tab\tand\u0001": "\u0001\x7f"},
    {"balance": Decimal("NaN")},
    {"ratio": 0.5},
]


@pytest.mark.parametrize("changes", SCALAR_CHANGES)
def test_merged_scalar_changes_equal_the_json_round_trip_and_leave_the_current_document(
    changes: dict[str, Any],
) -> None:
    current = decode_document(encode_document("t", "k", _CURRENT))
    merged = merge_changes("t", "k", current, changes)
    assert merged == decode_document(encode_document("t", "k", {**current, **changes}))
    assert current == _CURRENT
    assert merged is not current


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({"owner": "Ada\x00Lovelace"}, "'owner'"),
        ({"owner": "\ud800"}, "'owner'"),
        ({"balance": Decimal(1), "bad\x00name": 1}, "'bad\\x00name'"),
        ({"\udfff": 1}, "'\\udfff'"),
    ],
)
def test_text_no_store_can_hold_is_refused_among_scalar_changes(changes: dict[str, Any], path: str) -> None:
    current = {"owner": "ada"}
    with pytest.raises(InvalidInputError) as raised:
        merge_changes("accounts", "a1", current, changes)
    assert f"field {path}" in str(raised.value)
    assert "'accounts'" in str(raised.value)
    assert current == {"owner": "ada"}


def test_an_event_context_is_what_a_handler_gets_through_the_applier() -> None:
    contexts: list[EventContext] = []

    class Capturing(Projection):
        name = "capturing"

        def __init__(self) -> None:
            super().__init__()
            self.on_recorded("E", lambda event, context: contexts.append(context))

    writer: Any = object()
    first, second = _recorded("E"), _recorded("E")
    apply = Capturing().applier(writer)
    assert apply(first) is True
    assert apply(second) is True
    assert [context.recorded for context in contexts] == [first, second]
    assert all(context.uow is writer for context in contexts)
