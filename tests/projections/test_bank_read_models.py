"""The bank's read models on every store: account list and detail, the daily report, and
read-your-writes after a command."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from escqrs.examples.bank import handlers
from escqrs.examples.bank.commands import CloseAccount, Deposit, OpenAccount, Withdraw
from escqrs.examples.bank.queries import AccountSummary, GetAccount, ListAccounts
from escqrs.examples.bank.read_models import (
    AccountList,
    GetAccountDetail,
    GetDailyReport,
    ListDailyReports,
    bank_projections,
    register,
)
from eventsourcing_cqrs.bus import CommandBus, QueryBus
from eventsourcing_cqrs.event_store.memory import InMemoryEventStore
from projections import ProjectionRunner
from projections.read_model_store import InMemoryReadModelStore, ReadModelStore, SQLiteReadModelStore


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ReadModelStore]:
    views: ReadModelStore
    if request.param == "memory":
        views = InMemoryReadModelStore()
    elif request.param == "sqlite":
        views = SQLiteReadModelStore(tmp_path / "views.db", durable=False)
    else:
        from projections.read_model_store.postgres import PostgresReadModelStore  # noqa: PLC0415 - optional extra

        uri = request.getfixturevalue("postgres_uri")
        views = PostgresReadModelStore(uri, schema=request.getfixturevalue("postgres_schema"))
    yield views
    views.close()


@pytest.fixture
def events() -> Iterator[InMemoryEventStore]:
    store = InMemoryEventStore()
    yield store
    store.close()


@pytest.fixture
def commands(events: InMemoryEventStore) -> CommandBus:
    bus = CommandBus()
    handlers.register(bus, handlers.account_repository(events))
    return bus


@pytest.fixture
def queries(store: ReadModelStore) -> QueryBus:
    bus = QueryBus()
    register(bus, store)
    return bus


def catch_up(events: InMemoryEventStore, store: ReadModelStore) -> None:
    for projection in bank_projections():
        ProjectionRunner(projection, events, store).run(until_caught_up=True)


def test_queries_answer_empty_before_the_projections_ever_ran(queries: QueryBus) -> None:
    assert queries.ask(GetAccount(account_id="a1")) is None
    assert queries.ask(ListAccounts()) == []
    assert queries.ask(GetAccountDetail(account_id="a1")) is None
    assert queries.ask(ListDailyReports()) == []


def test_account_list_detail_and_daily_report_follow_the_commands(
    events: InMemoryEventStore, store: ReadModelStore, commands: CommandBus, queries: QueryBus
) -> None:
    commands.dispatch(OpenAccount(account_id="ada", owner="Ada Lovelace"))
    commands.dispatch(Deposit(account_id="ada", amount=Decimal("100.50")))
    commands.dispatch(Withdraw(account_id="ada", amount=Decimal("30.25")))
    commands.dispatch(OpenAccount(account_id="grace", owner="Grace Hopper"))
    commands.dispatch(Deposit(account_id="grace", amount=Decimal("5")))
    commands.dispatch(Withdraw(account_id="grace", amount=Decimal("5")))
    commands.dispatch(CloseAccount(account_id="grace"))
    catch_up(events, store)

    assert queries.ask(ListAccounts()) == [
        AccountSummary(account_id="ada", owner="Ada Lovelace", balance=Decimal("70.25"), closed=False),
        AccountSummary(account_id="grace", owner="Grace Hopper", balance=Decimal("0"), closed=True),
    ]
    assert [a.account_id for a in queries.ask(ListAccounts(owner="Grace Hopper"))] == ["grace"]
    summary = queries.ask(GetAccount(account_id="ada"))
    assert summary is not None
    assert summary.balance == Decimal("70.25")

    detail = queries.ask(GetAccountDetail(account_id="ada", movements=1))
    assert detail is not None
    assert (detail.deposited, detail.withdrawn, detail.movement_count) == (
        Decimal("100.50"),
        Decimal("30.25"),
        2,
    )
    assert [(m.kind, m.amount, m.balance) for m in detail.movements] == [
        ("withdrawal", Decimal("30.25"), Decimal("70.25"))
    ]

    today = datetime.now(UTC).date()
    [report] = queries.ask(ListDailyReports())
    assert report == queries.ask(GetDailyReport(day=today))
    assert (report.day, report.accounts_opened, report.accounts_closed) == (today, 2, 1)
    assert (report.deposits, report.deposited, report.withdrawals, report.withdrawn) == (
        2,
        Decimal("105.50"),
        2,
        Decimal("35.25"),
    )
    assert report.net == Decimal("70.25")


def test_a_query_after_wait_for_reads_the_command_s_own_write(
    events: InMemoryEventStore, store: ReadModelStore, commands: CommandBus, queries: QueryBus
) -> None:
    runner = ProjectionRunner(AccountList(), events, store, batch_delay=0.01)
    runner.start()
    try:
        opened = commands.dispatch(OpenAccount(account_id="ada", owner="Ada Lovelace"))
        assert opened.position is not None
        runner.wait_for(opened.position, timeout=10)
        deposited = commands.dispatch(Deposit(account_id="ada", amount=Decimal("12.34")))
        assert deposited.position is not None
        runner.wait_for(deposited.position, timeout=10)
        summary = queries.ask(GetAccount(account_id="ada"))
        assert summary is not None
        assert summary.balance == Decimal("12.34")
    finally:
        runner.stop()
        runner.join(10)
