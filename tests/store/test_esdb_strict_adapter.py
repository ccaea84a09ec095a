"""The EventStoreDB adapter against the strict test server, where a real 24.10 server is stricter
than the lenient one: each test here fails on an adapter that is not hardened against it.

1. ``$all`` is read only from an event's position: the framework never asks for another
   (``read_after`` instead of ``position + 1``), and a user's bad position is a clear
   :class:`InvalidInputError`, not ``UNKNOWN``.
2. A filtered catch-up that delivered nothing ends with a checkpoint at ``Position.End``: it is
   never forwarded, so a projection that stored it would not skip every later event.
3. ``ANY`` idempotency is a bounded cache lost at restart: snapshots and redelivered commands
   stay effectively once across a restart.
4. Filters are .NET regexes: the port's Python spelling of named groups still works.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from escqrs.examples.bank import handlers
from escqrs.examples.bank.commands import Deposit, OpenAccount
from escqrs.examples.bank.events import AccountOpened, MoneyDeposited, registry
from escqrs.examples.bank.queries import AccountSummaries, GetAccount
from eventsourcing_cqrs.bus import CommandBus
from eventsourcing_cqrs.errors import InvalidInputError
from eventsourcing_cqrs.event_store import read_after
from eventsourcing_cqrs.event_store.esdb import EsdbEventStore
from eventsourcing_cqrs.event_store.port import (
    CaughtUp,
    Checkpoint,
    EventFilter,
    NewEvent,
    RecordedEvent,
    StreamState,
    SubscriptionItem,
)
from eventsourcing_cqrs.repository import SNAPSHOT_EVENT_TYPE
from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer
from eventsourcing_cqrs.testing.given import HandlerScenario
from projections.read_model_store.sqlite import SQLiteReadModelStore
from projections.runner import ProjectionRunner
from projections.testing.contracts import Tally

#: EventStoreDB's log positions are below 2**63; Position.End is 2**64 - 1.
LAST_LOG_POSITION = 2**63 - 1


@pytest.fixture(scope="module")
def server() -> Iterator[EsdbTestServer]:
    with EsdbTestServer(strict=True) as running:
        yield running


@pytest.fixture
def store(server: EsdbTestServer) -> Iterator[EsdbEventStore]:
    with EsdbEventStore(server.uri) as opened:
        yield opened


def _event(event_type: str, n: int = 0) -> NewEvent:
    return NewEvent(event_type, json.dumps({"n": n}).encode(), b"{}")


def _append(store: EsdbEventStore, stream: str, event_type: str, count: int) -> list[int]:
    positions = []
    for n in range(count):
        expected = n - 1 if n else StreamState.NO_STREAM
        positions.append(store.append(stream, [_event(event_type, n)], expected_version=expected).position)
    return positions


def _next_items(subscription: Iterator[SubscriptionItem], until: type) -> list[SubscriptionItem]:
    items: list[SubscriptionItem] = []
    for item in subscription:
        items.append(item)
        if isinstance(item, until):
            return items
    return items


# ---------------------------------------------------------------------- 1. positions


def test_reading_all_from_a_position_no_event_holds_is_refused_clearly(store: EsdbEventStore) -> None:
    # Between two events: past the head, a real server reads nothing rather than refusing.
    position, _ = _append(store, f"strict-{uuid.uuid4().hex}", "StrictPositioned", 2)

    with pytest.raises(InvalidInputError) as raised:
        list(store.read_all(from_position=position + 1))

    assert raised.value.field == "from_position"
    assert raised.value.value == position + 1
    assert "commit position of an event" in str(raised.value)
    assert next(store.read_all(from_position=position)).position == position
    assert next(store.read_all(from_position=0)).position > 0


def test_subscribing_from_a_position_no_event_holds_fails_clearly(store: EsdbEventStore) -> None:
    position, _ = _append(store, f"strict-{uuid.uuid4().hex}", "StrictSubscribed", 2)

    def drain() -> None:
        with store.subscribe(from_position=position + 1) as subscription:
            while subscription.poll(5.0) is not None:
                pass

    with pytest.raises(InvalidInputError) as raised:
        drain()

    assert raised.value.field == "from_position"


def test_a_subscription_from_beyond_the_log_delivers_nothing_rather_than_everything(
    store: EsdbEventStore,
) -> None:
    # A 24.10 server reads a position past the signed 64-bit range as the start of $all.
    _append(store, f"strict-{uuid.uuid4().hex}", "StrictBeyond", 1)

    with store.subscribe(from_position=LAST_LOG_POSITION + 1) as subscription:
        items = _next_items(subscription, CaughtUp)
        _append(store, f"strict-{uuid.uuid4().hex}", "StrictBeyond", 1)
        later = subscription.poll(0.5)

    assert [type(item) for item in items] == [CaughtUp]
    assert later is None


def test_read_after_reads_after_a_position_without_asking_for_one_no_event_holds(
    store: EsdbEventStore,
) -> None:
    event_type = f"StrictAfter{uuid.uuid4().hex[:8]}"
    positions = _append(store, f"strict-{uuid.uuid4().hex}", event_type, 3)
    only_these = EventFilter.for_event_types([event_type])

    after_first = [event.position for event in read_after(store, positions[0], filter=only_these)]
    one = [event.position for event in read_after(store, positions[0], filter=only_these, limit=1)]

    assert after_first == positions[1:]
    assert one == positions[1:2]


def test_the_bank_read_model_catches_up_incrementally_on_the_strict_server(store: EsdbEventStore) -> None:
    bus = CommandBus()
    handlers.register(bus, handlers.account_repository(store))
    summaries = AccountSummaries()
    account_id = uuid.uuid4().hex
    bus.dispatch(OpenAccount(account_id=account_id, owner="Ann"))
    summaries.catch_up(store)
    bus.dispatch(Deposit(account_id=account_id, amount=Decimal(7)))

    assert summaries.catch_up(store) >= 1
    summary = summaries.get(GetAccount(account_id=account_id))
    assert summary is not None
    assert summary.balance == Decimal(7)


def test_a_handler_scenario_reports_the_events_of_its_command_on_the_strict_server(
    store: EsdbEventStore,
) -> None:
    account_id = uuid.uuid4().hex
    scenario = HandlerScenario(
        registry,
        wire=lambda events, bus: handlers.register(bus, handlers.account_repository(events)),
        store=store,
    )
    scenario.given(f"Account-{account_id}", AccountOpened(account_id=account_id, owner="Ann"))

    scenario.when(Deposit(account_id=account_id, amount=Decimal(5))).then(
        MoneyDeposited(account_id=account_id, amount=Decimal(5), balance=Decimal(5))
    )


# ------------------------------------------------------------ 2. Position.End checkpoint


def test_a_filtered_catch_up_that_delivered_nothing_forwards_no_checkpoint_past_the_log(
    store: EsdbEventStore,
) -> None:
    event_type = f"StrictNothingYet{uuid.uuid4().hex[:8]}"

    with store.subscribe(filter=EventFilter.for_event_types([event_type])) as subscription:
        caught_up = _next_items(subscription, CaughtUp)
        (position,) = _append(store, f"strict-{uuid.uuid4().hex}", event_type, 1)
        later = _next_items(subscription, RecordedEvent)

    checkpoints = [item.position for item in caught_up if isinstance(item, Checkpoint)]
    assert all(checkpoint <= LAST_LOG_POSITION for checkpoint in checkpoints), checkpoints
    assert [item.position for item in later if isinstance(item, RecordedEvent)] == [position]


def test_a_projection_that_matched_nothing_yet_applies_the_events_written_later(
    store: EsdbEventStore, tmp_path: Path
) -> None:
    event_type = f"StrictLater{uuid.uuid4().hex[:8]}"
    stream = f"strict-{uuid.uuid4().hex}"
    read_models = SQLiteReadModelStore(tmp_path / "views.db", durable=False)
    new_runner = functools.partial(ProjectionRunner, Tally(event_type), store, read_models, batch_delay=0.01)
    new_runner().run(until_caught_up=True)
    live = read_models.describe("tally").live
    stored = None if live is None else live.checkpoint

    _append(store, stream, event_type, 3)
    new_runner().run(until_caught_up=True)

    with read_models.read("tally") as view:
        row = view.table("streams").get(stream)
    read_models.close()
    assert stored is None or stored <= LAST_LOG_POSITION
    assert row is not None
    assert row["count"] == 3


# -------------------------------------------------------- 3. idempotency across restarts


def test_a_snapshot_taken_again_after_a_restart_is_not_written_twice(tmp_path: Path) -> None:
    # A server of its own: the restart must not disturb the other tests' connections.
    with EsdbTestServer(strict=True) as server, EsdbEventStore(server.uri) as store:
        accounts = handlers.account_repository(store, snapshot_every=2)
        bus = CommandBus()
        handlers.register(bus, accounts)
        account_id = uuid.uuid4().hex
        bus.dispatch(OpenAccount(account_id=account_id, owner="Ann"))
        bus.dispatch(Deposit(account_id=account_id, amount=Decimal(1)))
        server.stop()
        server.start()  # the data stays, EventStoreDB's cache of recent event ids does not

        accounts.take_snapshot(account_id)
        snapshots = list(store.read_stream(accounts.snapshot_stream_name(account_id)))

        assert [recorded.type for recorded in snapshots] == [SNAPSHOT_EVENT_TYPE]
        assert accounts.load(account_id).balance == Decimal(1)


def test_a_command_redelivered_after_a_restart_appends_nothing() -> None:
    with EsdbTestServer(strict=True) as server, EsdbEventStore(server.uri) as store:
        bus = CommandBus()
        handlers.register(bus, handlers.account_repository(store))
        account_id = uuid.uuid4().hex
        opened = OpenAccount(account_id=account_id, owner="Ann")
        deposit = Deposit(account_id=account_id, amount=Decimal(5))
        bus.dispatch(opened)
        first = bus.dispatch(deposit)
        server.stop()
        server.start()

        again = [bus.dispatch(opened), bus.dispatch(deposit)]

        assert [result.duplicate for result in again] == [True, True]
        assert again[1].version == first.version
        assert len(list(store.read_stream(f"Account-{account_id}"))) == 2


# ------------------------------------------------------------------------ 4. .NET regex


def test_a_filter_with_python_named_groups_works_on_eventstoredb(store: EsdbEventStore) -> None:
    tag = uuid.uuid4().hex[:8]
    stream = f"strict-{uuid.uuid4().hex}"
    store.append(
        stream,
        [_event(f"{tag}Opened"), _event(f"{tag}Ignored"), _event(f"{tag}Closed")],
        expected_version=StreamState.NO_STREAM,
    )
    named = EventFilter(regex=f"^{tag}(?P<kind>Opened|Closed)$")
    backreference = EventFilter(by="stream_name", regex=r"^strict-(?P<c>[0-9a-f])(?P=c)?")

    types = [event.type for event in store.read_all(filter=named)]
    by_stream = {event.stream for event in store.read_all(filter=backreference)}

    assert types == [f"{tag}Opened", f"{tag}Closed"]
    assert stream in by_stream
