"""The bank's command handlers: load the account, let it decide, save it.

Retries on conflict, event ids, metadata and logging are the bus's business, not the handlers'.
"""

from __future__ import annotations

from escqrs.examples.bank.account import Account
from escqrs.examples.bank.commands import CloseAccount, Deposit, OpenAccount, Withdraw
from escqrs.examples.bank.events import registry
from eventsourcing_cqrs import CommandBus, Repository
from eventsourcing_cqrs.event_store import EventStore

__all__ = ["AccountHandlers", "account_repository", "register"]


def account_repository(store: EventStore, *, snapshot_every: int | None = None) -> Repository[Account]:
    """The repository of accounts in ``store``, optionally snapshotting every N events."""
    return Repository(store, Account, registry, snapshot_every=snapshot_every)


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
        account.deposit(command.amount)
        self.accounts.save(account)

    def withdraw(self, command: Withdraw) -> None:
        """Pay money out, never below zero."""
        account = self.accounts.load(command.account_id)
        account.withdraw(command.amount)
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
    return handlers
