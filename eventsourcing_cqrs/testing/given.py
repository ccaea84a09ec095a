"""Given / when / then helpers for aggregates and command handlers.

For an aggregate, with no store at all::

    given(Account, AccountOpened(account_id="1", owner="Ann"), aggregate_id="1")
        .when(lambda account: account.deposit(Decimal(5)))
        .then(MoneyDeposited(account_id="1", amount=Decimal(5), balance=Decimal(5)))

    given(Account, AccountOpened(account_id="1", owner="Ann"), aggregate_id="1")
        .when(lambda account: account.withdraw(Decimal(5)))
        .then_raises(InsufficientFundsError)

For command handlers, through a real :class:`~eventsourcing_cqrs.bus.CommandBus` and a real
event store (in memory unless you pass one)::

    scenario = HandlerScenario(registry, wire=lambda store, bus: register(bus, account_repository(store)))
    scenario.given("Account-1", AccountOpened(account_id="1", owner="Ann"))
    scenario.when(Deposit(account_id="1", amount=Decimal(5))).then(MoneyDeposited(...))

``then`` compares the events the command appended with the expected ones, in order;
``then_raises`` checks the error *and* that nothing was appended. Failures raise
``AssertionError`` with both sides spelled out, so these work under any test runner.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, Generic, Self, TypeVar

from eventsourcing_cqrs.aggregate import Aggregate
from eventsourcing_cqrs.bus import CommandBus, CommandResult
from eventsourcing_cqrs.event_store._reading import read_after
from eventsourcing_cqrs.event_store.memory import InMemoryEventStore
from eventsourcing_cqrs.event_store.port import EventStore, StreamState
from eventsourcing_cqrs.messages import Command, DomainEvent
from eventsourcing_cqrs.serialization import EventRegistry

__all__ = ["AggregateOutcome", "AggregateScenario", "HandlerOutcome", "HandlerScenario", "given"]

A = TypeVar("A", bound=Aggregate[Any])
X = TypeVar("X", bound=BaseException)


def _describe(events: Sequence[DomainEvent]) -> str:
    if not events:
        return "  (no events)"
    return "\n".join(f"  {type(event).__name__}({event!r})" for event in events)


def _check_events(actual: Sequence[DomainEvent], expected: Sequence[DomainEvent]) -> None:
    if list(actual) != list(expected):
        raise AssertionError(f"Expected events:\n{_describe(expected)}\nbut got:\n{_describe(actual)}")


def _check_raised(error: BaseException | None, expected: type[X], match: str | None) -> X:
    if error is None:
        raise AssertionError(f"Expected {expected.__name__} to be raised, but nothing was raised.")
    if not isinstance(error, expected):
        # A failed expectation is reported as test failures are, not as a TypeError.
        message = f"Expected {expected.__name__}, but {type(error).__name__} was raised: {error}"
        raise AssertionError(message)  # noqa: TRY004
    if match is not None and match not in str(error):
        raise AssertionError(f"Expected the {expected.__name__} message to contain {match!r}: {error}")
    return error


class AggregateOutcome(Generic[A]):
    """What an action did to an aggregate: the events it applied, or the error it raised."""

    def __init__(self, aggregate: A, events: tuple[DomainEvent, ...], error: BaseException | None) -> None:
        self.aggregate = aggregate
        self.events = events
        self.error = error

    def then(self, *expected: DomainEvent) -> A:
        """Assert the action applied exactly ``expected``; returns the aggregate for more checks."""
        if self.error is not None:
            raise AssertionError(f"Expected events, but {type(self.error).__name__} was raised: {self.error}")
        _check_events(self.events, expected)
        return self.aggregate

    def then_nothing(self) -> A:
        """Assert the action succeeded and applied no event."""
        return self.then()

    def then_raises(self, error_type: type[X], match: str | None = None) -> X:
        """Assert the action raised ``error_type`` (whose message contains ``match``) and applied nothing."""
        error = _check_raised(self.error, error_type, match)
        if self.events:
            raise AssertionError(
                f"Expected no events alongside the error, but got:\n{_describe(self.events)}"
            )
        return error


class AggregateScenario(Generic[A]):
    """An aggregate rebuilt from a history, ready for one action."""

    def __init__(self, aggregate_type: type[A], history: Sequence[DomainEvent], aggregate_id: str) -> None:
        self.aggregate_type = aggregate_type
        self.history = tuple(history)
        self.aggregate_id = aggregate_id

    def build(self) -> A:
        """A fresh aggregate with the history applied and nothing pending."""
        aggregate = self.aggregate_type(self.aggregate_id)
        for revision, event in enumerate(self.history):
            aggregate._replayed(event, revision)
        return aggregate

    def when(self, action: Callable[[A], object]) -> AggregateOutcome[A]:
        """Run ``action`` on the aggregate, recording the events it applies or the error it raises."""
        aggregate = self.build()
        error: BaseException | None = None
        try:
            action(aggregate)
        except Exception as exc:  # noqa: BLE001 - kept in the outcome; then/then_raises judge it
            error = exc
        return AggregateOutcome(aggregate, aggregate.pending_events, error)


def given(
    aggregate_type: type[A], *history: DomainEvent, aggregate_id: str = "given"
) -> AggregateScenario[A]:
    """An ``aggregate_type`` with id ``aggregate_id`` that has lived through ``history``."""
    return AggregateScenario(aggregate_type, history, aggregate_id)


class HandlerOutcome:
    """What a dispatched command did: the events it appended, its result, or the error it raised."""

    def __init__(
        self, events: tuple[DomainEvent, ...], result: CommandResult | None, error: BaseException | None
    ) -> None:
        self.events = events
        self.result = result
        self.error = error

    def then(self, *expected: DomainEvent) -> CommandResult:
        """Assert the command appended exactly ``expected``; returns its result."""
        if self.error is not None:
            raise AssertionError(f"Expected events, but {type(self.error).__name__} was raised: {self.error}")
        _check_events(self.events, expected)
        assert self.result is not None
        return self.result

    def then_nothing(self) -> CommandResult:
        """Assert the command succeeded and appended nothing."""
        return self.then()

    def then_raises(self, error_type: type[X], match: str | None = None) -> X:
        """Assert the command raised ``error_type`` (message containing ``match``) and appended nothing."""
        error = _check_raised(self.error, error_type, match)
        if self.events:
            raise AssertionError(f"Expected nothing appended, but got:\n{_describe(self.events)}")
        return error


class HandlerScenario:
    """A command bus wired to real handlers over a real event store, for given/when/then tests.

    ``wire(store, bus)`` registers the handlers under test (and may add middleware to ``bus``
    by building it itself: pass ``bus``).
    """

    def __init__(
        self,
        registry: EventRegistry,
        wire: Callable[[EventStore, CommandBus], object],
        *,
        store: EventStore | None = None,
        bus: CommandBus | None = None,
    ) -> None:
        self.registry = registry
        self.store: EventStore = store if store is not None else InMemoryEventStore()
        self.bus = bus if bus is not None else CommandBus()
        wire(self.store, self.bus)

    def given(self, stream: str, *events: DomainEvent) -> Self:
        """Append ``events`` to ``stream`` as history (as if earlier commands had written them)."""
        new = [self.registry.encode(event, event_id=uuid.uuid4()) for event in events]
        self.store.append(stream, new, expected_version=StreamState.ANY)
        return self

    def when(self, command: Command, *, actor: str | None = None) -> HandlerOutcome:
        """Dispatch ``command``; the outcome holds the events appended meanwhile."""
        before = self.store.head_position()
        result: CommandResult | None = None
        error: BaseException | None = None
        try:
            result = self.bus.dispatch(command, actor=actor)
        except Exception as exc:  # noqa: BLE001 - kept in the outcome; then/then_raises judge it
            error = exc
        appended = read_after(self.store, before or None) if self.store.head_position() > before else ()
        events = tuple(self.registry.decode(recorded) for recorded in appended)
        return HandlerOutcome(events, result, error)
