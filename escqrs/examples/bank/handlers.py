"""The bank's command handlers: load the account, let it decide, save it.

Retries on conflict, event ids, metadata and logging are the bus's business, not the handlers'.
"""

from __future__ import annotations

from escqrs.examples.bank.account import Account
from escqrs.examples.bank.commands import CloseAccount, Deposit, OpenAccount, TransferMoney, Withdraw
from escqrs.examples.bank.events import registry
from eventsourcing_cqrs import CommandBus, Repository
from eventsourcing_cqrs.event_store import EventStore

__all__ = ["AccountHandlers", "account_repository", "bank_bus", "register"]


def account_repository(
    store: EventStore, *, snapshot_every: int | None = None, cache_size: int = 0
) -> Repository[Account]:
    """The repository of accounts in ``store``, optionally snapshotting every N events and
    keeping the last ``cache_size`` accounts it loaded or saved (see :class:`Repository`)."""
    return Repository(store, Account, registry, snapshot_every=snapshot_every, cache_size=cache_size)


class AccountHandlers:
    """One method per command: load the account, let it decide, save it."""

    def __init__(self, accounts: Repository[Account]) -> None:
        self.accounts = accounts

    def open(self, command: OpenAccount) -> None:
        """Create the account (``AggregateAlreadyExistsError`` if the id is taken)."""
        self.accounts.save(Account.open(command.account_id, command.owner))

    def deposit(self, command: Deposit) -> None:
        """Pay money in."""
        account = self.accounts.load(command.account_id)
        account.deposit(command.amount, command.transfer_id)
        self.accounts.save(account)

    def withdraw(self, command: Withdraw) -> None:
        """Pay money out, never below zero."""
        account = self.accounts.load(command.account_id)
        account.withdraw(command.amount, command.transfer_id)
        self.accounts.save(account)

    def transfer(self, command: TransferMoney) -> None:
        """Record a transfer request on the source account (the transfer process does the rest)."""
        account = self.accounts.load(command.source)
        account.request_transfer(command.transfer_id, command.target, command.amount)
        self.accounts.save(account)

    def close(self, command: CloseAccount) -> None:
        """Close an empty account."""
        account = self.accounts.load(command.account_id)
        account.close()
        self.accounts.save(account)


def register(bus: CommandBus, accounts: Repository[Account]) -> AccountHandlers:
    """Register the bank's handlers on ``bus``."""
    handlers = AccountHandlers(accounts)
    bus.register(OpenAccount, handlers.open)
    bus.register(Deposit, handlers.deposit)
    bus.register(Withdraw, handlers.withdraw)
    bus.register(CloseAccount, handlers.close)
    bus.register(TransferMoney, handlers.transfer)
    return handlers


def bank_bus(store: EventStore) -> CommandBus:
    """A command bus with the bank's handlers over ``store`` (what its reactors dispatch through).

    Its repository keeps the last 1,000 accounts it used: a transfer touches the same accounts
    again and again, and a cached account is brought up to date by reading only what was
    appended since (by any process), so the expected-version check stays the truth.
    """
    bus = CommandBus()
    register(bus, account_repository(store, cache_size=1000))
    return bus
