"""The bank end to end, as ``escqrs demo`` shows it: commands, projections, queries, an audit, transfers.

:func:`run` is the bank's demo (see :data:`escqrs.examples.bank.app.bank`). It dispatches commands
through the command bus, including a refused withdrawal, a redelivered command and a reactor
(the welcome bonus) that reacts to an event with a follow-up command in the same correlation;
runs the application's projections until they have caught up; answers queries from the read
side; replays the audit trail of one account; and runs the transfer process manager over two
transfers, one that completes and one whose target refuses, which is compensated.
"""

from __future__ import annotations

import secrets
import time
from decimal import Decimal

from rich.markup import escape
from rich.table import Table

from escqrs import DemoContext
from escqrs.examples.bank import handlers, read_models
from escqrs.examples.bank.commands import CloseAccount, Deposit, OpenAccount, TransferMoney, Withdraw
from escqrs.examples.bank.queries import ListAccounts
from escqrs.examples.bank.read_models import AccountList
from escqrs.examples.bank.transfers import Transfer, TransferProcess, WelcomeBonus
from eventsourcing_cqrs import AuditTrail, Command, CommandBus, DomainError, QueryBus
from eventsourcing_cqrs.reactions import ProcessEngine
from projections import ProjectionRunner, ReactorRunner, projection_status, rebuild

__all__ = ["run"]

#: How long the demo waits for its transfers to finish before it says they did not.
_TRANSFERS_TIMEOUT = 30.0


def _describe(command: Command) -> str:
    fields = command.model_dump(exclude={"command_id"})
    return f"{type(command).__name__}(" + ", ".join(f"{k}={v}" for k, v in fields.items()) + ")"


def run(context: DemoContext) -> None:
    """Run the bank demo on ``context``'s stores, narrating on its console."""
    console = context.console
    events = context.events
    # On a store that already holds a demo run, fresh ids keep this run's accounts apart.
    suffix = "" if events.head_position() == 0 else f"-{secrets.token_hex(2)}"
    ada, grace = f"ada{suffix}", f"grace{suffix}"

    accounts = handlers.account_repository(events, snapshot_every=100)
    bus = CommandBus()
    handlers.register(bus, accounts)

    context.heading("1. Commands go through the command bus; each appends events to one stream")

    def dispatch(command: Command, actor: str, note: str = "") -> None:
        try:
            result = bus.dispatch(command, actor=actor)
        except DomainError as refused:
            console.print(
                f"  [red]✗[/red] {escape(_describe(command))} by {actor}: [red]refused[/red] — {refused}"
            )
            return
        if result.duplicate:
            console.print(
                f"  [yellow]↺[/yellow] {escape(_describe(command))} delivered again: nothing written, "
                f"same result ({result.stream} v{result.version})"
            )
            return
        console.print(
            f"  [green]✓[/green] {escape(_describe(command))} by {actor} → "
            f"{result.stream} v{result.version} at position {result.position}{note}"
        )

    # The welcome bonus is a reactor: it follows $all and reacts to AccountOpened with a Deposit,
    # in the opening's correlation (see it in the trace below). A reactor that never ran starts
    # from now, so this first run only records where "now" is.
    welcome = ReactorRunner(WelcomeBonus(), events, context.read_models, bus=bus)
    welcome.run(until_caught_up=True)
    opening = OpenAccount(account_id=ada, owner="Ada Lovelace")
    dispatch(opening, "teller-1")
    welcome.run(until_caught_up=True)
    bonus = next(iter(events.read_stream(accounts.stream_name(ada), from_revision=1, limit=1)))
    console.print(
        f"  [green]✓[/green] reactor welcome_bonus, reacting to AccountOpened: Deposit {WelcomeBonus.bonus} "
        f"→ {bonus.stream} v{bonus.revision} (correlation {opening.command_id})"
    )
    salary = Deposit(account_id=ada, amount=Decimal("1200.00"))
    dispatch(salary, "payroll")
    dispatch(salary, "payroll")  # redelivered: same command id, nothing written
    dispatch(Withdraw(account_id=ada, amount=Decimal("300.00")), "atm-17")
    dispatch(Withdraw(account_id=ada, amount=Decimal("5000.00")), "atm-17")  # refused: no overdraft
    dispatch(OpenAccount(account_id=grace, owner="Grace Hopper"), "teller-2")
    dispatch(Deposit(account_id=grace, amount=Decimal("42.00")), "teller-2")
    dispatch(Withdraw(account_id=grace, amount=Decimal("42.00")), "teller-2")
    dispatch(CloseAccount(account_id=grace), "teller-2")
    dispatch(Deposit(account_id=grace, amount=Decimal("1.00")), "teller-2")  # refused: closed

    context.heading("2. Projections follow $all into the read model store")
    built = context.app.build_projections()
    for projection in built:
        ProjectionRunner(projection, events, context.read_models).run(until_caught_up=True)
    context.projection_status([projection_status(p, events, context.read_models) for p in built])
    # A rebuild builds a new generation beside the live one, which keeps serving, then switches.
    report = rebuild(AccountList(), events, context.read_models)
    if report is not None:
        console.print(
            f"  rebuilt [cyan]{report.projection}[/cyan] blue/green: generation {report.generation} "
            f"is live after {report.events} events"
        )

    context.heading("3. Queries are answered from the read models, never from aggregates")
    query_bus = QueryBus()
    read_models.register(query_bus, context.read_models)
    table = Table(title="ListAccounts()", title_justify="left", header_style="bold")
    for column in ("account", "owner", "balance", "closed"):
        table.add_column(column, justify="right" if column == "balance" else "left")
    for row in query_bus.ask(ListAccounts()):
        table.add_row(row.account_id, row.owner, str(row.balance), "yes" if row.closed else "no")
    console.print(table)
    detail = query_bus.ask(read_models.GetAccountDetail(account_id=ada, movements=3))
    if detail is not None:
        statement = Table(header_style="bold")
        for column in ("rev", "kind", "amount", "balance"):
            statement.add_column(column, justify="left" if column == "kind" else "right")
        for movement in detail.movements:
            statement.add_row(
                str(movement.revision), movement.kind, str(movement.amount), str(movement.balance)
            )
        console.print()
        # A heading line, not a title: a table's title wraps at the (narrow) table's width.
        console.print(f"[italic]GetAccountDetail(account_id={ada!r}, movements=3)[/italic]")
        console.print(statement)
        console.print(
            f"  in {detail.deposited}, out {detail.withdrawn}, {detail.movement_count} movements, "
            f"balance {detail.balance}"
        )
    for day in query_bus.ask(read_models.ListDailyReports(days=1)):
        console.print(
            f"  ListDailyReports: {day.day}: {day.accounts_opened} opened, {day.accounts_closed} closed, "
            f"{day.deposits} deposits ({day.deposited}), {day.withdrawals} withdrawals ({day.withdrawn}), "
            f"net {day.net}"
        )

    context.heading(f"4. The audit trail of Account-{ada}")
    audit = AuditTrail(events, context.app.aggregates)
    stream = str(accounts.stream_name(ada))
    context.history(f"escqrs audit history {stream}", audit.history(stream))
    context.state(audit.state(stream, at_version=1))
    last = audit.state(stream).version
    context.diff(audit.diff(stream, 1, last))
    context.trace(
        f"escqrs audit trace {opening.command_id}  (the opening and what it caused)",
        audit.trace(str(opening.command_id)),
    )

    context.heading("5. Transfers are a process manager: one completes, one is compensated")
    alan, lin = f"alan{suffix}", f"lin{suffix}"
    dispatch(OpenAccount(account_id=alan, owner="Alan Turing"), "teller-3")
    dispatch(OpenAccount(account_id=lin, owner="Lin Lanying"), "teller-3")
    dispatch(Deposit(account_id=lin, amount=Decimal("250.00")), "teller-3")
    transfers = ReactorRunner(TransferProcess(), events, context.read_models, bus=bus, batch_delay=0.005)
    transfers.run(until_caught_up=True)  # its first run: it starts from now
    sent = TransferMoney(transfer_id=f"t1{suffix}", source=lin, target=alan, amount=Decimal("100.00"))
    bounced = TransferMoney(transfer_id=f"t2{suffix}", source=lin, target=grace, amount=Decimal("50.00"))
    dispatch(sent, "lin")
    dispatch(bounced, "lin")  # grace's account is closed: the deposit will be refused
    engine = transfers.engine
    assert isinstance(engine, ProcessEngine)
    finished = _run_until_finished(transfers, engine, [sent.transfer_id, bounced.transfer_id])
    table = Table(title="the transfers (stream Transfer-{id})", title_justify="left", header_style="bold")
    for column in ("transfer", "from", "to", "amount", "status", "why"):
        table.add_column(column, justify="right" if column == "amount" else "left")
    for transfer in finished:
        table.add_row(
            transfer.id,
            transfer.source,
            transfer.target,
            str(transfer.amount),
            transfer.status,
            escape(transfer.reason or ""),
        )
    console.print(table)
    for projection in context.app.build_projections():  # the read models catch up with the transfers
        ProjectionRunner(projection, events, context.read_models).run(until_caught_up=True)
    refunded = f"Transfer-{bounced.transfer_id}"
    context.history(f"escqrs audit history {refunded}", audit.history(refunded))
    context.trace(
        f"escqrs audit trace {bounced.command_id}  (the request, the saga's decisions, the refund)",
        audit.trace(str(bounced.command_id)),
    )
    console.print()
    console.print(
        "Try it on your own store: [bold]escqrs demo --store sqlite:///bank.db[/bold], then "
        f"[bold]escqrs audit history {stream} --store sqlite:///bank.db[/bold]."
    )


def _run_until_finished(runner: ReactorRunner, engine: ProcessEngine, keys: list[str]) -> list[Transfer]:
    """Run the transfer process until every transfer in ``keys`` has finished; their final states."""
    runner.start()
    deadline = time.monotonic() + _TRANSFERS_TIMEOUT
    try:
        while True:
            loaded = [engine.load(key) for key in keys]
            states = [state for state in loaded if isinstance(state, Transfer)]
            if len(states) == len(keys) and all(state.finished for state in states):
                return states
            if runner.error is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the transfers did not finish within {_TRANSFERS_TIMEOUT} s"
                ) from runner.error
            time.sleep(0.02)
    finally:
        runner.stop()
        runner.join(10)
