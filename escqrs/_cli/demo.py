"""``escqrs demo``: the application's own demo, on fresh embedded stores unless told otherwise."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.rule import Rule

from escqrs._cli._common import (
    DEFAULT_APP,
    AppOption,
    CliError,
    DebugOption,
    ReadModelsOption,
    StoreOption,
    configure_logging,
    event_store,
    markup,
    open_app,
    out_console,
    read_model_store,
    redacted,
)
from escqrs._cli._render import diff_tables, history_table, print_all, state_table, trace_table
from escqrs.app import AppSpec
from eventsourcing_cqrs.audit import AggregateState, AuditEntry, StateDiff, TraceStep
from eventsourcing_cqrs.event_store.port import EventStore

if TYPE_CHECKING:
    from projections import ProjectionStatus
    from projections.read_model_store.port import ReadModelStore

__all__ = ["demo"]


@dataclass(frozen=True)
class _Context:
    """The :class:`~escqrs.app.DemoContext` the command hands to the demo."""

    app: AppSpec
    events: EventStore
    read_models: ReadModelStore
    console: Console

    def heading(self, title: str) -> None:
        self.console.print()
        self.console.print(Rule(f"[bold]{markup(title)}[/bold]", align="left"))

    def history(self, title: str, entries: Iterable[AuditEntry]) -> None:
        self.console.print()
        table, _ = history_table(title, entries)
        self.console.print(table)

    def state(self, state: AggregateState) -> None:
        self.console.print()
        self.console.print(state_table(state))

    def diff(self, diff: StateDiff) -> None:
        self.console.print()
        print_all(self.console, *diff_tables(diff))

    def trace(self, title: str, steps: Iterable[TraceStep]) -> None:
        self.console.print()
        table, _ = trace_table(title, steps)
        self.console.print(table)

    def projection_status(self, statuses: Sequence[ProjectionStatus]) -> None:
        from escqrs._cli.projections import status_table  # noqa: PLC0415 - read side on demand

        self.console.print(status_table(statuses))


def demo(
    *,
    store: StoreOption = None,
    read_models: ReadModelsOption = None,
    app: AppOption = DEFAULT_APP,
    debug: DebugOption = False,
) -> None:
    """Run the application's demo end to end: commands, projections, queries and an audit.

    Without --store (and --read-models) it uses fresh SQLite files in a temporary directory,
    deleted afterwards, so it can be run again and again.
    """
    configure_logging(debug=debug)
    spec = open_app(app)
    if spec.demo is None:
        raise CliError(f"Application {spec.name!r} has no demo.")
    with tempfile.TemporaryDirectory(prefix="escqrs-demo-") as scratch:
        store_uri = store or f"sqlite:///{Path(scratch, 'events.db')}"
        views_uri = read_models or f"sqlite:///{Path(scratch, 'read_models.db')}"
        console = out_console()
        kept = "" if store else " (temporary)"
        console.print(f"[bold]{markup(spec.name)}[/bold]: {markup(spec.description)}")
        console.print(f"[dim]event store {markup(redacted(store_uri))}{kept}[/dim]")
        views_kept = "" if read_models else " (temporary)"
        console.print(f"[dim]read models {markup(redacted(views_uri))}{views_kept}[/dim]")
        with (
            event_store(store_uri, must_exist=False) as events,
            read_model_store(views_uri, must_exist=False) as views,
        ):
            spec.demo(_Context(spec, events, views, console))
