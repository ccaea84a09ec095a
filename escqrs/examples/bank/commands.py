"""The bank's commands. Field constraints are checked when a command is built: an invalid one
raises :class:`~eventsourcing_cqrs.errors.CommandValidationError` and never reaches a handler."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import Field

from eventsourcing_cqrs import Command

__all__ = ["AccountId", "Amount", "CloseAccount", "Deposit", "OpenAccount", "Withdraw"]

#: Account ids are short, printable and free of ``-``-only oddities; they end up in stream names.
AccountId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
#: A positive amount with at most two decimal places.
Amount = Annotated[Decimal, Field(gt=0, max_digits=18, decimal_places=2)]


class OpenAccount(Command):
    """Open account ``account_id`` for ``owner``."""

    account_id: AccountId
    owner: Annotated[str, Field(min_length=1, max_length=200)]


class Deposit(Command):
    """Pay ``amount`` into the account."""

    account_id: AccountId
    amount: Amount


class Withdraw(Command):
    """Pay ``amount`` out of the account; refused if the balance would go below zero."""

    account_id: AccountId
    amount: Amount


class CloseAccount(Command):
    """Close the account; refused unless its balance is zero."""

    account_id: AccountId
