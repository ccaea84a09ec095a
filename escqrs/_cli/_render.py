"""Rich renderings of audit results, shared by the commands and the demo."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from escqrs._cli._common import format_time
from eventsourcing_cqrs.audit import AggregateState, AuditEntry, StateDiff, StreamSummary, TraceStep

__all__ = [
    "data_preview",
    "diff_tables",
    "history_table",
    "state_table",
    "streams_table",
    "trace_table",
    "value_text",
]


def value_text(value: Any) -> str:
    """A JSON value as a short readable string (strings unquoted)."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def data_preview(entry: AuditEntry, width: int = 70) -> str:
    """The payload as compact JSON, cut at ``width`` characters."""
    data = entry.data()
    if data is None and entry.recorded.data:
        text = f"<{len(entry.recorded.data)} bytes of {entry.recorded.content_type}>"
    else:
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= width else text[: width - 1] + "…"


def _dim(value: str | None) -> Text:
    return Text("—", style="dim") if value is None else Text(value)


def history_table(title: str, entries: Iterable[AuditEntry], *, data: bool = False) -> tuple[Table, int]:
    """A table of events (revision, position, time, type, actor, correlation id or payload)."""
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("rev", justify="right")
    table.add_column("position", justify="right")
    table.add_column("recorded (UTC)", no_wrap=True)
    table.add_column("type", style="cyan")
    if data:
        table.add_column("data", overflow="fold")
    else:
        table.add_column("actor")
        table.add_column("correlation id", overflow="fold")
    count = 0
    for entry in entries:
        count += 1
        cells: list[Any] = [
            str(entry.revision),
            str(entry.position),
            format_time(entry.recorded_at),
            entry.event_type,
        ]
        if data:
            cells.append(data_preview(entry))
        else:
            cells += [_dim(entry.actor), _dim(entry.correlation_id)]
        table.add_row(*cells)
    return table, count


def state_table(state: AggregateState) -> Group:
    """The fields of an aggregate at one version, under a line saying which and when."""
    # A heading line rather than a table title: a title wraps at the (narrow) table's width.
    heading = Text.assemble(
        (f"{state.aggregate_type} {state.aggregate_id!r} at version {state.version}", "italic"),
        (f", as of the event recorded {format_time(state.recorded_at)}", "dim"),
    )
    table = Table(header_style="bold")
    table.add_column("field", style="cyan")
    table.add_column("value", overflow="fold")
    for name, value in state.fields.items():
        table.add_row(name, value_text(value))
    return Group(heading, table)


def diff_tables(diff: StateDiff) -> list[Table]:
    """The changed fields (before, after, which events), then the events in between."""
    changes = Table(
        title=f"{diff.before.stream}: version {diff.before.version} → {diff.after.version}",
        title_justify="left",
        header_style="bold",
    )
    changes.add_column("field", style="cyan")
    changes.add_column("before", overflow="fold")
    changes.add_column("after", overflow="fold")
    changes.add_column("changed by", overflow="fold")
    for change in diff.changes:
        changes.add_row(
            change.field,
            value_text(change.before),
            value_text(change.after),
            ", ".join(f"r{entry.revision} {entry.event_type}" for entry in change.changed_by),
        )
    if not diff.changes:
        changes.add_row(Text("(no field changed)", style="dim"), "", "", "")
    events, _ = history_table("events applied", diff.events)
    return [changes, events] if diff.events else [changes]


def trace_table(title: str, steps: Iterable[TraceStep]) -> tuple[Table, int]:
    """Events of one correlation, indented by causation depth."""
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("position", justify="right")
    table.add_column("recorded (UTC)", no_wrap=True)
    table.add_column("event", no_wrap=True)
    table.add_column("stream@rev", overflow="fold")
    table.add_column("actor")
    table.add_column("command id", overflow="fold")
    count = 0
    for step in steps:
        count += 1
        entry = step.entry
        marker = "  " * step.depth + ("└ " if step.depth else "")
        table.add_row(
            str(entry.position),
            format_time(entry.recorded_at),
            Text(marker) + Text(entry.event_type, style="cyan"),
            f"{entry.stream}@{entry.revision}",
            _dim(entry.actor),
            _dim(entry.command_id),
        )
    return table, count


def streams_table(summaries: Sequence[StreamSummary]) -> Table:
    """Streams with their sizes and last write."""
    table = Table(title=f"{len(summaries)} streams", title_justify="left", header_style="bold")
    table.add_column("stream", style="cyan", overflow="fold")
    table.add_column("events", justify="right")
    table.add_column("last rev", justify="right")
    table.add_column("last position", justify="right")
    table.add_column("last written (UTC)", no_wrap=True)
    table.add_column("state")
    for summary in summaries:
        table.add_row(
            summary.stream,
            str(summary.events),
            str(summary.last_revision),
            str(summary.last_position),
            format_time(summary.last_recorded_at),
            Text("deleted", style="red") if summary.deleted else Text("ok", style="green"),
        )
    return table


def print_all(console: Console, *renderables: Any) -> None:
    """Print renderables separated by blank lines."""
    for index, renderable in enumerate(renderables):
        if index:
            console.print()
        console.print(renderable)
