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
import signal
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
    }


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
    'escqrs projections run'.
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
        out_console().print(status_table(statuses, kinds))


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
    store: StoreOption = None,
    read_models: ReadModelsOption = None,
    app: AppOption = DEFAULT_APP,
    debug: DebugOption = False,
) -> None:
    """Run projections, reactors and process managers in the foreground until Ctrl-C or SIGTERM.

    Each runs in its own thread; on a signal the current batches commit, then they stop. A reactor
    or process manager dispatches its commands through the application's command bus, and only
    one runner of each name is active at a time, across processes.

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
            console.print(f"Catching up {listed}…")
            interrupted = _catch_up(runners, again=any(target.reacts for target in selected))
        else:
            console.print(f"Running {listed}. Press Ctrl-C to stop.")
            interrupted = _run_until_stopped(runners)
        statuses = [runner.status() for runner in runners]
    if interrupted[0]:
        console.print("Stopped: every batch in flight was committed.")
    out_console().print(status_table(statuses, {target.name: target.kind for target in selected}))


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
    same command again to resume where it stopped. Reactors and process managers are not rebuilt:
    that would fire their history's effects again (see 'escqrs projections drop').
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
    """Events set aside after failing every retry: whose, where, which type, why, how often.

    Of every projection, reactor and process manager of the app, or of those named. Nothing was
    dispatched for a reactor's parked event: 'escqrs projections retry NAME' reacts to it again.
    """
    configure_logging(debug=debug)
    spec = open_app(app)
    selected = _select(spec, names)
    with read_model_store(read_models) as views:
        events = [(target.kind, event) for target in selected for event in views.parked_events(target.name)]
    if json_output:
        emit_json([_parked_row(event, kind) for kind, event in events])
        return
    table = Table(title=f"{len(events)} parked events", title_justify="left", header_style="bold")
    for column in ("name", "kind", "position", "stream@rev", "type", "attempts", "parked (UTC)", "error"):
        table.add_column(
            column, overflow="fold", justify="right" if column in ("position", "attempts") else "left"
        )
    for kind, event in events:
        table.add_row(
            event.projection,
            kind,
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
    epilog=examples(
        "escqrs projections retry account_list --position 1234 --read-models sqlite:///views.db",
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
    """Retry parked events (all of NAME's, or those at --position).

    When a runner of NAME is running (in any process), it retries them; otherwise they are
    retried here, under NAME's lease. A reactor or process manager reacts to each event again,
    dispatching its commands through the application's command bus (each still applies once).
    """
    from projections import ProjectionRunner, ReactorRunner  # noqa: PLC0415 - the read side only when needed
    from projections.read_model_store.port import LeaseRole  # noqa: PLC0415

    configure_logging(debug=debug)
    spec = open_app(app)
    target = _one(spec, name)
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
            runner: ProjectionRunner
            if target.reactor is not None:
                runner = ReactorRunner(target.reactor, events, views, bus=spec.bus(events))
            else:
                assert target.projection is not None
                runner = ProjectionRunner(target.projection, events, views)
            runner.retry_parked(positions, timeout=timeout)
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
