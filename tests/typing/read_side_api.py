"""How the read-side API reads to mypy. Checked with ``mypy --strict``; never run by pytest.

``assert_type`` lines state what mypy infers. Lines ending in ``# type: ignore[code]`` state what
mypy must *refuse*: with ``warn_unused_ignores`` (part of ``--strict``) an ignore that is no longer
needed is itself an error, so these lines fail the check if the API stops catching the misuse.
"""

from __future__ import annotations

from typing import assert_type

from escqrs.examples.bank.events import AccountOpened, MoneyDeposited
from escqrs.examples.bank.queries import AccountSummary, GetAccount
from escqrs.examples.bank.read_models import AccountDetailView, GetAccountDetail, register
from eventsourcing_cqrs import QueryBus
from eventsourcing_cqrs.event_store import RecordedEvent, connect
from projections import (
    EventContext,
    Progress,
    Projection,
    ProjectionRunner,
    ProjectionStatus,
    RebuildReport,
    RunOutcome,
    TableSpec,
    projection_status,
    rebuild,
)
from projections.read_model_store import Document, ReadModelStore
from projections.read_model_store import connect as connect_read_models


class Owners(Projection):
    name = "owners"
    version = 1
    tables = (TableSpec("owners", indexes=("account_id",)),)

    def __init__(self) -> None:
        super().__init__()
        self.on(AccountOpened, self.opened)
        self.on_recorded("SomethingRaw", self.raw)
        self.on(MoneyDeposited, self.opened)  # type: ignore[arg-type]

    def opened(self, event: AccountOpened, context: EventContext) -> None:
        assert_type(event.owner, str)
        assert_type(context.recorded, RecordedEvent)
        context.table("owners").put(event.owner, {"account_id": event.account_id})
        context.table("owners").put(event.owner, ["not", "a", "mapping"])  # type: ignore[arg-type]

    def raw(self, event: RecordedEvent, context: EventContext) -> None:
        assert_type(context.table("owners").get(event.stream), Document | None)


def runners_and_rebuilds_are_typed() -> None:
    events = connect("memory:")
    store = connect_read_models("sqlite:///views.db")
    assert_type(store, ReadModelStore)
    runner = ProjectionRunner(Owners(), events, store, batch_size=100, batch_delay=0.05)
    assert_type(runner.run(until_caught_up=True), RunOutcome)
    assert_type(runner.status(), ProjectionStatus)
    assert_type(projection_status(Owners(), events, store).lag_events, int)

    def show(progress: Progress) -> None:
        assert_type(progress.eta, float | None)

    assert_type(rebuild(Owners(), events, store, progress=show), RebuildReport | None)
    with store.read("owners") as view:
        assert_type(
            view.table("owners").find({"account_id": "a1"}, order_by="account_id", limit=5), list[Document]
        )
        view.table("owners").put("k", {})  # type: ignore[attr-defined]


def query_handlers_read_the_store(store: ReadModelStore) -> None:
    bus = QueryBus()
    register(bus, store)
    assert_type(bus.ask(GetAccount(account_id="a1")), AccountSummary | None)
    assert_type(bus.ask(GetAccountDetail(account_id="a1")), AccountDetailView | None)
