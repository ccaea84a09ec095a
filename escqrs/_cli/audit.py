"""``escqrs audit``: history, past states, diffs, exports and correlation traces."""

from __future__ import annotations

import enum
import itertools
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from escqrs._cli._common import (
    DEFAULT_APP,
    AppOption,
    CliError,
    DebugOption,
    JsonOption,
    StoreOption,
    configure_logging,
    emit_json,
    emit_json_array,
    err_console,
    event_store,
    examples,
    markup,
    open_app,
    out_console,
)
from escqrs._cli._render import diff_tables, history_table, print_all, state_table, trace_table
from eventsourcing_cqrs.audit import AuditTrail

__all__ = ["audit_app"]

audit_app = typer.Typer(
    epilog=examples(
        "escqrs audit history Account-42 --store sqlite:///bank.db",
        "escqrs audit trace <correlation-id> --json",
    ),
    help="Replay the audit trail: what happened to an entity, who caused it, what it looked like then.",
    no_args_is_help=True,
)

#: Rows shown in a table when --limit is not given (JSON output is never cut).
TABLE_LIMIT = 1000

StreamArgument = Annotated[str, typer.Argument(help="A stream name, e.g. Account-42.")]


def _parse_time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2024-05-01T12:00:00Z)", param_hint="'--at-time'"
        ) from None
    # A time without a zone is read as UTC, the zone recorded times are shown in.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@audit_app.command(
    "history",
    epilog=examples("escqrs audit history Account-42 --store sqlite:///bank.db"),
)
def history(
    *,
    stream: StreamArgument,
    store: StoreOption = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help=f"At most N events (tables: {TABLE_LIMIT}).")
    ] = None,
    from_revision: Annotated[
        int | None, typer.Option("--from", min=0, help="Start at this revision.")
    ] = None,
    backwards: Annotated[bool, typer.Option("--backwards", help="Newest first.")] = False,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Every event of a stream: revision, position, recorded time, type, actor, correlation id."""
    configure_logging(debug=debug)
    with event_store(store) as events:
        audit = AuditTrail(events)
        if json_output:
            entries = audit.history(stream, from_revision=from_revision, limit=limit, backwards=backwards)
            emit_json_array(entry.to_dict(payload=False) for entry in entries)
            return
        shown = limit or TABLE_LIMIT
        entries = audit.history(stream, from_revision=from_revision, limit=shown + 1, backwards=backwards)
        table, _ = history_table(f"History of {stream}", itertools.islice(entries, shown))
        console = out_console()
        console.print(table)
        if limit is None and next(entries, None) is not None:
            console.print(
                f"[dim]Showing the first {shown} events; use --limit, --from or "
                "'escqrs audit export' for more.[/dim]"
            )


@audit_app.command(
    "state",
    epilog=examples(
        "escqrs audit state Account-42 --at-version 3 --store sqlite:///bank.db",
        "escqrs audit state Account-42 --at-time 2024-05-01T12:00:00Z",
    ),
)
def state(
    *,
    stream: StreamArgument,
    at_version: Annotated[
        int | None, typer.Option("--at-version", min=0, help="The state after the event at this revision.")
    ] = None,
    at_time: Annotated[
        str | None,
        typer.Option(
            "--at-time", metavar="TIME", help="The state as of this ISO 8601 time (UTC if no zone)."
        ),
    ] = None,
    store: StoreOption = None,
    app: AppOption = DEFAULT_APP,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """The aggregate's state now, at version N or at time T, rebuilt by its repository."""
    configure_logging(debug=debug)
    if at_version is not None and at_time is not None:
        raise typer.BadParameter("give --at-version or --at-time, not both", param_hint="'--at-time'")
    moment = _parse_time(at_time) if at_time is not None else None
    spec = open_app(app)
    with event_store(store) as events:
        result = AuditTrail(events, spec.aggregates).state(stream, at_version=at_version, at_time=moment)
    if json_output:
        emit_json(result.to_dict())
    else:
        out_console().print(state_table(result))


@audit_app.command(
    "diff",
    epilog=examples("escqrs audit diff Account-42 --from 1 --to 4 --store sqlite:///bank.db"),
)
def diff(
    *,
    stream: StreamArgument,
    from_version: Annotated[int, typer.Option("--from", min=0, help="The earlier version.")],
    to_version: Annotated[
        int | None, typer.Option("--to", min=0, help="The later version (default: the last one).")
    ] = None,
    store: StoreOption = None,
    app: AppOption = DEFAULT_APP,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Which fields changed between two versions, and which events changed each."""
    configure_logging(debug=debug)
    spec = open_app(app)
    with event_store(store) as events:
        audit = AuditTrail(events, spec.aggregates)
        if to_version is None:
            to_version = audit.state(stream).version
        result = audit.diff(stream, from_version, to_version)
    if json_output:
        emit_json(result.to_dict())
    else:
        print_all(out_console(), *diff_tables(result))


class ExportFormatChoice(enum.StrEnum):
    """The export formats, as typer choices."""

    jsonl = "jsonl"
    csv = "csv"


@audit_app.command(
    "export",
    epilog=examples(
        "escqrs audit export Account-42 --format csv -o account-42.csv",
        "escqrs audit export --all > everything.jsonl",
    ),
)
def export(
    *,
    stream: Annotated[
        str | None, typer.Argument(help="The stream to export (or --all).", show_default=False)
    ] = None,
    all_events: Annotated[bool, typer.Option("--all", help="Export the whole of $all.")] = False,
    export_format: Annotated[
        ExportFormatChoice, typer.Option("--format", help="JSON lines or CSV.")
    ] = ExportFormatChoice.jsonl,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", help="Write to FILE instead of stdout.", dir_okay=False
        ),
    ] = None,
    from_position: Annotated[
        int | None, typer.Option("--from-position", min=0, help="With --all: start at this position.")
    ] = None,
    system: Annotated[
        bool, typer.Option("--system", help="With --all: include $-typed system events.")
    ] = False,
    store: StoreOption = None,
    debug: DebugOption = False,
) -> None:
    """Export a stream, or all of $all, as JSON lines or CSV, streamed in constant memory."""
    configure_logging(debug=debug)
    if (stream is None) == (not all_events):
        raise typer.BadParameter("give a STREAM or --all (one of them)", param_hint="'STREAM'")
    if stream is not None and (from_position is not None or system):
        raise typer.BadParameter("--from-position and --system apply to --all only", param_hint="'--all'")
    with event_store(store) as events:
        audit = AuditTrail(events)
        if stream is not None:
            # Fail before creating the output file when the stream does not exist.
            next(audit.history(stream, limit=1))
        target = output.open("w", encoding="utf-8", newline="") if output is not None else sys.stdout
        try:
            count = audit.export(
                target,
                stream=stream,
                format=export_format.value,
                from_position=from_position,
                include_system=system,
            )
        finally:
            if output is not None:
                target.close()
            else:
                sys.stdout.flush()
    where = str(output) if output is not None else "stdout"
    err_console().print(
        f"Exported {count} events of {markup(stream or '$all')} to {markup(where)} ({export_format.value})."
    )


@audit_app.command(
    "trace",
    epilog=examples("escqrs audit trace 5f0c7c1e-8f0a-4b8e-9d43-0d2b9f6a1c11 --store sqlite:///bank.db"),
)
def trace(
    *,
    correlation_id: Annotated[
        str, typer.Argument(metavar="CORRELATION_ID", help="The $correlationId shared by the chain.")
    ],
    from_position: Annotated[
        int | None, typer.Option("--from-position", min=0, help="Scan $all from this position.")
    ] = None,
    store: StoreOption = None,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Every event caused by one command chain (one correlation id), in commit order.

    Scans $all (from --from-position): the cost grows with the store, not with the answer.
    """
    configure_logging(debug=debug)
    with event_store(store) as events:
        steps = AuditTrail(events).trace(correlation_id, from_position=from_position)
        if json_output:
            count = emit_json_array(step.to_dict() for step in steps)
        else:
            table, count = trace_table(f"Correlation {correlation_id}", steps)
            if count:
                out_console().print(table)
    if count == 0:
        # As grep does: nothing found is a failure, so that scripts can tell.
        raise CliError(f"No event has the correlation id {correlation_id!r}.")
