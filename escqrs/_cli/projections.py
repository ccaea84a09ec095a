"""``escqrs projections``: list, status, run, rebuild, parked events and their retry, drop.

The read side (``projections``) is imported here, when a command runs: the write side never
depends on it, and the other commands start without it.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from escqrs._cli._common import (
    DEFAULT_APP,
    AppOption,
    CliError,
    DebugOption,
    JsonOption,
    ReadModelsOption,
    StoreOption,
    configure_logging,
    emit_json,
    err_console,
    event_store,
    examples,
    format_time,
    markup,
    open_app,
    out_console,
    read_model_store,
)
from escqrs.app import AppSpec

if TYPE_CHECKING:
    from projections import Progress as RebuildProgress
    from projections import Projection, ProjectionRunner, ProjectionStatus
    from projections.read_model_store.port import ParkedEvent

__all__ = ["projections_app", "status_rows", "status_table"]

projections_app = typer.Typer(
    epilog=examples("escqrs projections status --store sqlite:///bank.db --read-models sqlite:///views.db"),
    help="Operate the read side: status, run projections, rebuild read models, retry parked events, drop.",
    no_args_is_help=True,
)

NamesArgument = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[NAME]...",
        help="Projection names (default: every projection of the app).",
        show_default=False,
    ),
]


def _select(spec: AppSpec, names: Sequence[str] | None) -> list[Projection]:
    if not names:
        built = spec.build_projections()
        if not built:
            raise CliError(f"Application {spec.name!r} declares no projections.")
        return built
    return [spec.projection(name) for name in names]


@contextmanager
def _on_interrupt(stop: Callable[[], None]) -> Iterator[list[bool]]:
    """Within the block, Ctrl-C and SIGTERM call ``stop`` (once) instead of raising.

    Yields a one-item list that becomes ``[True]`` when a signal arrived.
    """
    interrupted = [False]
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        del signum, frame
        interrupted[0] = True
        stop()

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield interrupted
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# -- rendering --------------------------------------------------------------------------------


def status_rows(statuses: Sequence[ProjectionStatus]) -> list[dict[str, Any]]:
    """Statuses as JSON types."""
    rows = []
    for status in statuses:
        building = status.building
        rows.append(
            {
                "name": status.name,
                "version": status.version,
                "live_version": status.live_version,
                "generation": status.generation,
                "state": status.state.value,
                "running": status.running,
                "checkpoint": status.checkpoint,
                "head_position": status.head_position,
                "lag_events": status.lag_events,
                "lag_capped": status.lag_capped,
                "lag_seconds": round(status.lag_seconds, 3),
                "parked": status.parked,
                "last_error": status.last_error,
                "last_error_at": None if status.last_error_at is None else status.last_error_at.isoformat(),
                "building": None
                if building is None
                else {
                    "generation": building.generation,
                    "version": building.version,
                    "checkpoint": building.checkpoint,
                    "events_applied": building.events_applied,
                },
            }
        )
    return rows


_STATE_STYLES = {"live": "green", "catching_up": "yellow", "rebuilding": "yellow", "failed": "red"}


def status_table(statuses: Sequence[ProjectionStatus]) -> Table:
    """Checkpoint, head, lag, state and parked count of each projection."""
    table = Table(title="Projections", title_justify="left", header_style="bold")
    table.add_column("projection", style="cyan")
    table.add_column("version", justify="right")
    table.add_column("state")
    table.add_column("checkpoint", justify="right")
    table.add_column("head", justify="right")
    table.add_column("lag", justify="right")
    table.add_column("parked", justify="right")
    table.add_column("last error", overflow="fold")
    for status in statuses:
        live = "—" if status.live_version is None else str(status.live_version)
        version = str(status.version) if live == str(status.version) else f"{live} → {status.version}"
        state = status.state.value + (" (running)" if status.running else "")
        if status.building is not None:
            state += f", building v{status.building.version}: {status.building.events_applied} events"
        lag = f"{status.lag_events}{'+' if status.lag_capped else ''} events"
        if status.lag_events:
            lag += f" / {status.lag_seconds:.1f} s"
        table.add_row(
            status.name,
            version,
            Text(state, style=_STATE_STYLES.get(status.state.value, "")),
            "—" if status.checkpoint is None else str(status.checkpoint),
            str(status.head_position),
            lag,
            Text(str(status.parked), style="red" if status.parked else ""),
            status.last_error or "",
        )
    return table


def _parked_row(event: ParkedEvent) -> dict[str, Any]:
    return {
        "projection": event.projection,
        "generation": event.generation,
        "position": event.position,
        "stream": event.stream,
        "revision": event.revision,
        "type": event.event_type,
        "event_id": str(event.event_id),
        "error": event.error,
        "attempts": event.attempts,
        "parked_at": event.parked_at.isoformat(),
        "recorded_at": event.recorded_at.isoformat(),
        "retry_requested": event.retry_requested,
    }


# -- commands ---------------------------------------------------------------------------------


@projections_app.command(
    "list", epilog=examples("escqrs projections list --app escqrs.examples.bank.app:bank")
)
def list_projections(
    *, app: AppOption = DEFAULT_APP, json_output: JsonOption = False, debug: DebugOption = False
) -> None:
    """The application's projections: name, version, tables, event types, failure policy."""
    configure_logging(debug=debug)
    spec = open_app(app)
    described = [projection.describe() for projection in spec.build_projections()]
    if json_output:
        emit_json(described)
        return
    table = Table(title=f"Projections of {spec.name}", title_justify="left", header_style="bold")
    for column in ("name", "version", "tables", "event types", "on failure"):
        table.add_column(column, style="cyan" if column == "name" else "", overflow="fold")
    for item in described:
        table.add_row(
            item["name"],
            str(item["version"]),
            ", ".join(item["tables"]),
            ", ".join(item["event_types"]),
            item["failure_policy"],
        )
    out_console().print(table)


@projections_app.command(
    "status",
    epilog=examples("escqrs projections status --store sqlite:///bank.db --read-models sqlite:///views.db"),
)
def status(
    *,
    names: NamesArgument = None,
    store: StoreOption = None,
    read_models: ReadModelsOption = None,
    app: AppOption = DEFAULT_APP,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Checkpoint, head of $all, lag (events and seconds), state and parked count of each projection."""
    from projections import projection_status  # noqa: PLC0415 - the read side only when needed

    configure_logging(debug=debug)
    spec = open_app(app)
    selected = _select(spec, names)
    with event_store(store) as events, read_model_store(read_models) as views:
        statuses = [projection_status(projection, events, views) for projection in selected]
    if json_output:
        emit_json(status_rows(statuses))
    else:
        out_console().print(status_table(statuses))


@projections_app.command(
    "run",
    epilog=examples(
        "escqrs projections run --store sqlite:///bank.db --read-models sqlite:///views.db",
        "escqrs projections run account_list --until-caught-up",
    ),
)
def run(
    *,
    names: NamesArgument = None,
    until_caught_up: Annotated[
        bool, typer.Option("--until-caught-up", help="Return once every projection is live.")
    ] = False,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Events per transaction.")] = 500,
    store: StoreOption = None,
    read_models: ReadModelsOption = None,
    app: AppOption = DEFAULT_APP,
    debug: DebugOption = False,
) -> None:
    """Run projections in the foreground until Ctrl-C (the current batch commits, then they stop)."""
    from projections import ProjectionRunner, projection_status  # noqa: PLC0415 - the read side only when needed

    configure_logging(debug=debug)
    spec = open_app(app)
    selected = _select(spec, names)
    console = err_console()
    with event_store(store) as events, read_model_store(read_models, must_exist=False) as views:
        runners = [ProjectionRunner(p, events, views, batch_size=batch_size) for p in selected]
        listed = ", ".join(markup(p.name) for p in selected)
        if until_caught_up:
            console.print(f"Catching up {listed}…")

            def stop_all() -> None:
                for runner in runners:
                    runner.stop()

            with _on_interrupt(stop_all) as interrupted:
                for runner in runners:
                    if interrupted[0]:
                        break
                    runner.run(until_caught_up=True)
        else:
            console.print(f"Running {listed}. Press Ctrl-C to stop.")
            interrupted = _run_until_stopped(runners)
        statuses = [projection_status(projection, events, views) for projection in selected]
    if interrupted[0]:
        console.print("Stopped: every batch in flight was committed.")
    out_console().print(status_table(statuses))


def _run_until_stopped(runners: Sequence[ProjectionRunner]) -> list[bool]:
    """Run every runner in its own thread until a signal (or a failure) stops them all."""
    stop_all = threading.Event()

    def stop() -> None:
        stop_all.set()
        for runner in runners:
            runner.stop()

    with _on_interrupt(stop) as interrupted:
        for runner in runners:
            runner.start()
        while not stop_all.is_set():
            if any(runner.error is not None for runner in runners):
                stop()
                break
            stop_all.wait(0.2)
        for runner in runners:
            runner.stop()
        failures = []
        for runner in runners:
            try:
                runner.join(timeout=60)
            except Exception as exc:  # noqa: BLE001 - reported below, after every runner stopped
                failures.append(exc)
    if failures:
        raise failures[0]
    return interrupted


@projections_app.command(
    "rebuild",
    epilog=examples(
        "escqrs projections rebuild account_list --store sqlite:///bank.db --read-models sqlite:///views.db"
    ),
)
def rebuild(
    *,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The projection to rebuild.")],
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Events per transaction.")] = 1000,
    store: StoreOption = None,
    read_models: ReadModelsOption = None,
    app: AppOption = DEFAULT_APP,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Rebuild a read model from the start of $all beside the live one, then switch (blue/green).

    The live read model keeps serving meanwhile. Ctrl-C stops after the current batch; run the
    same command again to resume where it stopped.
    """
    from projections import ProjectionRunner  # noqa: PLC0415 - the read side only when needed

    configure_logging(debug=debug)
    spec = open_app(app)
    projection = spec.projection(name)
    console = err_console()
    with event_store(store) as events, read_model_store(read_models, must_exist=False) as views:
        runner = ProjectionRunner(projection, events, views, batch_size=batch_size, batch_delay=0.5)
        with _progress_bar(console, name) as show, _on_interrupt(runner.stop) as interrupted:
            report = runner.rebuild(show)
    if report is None:
        reason = "interrupted" if interrupted[0] else "stopped"
        raise CliError(f"The rebuild of {name!r} was {reason}; run the same command again to resume it.")
    result = {
        "projection": report.projection,
        "version": report.version,
        "generation": report.generation,
        "events": report.events,
        "seconds": round(report.seconds, 3),
        "rate": round(report.rate, 1),
        "resumed": report.resumed,
        "switched": report.switched,
        "position": report.position,
    }
    if json_output:
        emit_json(result)
        return
    resumed = " (resumed)" if report.resumed else ""
    out_console().print(
        f"Rebuilt [cyan]{markup(report.projection)}[/cyan] v{report.version}{resumed}: generation "
        f"{report.generation} is live, {report.events} events in {report.seconds:.2f} s "
        f"({report.rate:.0f} events/s), checkpoint {report.position if report.position is not None else '—'}."
    )


@contextmanager
def _progress_bar(console: Any, name: str) -> Iterator[Callable[[RebuildProgress], None]]:
    """A rich progress bar fed by the rebuild's progress callback (its rate and ETA)."""
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("ETA {task.fields[eta]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task: TaskID = bar.add_task(f"rebuild {name}", total=None, rate="—/s", eta="—")

    def show(progress: RebuildProgress) -> None:
        eta = "—" if progress.eta is None else _duration(progress.eta)
        bar.update(
            task,
            completed=progress.done,
            total=max(progress.total, 1),
            rate=f"{progress.rate:,.0f} events/s",
            eta=eta,
        )

    with bar:
        yield show


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@projections_app.command(
    "parked",
    epilog=examples("escqrs projections parked --store sqlite:///bank.db --read-models sqlite:///views.db"),
)
def parked(
    *,
    names: NamesArgument = None,
    read_models: ReadModelsOption = None,
    app: AppOption = DEFAULT_APP,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Events set aside after failing every retry: where, which type, why, how often."""
    configure_logging(debug=debug)
    spec = open_app(app)
    selected = _select(spec, names)
    with read_model_store(read_models) as views:
        events = [event for projection in selected for event in views.parked_events(projection.name)]
    if json_output:
        emit_json([_parked_row(event) for event in events])
        return
    table = Table(title=f"{len(events)} parked events", title_justify="left", header_style="bold")
    for column in ("projection", "position", "stream@rev", "type", "attempts", "parked (UTC)", "error"):
        table.add_column(
            column, overflow="fold", justify="right" if column in ("position", "attempts") else "left"
        )
    for event in events:
        table.add_row(
            event.projection,
            str(event.position),
            f"{event.stream}@{event.revision}",
            event.event_type,
            str(event.attempts) + (" (retry requested)" if event.retry_requested else ""),
            format_time(event.parked_at),
            event.error,
        )
    out_console().print(table)


@projections_app.command(
    "retry",
    epilog=examples("escqrs projections retry account_list --position 1234 --read-models sqlite:///views.db"),
)
def retry(
    *,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The projection whose parked events to retry.")],
    positions: Annotated[
        list[int] | None,
        typer.Option("--position", min=0, help="Retry only the event at this position (repeatable)."),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the retries.")
    ] = 30.0,
    store: StoreOption = None,
    read_models: ReadModelsOption = None,
    app: AppOption = DEFAULT_APP,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Retry parked events (all of the projection's, or those at --position).

    When a runner of the projection is running (in any process), it retries them; otherwise
    they are retried here, under the projection's lease.
    """
    from projections import ProjectionRunner  # noqa: PLC0415 - the read side only when needed
    from projections.read_model_store.port import LeaseRole  # noqa: PLC0415

    configure_logging(debug=debug)
    spec = open_app(app)
    projection = spec.projection(name)
    with event_store(store) as events, read_model_store(read_models) as views:
        before = {event.position for event in views.parked_events(name)}
        if not before:
            if json_output:
                emit_json({"projection": name, "count": 0, "retried": [], "still_parked": []})
            else:
                out_console().print(f"Nothing parked for [cyan]{markup(name)}[/cyan].")
            return
        if views.lease_held(name, LeaseRole.RUN):
            views.request_retry(name, positions)
            _wait_for_retries(views, name, timeout)
        else:
            ProjectionRunner(projection, events, views).retry_parked(positions, timeout=timeout)
        after = {event.position for event in views.parked_events(name)}
    retried = sorted(before - after)
    result = {"projection": name, "count": len(retried), "retried": retried, "still_parked": sorted(after)}
    if json_output:
        emit_json(result)
    else:
        out_console().print(
            f"Retried {len(retried)} parked event(s) of [cyan]{markup(name)}[/cyan]; "
            f"{len(after)} still parked."
        )
    if after & (before if positions is None else set(positions)):
        raise CliError(
            f"{len(after)} event(s) of {name!r} failed again; see 'escqrs projections parked {name}'."
        )


def _wait_for_retries(views: Any, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while any(event.retry_requested for event in views.parked_events(name)):
        if time.monotonic() > deadline:
            raise CliError(f"The running runner of {name!r} did not retry the events within {timeout} s.")
        time.sleep(0.05)


@projections_app.command(
    "drop",
    epilog=examples(
        "escqrs projections drop account_list --read-models sqlite:///views.db",
        "escqrs projections drop account_list --yes",
    ),
)
def drop(
    *,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The projection whose read model to drop.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    read_models: ReadModelsOption = None,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Drop a projection's read model: every generation, its parked events and its checkpoint.

    The next run of the projection rebuilds it from the start of $all, with whatever version its
    code has: the way back after a version bump. Refused while a runner of the projection holds
    its lease (in any process): stop the runner first. Asks for confirmation unless --yes.
    """
    from projections.errors import ProjectionRunningError  # noqa: PLC0415 - the read side only when needed

    configure_logging(debug=debug)
    with read_model_store(read_models) as views:
        if not yes and not typer.confirm(
            f"Drop every generation, parked event and checkpoint of {name!r}?", err=True
        ):
            raise CliError(f"Nothing was dropped for {name!r}.")
        try:
            existed = views.drop_projection(name)
        except ProjectionRunningError as exc:
            raise CliError(str(exc)) from exc
    if json_output:
        emit_json({"projection": name, "dropped": existed})
    elif existed:
        out_console().print(
            f"Dropped the read model of [cyan]{markup(name)}[/cyan]; its next run rebuilds it from scratch."
        )
    else:
        out_console().print(f"Nothing to drop for [cyan]{markup(name)}[/cyan].")
