"""``escqrs streams``: list the streams of the event store and read one."""

from __future__ import annotations

import itertools
from typing import Annotated

import typer

from escqrs._cli._common import (
    DebugOption,
    JsonOption,
    StoreOption,
    configure_logging,
    emit_json,
    emit_json_array,
    event_store,
    examples,
    out_console,
)
from escqrs._cli._render import history_table, streams_table
from eventsourcing_cqrs.audit import AuditTrail

__all__ = ["streams_app"]

streams_app = typer.Typer(
    help="List the event store's streams and read their events.",
    epilog=examples("escqrs streams list --store sqlite:///bank.db", "escqrs streams read Account-42 --json"),
    no_args_is_help=True,
)

#: Rows shown in a table when --limit is not given (JSON output is never cut).
TABLE_LIMIT = 1000


@streams_app.command(
    "list",
    epilog=examples("escqrs streams list --prefix Account- --store sqlite:///bank.db"),
)
def list_streams(
    *,
    prefix: Annotated[str | None, typer.Option("--prefix", help="Only streams whose name starts so.")] = None,
    system: Annotated[
        bool, typer.Option("--system", help="Include streams of $-typed system events.")
    ] = False,
    store: StoreOption = None,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Every stream with events, its size and last write (a scan of $all)."""
    configure_logging(debug=debug)
    with event_store(store) as events:
        summaries = AuditTrail(events).streams(prefix=prefix, include_system=system)
    if json_output:
        emit_json([summary.to_dict() for summary in summaries])
    else:
        out_console().print(streams_table(summaries))


@streams_app.command(
    "read",
    epilog=examples("escqrs streams read Account-42 --limit 10 --store sqlite:///bank.db"),
)
def read(
    *,
    stream: Annotated[str, typer.Argument(help="A stream name, e.g. Account-42.")],
    from_revision: Annotated[
        int | None, typer.Option("--from", min=0, help="Start at this revision.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help=f"At most N events (tables: {TABLE_LIMIT}).")
    ] = None,
    backwards: Annotated[bool, typer.Option("--backwards", help="Newest first.")] = False,
    store: StoreOption = None,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """The events of one stream with their payloads (--json: payload and metadata in full)."""
    configure_logging(debug=debug)
    with event_store(store) as events:
        audit = AuditTrail(events)
        if json_output:
            entries = audit.history(stream, from_revision=from_revision, limit=limit, backwards=backwards)
            emit_json_array(entry.to_dict() for entry in entries)
            return
        shown = limit or TABLE_LIMIT
        entries = audit.history(stream, from_revision=from_revision, limit=shown + 1, backwards=backwards)
        table, _ = history_table(stream, itertools.islice(entries, shown), data=True)
        console = out_console()
        console.print(table)
        if limit is None and next(entries, None) is not None:
            console.print(f"[dim]Showing the first {shown} events; use --limit or --from for more.[/dim]")
