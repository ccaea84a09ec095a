"""The bank end to end, as ``escqrs demo`` shows it: commands, projections, queries, an audit.

:func:`run` is the bank's demo (see :data:`escqrs.examples.bank.app.bank`). It dispatches commands
through the command bus, including a refused withdrawal, a redelivered command and a policy
that reacts to an event with a follow-up command in the same correlation; runs the
application's projections until they have caught up; answers queries from the read side; and
replays the audit trail of one account.
"""

from __future__ import annotations

import secrets
from decimal import Decimal

from rich.markup import escape
from rich.table import Table

from escqrs import DemoContext
from escqrs.examples.bank import handlers, read_models
from escqrs.examples.bank.commands import CloseAccount, Deposit, OpenAccount, Withdraw
from escqrs.examples.bank.queries import ListAccounts
from escqrs.examples.bank.read_models import AccountList
from eventsourcing_cqrs import AuditTrail, Command, CommandBus, DomainError, QueryBus
from projections import ProjectionRunner, projection_status, rebuild

__all__ = ["run"]

#: What the welcome policy pays into every new account.
WELCOME_BONUS = Decimal("5.00")


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

    opening = OpenAccount(account_id=ada, owner="Ada Lovelace")
    dispatch(opening, "teller-1")
    # A policy reacts to the AccountOpened event with a follow-up command: same correlation,
    # caused by the event (see it in the trace below).
    opened = next(events.read_stream(accounts.stream_name(ada), limit=1))
    bonus = bus.dispatch(
        Deposit(account_id=ada, amount=WELCOME_BONUS), actor="welcome-policy", caused_by=opened
    )
    console.print(
        f"  [green]✓[/green] welcome policy, reacting to AccountOpened: Deposit {WELCOME_BONUS} → "
        f"{bonus.stream} v{bonus.version} (correlation {bonus.correlation_id})"
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
        f"escqrs audit trace {bonus.correlation_id}  (the opening and what it caused)",
        audit.trace(bonus.correlation_id),
    )
    console.print()
    console.print(
        "Try it on your own store: [bold]escqrs demo --store sqlite:///bank.db[/bold], then "
        f"[bold]escqrs audit history {stream} --store sqlite:///bank.db[/bold]."
    )
