"""The bank's events: what is stored in the ``Account-{id}`` streams.

Amounts are :class:`~decimal.Decimal` and stored as JSON strings (``"12.50"``), so they round-trip
exactly. ``balance`` on deposits and withdrawals is the balance *after* the movement, so a read
model can show a balance without summing history.

The read side decodes these with :data:`registry`::

    from escqrs.examples.bank.events import registry
    event = registry.decode(recorded)   # AccountOpened | MoneyDeposited | ...
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from eventsourcing_cqrs import DomainEvent, EventRegistry

__all__ = [
    "CATEGORY",
    "AccountClosed",
    "AccountEvent",
    "AccountOpened",
    "MoneyDeposited",
    "MoneyWithdrawn",
    "TransferRequested",
    "registry",
]

#: The stream category of accounts: account ``42`` lives in stream ``Account-42``.
CATEGORY = "Account"


class AccountOpened(DomainEvent):
    """An account was opened for ``owner``, with a zero balance."""

    event_type: ClassVar[str] = "AccountOpened"

    account_id: str
    owner: str


class MoneyDeposited(DomainEvent):
    """``amount`` was paid in; ``balance`` is the balance after the deposit.

    ``transfer_id`` names the transfer it belongs to (its credit, or the refund of its debit).
    """

    event_type: ClassVar[str] = "MoneyDeposited"

    account_id: str
    amount: Decimal
    balance: Decimal
    transfer_id: str | None = None


class MoneyWithdrawn(DomainEvent):
    """``amount`` was paid out; ``balance`` is the balance after the withdrawal.

    ``transfer_id`` names the transfer it belongs to (its debit).
    """

    event_type: ClassVar[str] = "MoneyWithdrawn"

    account_id: str
    amount: Decimal
    balance: Decimal
    transfer_id: str | None = None


class TransferRequested(DomainEvent):
    """The account's owner asked to move ``amount`` to account ``target``; nothing moved yet.

    The transfer process (:mod:`escqrs.examples.bank.transfers`) takes it from here.
    """

    event_type: ClassVar[str] = "TransferRequested"

    account_id: str
    transfer_id: str
    target: str
    amount: Decimal


class AccountClosed(DomainEvent):
    """The account was closed; it accepts no further movements."""

    event_type: ClassVar[str] = "AccountClosed"

    account_id: str


#: Every event an ``Account`` stream may hold.
AccountEvent = AccountOpened | MoneyDeposited | MoneyWithdrawn | AccountClosed | TransferRequested

#: The registry that encodes and decodes the bank's events.
registry = EventRegistry([AccountOpened, MoneyDeposited, MoneyWithdrawn, AccountClosed, TransferRequested])
