"""``escqrs projections``: list, status, run, rebuild, parked events and their retry, drop.

The commands operate the application's projections and, beside them, its reactors and process
managers (``AppSpec.reactors``): a reactor's checkpoint and parked events live in the read
model store under its name exactly like a projection's, so ``status``, ``parked``, ``retry``,
``drop`` and ``run`` work on either, by name. ``rebuild`` is a projection's alone: rebuilding a
reactor would fire its history's effects again.

The read side (``projections``) is imported here, when a command runs: the write side never
depends on it, and the other commands start without it.
"""

from __future__ import annotations

import enum
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
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
    require_uri,
    settings,
)
from escqrs.app import AppSpec
from eventsourcing_cqrs.event_store.port import EventStore

if TYPE_CHECKING:
    from eventsourcing_cqrs.reactions import ProcessManager, Reactor
    from projections import Progress as RebuildProgress
    from projections import Projection, ProjectionRunner, ProjectionStatus, ReadModelStore
    from projections.read_model_store.port import ParkedEvent

__all__ = ["projections_app", "status_rows", "status_table"]

projections_app = typer.Typer(
    epilog=examples(
        "escqrs projections list",
        "escqrs projections status --store sqlite:///bank.db --read-models sqlite:///views.db",
        "escqrs projections run account_list transfers --from now",
    ),
    help=(
        "Operate the read side and the reactions: list, status, run projections, reactors and process "
        "managers, rebuild read models, retry parked events, drop."
    ),
    no_args_is_help=True,
)

NamesArgument = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[NAME]...",
        help="Projection, reactor or process manager names (default: every one of the app).",
        show_default=False,
    ),
]

#: What ``kind`` says of a projection (reactors say "reactor" or "process manager").
PROJECTION = "projection"


class StartChoice(enum.StrEnum):
    """Where a reactor that has never run starts (``--from``)."""

    NOW = "now"
    BEGINNING = "beginning"


FromOption = Annotated[
    StartChoice | None,
    typer.Option(
        "--from",
        case_sensitive=False,
        help=(
            "Where a reactor or process manager that has never run starts: 'now' (the head of $all: "
            "past events fire nothing) or 'beginning' (react to the whole history; each effect still "
            "applies once). Asked when omitted on a terminal, 'now' otherwise. Ignored by projections "
            "and by reactors that have a checkpoint (they resume from it)."
        ),
        show_default=False,
    ),
]


# -- what the commands operate: projections and reactors, by name ------------------------------


@dataclass(frozen=True)
class Target:
    """A projection, a reactor or a process manager of the application, as the commands see it."""

    name: str
    kind: str
    projection: Projection | None = None
    reactor: Reactor | ProcessManager[Any] | None = None

    @property
    def reacts(self) -> bool:
        """Whether it is a reactor or a process manager (its events have effects)."""
        return self.reactor is not None

    @property
    def label(self) -> str:
        """``process manager 'transfers'``: how messages name it."""
        return f"{self.kind} {self.name!r}"

    @property
    def title(self) -> str:
        """``Process manager 'transfers'``: the label starting a sentence."""
        return self.label[:1].upper() + self.label[1:]

    def checkpoint_projection(self, spec: AppSpec, events: EventStore) -> Projection:
        """The projection that keeps its checkpoint in the read model store (itself, for a projection)."""
        if self.projection is not None:
            return self.projection
        from eventsourcing_cqrs.reactions import engine_for  # noqa: PLC0415 - only when a command needs it
        from projections.reactor_runner import reactions_projection  # noqa: PLC0415

        assert self.reactor is not None
        return reactions_projection(engine_for(self.reactor, store=events, bus=spec.bus(events)))


def catalogue(spec: AppSpec) -> dict[str, Target]:
    """Every projection, reactor and process manager of ``spec`` by name, in declaration order."""
    targets: dict[str, Target] = {}
    for projection in spec.build_projections():
        targets[projection.name] = Target(projection.name, PROJECTION, projection=projection)
    for reactor in spec.build_reactors():
        kind = str(reactor.describe()["kind"])
        if reactor.name in targets:
            raise CliError(
                f"Application {spec.name!r} has a {targets[reactor.name].kind} and a {kind} both called "
                f"{reactor.name!r}: they would share one checkpoint; rename one of them."
            )
        targets[reactor.name] = Target(reactor.name, kind, reactor=reactor)
    return targets


def _known(spec: AppSpec, targets: Mapping[str, Target]) -> str:
    projections = [t.name for t in targets.values() if not t.reacts]
    reactors = [f"{t.name} ({t.kind})" for t in targets.values() if t.reacts]
    return (
        f"application {spec.name!r} has projections: {', '.join(projections) or 'none'}; "
        f"reactors and process managers: {', '.join(reactors) or 'none'}"
    )


def _select(spec: AppSpec, names: Sequence[str] | None) -> list[Target]:
    """The targets called ``names`` (every one of the app when none is given)."""
    targets = catalogue(spec)
    if not names:
        if not targets:
            raise CliError(
                f"Application {spec.name!r} declares no projections, reactors or process managers."
            )
        return list(targets.values())
    unknown = [name for name in names if name not in targets]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise CliError(f"No projection, reactor or process manager called {listed}: {_known(spec, targets)}.")
    return [targets[name] for name in dict.fromkeys(names)]


def _one(spec: AppSpec, name: str) -> Target:
    (target,) = _select(spec, [name])
    return target


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


def status_rows(
    statuses: Sequence[ProjectionStatus], kinds: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Statuses as JSON types (``kinds``: name → projection, reactor or process manager)."""
    rows = []
    for status in statuses:
        building = status.building
        rows.append(
            {
                "name": status.name,
                "kind": (kinds or {}).get(status.name, PROJECTION),
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
                "workers": status.workers,
                "segments": [
                    {
                        "segment": segment.segment,
                        "owner": segment.owner,
                        "running": segment.running,
                        "checkpoint": segment.checkpoint,
                        "events_applied": segment.events_applied,
                        "lag_events": segment.lag_events,
                        "lag_seconds": round(segment.lag_seconds, 3),
                        "parked": segment.parked,
                    }
                    for segment in status.segments
                ],
            }
        )
    return rows


_STATE_STYLES = {"live": "green", "catching_up": "yellow", "rebuilding": "yellow", "failed": "red"}


def status_table(statuses: Sequence[ProjectionStatus], kinds: Mapping[str, str] | None = None) -> Table:
    """Checkpoint, head, lag, state and parked count of each projection (and reactor).

    With ``kinds`` (name → projection, reactor or process manager) a kind column says which is
    which, and a reactor shows no version (it has no read model to version).
    """
    reacts = kinds is not None and any(kind != PROJECTION for kind in kinds.values())
    table = Table(
        title="Projections and reactors" if reacts else "Projections",
        title_justify="left",
        header_style="bold",
    )
    table.add_column("name" if kinds is not None else "projection", style="cyan")
    if kinds is not None:
        table.add_column("kind")
    table.add_column("version", justify="right")
    table.add_column("state")
    table.add_column("checkpoint", justify="right")
    table.add_column("head", justify="right")
    table.add_column("lag", justify="right")
    table.add_column("parked", justify="right")
    table.add_column("last error", overflow="fold")
    for status in statuses:
        kind = PROJECTION if kinds is None else kinds.get(status.name, PROJECTION)
        live = "—" if status.live_version is None else str(status.live_version)
        version = str(status.version) if live == str(status.version) else f"{live} → {status.version}"
        if kind != PROJECTION:
            version = "—"
        state = status.state.value + (" (running)" if status.running else "")
        if status.segments:
            workers = f"{status.workers} worker{'' if status.workers == 1 else 's'}"
            state += f", {len(status.segments)} segments, {workers}"
        if status.building is not None:
            state += f", building v{status.building.version}: {status.building.events_applied} events"
        lag = f"{status.lag_events}{'+' if status.lag_capped else ''} events"
        if status.lag_events:
            lag += f" / {status.lag_seconds:.1f} s"
        cells: list[Any] = [status.name]
        if kinds is not None:
            cells.append(kind)
        cells += [
            version,
            Text(state, style=_STATE_STYLES.get(status.state.value, "")),
            "—" if status.checkpoint is None else str(status.checkpoint),
            str(status.head_position),
            lag,
            Text(str(status.parked), style="red" if status.parked else ""),
            status.last_error or "",
        ]
        table.add_row(*cells)
    return table


def segments_table(status: ProjectionStatus) -> Table:
    """One row per segment of a segmented projection: owner, checkpoint, lag, parked count."""
    workers = f"{status.workers} worker{'' if status.workers == 1 else 's'} running"
    table = Table(
        title=f"Segments of {status.name} ({workers})",
        title_justify="left",
        header_style="bold",
    )
    table.add_column("segment", justify="right")
    table.add_column("owner")
    table.add_column("running")
    table.add_column("checkpoint", justify="right")
    table.add_column("applied", justify="right")
    table.add_column("lag", justify="right")
    table.add_column("parked", justify="right")
    for segment in status.segments:
        lag = f"{segment.lag_events} events"
        if segment.lag_events:
            lag += f" / {segment.lag_seconds:.1f} s"
        table.add_row(
            str(segment.segment),
            segment.owner or "—",
            Text("yes", style="green") if segment.running else Text("no", style="dim"),
            "—" if segment.checkpoint is None else str(segment.checkpoint),
            str(segment.events_applied),
            lag,
            Text(str(segment.parked), style="red" if segment.parked else ""),
        )
    return table


def _print_statuses(statuses: Sequence[ProjectionStatus], kinds: Mapping[str, str]) -> None:
    """The status table, then a segments table for each segmented projection."""
    console = out_console()
    console.print(status_table(statuses, kinds))
    for status in statuses:
        if status.segments:
            console.print()
            console.print(segments_table(status))


def _parked_row(event: ParkedEvent, kind: str) -> dict[str, Any]:
    return {
        "projection": event.projection,
        "kind": kind,
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
        "key": event.key,
        "segment": event.segment,
        "held_back": event.held_back,
    }


def _by_key(events: Sequence[ParkedEvent]) -> list[list[ParkedEvent]]:
    """Parked events grouped by projection, segment and sequencing key, each group by position.

    The first event of a group is the one that failed; the rest were parked behind it (held
    back, never attempted), since a key's events are applied in order.
    """
    groups: dict[tuple[str, int | None, str], list[ParkedEvent]] = {}
    for event in sorted(events, key=lambda e: (e.projection, e.position)):
        groups.setdefault((event.projection, event.segment, event.key), []).append(event)
    return list(groups.values())


def _described(target: Target) -> dict[str, Any]:
    """What ``list`` says of a target (a projection's ``describe()`` with its kind)."""
    if target.projection is not None:
        described = target.projection.describe()
        return {"name": described.pop("name"), "kind": PROJECTION, **described}
    from projections.reactor_runner import ReactionsProjection  # noqa: PLC0415 - the read side only when needed

    assert target.reactor is not None
    described = dict(target.reactor.describe())
    described = {"name": described.pop("name"), "kind": described.pop("kind", target.kind), **described}
    described["failure_policy"] = ReactionsProjection.failure_policy.value
    return described


# -- commands ---------------------------------------------------------------------------------


@projections_app.command(
    "list",
    epilog=examples(
        "escqrs projections list --app escqrs.examples.bank.app:bank",
        "escqrs projections list --json",
    ),
)
def list_projections(
    *, app: AppOption = DEFAULT_APP, json_output: JsonOption = False, debug: DebugOption = False
) -> None:
    """The application's projections, reactors and process managers: kind, what they handle, failure policy.

    A projection shows its version and tables; a process manager the category of its instances'
    streams ({Category}-{id}); a reactor keeps nothing but its checkpoint.
    """
    configure_logging(debug=debug)
    spec = open_app(app)
    described = [_described(target) for target in catalogue(spec).values()]
    if json_output:
        emit_json(described)
        return
    table = Table(title=f"Projections and reactors of {spec.name}", title_justify="left", header_style="bold")
    for column in ("name", "kind", "version", "keeps", "handles", "on failure"):
        table.add_column(column, style="cyan" if column == "name" else "", overflow="fold")
    for item in described:
        if item["kind"] == PROJECTION:
            version, keeps = str(item["version"]), "tables: " + (", ".join(item["tables"]) or "none")
        elif "category" in item:
            version, keeps = "—", f"streams {item['category']}-{{id}}"
        else:
            version, keeps = "—", "its checkpoint"
        table.add_row(
            item["name"],
            item["kind"],
            version,
            keeps,
            ", ".join(item["event_types"]),
            item["failure_policy"],
        )
    out_console().print(table)


@projections_app.command(
    "status",
    epilog=examples(
        "escqrs projections status --store sqlite:///bank.db --read-models sqlite:///views.db",
        "escqrs projections status transfers --json",
    ),
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
    """Kind, checkpoint, head of $all, lag (events and seconds), state, parked count and last error.

    Of each projection, reactor and process manager (or of those named). A reactor that has never
    run is 'new', its lag the whole history it handles: where it starts is decided by its first
    'escqrs projections run'. A segmented projection also shows how many worker processes run it
    and one row per segment: who owns it, whether it runs, its checkpoint, lag and parked events.
    """
    from projections import projection_status  # noqa: PLC0415 - the read side only when needed

    configure_logging(debug=debug)
    spec = open_app(app)
    selected = _select(spec, names)
    kinds = {target.name: target.kind for target in selected}
    with event_store(store) as events, read_model_store(read_models) as views:
        statuses = [
            projection_status(target.checkpoint_projection(spec, events), events, views)
            for target in selected
        ]
    if json_output:
        emit_json(status_rows(statuses, kinds))
    else:
        _print_statuses(statuses, kinds)


@projections_app.command(
    "run",
    epilog=examples(
        "escqrs projections run --store sqlite:///bank.db --read-models sqlite:///views.db",
        "escqrs projections run account_list --until-caught-up",
        "escqrs projections run transfers welcome_bonus --from now",
        "escqrs projections run transfers --from beginning",
    ),
)
def run(
    *,
    names: NamesArgument = None,
    start_from: FromOption = None,
    until_caught_up: Annotated[
        bool,
        typer.Option(
            "--until-caught-up",
            help="Return once every one of them has caught up (with reactors: until none lags).",
        ),
    ] = False,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            help="Events per transaction (default: 500 for a projection, 100 for a reactor).",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            metavar="K",
            help=(
                "Run one segmented projection as K worker processes on this machine (each an "
                "'escqrs projections run NAME' with the same settings), sharing its segments out "
                "through the read model store; waits for them and stops them on Ctrl-C or SIGTERM."
            ),
        ),
    ] = 1,
    as_worker: Annotated[bool, typer.Option("--as-worker", hidden=True)] = False,
    store: StoreOption = None,
    read_models: ReadModelsOption = None,
    app: AppOption = DEFAULT_APP,
    debug: DebugOption = False,
) -> None:
    """Run projections, reactors and process managers in the foreground until Ctrl-C or SIGTERM.

    Each runs in its own thread; on a signal the current batches commit, then they stop. A reactor
    or process manager dispatches its commands through the application's command bus, and only
    one runner of each name is active at a time, across processes.

    A segmented projection (one with 'segments = N') is run by workers: this process is one, and
    any number of others, here or on other machines sharing the read model store, take their
    share of its segments (started or stopped at any time; the segments move between them).
    --workers K starts K such worker processes of one segmented projection here, waits for them
    (with --until-caught-up, until each has caught up), forwards Ctrl-C and SIGTERM to them so
    that they stop gracefully, and fails if any of them failed. An unsegmented projection (or a
    reactor) has one runner at a time, holding its lease: --workers is refused for it.

    A reactor that has never run, on an event store already holding events it handles, starts
    where --from says: 'now' (past events fire nothing) or 'beginning' (it reacts to the whole
    history; each effect still applies once). Without --from the command asks on a terminal
    (default now) and starts from now otherwise. Once it has a checkpoint it resumes from it.
    """
    from projections import ProjectionRunner, ReactorRunner  # noqa: PLC0415 - the read side only when needed

    configure_logging(debug=debug)
    spec = open_app(app)
    selected = _select(spec, names)
    console = err_console()
    if workers > 1:
        _run_workers(
            spec,
            selected,
            workers,
            until_caught_up=until_caught_up,
            batch_size=batch_size,
            store=require_uri(store, "--store", "ESCQRS_STORE"),
            read_models=require_uri(read_models, "--read-models", "ESCQRS_READ_MODELS"),
            app=app,
        )
        return
    if start_from is not None and not any(target.reacts for target in selected):
        console.print(
            f"--from {start_from.value} is ignored: it concerns reactors and process managers only."
        )
    with event_store(store) as events, read_model_store(read_models, must_exist=False) as views:
        runners: list[ProjectionRunner] = []
        for target in selected:
            if target.reactor is None:
                assert target.projection is not None
                runners.append(
                    ProjectionRunner(target.projection, events, views, batch_size=batch_size or 500)
                )
                continue
            where = _start_from(
                console, spec, target=target, events=events, views=views, requested=start_from
            )
            runners.append(
                ReactorRunner(
                    target.reactor,
                    events,
                    views,
                    bus=spec.bus(events),
                    start_from=where.value,
                    batch_size=batch_size or 100,
                )
            )
        listed = ", ".join(markup(t.name) for t in selected)
        if until_caught_up:
            if not as_worker:
                console.print(f"Catching up {listed}…")
            interrupted = _catch_up(runners, again=any(target.reacts for target in selected))
        else:
            if not as_worker:
                console.print(f"Running {listed}. Press Ctrl-C to stop.")
            interrupted = _run_until_stopped(runners)
        statuses = [runner.status() for runner in runners]
    if as_worker:
        return  # the command that started this worker reports, once for all of them
    if interrupted[0]:
        console.print("Stopped: every batch in flight was committed.")
    _print_statuses(statuses, {target.name: target.kind for target in selected})


#: How long the workers have to stop once signalled, before they are killed as the command ends.
_WORKER_STOP_SECONDS = 60.0


def _run_workers(
    spec: AppSpec,
    selected: Sequence[Target],
    workers: int,
    *,
    until_caught_up: bool,
    batch_size: int | None,
    store: str,
    read_models: str,
    app: str,
) -> None:
    """``run NAME --workers K``: K worker processes of one segmented projection (see ``run``)."""
    from projections import projection_status  # noqa: PLC0415 - the read side only when needed

    if len(selected) != 1:
        raise CliError(
            f"--workers {workers} runs the workers of one segmented projection: name exactly one "
            f"(not {len(selected)})."
        )
    (target,) = selected
    segments = 1 if target.projection is None else target.projection.segments
    if segments == 1:
        raise CliError(
            f"--workers {workers} is refused for {target.label}: it is not segmented, so one runner at a "
            "time holds its lease and the other workers would only wait for it. Run it without "
            "--workers, or give the projection 'segments = N' (N > 1) to share its events out."
        )
    assert target.projection is not None
    console = err_console()
    # Both stores are opened here first, so that a wrong URI fails once rather than once per worker.
    with event_store(store), read_model_store(read_models, must_exist=False):
        pass
    processes = _start_workers(
        target.name,
        workers,
        until_caught_up=until_caught_up,
        batch_size=batch_size,
        store=store,
        read_models=read_models,
        app=app,
    )
    pids = ", ".join(str(process.pid) for process in processes)
    doing = "catching up" if until_caught_up else "running"
    console.print(
        f"Started {workers} workers of {markup(target.name)} ({segments} segments), {doing}: "
        f"pids {pids}. Press Ctrl-C to stop."
    )
    interrupted, stopped, codes = _supervise(processes)
    # A worker the command signalled to stop may end by the signal itself, if it came while the
    # worker was still starting: it stopped, it did not fail.
    failed = [
        (process.pid, code)
        for process, code in zip(processes, codes, strict=True)
        if code != 0 and not ((interrupted or stopped) and code in _SIGNALLED)
    ]
    if interrupted:
        console.print("Stopped: every worker committed its batches in flight and stopped.")
    with event_store(store) as events, read_model_store(read_models) as views:
        statuses = [projection_status(target.projection, events, views)]
    _print_statuses(statuses, {target.name: target.kind})
    if failed:
        listed = ", ".join(f"pid {pid} exited with {code}" for pid, code in failed)
        raise CliError(
            f"{len(failed)} of the {workers} workers of {target.name!r} failed ({listed}); "
            "their errors are above."
        )


#: Exit codes of a worker that a forwarded signal ended before it could stop gracefully (it
#: was still starting): stopped, not failed.
_SIGNALLED = frozenset({-signal.SIGINT, -signal.SIGTERM})


def _start_workers(
    name: str,
    workers: int,
    *,
    until_caught_up: bool,
    batch_size: int | None,
    store: str,
    read_models: str,
    app: str,
) -> list[subprocess.Popen[bytes]]:
    """Start ``workers`` processes of ``escqrs projections run NAME``, with this one's settings.

    The settings go through the environment rather than the command line, where any user of the
    machine could read a password in a store URI.
    """
    env = {
        **os.environ,
        "ESCQRS_STORE": store,
        "ESCQRS_READ_MODELS": read_models,
        "ESCQRS_APP": app,
    }
    if settings.debug:
        env["ESCQRS_DEBUG"] = "1"
    verbosity = ["-" + "v" * settings.verbose] if settings.verbose else []
    command = [sys.executable, "-m", "escqrs.cli", *verbosity, "projections", "run", name, "--as-worker"]
    if until_caught_up:
        command.append("--until-caught-up")
    if batch_size is not None:
        command += ["--batch-size", str(batch_size)]
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(workers):
            # stdout is the parent's report alone; logs and errors go to the shared stderr.
            processes.append(
                subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            )
    except BaseException:
        for process in processes:
            process.terminate()
        raise
    return processes


def _supervise(processes: Sequence[subprocess.Popen[bytes]]) -> tuple[bool, bool, list[int]]:
    """Wait for the workers; forward SIGINT and SIGTERM to them; stop them all when one fails.

    Returns whether a signal arrived, whether the others were stopped because one failed, and
    each worker's exit code.
    """
    interrupted = [False]

    def forward(signum: int, frame: FrameType | None) -> None:
        del frame
        interrupted[0] = True
        _signal_all(processes, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    stopping = False
    try:
        while any(process.poll() is None for process in processes):
            if not stopping and any(process.returncode not in (None, 0) for process in processes):
                # One failed: stop the others, as a failing runner stops the command's other runners.
                stopping = True
                _signal_all(processes, signal.SIGTERM)
            time.sleep(0.1)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for process in processes:
            if process.poll() is None:  # only on an error of ours: never leave a worker behind
                process.terminate()
                try:
                    process.wait(_WORKER_STOP_SECONDS)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    return interrupted[0], stopping, [process.returncode for process in processes]


def _signal_all(processes: Sequence[subprocess.Popen[bytes]], signum: int) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signum)


def _start_from(
    console: Console,
    spec: AppSpec,
    *,
    target: Target,
    events: EventStore,
    views: ReadModelStore,
    requested: StartChoice | None,
) -> StartChoice:
    """Where the reactor ``target`` starts: asked, told or defaulted (see ``run``'s help)."""
    live = views.describe(target.name).live
    if live is not None:
        if requested is not None:
            at = "no event yet" if live.checkpoint is None else f"position {live.checkpoint}"
            console.print(
                f"--from {requested.value} is ignored for {markup(target.label)}: it has a checkpoint "
                f"({at}) and resumes from it. To react to its history again: "
                f"'escqrs projections drop {markup(target.name)}', "
                f"then 'escqrs projections run {markup(target.name)} --from beginning'."
            )
        return StartChoice.NOW  # unused: a reactor with a checkpoint resumes from it
    if requested is not None:
        return requested
    if events.head_position(target.checkpoint_projection(spec, events).event_filter()) == 0:
        return StartChoice.NOW  # no past event it handles: both starts are the same
    if not sys.stdin.isatty():
        console.print(
            f"{markup(target.title)} has never run and the event store already holds events "
            "it handles: starting it from now, so past events fire nothing. Give --from beginning to "
            "react to the history instead."
        )
        return StartChoice.NOW
    console.print(
        f"{markup(target.title)} has never run, and the event store already holds events it "
        "handles. Where should it start?\n"
        "  now        at the head of $all: past events fire nothing (the default)\n"
        "  beginning  react to the whole history: the effects of every past event are carried out now "
        "(each still applies once)"
    )
    while True:
        answer = str(typer.prompt(f"Start {target.name} from", default=StartChoice.NOW.value, err=True))
        try:
            return StartChoice(answer.strip().lower())
        except ValueError:
            console.print("Answer 'now' or 'beginning'.")


#: How many times ``run --until-caught-up`` goes round at most while reactors cause new events.
_CATCH_UP_PASSES = 100


def _catch_up(runners: Sequence[ProjectionRunner], *, again: bool) -> list[bool]:
    """Run each runner until caught up, in turn; ``again`` while any still lags (reactors' effects).

    A reactor's commands write events that it (or the others) handle in turn: a process manager's
    next step. So when reactors run, the runners go round until none lags (or a signal stops them).
    """

    def stop_all() -> None:
        for runner in runners:
            runner.stop()

    with _on_interrupt(stop_all) as interrupted:
        for _ in range(_CATCH_UP_PASSES if again else 1):
            for runner in runners:
                if interrupted[0]:
                    return interrupted
                runner.run(until_caught_up=True)
            if not again or all(runner.status().lag_events == 0 for runner in runners):
                break
    return interrupted


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
    name: Annotated[str, typer.Argument(metavar="NAME", help="The projection to rebuild (not a reactor).")],
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Events per transaction.")] = 1000,
    store: StoreOption = None,
    read_models: ReadModelsOption = None,
    app: AppOption = DEFAULT_APP,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Rebuild a read model from the start of $all beside the live one, then switch (blue/green).

    The live read model keeps serving meanwhile. Ctrl-C stops after the current batch; run the
    same command again to resume where it stopped. A segmented projection is rebuilt with one
    thread per segment (segments a worker elsewhere is building are left to it), the progress
    showing the total and each segment; it switches once every segment is built. Reactors and
    process managers are not rebuilt: that would fire their history's effects again (see
    'escqrs projections drop').
    """
    from projections import ProjectionRunner  # noqa: PLC0415 - the read side only when needed

    configure_logging(debug=debug)
    spec = open_app(app)
    target = _one(spec, name)
    if target.projection is None:
        raise CliError(
            f"{target.title} is not rebuilt: it has no read model, and rebuilding would fire the effects "
            "of its history again. To react to its history from the beginning (each effect still applies "
            f"once): 'escqrs projections drop {name}', then 'escqrs projections run {name} --from beginning'."
        )
    projection = target.projection
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
        "segments": projection.segments,
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


#: Up to this many segments, a segmented rebuild shows one progress line per segment (beyond,
#: the main line counts the segments built).
_SEGMENT_LINES = 16


@contextmanager
def _progress_bar(console: Any, name: str) -> Iterator[Callable[[RebuildProgress], None]]:
    """A rich progress bar fed by the rebuild's progress callback (its rate and ETA).

    For a segmented projection the main line is the total, followed by one line per segment
    (events applied, checkpoint, built or not) and a count of the segments built.
    """
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("{task.fields[eta]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task: TaskID = bar.add_task(f"rebuild {name}", total=None, rate="—/s", eta="ETA —")
    lines: dict[int, TaskID] = {}

    def show(progress: RebuildProgress) -> None:
        eta = "—" if progress.eta is None else _duration(progress.eta)
        segments = progress.segments
        built = sum(1 for segment in segments if segment.caught_up)
        bar.update(
            task,
            completed=progress.done,
            total=max(progress.total, 1),
            rate=f"{progress.rate:,.0f} events/s",
            eta=f"ETA {eta}" + (f", {built}/{len(segments)} segments built" if segments else ""),
        )
        if len(segments) > _SEGMENT_LINES:
            return
        for segment in segments:
            if segment.segment not in lines:
                lines[segment.segment] = bar.add_task(
                    f"  segment {segment.segment}", total=None, rate="", eta=""
                )
            at = "—" if segment.checkpoint is None else str(segment.checkpoint)
            bar.update(
                lines[segment.segment],
                completed=segment.events_applied,
                # A segment's share of the total is unknown until it has caught up.
                total=segment.events_applied if segment.caught_up else None,
                rate=f"checkpoint {at}",
                eta="built" if segment.caught_up else "building",
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
    epilog=examples(
        "escqrs projections parked --store sqlite:///bank.db --read-models sqlite:///views.db",
        "escqrs projections parked transfers --json",
    ),
)
def parked(
    *,
    names: NamesArgument = None,
    read_models: ReadModelsOption = None,
    app: AppOption = DEFAULT_APP,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Events set aside after failing every retry, by sequencing key: whose, where, why, what waits.

    Of every projection, reactor and process manager of the app, or of those named. Parking is
    ordered: the later events of a parked event's key (its stream, unless the projection says
    otherwise) are parked behind it, held back and never attempted, until a retry replays the
    key's events in order. Each row is one key: the event that failed (its error and attempts),
    then the events held back behind it. --json lists every parked event, with its key, segment
    and whether it is held back. Nothing was dispatched for a reactor's parked event: 'escqrs
    projections retry NAME' reacts to it again.
    """
    configure_logging(debug=debug)
    spec = open_app(app)
    selected = _select(spec, names)
    with read_model_store(read_models) as views:
        events = [(target.kind, event) for target in selected for event in views.parked_events(target.name)]
    if json_output:
        emit_json([_parked_row(event, kind) for kind, event in events])
        return
    kinds = {target.name: target.kind for target in selected}
    groups = _by_key([event for _, event in events])
    segmented = any(event.segment is not None for _, event in events)
    keys = f"{len(groups)} key{'' if len(groups) == 1 else 's'}"
    table = Table(
        title=f"{len(events)} parked event{'' if len(events) == 1 else 's'} in {keys}",
        title_justify="left",
        header_style="bold",
    )
    columns = ["name", "kind", "key", *(["segment"] if segmented else [])]
    columns += ["position", "stream@rev", "type", "attempts", "parked (UTC)", "error", "held back"]
    for column in columns:
        table.add_column(
            column,
            overflow="fold",
            justify="right" if column in ("segment", "position", "attempts") else "left",
        )
    for group in groups:
        first, behind = group[0], group[1:]
        cells = [first.projection, kinds.get(first.projection, PROJECTION), first.key]
        if segmented:
            cells.append("—" if first.segment is None else str(first.segment))
        cells += [
            str(first.position),
            f"{first.stream}@{first.revision}",
            first.event_type,
            str(first.attempts) + (" (retry requested)" if first.retry_requested else ""),
            format_time(first.parked_at),
            first.error,
            _held_back_cell(behind),
        ]
        table.add_row(*cells)
    out_console().print(table)


def _held_back_cell(behind: Sequence[ParkedEvent]) -> str:
    """``2 (positions 45, 46)``: the events parked behind a key's failing one."""
    if not behind:
        return "none"
    positions = [str(event.position) for event in behind]
    if len(positions) > 10:
        positions = [*positions[:10], "…"]
    return f"{len(behind)} (position{'' if len(behind) == 1 else 's'} {', '.join(positions)})"


@projections_app.command(
    "retry",
    epilog=examples(
        "escqrs projections retry account_list --position 1234 --read-models sqlite:///views.db",
        "escqrs projections retry account_list --key Account-42",
        "escqrs projections retry transfers --store sqlite:///bank.db --read-models sqlite:///views.db",
    ),
)
def retry(
    *,
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME", help="The projection, reactor or process manager whose parked events to retry."
        ),
    ],
    positions: Annotated[
        list[int] | None,
        typer.Option(
            "--position",
            min=0,
            help="Retry the event at this position, and the rest of its key with it (repeatable).",
        ),
    ] = None,
    keys: Annotated[
        list[str] | None,
        typer.Option(
            "--key",
            metavar="KEY",
            help="Retry the parked events of this sequencing key, in order (repeatable).",
        ),
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
    """Retry parked events: all of NAME's, or the keys of those at --position and those of --key.

    A key's parked events (see 'escqrs projections parked') are replayed together, in order, up
    to the first that fails again: it and the rest of its key stay parked. When a runner of NAME
    is running (in any process), it retries them; otherwise they are retried here, under NAME's
    lease. A reactor or process manager reacts to each event again, dispatching its commands
    through the application's command bus (each still applies once). An unknown position or key
    is refused before anything is retried.
    """
    from projections import ProjectionRunner, ReactorRunner  # noqa: PLC0415 - the read side only when needed

    configure_logging(debug=debug)
    spec = open_app(app)
    target = _one(spec, name)
    with event_store(store) as events, read_model_store(read_models) as views:
        parked_before = views.parked_events(name)
        before = {event.position for event in parked_before}
        if not before and not positions and not keys:
            if json_output:
                emit_json({"projection": name, "count": 0, "retried": [], "still_parked": [], "keys": []})
            else:
                out_console().print(f"Nothing parked for [cyan]{markup(name)}[/cyan].")
            return
        chosen = _chosen_keys(name, parked_before, positions, keys)
        selected = {event.position for event in parked_before if event.key in chosen}
        if _runs_elsewhere(views, target.checkpoint_projection(spec, events)):
            views.request_retry(name, positions, keys=keys)
            _wait_for_retries(views, name, timeout)
        else:
            runner: ProjectionRunner
            if target.reactor is not None:
                runner = ReactorRunner(target.reactor, events, views, bus=spec.bus(events))
            else:
                assert target.projection is not None
                runner = ProjectionRunner(target.projection, events, views)
            runner.retry_parked(positions, keys=keys, timeout=timeout)
        parked_after = views.parked_events(name)
    after = {event.position for event in parked_after}
    retried = sorted(before - after)
    still = _by_key(parked_after)
    result = {
        "projection": name,
        "count": len(retried),
        "retried": retried,
        "still_parked": sorted(after),
        "keys": sorted(chosen),
        "still_parked_keys": [
            {"key": group[0].key, "segment": group[0].segment, "positions": [e.position for e in group]}
            for group in still
        ],
    }
    if json_output:
        emit_json(result)
    else:
        console = out_console()
        console.print(
            f"Applied {len(retried)} parked event(s) of [cyan]{markup(name)}[/cyan] "
            f"({_plural(len(chosen), 'key')} retried); {len(after)} still parked"
            + ("." if not still else f", in {_plural(len(still), 'key')}:")
        )
        for group in still:
            first = group[0]
            console.print(
                f"  {markup(first.key)}: position {first.position} ({markup(first.error)}), "
                f"held back behind it: {_held_back_cell(group[1:])}"
            )
    failed_again = after & selected
    if failed_again:
        raise CliError(
            f"{len(failed_again)} event(s) of {name!r} are still parked (a retried event failed again); "
            f"see 'escqrs projections parked {name}'."
        )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _chosen_keys(
    name: str,
    parked: Sequence[ParkedEvent],
    positions: Sequence[int] | None,
    keys: Sequence[str] | None,
) -> set[str]:
    """The sequencing keys a retry replays (every parked one without a selection).

    Raises :class:`CliError` for a position or key with no parked event, before anything changed.
    """
    known = {event.key for event in parked}
    if not positions and not keys:
        return known
    at = {event.position: event.key for event in parked}
    missing = [str(position) for position in positions or () if position not in at]
    unknown = [key for key in keys or () if key not in known]
    problems = []
    if missing:
        problems.append(f"no parked event at position {', '.join(missing)}")
    if unknown:
        problems.append(f"no parked event of key {', '.join(repr(key) for key in unknown)}")
    if problems:
        listed = ", ".join(repr(key) for key in sorted(known)) or "none"
        raise CliError(
            f"Nothing was retried for {name!r}: {'; '.join(problems)} (parked keys: {listed}); "
            f"see 'escqrs projections parked {name}'."
        )
    return {at[position] for position in positions or ()} | set(keys or ())


def _runs_elsewhere(views: ReadModelStore, projection: Projection) -> bool:
    """Whether a runner of ``projection`` is running (in any process), to retry at our request.

    A segmented projection runs when a worker is alive or any segment's lease is held: its
    segment runners retry what is requested of their segments.
    """
    from projections.read_model_store.port import MAX_SEGMENTS, LeaseRole  # noqa: PLC0415

    name = projection.name
    if views.lease_held(name, LeaseRole.RUN):
        return True
    if projection.segments == 1:
        return False
    return bool(
        views.leases_held(name, LeaseRole.WORKER, MAX_SEGMENTS)
        or views.leases_held(name, LeaseRole.RUN, projection.segments)
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
        "escqrs projections drop transfers --yes && escqrs projections run transfers --from beginning",
    ),
)
def drop(
    *,
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME", help="The projection, reactor or process manager whose records to drop."
        ),
    ],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    read_models: ReadModelsOption = None,
    app: AppOption = DEFAULT_APP,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Drop what the read model store keeps of NAME: every generation, its parked events and its checkpoint.

    The next run of a projection rebuilds it from the start of $all, with whatever version its
    code has: the way back after a version bump. The next run of a reactor or process manager
    starts it afresh, where --from says: 'run NAME --from beginning' reacts to its whole history
    again (each effect still applies once; a process manager's pending deadlines are indexed
    again that way). Refused while a runner of NAME holds its lease (in any process): stop the
    runner first. Asks for confirmation unless --yes. A name the app no longer declares (a
    projection removed from the code) is dropped all the same.
    """
    from projections.errors import ProjectionRunningError  # noqa: PLC0415 - the read side only when needed

    configure_logging(debug=debug)
    target = catalogue(open_app(app)).get(name)
    reacts = target is not None and target.reacts
    if reacts:
        assert target is not None
        question = (
            f"Drop the checkpoint and parked events of {target.label}? Its next run starts from now "
            "unless given --from beginning."
        )
    else:
        question = f"Drop every generation, parked event and checkpoint of {name!r}?"
    with read_model_store(read_models) as views:
        if not yes and not typer.confirm(question, err=True):
            raise CliError(f"Nothing was dropped for {name!r}.")
        try:
            existed = views.drop_projection(name)
        except ProjectionRunningError as exc:
            raise CliError(str(exc)) from exc
    if json_output:
        emit_json({"projection": name, "dropped": existed})
    elif existed and reacts:
        out_console().print(
            f"Dropped the checkpoint and parked events of [cyan]{markup(name)}[/cyan]; its next run starts "
            "from now, or reacts to the whole history with "
            f"'escqrs projections run {markup(name)} --from beginning'."
        )
    elif existed:
        out_console().print(
            f"Dropped the read model of [cyan]{markup(name)}[/cyan]; its next run rebuilds it from scratch."
        )
    else:
        out_console().print(f"Nothing to drop for [cyan]{markup(name)}[/cyan].")
