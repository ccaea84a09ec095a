"""The Account aggregate's rules, stated with the given/when/then helpers, and the Aggregate base."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

import pytest

from escqrs.examples.bank.account import (
    Account,
    AccountClosedError,
    AccountNotEmptyError,
    InsufficientFundsError,
    InvalidAmountError,
)
from escqrs.examples.bank.events import (
    AccountClosed,
    AccountOpened,
    MoneyDeposited,
    MoneyWithdrawn,
    TransferRequested,
)
from eventsourcing_cqrs.aggregate import Aggregate, event_classes_of
from eventsourcing_cqrs.errors import InvalidInputError
from eventsourcing_cqrs.messages import DomainEvent
from eventsourcing_cqrs.testing.given import given

OPENED = AccountOpened(account_id="7", owner="Ann")
FUNDED = MoneyDeposited(account_id="7", amount=Decimal("10.00"), balance=Decimal("10.00"))


def test_opening_an_account_applies_account_opened() -> None:
    account = Account.open("7", "Ann")
    assert account.pending_events == (OPENED,)
    assert (account.owner, account.balance, account.version) == ("Ann", Decimal(0), -1)
    assert account.stream == "Account-7"


def test_a_deposit_records_the_balance_after_it() -> None:
    account = (
        given(Account, OPENED, FUNDED, aggregate_id="7")
        .when(lambda account: account.deposit(Decimal("2.50")))
        .then(MoneyDeposited(account_id="7", amount=Decimal("2.50"), balance=Decimal("12.50")))
    )
    assert account.balance == Decimal("12.50")


def test_a_withdrawal_within_the_balance_is_accepted() -> None:
    given(Account, OPENED, FUNDED, aggregate_id="7").when(lambda account: account.withdraw(Decimal(10))).then(
        MoneyWithdrawn(account_id="7", amount=Decimal(10), balance=Decimal(0))
    )


def test_a_withdrawal_beyond_the_balance_is_refused() -> None:
    error = (
        given(Account, OPENED, FUNDED, aggregate_id="7")
        .when(lambda account: account.withdraw(Decimal("10.01")))
        .then_raises(InsufficientFundsError, match="does not cover a withdrawal of 10.01")
    )
    assert error.balance == Decimal("10.00")


def test_a_non_positive_amount_is_refused_by_the_aggregate_too() -> None:
    given(Account, OPENED, aggregate_id="7").when(lambda account: account.deposit(Decimal(0))).then_raises(
        InvalidAmountError
    )


def test_an_account_holding_money_cannot_be_closed() -> None:
    given(Account, OPENED, FUNDED, aggregate_id="7").when(Account.close).then_raises(
        AccountNotEmptyError, match="still holds 10.00"
    )


def test_an_empty_account_closes() -> None:
    given(Account, OPENED, aggregate_id="7").when(Account.close).then(AccountClosed(account_id="7"))


def test_a_closed_account_refuses_movements_and_a_second_close() -> None:
    closed = given(Account, OPENED, AccountClosed(account_id="7"), aggregate_id="7")
    closed.when(lambda account: account.deposit(Decimal(1))).then_raises(AccountClosedError)
    closed.when(Account.close).then_raises(AccountClosedError)


def test_a_failed_decision_leaves_no_pending_event() -> None:
    outcome = given(Account, OPENED, aggregate_id="7").when(lambda account: account.withdraw(Decimal(1)))
    assert outcome.aggregate.pending_events == ()


def test_the_version_is_the_revision_of_the_last_replayed_event() -> None:
    account = given(Account, OPENED, FUNDED, aggregate_id="7").build()
    assert account.version == 1
    assert account.pending_events == ()


def test_then_reports_both_sides_when_events_differ() -> None:
    outcome = given(Account, OPENED, aggregate_id="7").when(lambda account: account.deposit(Decimal(1)))
    with pytest.raises(AssertionError, match="Expected events:\n  AccountClosed"):
        outcome.then(AccountClosed(account_id="7"))


def test_event_classes_are_read_from_the_aggregate_base() -> None:
    assert event_classes_of(Account) == (
        AccountOpened,
        MoneyDeposited,
        MoneyWithdrawn,
        AccountClosed,
        TransferRequested,
    )


def test_an_aggregate_id_must_be_a_non_empty_string() -> None:
    with pytest.raises(InvalidInputError, match="aggregate id"):
        Account("")


def test_an_aggregate_without_when_says_so() -> None:
    class Ping(DomainEvent):
        event_type: ClassVar[str] = "Ping"

    class Lazy(Aggregate[Ping]):
        category: ClassVar[str] = "Lazy"

    with pytest.raises(NotImplementedError, match="Lazy must implement when"):
        Lazy("1").apply(Ping())
