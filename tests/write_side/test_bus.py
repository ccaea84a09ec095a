"""The command bus and the query bus, on both embedded stores, with the bank's real handlers."""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from escqrs.examples.bank import handlers, queries
from escqrs.examples.bank.account import Account, InsufficientFundsError
from escqrs.examples.bank.commands import CloseAccount, Deposit, OpenAccount, Withdraw
from escqrs.examples.bank.events import AccountClosed, AccountOpened, MoneyDeposited, MoneyWithdrawn, registry
from escqrs.examples.bank.handlers import account_repository
from eventsourcing_cqrs.bus import Authorize, CommandBus, CommandResult, QueryBus, RetryPolicy
from eventsourcing_cqrs.errors import (
    AuthorizationError,
    CommandValidationError,
    ConcurrencyRetriesExhaustedError,
    HandlerNotFoundError,
    InvalidInputError,
)
from eventsourcing_cqrs.event_store.port import EventStore, RecordedEvent
from eventsourcing_cqrs.messages import Command, Metadata
from eventsourcing_cqrs.repository import Repository
from eventsourcing_cqrs.testing.given import HandlerScenario
from eventsourcing_cqrs.unit_of_work import CommandContext, UnitOfWork, derive_event_id


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def open_account(bus: CommandBus, balance: Decimal = Decimal(0)) -> str:
    account_id = new_id()
    bus.dispatch(OpenAccount(account_id=account_id, owner="Ann"))
    if balance:
        bus.dispatch(Deposit(account_id=account_id, amount=balance))
    return account_id


def stream_events(store: EventStore, account_id: str) -> list[RecordedEvent]:
    return list(store.read_stream(f"Account-{account_id}"))


def metadata_of(recorded: RecordedEvent) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(recorded.metadata)
    return result


# -- dispatch ---------------------------------------------------------------------------------


def test_dispatch_reports_stream_new_version_and_commit_position(bus: CommandBus, store: EventStore) -> None:
    account_id = open_account(bus)
    result = bus.dispatch(Deposit(account_id=account_id, amount=Decimal("5.00")))
    assert (result.stream, result.version) == (f"Account-{account_id}", 1)
    assert result.position == store.head_position()
    assert (result.attempts, result.duplicate) == (1, False)
    assert result.duration > 0


def test_the_bank_runs_through_the_bus(store: EventStore) -> None:
    scenario = HandlerScenario(
        registry, lambda s, b: handlers.register(b, account_repository(s)), store=store
    )
    account_id = new_id()
    scenario.when(OpenAccount(account_id=account_id, owner="Ann")).then(
        AccountOpened(account_id=account_id, owner="Ann")
    )
    scenario.when(Deposit(account_id=account_id, amount=Decimal("30.00"))).then(
        MoneyDeposited(account_id=account_id, amount=Decimal(30), balance=Decimal(30))
    )
    scenario.when(Withdraw(account_id=account_id, amount=Decimal("30.01"))).then_raises(
        InsufficientFundsError
    )
    scenario.when(Withdraw(account_id=account_id, amount=Decimal("30.00"))).then(
        MoneyWithdrawn(account_id=account_id, amount=Decimal(30), balance=Decimal(0))
    )
    scenario.when(CloseAccount(account_id=account_id)).then(AccountClosed(account_id=account_id))


def test_a_command_without_handler_names_its_type(bus: CommandBus) -> None:
    class FreezeAccount(Command):
        account_id: str

    with pytest.raises(
        HandlerNotFoundError, match="No handler is registered for command type 'FreezeAccount'"
    ):
        bus.dispatch(FreezeAccount(account_id="1"))


def test_an_invalid_command_lists_each_field_and_why() -> None:
    with pytest.raises(CommandValidationError) as caught:
        Deposit(account_id="", amount=Decimal("-1"))
    fields = dict(caught.value.errors)
    assert set(fields) == {"account_id", "amount"}
    assert "at least 1 character" in fields["account_id"]
    assert "greater than 0" in fields["amount"]
    assert str(caught.value).startswith("Invalid Deposit command: account_id: ")


def test_an_invalid_command_body_is_refused_before_anything_is_appended(
    bus: CommandBus, store: EventStore
) -> None:
    account_id = open_account(bus)
    head = store.head_position()
    with pytest.raises(CommandValidationError, match="amount: Input should be a valid decimal"):
        bus.dispatch(Deposit.parse(json.dumps({"account_id": account_id, "amount": "lots"})))
    with pytest.raises(CommandValidationError, match="owner: Field required"):
        OpenAccount.parse({"account_id": "x"})
    assert store.head_position() == head


def test_a_refused_decision_appends_nothing_and_is_counted(bus: CommandBus, store: EventStore) -> None:
    account_id = open_account(bus, Decimal(5))
    head = store.head_position()
    with capture_logs() as logs, pytest.raises(InsufficientFundsError):
        bus.dispatch(Withdraw(account_id=account_id, amount=Decimal(6)))
    assert store.head_position() == head
    assert bus.metrics.rejected == 1
    (rejected,) = [log for log in logs if log["event"] == "command.rejected"]
    assert rejected["command_type"] == "Withdraw"
    assert rejected["error"] == "InsufficientFundsError"


# -- retries --------------------------------------------------------------------------------


def racing_bus(accounts: Repository[Account], store: EventStore, races: int, **retry: Any) -> CommandBus:
    """A bus whose Deposit handler is overtaken by another writer on its first ``races`` attempts."""
    remaining = {"races": races}

    def deposit(command: Deposit) -> None:
        account = accounts.load(command.account_id)
        if remaining["races"]:
            remaining["races"] -= 1
            rival = MoneyDeposited(account_id=account.id, amount=Decimal(1), balance=account.balance + 1)
            store.append(account.stream, [registry.encode(rival)], expected_version=account.version)
        account.deposit(command.amount)
        accounts.save(account)

    bus = CommandBus(retry=RetryPolicy(**retry))
    bus.register(OpenAccount, handlers.AccountHandlers(accounts).open)
    bus.register(Deposit, deposit)
    return bus


def test_a_conflicting_command_is_rerun_on_fresh_state_and_counted(
    accounts: Repository[Account], store: EventStore
) -> None:
    bus = racing_bus(accounts, store, races=2, base_delay=0.0001)
    account_id = open_account(bus)
    with capture_logs() as logs:
        result = bus.dispatch(Deposit(account_id=account_id, amount=Decimal(10)))
    assert result.attempts == 3
    assert accounts.load(account_id).balance == Decimal(12)
    assert (bus.metrics.conflicts, bus.metrics.retries) == (2, 2)
    retried = [log for log in logs if log["event"] == "command.retried"]
    assert [log["attempt"] for log in retried] == [1, 2]
    assert retried[0]["stream"] == f"Account-{account_id}"
    assert retried[0]["command_type"] == "Deposit"


def test_retries_are_bounded(accounts: Repository[Account], store: EventStore) -> None:
    bus = racing_bus(accounts, store, races=100, max_attempts=3, base_delay=0)
    account_id = open_account(bus)
    with pytest.raises(ConcurrencyRetriesExhaustedError, match="on all 3 attempts") as caught:
        bus.dispatch(Deposit(account_id=account_id, amount=Decimal(10)))
    assert caught.value.stream == f"Account-{account_id}"
    assert accounts.load(account_id).balance == Decimal(3)  # the rival's three deposits only
    assert (bus.metrics.conflicts, bus.metrics.retries, bus.metrics.exhausted) == (3, 2, 1)


def test_the_backoff_is_jittered_and_capped() -> None:
    policy = RetryPolicy(base_delay=0.01, max_delay=0.05)
    delays = [policy.delay(attempt) for attempt in (1, 1, 1, 1, 10, 10, 10)]
    assert all(0 <= delay <= 0.01 for delay in delays[:4])
    assert all(0 <= delay <= 0.05 for delay in delays[4:])
    assert len(set(delays)) > 1
    with pytest.raises(InvalidInputError):
        RetryPolicy(max_attempts=0)


# -- idempotency ----------------------------------------------------------------------------


def test_event_ids_are_derived_from_the_command_id(bus: CommandBus, store: EventStore) -> None:
    account_id = open_account(bus)
    command = Deposit(account_id=account_id, amount=Decimal(1))
    bus.dispatch(command)
    last = stream_events(store, account_id)[-1]
    assert last.id == derive_event_id(command.command_id, f"Account-{account_id}", 0)


def test_a_redelivered_command_writes_nothing_and_returns_the_first_result(
    bus: CommandBus, store: EventStore
) -> None:
    account_id = open_account(bus, Decimal(5))
    command = Deposit(account_id=account_id, amount=Decimal(1))
    first = bus.dispatch(command)
    bus.dispatch(Deposit(account_id=account_id, amount=Decimal(100)))
    head = store.head_position()
    again = bus.dispatch(command)
    assert store.head_position() == head
    assert again.duplicate
    assert (again.stream, again.version, again.position) == (first.stream, first.version, first.position)
    assert account_repository(store).load(account_id).balance == Decimal(106)
    assert bus.metrics.duplicates == 1


def test_a_redelivered_command_that_would_now_be_refused_still_succeeds(bus: CommandBus) -> None:
    account_id = open_account(bus, Decimal(5))
    command = Withdraw(account_id=account_id, amount=Decimal(5))
    bus.dispatch(command)
    assert bus.dispatch(command).duplicate


def test_a_redelivered_open_account_writes_nothing(bus: CommandBus, store: EventStore) -> None:
    command = OpenAccount(account_id=new_id(), owner="Ann")
    first = bus.dispatch(command)
    again = bus.dispatch(command)
    assert len(stream_events(store, command.account_id)) == 1
    assert (again.version, again.position) == (first.version, first.position)


def test_redelivery_is_detected_across_a_snapshot(store: EventStore) -> None:
    accounts = account_repository(store, snapshot_every=3)
    bus = CommandBus()
    handlers.register(bus, accounts)
    account_id = open_account(bus)
    command = Deposit(account_id=account_id, amount=Decimal(1))
    bus.dispatch(command)
    for _ in range(7):
        bus.dispatch(Deposit(account_id=account_id, amount=Decimal(1)))
    assert bus.dispatch(command).duplicate
    assert accounts.load(account_id).balance == Decimal(8)


# -- context and metadata -------------------------------------------------------------------


def test_events_carry_correlation_causation_command_id_actor_and_schema_version(
    bus: CommandBus, store: EventStore
) -> None:
    account_id = open_account(bus)
    command = Deposit(account_id=account_id, amount=Decimal(1))
    bus.dispatch(command, actor="alice", correlation_id="web-request-9")
    assert metadata_of(stream_events(store, account_id)[-1]) == {
        "$correlationId": "web-request-9",
        "$causationId": str(command.command_id),
        "commandId": str(command.command_id),
        "actor": "alice",
        "schemaVersion": 1,
    }


def test_a_root_command_correlates_by_its_own_id(bus: CommandBus, store: EventStore) -> None:
    command = OpenAccount(account_id=new_id(), owner="Ann")
    result = bus.dispatch(command)
    assert result.correlation_id == str(command.command_id)
    assert metadata_of(stream_events(store, command.account_id)[0])["$correlationId"] == str(
        command.command_id
    )


def test_a_command_caused_by_an_event_carries_its_correlation(bus: CommandBus, store: EventStore) -> None:
    source = open_account(bus)
    opened = stream_events(store, source)[0]
    target = new_id()
    bus.dispatch(OpenAccount(account_id=target, owner="Bob"), caused_by=opened)
    metadata = metadata_of(stream_events(store, target)[0])
    assert metadata["$correlationId"] == metadata_of(opened)["$correlationId"]
    assert metadata["$causationId"] == str(opened.id)
    with bus.reacting_to(registry.decode_envelope(opened)):
        result = bus.dispatch(Deposit(account_id=target, amount=Decimal(1)))
    assert result.correlation_id == metadata_of(opened)["$correlationId"]


def test_a_command_dispatched_by_a_handler_inherits_correlation_and_actor(
    accounts: Repository[Account], store: EventStore
) -> None:
    class OpenWithBonus(Command):
        account_id: str

    bus = CommandBus()
    handlers.register(bus, accounts)

    def open_with_bonus(command: OpenWithBonus) -> None:
        bus.dispatch(OpenAccount(account_id=command.account_id, owner="Ann"))
        bus.dispatch(Deposit(account_id=command.account_id, amount=Decimal(10)))

    bus.register(OpenWithBonus, open_with_bonus)
    parent = OpenWithBonus(account_id=new_id())
    bus.dispatch(parent, actor="promo-service", correlation_id="campaign-1")
    for recorded in stream_events(store, parent.account_id):
        metadata = metadata_of(recorded)
        assert metadata["$correlationId"] == "campaign-1"
        assert metadata["actor"] == "promo-service"
        assert metadata["commandId"] != str(parent.command_id)
    assert accounts.load(parent.account_id).balance == Decimal(10)


def test_the_structlog_context_names_the_command_while_it_is_handled(accounts: Repository[Account]) -> None:
    seen: dict[str, Any] = {}
    bus = CommandBus()
    bus.register(OpenAccount, lambda command: seen.update(structlog.contextvars.get_contextvars()))
    command = OpenAccount(account_id="1", owner="Ann")
    bus.dispatch(command, correlation_id="c-1")
    assert seen == {
        "command_type": "OpenAccount",
        "command_id": str(command.command_id),
        "correlation_id": "c-1",
        "causation_id": str(command.command_id),
    }
    assert structlog.contextvars.get_contextvars() == {}


def test_handled_commands_are_logged_with_timing_and_position(bus: CommandBus) -> None:
    with capture_logs() as logs:
        started = time.perf_counter()
        result = bus.dispatch(OpenAccount(account_id=new_id(), owner="Ann"))
        elapsed_ms = (time.perf_counter() - started) * 1000
    (handled,) = [log for log in logs if log["event"] == "command.handled"]
    assert handled["commit_position"] == result.position
    assert 0 < handled["duration_ms"] <= elapsed_ms
    assert handled["command_type"] == "OpenAccount"


def test_a_command_may_change_only_one_aggregate(accounts: Repository[Account], store: EventStore) -> None:
    class OpenTwo(Command):
        pass

    bus = CommandBus()

    def open_two(command: OpenTwo) -> None:
        accounts.save(Account.open(new_id(), "Ann"))
        accounts.save(Account.open(new_id(), "Bob"))

    bus.register(OpenTwo, open_two)
    with pytest.raises(InvalidInputError, match="a command appends once, to one aggregate"):
        bus.dispatch(OpenTwo())


def test_a_command_appends_once(bus: CommandBus, accounts: Repository[Account]) -> None:
    """Two appends are not atomic: a conflict on the second could be neither retried nor deduplicated."""
    account_id = open_account(bus)

    class DepositTwice(Command):
        pass

    def deposit_twice(command: DepositTwice) -> None:
        account = accounts.load(account_id)
        account.deposit(Decimal(1))
        accounts.save(account)
        account.deposit(Decimal(1))
        accounts.save(account)

    bus.register(DepositTwice, deposit_twice)
    with pytest.raises(InvalidInputError, match=r"already saved .*a command appends once"):
        bus.dispatch(DepositTwice())
    assert accounts.load(account_id).version == 0  # nothing was written


def test_the_nearest_cause_wins(bus: CommandBus, accounts: Repository[Account], store: EventStore) -> None:
    """Inside reacting_to(event), a command dispatched by a handler is caused by that handler's command."""
    source = open_account(bus)
    opened = stream_events(store, source)[0]

    class OpenLinked(Command):
        account_id: str

    def open_linked(command: OpenLinked) -> None:
        bus.dispatch(OpenAccount(account_id=command.account_id, owner="Linked"))

    bus.register(OpenLinked, open_linked)
    parent = OpenLinked(account_id=new_id())
    with bus.reacting_to(opened):
        result = bus.dispatch(parent)
    metadata = metadata_of(stream_events(store, parent.account_id)[0])
    assert result.correlation_id == metadata_of(opened)["$correlationId"]
    assert metadata["$correlationId"] == result.correlation_id
    assert metadata["commandId"] != str(parent.command_id)
    assert metadata["$causationId"] == str(parent.command_id)
    assert result.appends == ()


# -- middleware -----------------------------------------------------------------------------


def test_an_unauthorized_actor_is_refused_and_nothing_is_appended(
    accounts: Repository[Account], store: EventStore
) -> None:
    tellers = {"tina"}
    bus = CommandBus(middleware=[Authorize(lambda command, actor: actor in tellers)])
    handlers.register(bus, accounts)
    head = store.head_position()
    with pytest.raises(AuthorizationError, match="Actor 'mallory' may not issue OpenAccount") as caught:
        bus.dispatch(OpenAccount(account_id=new_id(), owner="M"), actor="mallory")
    assert caught.value.actor == "mallory"
    assert store.head_position() == head
    result = bus.dispatch(OpenAccount(account_id=new_id(), owner="T"), actor="tina")
    assert result.version == 0


def test_middleware_runs_outermost_first_once_per_dispatch(
    accounts: Repository[Account], store: EventStore
) -> None:
    calls: list[str] = []

    def named(name: str) -> Any:
        def middleware(command: Command, context: CommandContext, call_next: Any) -> CommandResult:
            calls.append(f"{name}>")
            result: CommandResult = call_next()
            calls.append(f"<{name}")
            return result

        return middleware

    bus = racing_bus(accounts, store, races=1, base_delay=0)
    account_id = open_account(bus)
    bus._middleware = (named("outer"), named("inner"))
    bus.dispatch(Deposit(account_id=account_id, amount=Decimal(1)))
    assert calls == ["outer>", "inner>", "<inner", "<outer"]


# -- queries --------------------------------------------------------------------------------


def test_queries_are_answered_from_the_read_model_with_typed_dtos(
    bus: CommandBus, query_bus: QueryBus, store: EventStore
) -> None:
    summaries = queries.AccountSummaries()
    queries.register(query_bus, summaries)
    account_id = open_account(bus, Decimal("12.34"))
    assert query_bus.ask(queries.GetAccount(account_id=account_id)) is None
    summaries.catch_up(store)
    summary = query_bus.ask(queries.GetAccount(account_id=account_id))
    assert summary == queries.AccountSummary(
        account_id=account_id, owner="Ann", balance=Decimal("12.34"), closed=False
    )
    assert [row.account_id for row in query_bus.ask(queries.ListAccounts(owner="Ann"))] == [account_id]


def test_a_query_without_handler_names_its_type(query_bus: QueryBus) -> None:
    with pytest.raises(HandlerNotFoundError, match="query type 'GetAccount'"):
        query_bus.ask(queries.GetAccount(account_id="1"))


def test_metadata_defaults_when_saved_outside_a_command(
    accounts: Repository[Account], store: EventStore
) -> None:
    account = Account.open(new_id(), "Ann")
    accounts.save(account)
    recorded = stream_events(store, account.id)[0]
    assert registry.decode_metadata(recorded) == Metadata()


@pytest.mark.parametrize("actor", [None, "alice", 'Zoë "the auditor"\n'])
@pytest.mark.parametrize("schema_version", [1, 3])
def test_a_unit_of_work_encodes_the_command_s_metadata_as_metadata_does(
    actor: str | None, schema_version: int
) -> None:
    context = CommandContext(uuid.uuid4(), "Deposit", 'campaign "7"\t€', str(uuid.uuid4()), actor)
    expected = context.metadata().model_copy(update={"schema_version": schema_version}).to_json()
    assert UnitOfWork(context).metadata_json(schema_version) == expected


def test_derived_event_ids_are_uuid5_of_the_command_id() -> None:
    command_id, stream = uuid.uuid4(), "Account-é1"
    for index in (0, 1, 12):
        assert derive_event_id(command_id, stream, index) == uuid.uuid5(command_id, f"{stream}/{index}")
