"""The bank's queries, their DTOs, and the smallest read model that answers them.

Queries are answered from a read model, never from the ``Account`` aggregate. The read model
here is a dictionary fed from ``$all`` by :meth:`AccountSummaries.catch_up`; a production
service would keep it in a ``projections`` read-model store instead, with the same handlers.
"""

from __future__ import annotations

import threading
from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from escqrs.examples.bank.events import (
    AccountClosed,
    AccountOpened,
    MoneyDeposited,
    MoneyWithdrawn,
    registry,
)
from eventsourcing_cqrs import DomainEvent, EventEnvelope, Query, QueryBus
from eventsourcing_cqrs.event_store import EventFilter, EventReader, read_after

__all__ = [
    "AccountSummaries",
    "AccountSummary",
    "GetAccount",
    "ListAccounts",
    "register",
]


class AccountSummary(BaseModel):
    """What a customer sees of an account."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account_id: str
    owner: str
    balance: Decimal
    closed: bool


class GetAccount(Query[AccountSummary | None]):
    """The summary of one account, or ``None`` if the read model has not seen it."""

    account_id: str


class ListAccounts(Query[list[AccountSummary]]):
    """Every account of ``owner`` (every account when ``owner`` is ``None``), by id."""

    owner: str | None = None


class AccountSummaries:
    """An in-memory read model of account summaries, with the ``$all`` position it has reached."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, AccountSummary] = {}
        self.position = 0

    def apply(self, envelope: EventEnvelope[DomainEvent]) -> None:
        """Fold one decoded event into the read model."""
        event = envelope.event
        with self._lock:
            match event:
                case AccountOpened(account_id=account_id, owner=owner):
                    self._rows[account_id] = AccountSummary(
                        account_id=account_id, owner=owner, balance=Decimal(0), closed=False
                    )
                case (
                    MoneyDeposited(account_id=account_id, balance=balance)
                    | MoneyWithdrawn(account_id=account_id, balance=balance)
                ):
                    row = self._rows[account_id]
                    self._rows[account_id] = row.model_copy(update={"balance": balance})
                case AccountClosed(account_id=account_id):
                    self._rows[account_id] = self._rows[account_id].model_copy(update={"closed": True})
            self.position = max(self.position, envelope.position)

    def catch_up(self, store: EventReader) -> int:
        """Apply every bank event after :attr:`position`; returns how many were applied."""
        applied = 0
        for recorded in read_after(
            store, self.position or None, filter=EventFilter.for_event_types(registry.event_types)
        ):
            self.apply(registry.decode_envelope(recorded))
            applied += 1
        return applied

    def get(self, query: GetAccount) -> AccountSummary | None:
        """Answer :class:`GetAccount`."""
        with self._lock:
            return self._rows.get(query.account_id)

    def list(self, query: ListAccounts) -> list[AccountSummary]:
        """Answer :class:`ListAccounts`."""
        with self._lock:
            rows = sorted(self._rows.values(), key=lambda row: row.account_id)
        return [row for row in rows if query.owner is None or row.owner == query.owner]


def register(bus: QueryBus, summaries: AccountSummaries) -> None:
    """Register the bank's query handlers on ``bus``."""
    bus.register(GetAccount, summaries.get)
    bus.register(ListAccounts, summaries.list)
