"""The ``Account`` aggregate: the bank's business rules.

* an account is opened once, with a zero balance;
* deposits and withdrawals are positive; a withdrawal never takes the balance below zero;
* a closed account accepts no movement, and only an account with a zero balance may be closed.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar, Self, assert_never

from pydantic import BaseModel, ConfigDict

from escqrs.examples.bank.events import (
    CATEGORY,
    AccountClosed,
    AccountEvent,
    AccountOpened,
    MoneyDeposited,
    MoneyWithdrawn,
    TransferRequested,
)
from eventsourcing_cqrs import Aggregate, DomainError

__all__ = [
    "Account",
    "AccountClosedError",
    "AccountNotEmptyError",
    "AccountSnapshot",
    "InsufficientFundsError",
    "InvalidAmountError",
    "SameAccountTransferError",
]


class InsufficientFundsError(DomainError):
    """A withdrawal would take the balance below zero."""

    def __init__(self, account_id: str, balance: Decimal, amount: Decimal) -> None:
        self.account_id = account_id
        self.balance = balance
        self.amount = amount
        super().__init__(
            f"Account {account_id!r} holds {balance}, which does not cover a withdrawal of {amount}."
        )


class AccountClosedError(DomainError):
    """The account is closed."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        super().__init__(f"Account {account_id!r} is closed.")


class AccountNotEmptyError(DomainError):
    """Only an account with a zero balance can be closed."""

    def __init__(self, account_id: str, balance: Decimal) -> None:
        self.account_id = account_id
        self.balance = balance
        super().__init__(f"Account {account_id!r} still holds {balance}; withdraw it before closing.")


class InvalidAmountError(DomainError):
    """An amount is zero or negative."""

    def __init__(self, account_id: str, amount: Decimal) -> None:
        self.account_id = account_id
        self.amount = amount
        super().__init__(f"Amount {amount} for account {account_id!r} must be positive.")


class SameAccountTransferError(DomainError):
    """A transfer names the same account as source and target."""

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        super().__init__(f"Account {account_id!r} cannot transfer money to itself.")


class AccountSnapshot(BaseModel):
    """The state of an account, stored every N events so that loading skips most of the history."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    owner: str
    balance: Decimal
    closed: bool


class Account(Aggregate[AccountEvent]):
    """A bank account."""

    category: ClassVar[str] = CATEGORY
    snapshot_type = AccountSnapshot
    snapshot_version: ClassVar[int] = 1

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.owner = ""
        self.balance = Decimal(0)
        self.closed = False

    # -- decisions ------------------------------------------------------------------------

    @classmethod
    def open(cls, account_id: str, owner: str) -> Self:
        """A new account for ``owner``; save it to store it."""
        account = cls(account_id)
        account.apply(AccountOpened(account_id=account_id, owner=owner))
        return account

    def deposit(self, amount: Decimal, transfer_id: str | None = None) -> None:
        """Pay ``amount`` in."""
        self._check_movement(amount)
        self.apply(
            MoneyDeposited(
                account_id=self.id, amount=amount, balance=self.balance + amount, transfer_id=transfer_id
            )
        )

    def withdraw(self, amount: Decimal, transfer_id: str | None = None) -> None:
        """Pay ``amount`` out; raises :class:`InsufficientFundsError` rather than overdraw."""
        self._check_movement(amount)
        if amount > self.balance:
            raise InsufficientFundsError(self.id, self.balance, amount)
        self.apply(
            MoneyWithdrawn(
                account_id=self.id, amount=amount, balance=self.balance - amount, transfer_id=transfer_id
            )
        )

    def request_transfer(self, transfer_id: str, target: str, amount: Decimal) -> None:
        """Record the request to send ``amount`` to ``target``; the transfer process moves the money."""
        self._check_movement(amount)
        if target == self.id:
            raise SameAccountTransferError(self.id)
        self.apply(
            TransferRequested(account_id=self.id, transfer_id=transfer_id, target=target, amount=amount)
        )

    def close(self) -> None:
        """Close the account; raises :class:`AccountNotEmptyError` while it holds money."""
        if self.closed:
            raise AccountClosedError(self.id)
        if self.balance != 0:
            raise AccountNotEmptyError(self.id, self.balance)
        self.apply(AccountClosed(account_id=self.id))

    def _check_movement(self, amount: Decimal) -> None:
        if self.closed:
            raise AccountClosedError(self.id)
        if amount <= 0:
            raise InvalidAmountError(self.id, amount)

    # -- state ----------------------------------------------------------------------------

    def when(self, event: AccountEvent) -> None:
        match event:
            case AccountOpened(owner=owner):
                self.owner = owner
            case MoneyDeposited(balance=balance) | MoneyWithdrawn(balance=balance):
                self.balance = balance
            case AccountClosed():
                self.closed = True
            case TransferRequested():
                pass  # moves nothing: the transfer's withdrawal does
            case _:
                assert_never(event)

    def snapshot(self) -> AccountSnapshot:
        return AccountSnapshot(owner=self.owner, balance=self.balance, closed=self.closed)

    def restore(self, snapshot: AccountSnapshot) -> None:
        self.owner = snapshot.owner
        self.balance = snapshot.balance
        self.closed = snapshot.closed
