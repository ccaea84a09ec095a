"""Wrong-typed arguments to the public write-side API raise errors of the tree, never bare builtins.

Each case calls a public constructor or method the way a user could get it wrong, and expects an
:class:`InvalidInputError` (a ``CQRSError`` and a ``ValueError``) naming the argument, with a
message that is a full sentence.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from escqrs.examples.bank.account import Account
from escqrs.examples.bank.commands import OpenAccount
from escqrs.examples.bank.events import AccountOpened, registry
from escqrs.examples.bank.queries import GetAccount
from eventsourcing_cqrs import AggregateSpec, AuditTrail
from eventsourcing_cqrs.bus import CommandBus, QueryBus, RetryPolicy
from eventsourcing_cqrs.errors import CQRSError, InvalidInputError
from eventsourcing_cqrs.event_store import EventFilter, InMemoryEventStore, NewEvent, StreamName, StreamState
from eventsourcing_cqrs.event_store.port import RecordedEvent
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from eventsourcing_cqrs.messages import Metadata
from eventsourcing_cqrs.repository import Repository
from eventsourcing_cqrs.serialization import EventRegistry

WRONG: Any = 5  # one wrong value, typed Any so that each call below type-checks


def _refused(call: Callable[[], object], field: str) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as caught:
        call()
    error = caught.value
    assert isinstance(error, CQRSError)
    assert error.field == field, error
    message = str(error)
    assert message[0].isupper(), message
    assert message.endswith("."), message
    return error


def _recorded() -> RecordedEvent:
    store = InMemoryEventStore()
    event = registry.encode(AccountOpened(account_id="a", owner="Ann"))
    store.append("Account-a", [event], expected_version=StreamState.NO_STREAM)
    (recorded,) = store.read_stream("Account-a")
    return recorded


# -- Repository ------------------------------------------------------------------------------------


def test_a_repository_needs_an_event_store() -> None:
    _refused(lambda: Repository(WRONG, Account), "event store")
    _refused(lambda: Repository("memory:", Account), "event store")  # type: ignore[arg-type]


def test_a_repository_needs_an_aggregate_class() -> None:
    store = InMemoryEventStore()
    _refused(lambda: Repository(store, WRONG), "aggregate type")
    _refused(lambda: Repository(store, object), "aggregate type")  # type: ignore[type-var]


def test_a_repository_registry_must_be_an_event_registry() -> None:
    error = _refused(lambda: Repository(InMemoryEventStore(), Account, registry=WRONG), "registry")
    assert "EventRegistry" in str(error)


def test_a_repository_refuses_wrong_typed_ids_and_aggregates() -> None:
    accounts = Repository(InMemoryEventStore(), Account)
    _refused(lambda: accounts.load(WRONG), "aggregate id")
    _refused(lambda: accounts.save(WRONG), "aggregate")
    _refused(lambda: accounts.load("a", at_version="3"), "at_version")  # type: ignore[arg-type]
    _refused(lambda: accounts.load("a", at_time=datetime(2024, 1, 1)), "at_time")
    _refused(lambda: accounts.load("a", at_time=WRONG), "at_time")
    assert not accounts.exists("a")  # still usable, and nothing was written


# -- CommandBus, QueryBus, RetryPolicy ----------------------------------------------------------------


def test_dispatching_something_that_is_not_a_command_is_refused() -> None:
    bus = CommandBus()
    _refused(lambda: bus.dispatch(WRONG), "command")
    _refused(lambda: bus.dispatch(GetAccount(account_id="a")), "command")  # type: ignore[arg-type]


def test_dispatch_refuses_a_wrong_actor_cause_or_correlation_id() -> None:
    bus = CommandBus()
    bus.register(OpenAccount, lambda command: None)
    command = OpenAccount(account_id="a", owner="Ann")
    _refused(lambda: bus.dispatch(command, actor=WRONG), "actor")
    _refused(lambda: bus.dispatch(command, caused_by=WRONG), "caused_by")
    _refused(lambda: bus.dispatch(command, correlation_id=""), "correlation id")
    _refused(lambda: bus.dispatch(command, correlation_id=WRONG), "correlation id")
    assert bus.metrics.dispatched == 0

    def react() -> None:
        with bus.reacting_to(WRONG):
            pass  # pragma: no cover - refused on entry

    _refused(react, "event")


def test_a_command_bus_checks_its_middleware_retry_policy_and_sleep() -> None:
    _refused(lambda: CommandBus(middleware=WRONG), "middleware")
    _refused(lambda: CommandBus(middleware=[WRONG]), "middleware")
    _refused(lambda: CommandBus(retry=WRONG), "retry")
    _refused(lambda: CommandBus(sleep=WRONG), "sleep")
    assert CommandBus(middleware=(), retry=RetryPolicy(), sleep=time.sleep)


def test_handlers_must_be_callable() -> None:
    _refused(lambda: CommandBus().register(OpenAccount, WRONG), "handler")
    _refused(lambda: QueryBus().register(GetAccount, WRONG), "handler")


def test_asking_something_that_is_not_a_query_is_refused() -> None:
    _refused(lambda: QueryBus().ask(WRONG), "query")


def test_handles_answers_false_for_anything_that_is_not_a_registered_class() -> None:
    bus = CommandBus()
    assert not bus.handles([])  # type: ignore[arg-type]
    assert not bus.handles(WRONG)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"base_delay": "0.1"}, "base_delay"),
        ({"max_delay": None}, "max_delay"),
        ({"base_delay": float("nan")}, "base_delay"),
        ({"max_delay": float("inf")}, "max_delay"),
        ({"base_delay": True}, "base_delay"),
        ({"max_attempts": 2.0}, "max_attempts"),
        ({"base_delay": -1.0}, "retry delay"),
    ],
)
def test_a_retry_policy_refuses_delays_that_are_not_finite_numbers(
    options: dict[str, Any], field: str
) -> None:
    _refused(lambda: RetryPolicy(**options), field)


# -- EventRegistry ---------------------------------------------------------------------------------


def test_a_registry_checks_what_it_is_given() -> None:
    _refused(lambda: EventRegistry(WRONG), "events")
    _refused(lambda: EventRegistry(AccountOpened), "events")  # type: ignore[arg-type]
    _refused(lambda: EventRegistry().register(WRONG), "event class")
    _refused(lambda: EventRegistry().register(AccountOpened, aliases="Opened"), "aliases")
    _refused(lambda: EventRegistry().register(AccountOpened, aliases=[WRONG]), "alias")
    _refused(lambda: EventRegistry().add_upcaster(WRONG, 1, dict), "event type")
    _refused(lambda: EventRegistry().add_upcaster("AccountOpened", 1, WRONG), "upcaster")
    _refused(lambda: EventRegistry().include(WRONG), "registry")
    _refused(lambda: registry.event_class(WRONG), "event type")
    _refused(lambda: registry.event_class([]), "event type")  # type: ignore[arg-type]


def test_a_registry_refuses_wrong_metadata_and_non_recorded_events() -> None:
    event = AccountOpened(account_id="a", owner="Ann")
    _refused(lambda: registry.encode(event, WRONG), "metadata")
    _refused(lambda: registry.encode(event, event_id="not-a-uuid"), "event id")  # type: ignore[arg-type]
    _refused(lambda: registry.decode(WRONG), "recorded event")
    _refused(lambda: registry.decode(event), "recorded event")  # type: ignore[arg-type]
    _refused(lambda: registry.decode_metadata(WRONG), "recorded event")
    _refused(lambda: registry.decode_envelope(WRONG), "recorded event")
    recorded = _recorded()
    assert registry.decode(recorded) == event
    assert registry.decode_metadata(recorded) == Metadata()


# -- the event store's values ----------------------------------------------------------------------


def test_new_events_need_bytes_and_a_content_type() -> None:
    _refused(lambda: NewEvent("T", WRONG), "event data")
    _refused(lambda: NewEvent("T", "text"), "event data")  # type: ignore[arg-type]
    _refused(lambda: NewEvent("T", b"{}", content_type=WRONG), "content type")
    _refused(lambda: NewEvent("T", b"{}", content_type=""), "content type")
    _refused(lambda: NewEvent(WRONG, b"{}"), "event type")
    _refused(lambda: NewEvent("T", b"{}", id=str(uuid.uuid4())), "event id")  # type: ignore[arg-type]


def test_filters_check_their_fields_and_accept_any_sequence_of_prefixes() -> None:
    by_stream = EventFilter(by="stream_name", prefixes=["Account-"])  # type: ignore[arg-type]
    assert by_stream.matches("Opened", "Account-1")
    assert EventFilter(prefixes=["Account-"]) == EventFilter(prefixes=("Account-",))  # type: ignore[arg-type]
    _refused(lambda: EventFilter(prefixes=(WRONG,)), "filter prefix")
    _refused(lambda: EventFilter(prefixes=WRONG), "filter prefixes")
    _refused(lambda: EventFilter(regex=WRONG), "filter regex")
    _refused(lambda: EventFilter(by=WRONG), "filter by")
    _refused(lambda: EventFilter(include_system_events=WRONG), "include_system_events")
    _refused(lambda: EventFilter.for_event_types(WRONG), "event types")
    _refused(lambda: EventFilter.for_event_types("Opened"), "event types")
    _refused(lambda: EventFilter.for_event_types(["Opened", WRONG]), "event types")
    _refused(lambda: EventFilter.for_categories("Account"), "categories")


def test_a_stream_category_must_be_a_string() -> None:
    _refused(lambda: StreamName.for_aggregate(WRONG, "1"), "stream category")
    _refused(lambda: StreamName(WRONG), "stream name")


# -- the adapters' and the audit trail's constructors ---------------------------------------------


def test_sqlite_store_options_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    _refused(lambda: SQLiteEventStore(path, durable=WRONG), "durable")
    _refused(lambda: SQLiteEventStore(path, busy_timeout="10"), "busy_timeout")  # type: ignore[arg-type]
    _refused(lambda: SQLiteEventStore(path, poll_interval=0), "poll_interval")
    _refused(lambda: SQLiteEventStore(WRONG), "database path")
    assert not path.exists()


def test_an_audit_trail_needs_a_store_and_aggregate_specs() -> None:
    store = InMemoryEventStore()
    _refused(lambda: AuditTrail(WRONG), "event store")
    _refused(lambda: AuditTrail(store, WRONG), "aggregates")
    _refused(lambda: AuditTrail(store, [Account]), "aggregates")  # type: ignore[list-item]
    _refused(lambda: AggregateSpec(WRONG), "aggregate")
    assert AuditTrail(store, [AggregateSpec(Account)])
