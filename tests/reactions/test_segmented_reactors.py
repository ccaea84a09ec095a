"""Reactors and process managers split into segments, run by several workers at once.

A process manager's events are sequenced by the instance they route to, so one instance is
decided on by one segment, in order, whichever account's stream its events come from; each
segment fires only its own instances' deadlines. Run on memory, SQLite and the EventStoreDB
test server (the ``stores`` fixture of ``test_reactor_runner``).
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any, ClassVar

from escqrs.examples.bank.commands import Deposit
from escqrs.examples.bank.events import AccountOpened, MoneyDeposited
from escqrs.examples.bank.handlers import bank_bus
from eventsourcing_cqrs.reactions import ReactionContext, Reactor
from projections import StartFrom, projection_status, segment_of
from tests.reactions import test_reactor_runner
from tests.reactions.test_reactor_runner import (
    Bonus,
    FakeClock,
    Reminders,
    Stores,
    assert_reminded_once,
    balance,
    open_accounts,
    pending_deadlines,
    reminder_stream,
    reminders,
    runner_for,
    running,
    until,
)

# The stores (memory, SQLite, the EventStoreDB test server) and prefix of test_reactor_runner.
esdb_uri = test_reactor_runner.esdb_uri
stores = test_reactor_runner.stores
prefix = test_reactor_runner.prefix


class SegmentedBonus(Bonus):
    segments: ClassVar[int] = 3


def test_two_workers_share_a_segmented_reactor_and_each_command_is_applied_once(
    stores: Stores, prefix: str
) -> None:
    bus = bank_bus(stores.events)
    accounts = [f"{prefix}{n}" for n in range(12)]
    workers = [
        runner_for(
            SegmentedBonus(prefix), stores, bus, start_from=StartFrom.BEGINNING, rebalance_interval=0.05
        )
        for _ in range(2)
    ]
    with running(workers[0]), running(workers[1]):
        position = open_accounts(bus, accounts)
        workers[0].wait_for(position, timeout=30)
        until(
            lambda: all(balance(stores.events, account) == Decimal(6) for account in accounts),
            "every bonus to be deposited",
        )
        # Every segment is run by one of the two (once any hand-over between them is done).
        until(
            lambda: all(
                segment.running
                for segment in projection_status(
                    workers[0].projection, stores.events, stores.read_models
                ).segments
            ),
            "every segment to be running",
        )
        assert len(projection_status(workers[0].projection, stores.events, stores.read_models).segments) == 3
    assert all(balance(stores.events, account) == Decimal(6) for account in accounts)
    # The openings and two deposits per account, each once: no segment reacted twice.
    assert (bus.metrics.succeeded, bus.metrics.duplicates) == (3 * len(accounts), 0)


def segmented_reminders(prefix: str) -> Reminders:
    made = reminders(prefix)
    segmented = type(f"Segmented{type(made).__name__}", (type(made),), {"segments": 4})
    instance = segmented(prefix)
    assert isinstance(instance, Reminders)
    return instance


def test_each_segment_fires_its_own_instances_deadlines_once(stores: Stores, prefix: str) -> None:
    clock = FakeClock()
    bus = bank_bus(stores.events)
    accounts = [f"{prefix}{n}" for n in range(8)]
    options: dict[str, Any] = {"clock": clock, "start_from": StartFrom.BEGINNING, "rebalance_interval": 0.05}
    workers = [runner_for(segmented_reminders(prefix), stores, bus, **options) for _ in range(2)]
    with running(workers[0]), running(workers[1]):
        open_accounts(bus, accounts)
        until(
            lambda: len(pending_deadlines(stores.read_models)) == len(accounts), "the deadlines to be indexed"
        )
        rows = pending_deadlines(stores.read_models)
        # Indexed by the segment of the instance's stream, which is what each segment fires.
        assert {row["segment"] for row in rows} == {
            segment_of(reminder_stream(account), 4) for account in accounts
        }
        clock.advance(timedelta(minutes=11))
        until(
            lambda: all(
                "ProcessFinished" in [r.type for r in stores.events.read_stream(reminder_stream(a))]
                for a in accounts
            ),
            "every reminder to finish",
        )
        clock.advance(timedelta(hours=1))
    for account in accounts:
        assert_reminded_once(stores.events, account)
    assert pending_deadlines(stores.read_models) == []


def test_a_reactor_that_changes_its_number_of_segments_goes_on_where_it_stood(
    stores: Stores, prefix: str
) -> None:
    bus = bank_bus(stores.events)
    before, after = [f"{prefix}b{n}" for n in range(4)], [f"{prefix}a{n}" for n in range(6)]
    open_accounts(bus, before)
    runner_for(Bonus(prefix), stores, bus, start_from=StartFrom.BEGINNING).run(until_caught_up=True)
    old = stores.read_models.describe(Bonus.name).live
    assert old is not None
    assert old.segments == 1
    open_accounts(bus, after)
    runner_for(SegmentedBonus(prefix), stores, bus, rebalance_interval=0.05).run(until_caught_up=True)
    live = stores.read_models.describe(Bonus.name).live
    assert live is not None
    assert (live.segments, live.number) == (3, old.number + 1)
    assert all(segment.checkpoint is not None for segment in live.segment_progress)
    # Nothing reacted to twice, nothing skipped: the new segments started where the old one stood.
    assert all(balance(stores.events, account) == Decimal(6) for account in before + after)


def test_pending_deadlines_move_to_the_new_segments(stores: Stores, prefix: str) -> None:
    clock = FakeClock()
    bus = bank_bus(stores.events)
    accounts = [f"{prefix}{n}" for n in range(6)]
    options: dict[str, Any] = {"clock": clock, "start_from": StartFrom.BEGINNING, "rebalance_interval": 0.05}
    open_accounts(bus, accounts)
    runner_for(reminders(prefix), stores, bus, **options).run(until_caught_up=True)
    assert len(pending_deadlines(stores.read_models)) == len(accounts)
    clock.advance(timedelta(minutes=11))
    runner_for(segmented_reminders(prefix), stores, bus, **options).run(until_caught_up=True)
    live = stores.read_models.describe(Reminders.name).live
    assert live is not None
    assert live.segments == 4
    for account in accounts:
        assert_reminded_once(stores.events, account)
    assert pending_deadlines(stores.read_models) == []


class Watcher(Reactor):
    """Notes every account event it reacts to, in order; fails for the accounts in ``fail_for``."""

    name: ClassVar[str] = "test_watcher"
    failure_policy: ClassVar[str] = "park"

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.fail_for: set[str] = set()
        self.seen: list[tuple[str, int]] = []
        self.on(AccountOpened, self.noted)
        self.on(MoneyDeposited, self.noted)

    def noted(self, event: AccountOpened | MoneyDeposited, context: ReactionContext) -> None:
        if not event.account_id.startswith(self.prefix):
            return
        if event.account_id in self.fail_for:
            raise RuntimeError(f"cannot watch {event.account_id}")
        self.seen.append((context.recorded.stream, context.recorded.revision))


def test_a_parked_reaction_holds_back_its_streams_later_events_until_it_is_retried(
    stores: Stores, prefix: str
) -> None:
    bus = bank_bus(stores.events)
    bad, good = f"{prefix}bad", f"{prefix}good"
    watcher = Watcher(prefix)
    watcher.fail_for.add(bad)
    open_accounts(bus, [bad, good])
    for account in (bad, good):
        bus.dispatch(Deposit(account_id=account, amount=Decimal(3)))
    runner = runner_for(watcher, stores, bus, start_from=StartFrom.BEGINNING)
    runner.run(until_caught_up=True)
    assert watcher.seen == [(f"Account-{good}", 0), (f"Account-{good}", 1)]
    parked = stores.read_models.parked_events(Watcher.name)
    assert [(p.stream, p.revision, p.held_back) for p in parked] == [
        (f"Account-{bad}", 0, False),
        (f"Account-{bad}", 1, True),
    ]
    watcher.fail_for.clear()
    assert runner.retry_parked(keys=[f"Account-{bad}"]) == 2
    assert watcher.seen[2:] == [(f"Account-{bad}", 0), (f"Account-{bad}", 1)]
    assert stores.read_models.parked_events(Watcher.name) == []
