"""The bank's read models: projections into a read model store, and the query handlers over them.

* :class:`AccountList` (``account_list``) — one summary document per account, for
  :class:`~escqrs.examples.bank.queries.GetAccount` and :class:`~escqrs.examples.bank.queries.ListAccounts`.
* :class:`AccountDetail` (``account_detail``) — each account with its totals and every
  movement, for :class:`GetAccountDetail`.
* :class:`DailyTransactions` (``daily_transactions``) — per day (UTC, by recorded time): how
  many accounts were opened and closed, how many deposits and withdrawals, and their totals,
  for :class:`GetDailyReport` and :class:`ListDailyReports`.

The same projections run on the memory, SQLite and PostgreSQL stores. Amounts are kept as
decimal strings (JSON has no decimal type) and turned back into :class:`~decimal.Decimal` by
the query handlers::

    store = SQLiteReadModelStore("views.db")
    for projection in bank_projections():
        ProjectionRunner(projection, events, store).start()
    bus = QueryBus()
    register(bus, store)
    bus.ask(ListAccounts(owner="Ada Lovelace"))
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from escqrs.examples.bank.events import AccountClosed, AccountOpened, MoneyDeposited, MoneyWithdrawn, registry
from escqrs.examples.bank.queries import AccountSummary, GetAccount, ListAccounts
from eventsourcing_cqrs import Query, QueryBus
from projections import EventContext, Projection, ProjectionNotFoundError, ReadModelStore, TableSpec
from projections.read_model_store import Document

__all__ = [
    "AccountDetail",
    "AccountDetailView",
    "AccountList",
    "BankReadModels",
    "DailyReport",
    "DailyTransactions",
    "GetAccountDetail",
    "GetDailyReport",
    "ListDailyReports",
    "Movement",
    "bank_projections",
    "register",
]


# --------------------------------------------------------------------------- DTOs and queries


class Movement(BaseModel):
    """One deposit or withdrawal, as an account statement shows it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    revision: int
    kind: str
    amount: Decimal
    balance: Decimal
    recorded_at: str


class AccountDetailView(BaseModel):
    """An account with its totals and its latest movements (newest first)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    account_id: str
    owner: str
    balance: Decimal
    closed: bool
    opened_at: str
    deposited: Decimal
    withdrawn: Decimal
    movement_count: int
    movements: list[Movement]


class DailyReport(BaseModel):
    """What happened in the bank on one day (UTC)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    day: date
    accounts_opened: int
    accounts_closed: int
    deposits: int
    deposited: Decimal
    withdrawals: int
    withdrawn: Decimal

    @property
    def net(self) -> Decimal:
        """Money in minus money out."""
        return self.deposited - self.withdrawn


class GetAccountDetail(Query[AccountDetailView | None]):
    """An account with its latest ``movements`` movements, or ``None`` if unknown."""

    account_id: str
    movements: int = Field(default=20, ge=0, le=1000)


class GetDailyReport(Query[DailyReport | None]):
    """The report of one day, or ``None`` if nothing happened that day."""

    day: date


class ListDailyReports(Query[list[DailyReport]]):
    """The latest ``days`` daily reports, newest first."""

    days: int = Field(default=30, ge=1, le=3660)


# --------------------------------------------------------------------------- projections


def _money(value: Any) -> Decimal:
    return Decimal(str(value))


class AccountList(Projection):
    """One summary per account: owner, balance, closed."""

    name = "account_list"
    version = 1
    tables = (TableSpec("accounts", indexes=("owner",)),)
    registry = registry

    def __init__(self) -> None:
        super().__init__()
        self.on(AccountOpened, self.opened)
        self.on(MoneyDeposited, self.balance_changed)
        self.on(MoneyWithdrawn, self.balance_changed)
        self.on(AccountClosed, self.closed)

    def opened(self, event: AccountOpened, context: EventContext) -> None:
        """A new account starts at zero."""
        context.table("accounts").put(
            event.account_id,
            {"account_id": event.account_id, "owner": event.owner, "balance": "0", "closed": False},
        )

    def balance_changed(self, event: MoneyDeposited | MoneyWithdrawn, context: EventContext) -> None:
        """The event carries the balance after the movement."""
        context.table("accounts").update(event.account_id, {"balance": event.balance})

    def closed(self, event: AccountClosed, context: EventContext) -> None:
        """Closed accounts stay listed, marked closed."""
        context.table("accounts").update(event.account_id, {"closed": True})


class AccountDetail(Projection):
    """Each account with its totals, and every movement keyed by account and revision."""

    name = "account_detail"
    version = 1
    tables = (TableSpec("accounts"), TableSpec("movements", indexes=("account_id",)))
    registry = registry

    def __init__(self) -> None:
        super().__init__()
        self.on(AccountOpened, self.opened)
        self.on(MoneyDeposited, self.deposited)
        self.on(MoneyWithdrawn, self.withdrawn)
        self.on(AccountClosed, self.closed)

    def opened(self, event: AccountOpened, context: EventContext) -> None:
        """Totals start at zero."""
        context.table("accounts").put(
            event.account_id,
            {
                "account_id": event.account_id,
                "owner": event.owner,
                "balance": "0",
                "closed": False,
                "opened_at": context.recorded.recorded_at.isoformat(),
                "deposited": "0",
                "withdrawn": "0",
                "movement_count": 0,
            },
        )

    def deposited(self, event: MoneyDeposited, context: EventContext) -> None:
        """Count the deposit and record it."""
        self._moved(event, "deposit", "deposited", context)

    def withdrawn(self, event: MoneyWithdrawn, context: EventContext) -> None:
        """Count the withdrawal and record it."""
        self._moved(event, "withdrawal", "withdrawn", context)

    def _moved(
        self, event: MoneyDeposited | MoneyWithdrawn, kind: str, total: str, context: EventContext
    ) -> None:
        accounts = context.table("accounts")
        account = accounts.get(event.account_id)
        if account is None:
            raise LookupError(f"account {event.account_id!r} moved money before it was opened")
        accounts.update(
            event.account_id,
            {
                "balance": event.balance,
                total: _money(account[total]) + event.amount,
                "movement_count": account["movement_count"] + 1,
            },
        )
        revision = context.recorded.revision
        context.table("movements").put(
            f"{event.account_id}:{revision:010d}",
            {
                "account_id": event.account_id,
                "revision": revision,
                "kind": kind,
                "amount": event.amount,
                "balance": event.balance,
                "recorded_at": context.recorded.recorded_at.isoformat(),
            },
        )

    def closed(self, event: AccountClosed, context: EventContext) -> None:
        """Mark the account closed."""
        context.table("accounts").update(event.account_id, {"closed": True})


class DailyTransactions(Projection):
    """Per day: accounts opened and closed, deposits and withdrawals with their totals."""

    name = "daily_transactions"
    version = 1
    tables = (TableSpec("days"),)
    registry = registry

    def __init__(self) -> None:
        super().__init__()
        self.on(AccountOpened, self.opened)
        self.on(MoneyDeposited, self.deposited)
        self.on(MoneyWithdrawn, self.withdrawn)
        self.on(AccountClosed, self.closed)

    @staticmethod
    def _day(context: EventContext) -> Document:
        day = context.recorded.recorded_at.date().isoformat()
        return context.table("days").get(day) or {
            "day": day,
            "accounts_opened": 0,
            "accounts_closed": 0,
            "deposits": 0,
            "deposited": "0",
            "withdrawals": 0,
            "withdrawn": "0",
        }

    def _save(self, document: Document, context: EventContext) -> None:
        context.table("days").put(document["day"], document)

    def opened(self, event: AccountOpened, context: EventContext) -> None:
        """Count an opening."""
        day = self._day(context)
        self._save({**day, "accounts_opened": day["accounts_opened"] + 1}, context)

    def closed(self, event: AccountClosed, context: EventContext) -> None:
        """Count a closing."""
        day = self._day(context)
        self._save({**day, "accounts_closed": day["accounts_closed"] + 1}, context)

    def deposited(self, event: MoneyDeposited, context: EventContext) -> None:
        """Count a deposit and add it to the day's total."""
        day = self._day(context)
        self._save(
            {**day, "deposits": day["deposits"] + 1, "deposited": _money(day["deposited"]) + event.amount},
            context,
        )

    def withdrawn(self, event: MoneyWithdrawn, context: EventContext) -> None:
        """Count a withdrawal and add it to the day's total."""
        day = self._day(context)
        self._save(
            {
                **day,
                "withdrawals": day["withdrawals"] + 1,
                "withdrawn": _money(day["withdrawn"]) + event.amount,
            },
            context,
        )


def bank_projections() -> tuple[Projection, ...]:
    """A fresh instance of each of the bank's projections."""
    return (AccountList(), AccountDetail(), DailyTransactions())


# --------------------------------------------------------------------------- query handlers


class BankReadModels:
    """The bank's query handlers, reading the live read models in ``store``.

    A projection that has never run answers as empty (``None`` or ``[]``), not as an error.
    """

    def __init__(self, store: ReadModelStore) -> None:
        self._store = store

    def get_account(self, query: GetAccount) -> AccountSummary | None:
        """Answer :class:`~escqrs.examples.bank.queries.GetAccount`."""
        try:
            with self._store.read(AccountList.name) as view:
                row = view.table("accounts").get(query.account_id)
        except ProjectionNotFoundError:
            return None
        return None if row is None else AccountSummary.model_validate(row)

    def list_accounts(self, query: ListAccounts) -> list[AccountSummary]:
        """Answer :class:`~escqrs.examples.bank.queries.ListAccounts` (by account id)."""
        where = None if query.owner is None else {"owner": query.owner}
        try:
            with self._store.read(AccountList.name) as view:
                rows = view.table("accounts").find(where)
        except ProjectionNotFoundError:
            return []
        return [AccountSummary.model_validate(row) for row in rows]

    def get_account_detail(self, query: GetAccountDetail) -> AccountDetailView | None:
        """Answer :class:`GetAccountDetail`."""
        try:
            with self._store.read(AccountDetail.name) as view:
                account = view.table("accounts").get(query.account_id)
                if account is None:
                    return None
                movements = view.table("movements").find(
                    {"account_id": query.account_id},
                    order_by="revision",
                    descending=True,
                    limit=query.movements,
                )
        except ProjectionNotFoundError:
            return None
        return AccountDetailView.model_validate(
            {
                **account,
                "movements": [
                    {key: value for key, value in movement.items() if key != "account_id"}
                    for movement in movements
                ],
            }
        )

    def get_daily_report(self, query: GetDailyReport) -> DailyReport | None:
        """Answer :class:`GetDailyReport`."""
        try:
            with self._store.read(DailyTransactions.name) as view:
                row = view.table("days").get(query.day.isoformat())
        except ProjectionNotFoundError:
            return None
        return None if row is None else DailyReport.model_validate(row)

    def list_daily_reports(self, query: ListDailyReports) -> list[DailyReport]:
        """Answer :class:`ListDailyReports` (newest first)."""
        try:
            with self._store.read(DailyTransactions.name) as view:
                rows = view.table("days").find(order_by="day", descending=True, limit=query.days)
        except ProjectionNotFoundError:
            return []
        return [DailyReport.model_validate(row) for row in rows]


def register(bus: QueryBus, store: ReadModelStore) -> BankReadModels:
    """Register the bank's query handlers over ``store`` on ``bus``."""
    handlers = BankReadModels(store)
    bus.register(GetAccount, handlers.get_account)
    bus.register(ListAccounts, handlers.list_accounts)
    bus.register(GetAccountDetail, handlers.get_account_detail)
    bus.register(GetDailyReport, handlers.get_daily_report)
    bus.register(ListDailyReports, handlers.list_daily_reports)
    return handlers
