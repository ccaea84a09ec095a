"""The transfer process and the welcome bonus, decided with the given/when/then helpers (no store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import ClassVar

import pytest

from escqrs.examples.bank.commands import Deposit, Withdraw
from escqrs.examples.bank.events import AccountOpened, MoneyDeposited, MoneyWithdrawn, TransferRequested
from escqrs.examples.bank.transfers import (
    Transfer,
    TransferCompensated,
    TransferCompensating,
    TransferCompleted,
    TransferCredited,
    TransferDebited,
    TransferFailed,
    TransferProcess,
    TransferStarted,
    TransferTimedOut,
    WelcomeBonus,
)
from eventsourcing_cqrs import Command, DomainEvent
from eventsourcing_cqrs.errors import InvalidInputError
from eventsourcing_cqrs.reactions import (
    CommandRefusal,
    Process,
    ProcessManager,
    ReactionContext,
    ReactionDefinitionError,
    Reactor,
)
from eventsourcing_cqrs.testing import FakeClock, ProcessScenario, ReactorScenario

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
FIVE = Decimal("5.00")


def requested(transfer_id: str = "t1", source: str = "a", target: str = "b") -> TransferRequested:
    return TransferRequested(account_id=source, transfer_id=transfer_id, target=target, amount=FIVE)


def withdrawn(transfer_id: str = "t1", account: str = "a") -> MoneyWithdrawn:
    return MoneyWithdrawn(account_id=account, amount=FIVE, balance=Decimal(95), transfer_id=transfer_id)


def deposited(account: str, transfer_id: str = "t1") -> MoneyDeposited:
    return MoneyDeposited(account_id=account, amount=FIVE, balance=FIVE, transfer_id=transfer_id)


@pytest.fixture
def transfers() -> ProcessScenario[Transfer]:
    return ProcessScenario(TransferProcess(), clock=FakeClock(START))


def test_a_request_starts_a_transfer_that_debits_the_source_and_sets_a_deadline(
    transfers: ProcessScenario[Transfer],
) -> None:
    (
        transfers.when(requested())
        .then_records(TransferStarted(transfer_id="t1", source="a", target="b", amount=FIVE))
        .then_sends(Withdraw(account_id="a", amount=FIVE, transfer_id="t1"))
        .then_schedules("timeout", at=START + TransferProcess.timeout)
    )
    assert transfers.instance("t1").status == "debiting"


def test_the_debit_leads_to_the_credit_and_the_credit_completes_it(
    transfers: ProcessScenario[Transfer],
) -> None:
    transfers.given(requested())
    transfers.when(withdrawn()).then_records(TransferDebited(transfer_id="t1")).then_sends(
        Deposit(account_id="b", amount=FIVE, transfer_id="t1")
    )
    (
        transfers.when(deposited("b"))
        .then_records(TransferCredited(transfer_id="t1"), TransferCompleted(transfer_id="t1"))
        .then_cancels("timeout")
        .then_finished("completed")
    )
    # Finished: a late duplicate of any event decides nothing, and the deadline never fires.
    transfers.when(deposited("b")).then_nothing()
    transfers.advance(timedelta(hours=1)).then_nothing()


def test_a_refused_credit_is_compensated_by_refunding_the_source(
    transfers: ProcessScenario[Transfer],
) -> None:
    transfers.given(requested(), withdrawn())
    (
        transfers.when_refused(Deposit, "Account 'b' is closed.")
        .then_records(TransferCompensating(transfer_id="t1", reason="Account 'b' is closed."))
        .then_sends(Deposit(account_id="a", amount=FIVE, transfer_id="t1"))
    )
    transfers.when(deposited("a")).then_records(TransferCompensated(transfer_id="t1")).then_finished(
        "compensated"
    )


def test_a_refused_debit_fails_the_transfer_and_moves_nothing(transfers: ProcessScenario[Transfer]) -> None:
    transfers.given(requested())
    (
        transfers.when_refused(Withdraw, "Account 'a' holds 0.")
        .then_records(TransferFailed(transfer_id="t1", reason="Account 'a' holds 0."))
        .then_sends()
        .then_finished("failed")
    )


def test_a_timed_out_transfer_refunds_a_debit_that_arrives_late(transfers: ProcessScenario[Transfer]) -> None:
    transfers.given(requested())
    transfers.advance(timedelta(minutes=4)).then_nothing()
    transfers.advance(timedelta(minutes=1)).then_records(TransferTimedOut(transfer_id="t1"))
    (
        transfers.when(withdrawn())
        .then_records(
            TransferDebited(transfer_id="t1"),
            TransferCompensating(transfer_id="t1", reason="the transfer timed out"),
        )
        .then_sends(Deposit(account_id="a", amount=FIVE, transfer_id="t1"))
    )
    transfers.when(deposited("a")).then_finished("compensated")


def test_events_of_other_transfers_and_plain_movements_are_not_routed(
    transfers: ProcessScenario[Transfer],
) -> None:
    transfers.given(requested("t1"))
    transfers.when(withdrawn("t2")).then_nothing()  # no instance t2: not a start event
    transfers.when(MoneyWithdrawn(account_id="a", amount=FIVE, balance=Decimal(90))).then_nothing()
    transfers.when(withdrawn("t1", account="z")).then_nothing()  # not the source
    assert transfers.instance("t1").status == "debiting"


def test_the_welcome_bonus_pays_each_new_account_once_with_an_id_from_the_event() -> None:
    outcome = ReactorScenario(WelcomeBonus()).when(AccountOpened(account_id="a", owner="Ann"))
    outcome.then_sends(Deposit(account_id="a", amount=Decimal("5.00")))
    with pytest.raises(AssertionError, match="Expected commands"):
        outcome.then_sends(Deposit(account_id="a", amount=Decimal("11.00")))


# -- definitions are checked when built ------------------------------------------------------


class Poke(Command):
    target: str


class Poked(DomainEvent):
    event_type: ClassVar[str] = "Poked"
    target: str


class Done(DomainEvent):
    event_type: ClassVar[str] = "PokeDone"


class Poking(Process[Done]):
    category: ClassVar[str] = "Poking"

    def evolve(self, event: Done) -> None:
        del event


def test_a_reactor_needs_a_valid_name_and_a_handler_returning_commands() -> None:
    class Nameless(Reactor):
        pass

    with pytest.raises(ReactionDefinitionError, match="name"):
        Nameless()

    class Shouty(Reactor):
        name = "Shouty"

    with pytest.raises(ReactionDefinitionError, match="lowercase"):
        Shouty()

    class Wrong(Reactor):
        name = "wrong"

        def __init__(self) -> None:
            super().__init__()
            self.on(Poked, lambda event, context: "not a command")  # type: ignore[arg-type, return-value]

    ReactorScenario(Wrong()).when(Poked(target="x")).then_raises(
        ReactionDefinitionError, match="returns a Command"
    )

    class Twice(Reactor):
        name = "twice"

        def __init__(self) -> None:
            super().__init__()
            self.on(Poked, self.poked)
            self.on(Poked, self.poked)

        def poked(self, event: Poked, context: ReactionContext) -> None:
            return None

    with pytest.raises(ReactionDefinitionError, match="two handlers"):
        Twice()


def test_a_process_manager_checks_its_process_its_commands_and_its_start() -> None:
    class NoProcess(ProcessManager[Poking]):
        name = "no_process"

    with pytest.raises(ReactionDefinitionError, match="Process subclass"):
        NoProcess()

    class NoStart(ProcessManager[Poking]):
        name = "no_start"
        process = Poking

        def __init__(self) -> None:
            super().__init__()
            self.on(Poked, key=lambda e: e.target, handler=lambda e, p: None)

    with pytest.raises(ReactionDefinitionError, match="no event starts"):
        _ = NoStart().event_types

    class Undeclared(ProcessManager[Poking]):
        name = "undeclared"
        process = Poking

        def __init__(self) -> None:
            super().__init__()
            self.start(Poked, key=lambda e: e.target, handler=self.poked)

        def poked(self, event: Poked, process: Poking) -> None:
            process.send(Poke(target=event.target))

    (
        ProcessScenario(Undeclared())
        .when(Poked(target="x"))
        .then_raises(ReactionDefinitionError, match="not in its commands")
    )

    class RefusesUnknown(ProcessManager[Poking]):
        name = "refuses_unknown"
        process = Poking

        def __init__(self) -> None:
            super().__init__()
            self.on_refused(Poke, lambda refusal, process: None)

    with pytest.raises(ReactionDefinitionError, match="not one of its commands"):
        RefusesUnknown()


def test_process_decisions_are_refused_outside_a_reaction_and_after_finish() -> None:
    process = Poking("x")
    with pytest.raises(InvalidInputError, match="only in a handler"):
        process.send(Poke(target="x"))

    class Finisher(ProcessManager[Poking]):
        name = "finisher"
        process = Poking
        commands = (Poke,)

        def __init__(self) -> None:
            super().__init__()
            self.start(Poked, key=lambda e: e.target, handler=self.poked)
            self.on_refused(Poke, self.refused)

        def poked(self, event: Poked, process: Poking) -> None:
            process.finish("early")
            process.send(Poke(target=event.target))

        def refused(self, refusal: CommandRefusal, process: Poking) -> None:
            del refusal, process

    ProcessScenario(Finisher()).when(Poked(target="x")).then_raises(InvalidInputError, match="finished")


def test_a_rescheduled_deadline_replaces_the_pending_one() -> None:
    class Reminder(ProcessManager[Poking]):
        name = "reminder"
        process = Poking
        commands = (Poke,)

        def __init__(self) -> None:
            super().__init__()
            self.start(Poked, key=lambda e: e.target, handler=self.poked)
            self.on_deadline("remind", lambda deadline, process: process.send(Poke(target=process.id)))

        def poked(self, event: Poked, process: Poking) -> None:
            process.schedule("remind", after=timedelta(minutes=10))

    clock = FakeClock(START)
    reminders = ProcessScenario(Reminder(), clock=clock)
    reminders.when(Poked(target="x")).then_schedules(
        "remind", at=START + timedelta(minutes=10)
    ).then_cancels()
    clock.advance(timedelta(minutes=5))
    reminders.when(Poked(target="x")).then_cancels("remind").then_schedules(
        "remind", at=START + timedelta(minutes=15)
    )
    reminders.advance(timedelta(minutes=9)).then_nothing()
    reminders.advance(timedelta(minutes=1)).then_sends(Poke(target="x"))
    reminders.advance(timedelta(hours=1)).then_nothing()  # fired once


def test_a_start_event_that_decides_nothing_leaves_no_instance_as_in_the_runner() -> None:
    class Picky(ProcessManager[Poking]):
        name = "picky"
        process = Poking
        commands = (Poke,)

        def __init__(self) -> None:
            super().__init__()
            self.start(Poked, key=lambda e: e.target, handler=self.poked)
            self.on(Done, key=lambda e: "x", handler=lambda event, process: process.send(Poke(target="x")))

        def poked(self, event: Poked, process: Poking) -> None:
            if event.target != "x":
                process.apply(Done())

    picky = ProcessScenario(Picky())
    picky.when(Poked(target="x")).then_nothing()  # decided nothing: no instance x
    picky.when(Done()).then_nothing()  # so an event for x finds none
    with pytest.raises(AssertionError, match="No instance 'x'"):
        picky.instance("x")


def test_a_reactor_needs_a_whole_number_of_segments() -> None:
    for segments in (0, -1, True, "4"):
        bad = type("Bad", (Reactor,), {"name": "bad", "segments": segments})
        with pytest.raises(ReactionDefinitionError, match="segments must be a whole number of at least 1"):
            bad()
