"""The bank's commands. Field constraints are checked when a command is built: an invalid one
raises :class:`~eventsourcing_cqrs.errors.CommandValidationError` and never reaches a handler."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field

from eventsourcing_cqrs import Command

__all__ = [
    "AccountId",
    "Amount",
    "CloseAccount",
    "Deposit",
    "OpenAccount",
    "TransferId",
    "TransferMoney",
    "Withdraw",
]

#: Account ids are short, printable and free of ``-``-only oddities; they end up in stream names.
AccountId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
#: A positive amount with at most two decimal places.
Amount = Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=2)]
#: Transfer ids, like account ids, end up in stream names (``Transfer-{id}``).
TransferId = AccountId


class OpenAccount(Command):
    """Open account ``account_id`` for ``owner``."""

    account_id: AccountId
    owner: Annotated[str, Field(min_length=1, max_length=200)]


class Deposit(Command):
    """Pay ``amount`` into the account (as part of transfer ``transfer_id``, if given)."""

    account_id: AccountId
    amount: Amount
    transfer_id: TransferId | None = None


class Withdraw(Command):
    """Pay ``amount`` out of the account; refused if the balance would go below zero."""

    account_id: AccountId
    amount: Amount
    transfer_id: TransferId | None = None


class TransferMoney(Command):
    """Ask to move ``amount`` from account ``source`` to account ``target``.

    Handled by the source account, which records the request; the transfer process then
    debits the source, credits the target and, if the target refuses, refunds the source.
    """

    transfer_id: TransferId
    source: AccountId
    target: AccountId
    amount: Amount


class CloseAccount(Command):
    """Close the account; refused unless its balance is zero."""

    account_id: AccountId
