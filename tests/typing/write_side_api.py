"""How the write-side API reads to mypy. Checked with ``mypy --strict``; never run by pytest.

``assert_type`` lines state what mypy infers. Lines ending in ``# type: ignore[code]`` state what
mypy must *refuse*: with ``warn_unused_ignores`` (part of ``--strict``) an ignore that is no longer
needed is itself an error, so these lines fail the check if the API stops catching the misuse.
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar, assert_type

from escqrs.examples.bank.account import Account, InsufficientFundsError
from escqrs.examples.bank.commands import Deposit, OpenAccount
from escqrs.examples.bank.events import AccountEvent, MoneyDeposited, registry
from escqrs.examples.bank.handlers import account_repository
from escqrs.examples.bank.queries import AccountSummaries, AccountSummary, GetAccount, ListAccounts
from eventsourcing_cqrs import (
    Aggregate,
    Authorize,
    CommandBus,
    CommandResult,
    DomainEvent,
    EventEnvelope,
    EventRegistry,
    Metadata,
    QueryBus,
    Repository,
    RetryPolicy,
)
from eventsourcing_cqrs.event_store import AppendResult, NewEvent, RecordedEvent, connect
from eventsourcing_cqrs.testing import given


def repositories_are_generic_in_their_aggregate() -> None:
    store = connect("memory:")
    accounts = Repository(store, Account, registry, snapshot_every=100)
    assert_type(accounts, Repository[Account])
    account = accounts.load("1")
    assert_type(account, Account)
    assert_type(account.balance, Decimal)
    assert_type(account.pending_events, tuple[AccountEvent, ...])
    assert_type(accounts.load("1", at_version=3), Account)
    assert_type(accounts.save(account), AppendResult | None)
    assert_type(account_repository(store), Repository[Account])


def aggregates_only_apply_their_own_events() -> None:
    class Unrelated(DomainEvent):
        event_type: ClassVar[str] = "Unrelated"

    account = Account.open("1", "Ann")
    assert_type(account, Account)
    account.apply(MoneyDeposited(account_id="1", amount=Decimal(1), balance=Decimal(1)))
    account.apply(Unrelated())  # type: ignore[arg-type]


def messages_are_frozen_and_closed() -> None:
    command = Deposit(account_id="1", amount=Decimal(1))
    command.amount = Decimal(2)  # type: ignore[misc]
    Deposit(account_id="1", amount=Decimal(1), memo="x")  # type: ignore[call-arg]
    assert_type(OpenAccount.parse(b'{"account_id": "1", "owner": "A"}'), OpenAccount)
    assert_type(Metadata(actor="a").actor, str | None)


def the_command_bus_takes_handlers_of_the_registered_type() -> None:
    def deposit(command: Deposit) -> None:
        assert_type(command.amount, Decimal)

    bus = CommandBus(
        middleware=[Authorize(lambda command, actor: actor is not None)],
        retry=RetryPolicy(max_attempts=5),
    )
    bus.register(Deposit, deposit)
    bus.register(OpenAccount, deposit)  # type: ignore[arg-type]
    result = bus.dispatch(Deposit(account_id="1", amount=Decimal(1)), actor="alice")
    assert_type(result, CommandResult)
    assert_type(result.position, int | None)


def queries_return_their_dto_type() -> None:
    queries = QueryBus()
    summaries = AccountSummaries()
    queries.register(GetAccount, summaries.get)
    assert_type(queries.ask(GetAccount(account_id="1")), AccountSummary | None)
    assert_type(queries.ask(ListAccounts()), list[AccountSummary])


def the_registry_decodes_stored_events(recorded: RecordedEvent) -> None:
    people = EventRegistry()
    assert_type(people.register(MoneyDeposited), type[MoneyDeposited])
    assert_type(registry.decode(recorded), DomainEvent)
    assert_type(registry.decode_envelope(recorded), EventEnvelope[DomainEvent])
    assert_type(
        registry.encode(MoneyDeposited(account_id="1", amount=Decimal(1), balance=Decimal(1))), NewEvent
    )


def given_when_then_is_typed() -> None:
    outcome = given(Account, aggregate_id="1").when(lambda account: account.withdraw(Decimal(1)))
    assert_type(outcome.then_raises(InsufficientFundsError), InsufficientFundsError)
    assert_type(given(Account).build(), Account)


class Light(Aggregate[MoneyDeposited]):
    """An aggregate of a single event type needs no union."""

    category: ClassVar[str] = "Light"

    def when(self, event: MoneyDeposited) -> None:
        assert_type(event.balance, Decimal)
