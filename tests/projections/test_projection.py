"""The Projection base: what a definition must say, and what it gives the runner."""

from __future__ import annotations

from typing import Any

import pytest

from escqrs.examples.bank.events import AccountClosed, AccountOpened, MoneyDeposited
from eventsourcing_cqrs.errors import CorruptEventError, CQRSError, InvalidInputError
from eventsourcing_cqrs.event_store.memory import InMemoryEventStore
from eventsourcing_cqrs.event_store.port import NewEvent, RecordedEvent, StreamState
from eventsourcing_cqrs.serialization import EventRegistry
from projections import (
    Backoff,
    EventContext,
    Projection,
    ProjectionError,
    ProjectionFailedError,
    ProjectionRunner,
    RunnerAlreadyRunningError,
    RunOutcome,
    TableSpec,
)
from projections.errors import InvalidNameError, ProjectionDefinitionError
from projections.read_model_store import InMemoryReadModelStore
from projections.testing.contracts import Tally, append_tallied


class Opened(Projection):
    name = "opened"
    tables = (TableSpec("owners"),)

    def __init__(self) -> None:
        super().__init__()
        self.on(AccountOpened, self.opened)

    def opened(self, event: AccountOpened, context: EventContext) -> None:
        context.table("owners").put(event.account_id, {"owner": event.owner})


def test_the_handled_event_types_become_the_server_side_filter() -> None:
    projection = Opened()
    assert projection.event_types == ("AccountOpened",)
    event_filter = projection.event_filter()
    assert event_filter.matches("AccountOpened", "Account-1")
    assert not event_filter.matches("AccountOpenedLater", "Account-1")
    assert not event_filter.matches("MoneyDeposited", "Account-1")
    assert projection.describe()["event_types"] == ["AccountOpened"]


def test_a_projection_needs_a_valid_name_and_version() -> None:
    class Nameless(Projection):
        pass

    class BadName(Opened):
        name = "Bad Name"

    class BadVersion(Opened):
        version = 0

    with pytest.raises(ProjectionDefinitionError, match="name"):
        Nameless()
    with pytest.raises(InvalidNameError):
        BadName()
    with pytest.raises(ProjectionDefinitionError, match="version"):
        BadVersion()


def test_two_handlers_for_one_event_type_are_refused() -> None:
    projection = Opened()
    with pytest.raises(ProjectionDefinitionError, match="two handlers for event type 'AccountOpened'"):
        projection.on(AccountOpened, projection.opened)


def test_a_projection_without_handlers_is_refused_when_used() -> None:
    class Idle(Projection):
        name = "idle"

    with pytest.raises(ProjectionDefinitionError, match="at least one handler"):
        Idle().event_filter()


def test_a_given_registry_must_decode_every_handled_type() -> None:
    class Partial(Projection):
        name = "partial"
        registry = EventRegistry([AccountOpened])

        def __init__(self) -> None:
            super().__init__()
            self.on(AccountClosed, self.closed)

        def closed(self, event: AccountClosed, context: EventContext) -> None:
            del event, context

    with pytest.raises(ProjectionDefinitionError, match="AccountClosed"):
        Partial()


def test_an_event_that_does_not_decode_is_a_poison_event_naming_its_stream() -> None:
    events = InMemoryEventStore()
    store = InMemoryReadModelStore()

    class Strict(Opened):
        backoff = Backoff(max_attempts=1)

    events.append(
        "Account-9", [NewEvent("AccountOpened", b'{"account_id": 9}')], expected_version=StreamState.ANY
    )
    with pytest.raises(ProjectionFailedError, match="Account-9") as raised:
        ProjectionRunner(Strict(), events, store).run(until_caught_up=True)
    assert isinstance(raised.value.error, CorruptEventError)


def test_on_recorded_hands_over_the_raw_event() -> None:
    seen: list[RecordedEvent] = []

    class Raw(Projection):
        name = "raw"

        def __init__(self) -> None:
            super().__init__()
            self.on_recorded("MoneyDeposited", lambda event, context: seen.append(event))

    events = InMemoryEventStore()
    append_tallied(events, "Account-1", 2, MoneyDeposited.event_type)
    assert (
        ProjectionRunner(Raw(), events, InMemoryReadModelStore()).run(until_caught_up=True)
        is RunOutcome.CAUGHT_UP
    )
    assert [event.revision for event in seen] == [0, 1]


def test_a_stop_right_after_start_is_not_lost() -> None:
    events = InMemoryEventStore()
    append_tallied(events, "Tally-1", 1)
    runner = ProjectionRunner(Tally(), events, InMemoryReadModelStore())
    runner.start()
    runner.stop()
    runner.join(10)
    assert not runner.running


@pytest.mark.parametrize(
    ("arguments", "field", "reason"),
    [
        ({"max_attempts": 0}, "Backoff max_attempts", "at least 1"),
        ({"max_attempts": True}, "Backoff max_attempts", "whole number of attempts, not bool"),
        ({"max_attempts": "3"}, "Backoff max_attempts", "whole number of attempts, not str"),
        ({"max_attempts": 2.0}, "Backoff max_attempts", "whole number of attempts, not float"),
        ({"base_delay": -0.1}, "Backoff base_delay", "zero or more seconds"),
        ({"base_delay": float("nan")}, "Backoff base_delay", "zero or more seconds"),
        ({"base_delay": False}, "Backoff base_delay", "number of seconds, not bool"),
        ({"max_delay": -1}, "Backoff max_delay", "zero or more seconds"),
        ({"max_delay": "5"}, "Backoff max_delay", "number of seconds, not str"),
    ],
)
def test_a_backoff_refuses_bad_arguments_with_invalid_input_error(
    arguments: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(InvalidInputError, match=reason) as raised:
        Backoff(**arguments)
    assert raised.value.field == field
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, CQRSError)


def test_a_backoff_takes_whole_attempts_and_seconds_as_int_or_float() -> None:
    backoff = Backoff(max_attempts=1, base_delay=0, max_delay=2.5)
    assert backoff.delay(1) == 0.0
    assert Backoff(base_delay=0.5, max_delay=1).delay(3) == 1.0


@pytest.mark.parametrize(
    ("arguments", "field", "reason"),
    [
        ({"batch_size": 0}, "batch_size", "at least 1"),
        ({"batch_size": True}, "batch_size", "whole number of events, not bool"),
        ({"batch_size": 10.0}, "batch_size", "whole number of events, not float"),
        ({"batch_size": "10"}, "batch_size", "whole number of events, not str"),
        ({"batch_delay": -0.01}, "batch_delay", "zero or more seconds"),
        ({"batch_delay": float("nan")}, "batch_delay", "zero or more seconds"),
        ({"batch_delay": True}, "batch_delay", "number of seconds, not bool"),
        ({"batch_delay": None}, "batch_delay", "number of seconds, not NoneType"),
    ],
)
def test_a_runner_refuses_a_bad_batch_size_or_delay_with_invalid_input_error(
    arguments: dict[str, Any], field: str, reason: str
) -> None:
    with pytest.raises(InvalidInputError, match=reason) as raised:
        ProjectionRunner(Tally(), InMemoryEventStore(), InMemoryReadModelStore(), **arguments)
    assert raised.value.field == field
    assert isinstance(raised.value, ValueError)
    assert isinstance(raised.value, CQRSError)


def test_a_runner_takes_a_batch_delay_of_zero_and_a_batch_size_of_one() -> None:
    events = InMemoryEventStore()
    append_tallied(events, "Tally-1", 3)
    runner = ProjectionRunner(Tally(), events, InMemoryReadModelStore(), batch_size=1, batch_delay=0)
    assert runner.run(until_caught_up=True) is RunOutcome.CAUGHT_UP


def test_starting_a_runner_whose_thread_still_runs_raises_runner_already_running_error() -> None:
    events = InMemoryEventStore()
    append_tallied(events, "Tally-1", 1)
    runner = ProjectionRunner(Tally(), events, InMemoryReadModelStore())
    runner.start()
    try:
        with pytest.raises(RunnerAlreadyRunningError, match="'tally' is already running") as raised:
            runner.start()
        assert raised.value.projection == "tally"
        assert isinstance(raised.value, RuntimeError)
        assert isinstance(raised.value, ProjectionError)
        assert isinstance(raised.value, CQRSError)
    finally:
        runner.stop()
        runner.join(10)
    assert not runner.running


def test_a_number_of_segments_outside_1_to_256_is_refused_naming_it() -> None:
    for segments in (0, 257, True, 2.0):
        bad = type("Bad", (Opened,), {"segments": segments})
        with pytest.raises(ProjectionDefinitionError, match="segments must be a whole number from 1 to 256"):
            bad()
    assert type("Fine", (Opened,), {"segments": 256})().segments == 256
