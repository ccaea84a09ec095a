"""Side by side: this project, the ``eventsourcing`` library, and a raw ``sqlite3`` + ``json`` loop.

Run ``python benchmarks/compare.py`` (quick sizes, well under two minutes) or ``--full``. The same
workloads run on

* **ours** (``_ours.py``) — the embedded
  :class:`~eventsourcing_cqrs.event_store.sqlite.SQLiteEventStore`, the bank example's ``Account``
  through the :class:`~eventsourcing_cqrs.bus.CommandBus`, and the :class:`~projections.ProjectionRunner`
  into the SQLite read-model store;
* **eventsourcing** (``_eventsourcing.py``) — the library Python users would otherwise pick (9.x),
  with its SQLite persistence module, an ``Application`` and an ``Aggregate`` written as its
  documentation shows, and its ``Projection`` over a ``SQLiteTrackingRecorder`` view;
* **raw** (``_raw_sqlite.py``) — the same work written directly against ``sqlite3`` and ``json``:
  no framework, no validation, no metadata. It is the practical limit for CPython on SQLite.

This file runs the sides in turn and prints the table; ``_common.py`` holds the timing, the
peak-RSS measurement, the subprocess runner and the table formatting. The other scripts here
measure our side alone where this one does not look: ``event_store.py`` (the event store port,
in-memory and SQLite, and cross-process delivery), ``rebuild.py`` (a blue/green rebuild into
SQLite and PostgreSQL read models) and ``esdb_server_throughput.py`` (the EventStoreDB adapter
over gRPC, against the in-process test server).

Workloads:

* **W1 commands** — N accounts opened, then K deposits each (round robin); every command loads
  the account from its events, decides, and appends with an optimistic version check. Neither
  side caches aggregates (eventsourcing's cache is off by default, and we have none).
* **W2 replay** — load one account of 10 000 events, by full replay and from a snapshot taken
  50 events before the end.
* **W3 rebuild** — project every event of N accounts x 100 events into an account-balances read
  model from scratch, each run in a fresh subprocess that reports its own peak RSS (VmHWM).
* **W4 latency** — with the projection running live, the time from calling append to the new
  balance being readable in the read model (read by another connection), p50 and p99.

The sides take turns (a round of W1 commands, one W2 load, one W3 run each), so that load from
elsewhere on the machine falls on all of them alike; short W3 runs are repeated and the fastest
kept. ``--only W1,W3`` runs some of the workloads; ``--profile W1|W2|W3`` runs our side of one
workload under pyinstrument instead.

Durability is the same on every side and is named in each row: SQLite's ``synchronous=FULL``
(both libraries' default, an ``fsync`` per commit) or ``synchronous=NORMAL`` (our
``durable=false``; for eventsourcing, which has no setting for it, the benchmark issues the
PRAGMA on each connection its pool opens).

A benchmark, not a test: the numbers depend on the machine and on what else it is running.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any

import _eventsourcing as theirs
import _ours as ours
import _raw_sqlite as raw
from _common import (
    AMOUNT,
    EVENTS_PER_ACCOUNT,
    ROOT,
    SNAPSHOT_TAIL,
    SYNC_MODES,
    Row,
    measure_here,
    percentile,
    print_table,
    quiet_logs,
    run_child,
)

SIDES: dict[str, ModuleType] = {"ours": ours, "theirs": theirs, "raw": raw}


@dataclass(frozen=True)
class Sizes:
    accounts: int  # W1: accounts opened
    deposits: int  # W1: deposits per account
    replay_events: int  # W2: events in the replayed aggregate
    replay_repeat: int  # W2: full replays timed per side (median); 20x as many snapshot loads
    rebuild_sizes: tuple[int, ...]  # W3: events per rebuild run (each in its own subprocess)
    rebuild_full_sync_sizes: tuple[int, ...]  # W3: sizes also rebuilt with synchronous=FULL
    latency_samples: int  # W4: appends timed


QUICK = Sizes(
    accounts=50,
    deposits=10,
    replay_events=10_000,
    replay_repeat=5,
    rebuild_sizes=(10_000, 100_000),
    rebuild_full_sync_sizes=(10_000,),
    latency_samples=200,
)
FULL = Sizes(
    accounts=200,
    deposits=25,
    replay_events=10_000,
    replay_repeat=15,
    rebuild_sizes=(10_000, 100_000, 1_000_000),
    rebuild_full_sync_sizes=(10_000, 100_000),
    latency_samples=1000,
)


# =========================================================================================
# The workloads, side by side
# =========================================================================================


def w1(directory: Path, sizes: Sizes, durable: bool) -> dict[str, float]:
    """Commands/s per side. The sides take turns, one round (a deposit to every account) at a
    time, so that a burst of load from elsewhere on the machine hits all of them alike."""
    mode = SYNC_MODES[durable]
    sides: dict[str, Any] = {
        "ours": ours.Commands(directory / f"w1-ours-{mode}.db", durable),
        "theirs": theirs.Commands(directory / f"w1-theirs-{mode}.db", durable),
        "raw": raw.Commands(directory / f"w1-raw-{mode}.db", durable),
        "ours_without_bus": ours.CommandsWithoutBus(directory / f"w1-ours-nobus-{mode}.db", durable),
    }
    spent = dict.fromkeys(sides, 0.0)
    ids: dict[str, list[Any]] = {}
    try:
        for name, side in sides.items():
            started = time.perf_counter()
            ids[name] = [side.open_account(number) for number in range(sizes.accounts)]
            spent[name] += time.perf_counter() - started
        for _ in range(sizes.deposits):
            for name, side in sides.items():
                deposit = side.deposit
                started = time.perf_counter()
                for account_id in ids[name]:
                    deposit(account_id)
                spent[name] += time.perf_counter() - started
        for name, side in sides.items():  # after the timing: every side did the same work
            balance = side.balance(ids[name][0])
            assert balance == AMOUNT * sizes.deposits, f"{name}: balance {balance}"
    finally:
        for side in sides.values():
            side.close()
    commands = sizes.accounts * (1 + sizes.deposits)
    return {name: commands / seconds for name, seconds in spent.items()}


def w2(directory: Path, sizes: Sizes) -> dict[str, tuple[float, float]]:
    """Events/s of full replay and of snapshot + tail per side: medians of loads taken in turns."""
    loaders = {name: side.replay_loaders(directory, sizes.replay_events) for name, side in SIDES.items()}
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in SIDES}
    try:
        for kind, repeat in ((0, sizes.replay_repeat), (1, sizes.replay_repeat * 20)):
            for _ in range(repeat):
                for name, loader in loaders.items():
                    load = loader[kind]
                    started = time.perf_counter()
                    load()
                    times[name][kind].append(time.perf_counter() - started)
    finally:
        for loader in loaders.values():
            loader[2]()
    events = sizes.replay_events
    return {
        name: (events / statistics.median(full), events / statistics.median(snap))
        for name, (full, snap) in times.items()
    }


def rebuild_child(system: str, source: Path, target: Path, events: int, durable: bool) -> None:
    """W3, in the subprocess: run one side's rebuild here and print what it measured as JSON."""
    (count, total), measured = measure_here(lambda: SIDES[system].rebuild(source, target, durable))
    expected_total = (events // EVENTS_PER_ACCOUNT) * AMOUNT * (EVENTS_PER_ACCOUNT - 1)
    if count != events or total() != expected_total:
        raise SystemExit(
            f"{system}: projected {count} events, balances sum to {total()}, expected {expected_total}"
        )
    print(json.dumps(measured))


@dataclass
class RebuildResult:
    events: int
    seconds: float
    rss_before_mib: float
    rss_peak_mib: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def memory(self) -> str:
        return f"{self.rss_peak_mib:,.0f} MiB ({self.rss_peak_mib - self.rss_before_mib:+.1f})"


def run_rebuild(system: str, source: Path, target: Path, events: int, durable: bool) -> RebuildResult:
    """W3: one rebuild in a fresh ``compare.py --rebuild-child`` process."""
    measured = run_child(
        Path(__file__),
        "--rebuild-child",
        system,
        str(source),
        str(target),
        str(events),
        "--durable" if durable else "--not-durable",
    )
    return RebuildResult(
        events, measured["seconds"], measured["rss_before_kib"] / 1024, measured["rss_peak_kib"] / 1024
    )


# =========================================================================================
# The rows and their notes
# =========================================================================================


@dataclass
class Run:
    sizes: Sizes
    directory: Path
    only: set[str]
    rows: list[Row] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        print(f"... {name}", file=sys.stderr, flush=True)
        yield
        self.timings[name] = time.perf_counter() - started

    def wants(self, workload: str) -> bool:
        return not self.only or workload in self.only


def run_w1(run: Run) -> None:
    sizes = run.sizes
    for durable in (True, False):
        mode = SYNC_MODES[durable]
        with run.step(f"W1 {mode}"):
            rates = w1(run.directory, sizes, durable)
        label = f"W1 commands ({sizes.accounts} accounts x {sizes.deposits} deposits, synchronous={mode})"
        run.rows.append(Row(label, rates["ours"], rates["theirs"], rates["raw"], target="≥ 3x es"))
        run.rows.append(
            Row(
                f"  ↳ ours without the CommandBus (Repository + Account only, synchronous={mode})",
                rates["ours_without_bus"],
                rates["theirs"],
                rates["raw"],
            )
        )
    commands = sizes.accounts * (1 + sizes.deposits)
    run.rows[-1].note = (
        f"W1: {commands:,} commands per side, one event each (so commands/s = events/s); no aggregate "
        "cache on either side. The ↳ rows are a diagnostic, not the comparison: the same work through "
        "our Repository without the bus (no context, metadata, deterministic ids, redelivery check, "
        "retries, logging), beside the same eventsourcing and raw runs."
    )


def run_w2(run: Run) -> None:
    with run.step("W2"):
        rates = w2(run.directory, run.sizes)
    events = run.sizes.replay_events
    run.rows.append(
        Row(
            f"W2 replay {events:,} events, no snapshot",
            rates["ours"][0],
            rates["theirs"][0],
            rates["raw"][0],
            target="≥ 3x es",
        )
    )
    run.rows.append(
        Row(
            f"W2 replay {events:,} events, snapshot + {SNAPSHOT_TAIL}-event tail",
            rates["ours"][1],
            rates["theirs"][1],
            rates["raw"][1],
            target="≥ 3x es",
            note=(
                f"W2 snapshot row: the aggregate's {events:,} events ÷ load time (a load reads 1 snapshot "
                f"+ {SNAPSHOT_TAIL} events); median of {run.sizes.replay_repeat * 20} loads, "
                f"{run.sizes.replay_repeat} for full replay."
            ),
        )
    )


def run_w3(run: Run) -> None:
    results: dict[tuple[int, bool], dict[str, RebuildResult]] = {}
    for events in run.sizes.rebuild_sizes:
        with run.step(f"W3 data {events:,}"):
            ours_source = run.directory / f"w3-ours-{events}.db"
            theirs_source = run.directory / f"w3-theirs-{events}.db"
            ours.fill(ours_source, events)
            theirs.fill(theirs_source, events)
        modes = [False] + ([True] if events in run.sizes.rebuild_full_sync_sizes else [])
        # Short runs are repeated (sides in turn) and the fastest kept: noise only slows a run down.
        repeat = 3 if events <= 10_000 else 1
        for durable in modes:
            measured = results[events, durable] = {}
            with run.step(f"W3 {events:,} events, synchronous={SYNC_MODES[durable]}, x{repeat}"):
                for attempt in range(repeat):
                    for system, source in (
                        ("ours", ours_source),
                        ("theirs", theirs_source),
                        ("raw", ours_source),  # raw reads the file our store wrote
                    ):
                        target = run.directory / f"w3-{system}-{events}-{durable}-{attempt}-model.db"
                        try:
                            result = run_rebuild(system, source, target, events, durable)
                        except RuntimeError as exc:  # keep the other sides' numbers; say what failed
                            print(exc, file=sys.stderr)
                            continue
                        best = measured.get(system)
                        if best is None or result.seconds < best.seconds:
                            measured[system] = result
        for path in run.directory.glob(f"w3-*-{events}*.db*"):
            path.unlink()

    for (events, durable), measured in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        ours_result, theirs_result, raw_result = (measured.get(system) for system in SIDES)
        run.rows.append(
            Row(
                f"W3 rebuild {events:,} events (synchronous={SYNC_MODES[durable]})",
                ours_result and ours_result.rate,
                theirs_result and theirs_result.rate,
                raw_result and raw_result.rate,
                target="≥ 20x es, ≥ 0.5x raw",
            )
        )
    for events in run.sizes.rebuild_sizes:
        measured = results[events, False]
        run.rows.append(
            Row(
                f"W3 peak RSS at {events:,} events (growth during the rebuild)",
                *(measured[system].memory if system in measured else None for system in SIDES),
                unit="MiB",
                higher_is_better=False,
                target="flat",
            )
        )
    run.rows[-1].note = (
        "W3: every rebuild runs in a fresh subprocess into an empty read model (ours: the bank's "
        "AccountList projection and our runner; eventsourcing: its Projection and a SQLiteTrackingRecorder "
        "view, one transaction per event as its API requires; raw: batches of 500 with a checkpoint); "
        "peak RSS is the subprocess's VmHWM, growth is peak minus RSS before the rebuild started."
    )


def run_w4(run: Run) -> None:
    durable = False
    mode = SYNC_MODES[durable]
    samples = run.sizes.latency_samples
    with run.step("W4"):
        ours_default = ours.latency(run.directory, samples, durable, batch_delay=0.05)
        ours_unbatched = ours.latency(run.directory, samples, durable, batch_delay=0.0)
        raw_latencies = raw.latency(run.directory, samples, durable)
    for label, fraction in (("p50", 0.5), ("p99", 0.99)):
        for delay, ours_latencies in (("0.05 s, default", ours_default), ("0", ours_unbatched)):
            run.rows.append(
                Row(
                    f"W4 append → visible, {label} (runner batch_delay={delay}; synchronous={mode})",
                    percentile(ours_latencies, fraction) * 1000,
                    None,
                    percentile(raw_latencies, fraction) * 1000,
                    unit="ms",
                    higher_is_better=False,
                )
            )
    run.rows[-1].note = (
        f"W4: {samples} deposits appended one at a time, each timed from the append call until a "
        "separate connection reads the new balance from the read model; eventsourcing n/a: its "
        "SQLite recorder has no subscribe() (NotImplementedError), so its ProjectionRunner cannot "
        "follow a SQLite application live."
    )


# =========================================================================================
# --profile: our side of one workload under pyinstrument
# =========================================================================================


def profile(workload: str, directory: Path) -> None:
    """Run our side of one workload under pyinstrument: its call tree, then self time per module."""
    try:
        from pyinstrument import Profiler  # noqa: PLC0415 - an optional tool, not a dependency
    except ImportError:
        raise SystemExit("--profile needs pyinstrument: .venv/bin/pip install pyinstrument") from None
    action: Callable[[], object]
    if workload == "W1":
        side = ours.Commands(directory / "profile-w1.db", durable=False)
        ids = [side.open_account(number) for number in range(QUICK.accounts)]

        def action() -> None:
            for _ in range(QUICK.deposits):
                for account_id in ids:
                    side.deposit(account_id)

    elif workload == "W2":
        full, _, _ = ours.replay_loaders(directory, QUICK.replay_events)

        def action() -> None:
            for _ in range(5):
                full()

    elif workload == "W3":
        ours.fill(directory / "profile-w3.db", 100_000)

        def action() -> None:
            ours.rebuild(directory / "profile-w3.db", directory / "profile-w3-model.db", False)

    else:
        raise SystemExit(f"--profile takes W1, W2 or W3, not {workload!r}")
    profiler = Profiler(interval=0.0005)
    profiler.start()
    action()
    profiler.stop()
    print(profiler.output_text(unicode=False, show_all=False))
    root = profiler.last_session.root_frame() if profiler.last_session else None
    if root is None:
        return
    # Each sample goes to the innermost frame of our own code (eventsourcing_cqrs, projections,
    # escqrs): time in sqlite3, pydantic, json or the stdlib counts for the module that called it.
    packages = ("eventsourcing_cqrs/", "projections/", "escqrs/")
    by_module: dict[str, float] = {}
    stack: list[tuple[Any, str]] = [(root, "(outside our modules)")]
    while stack:
        frame, owner = stack.pop()
        path = frame.file_path or ""
        if path.startswith(str(ROOT)) and any(part in path for part in packages):
            owner = str(Path(path).relative_to(ROOT))
        if not frame.is_synthetic:
            by_module[owner] = by_module.get(owner, 0.0) + frame.total_self_time
        stack.extend((child, owner) for child in frame.children)
    total = sum(by_module.values())
    print(f"Time by our module, with the library and C calls each makes ({total:.2f} s sampled):")
    for label, seconds in sorted(by_module.items(), key=lambda item: -item[1]):
        if seconds / total >= 0.005:
            print(f"  {100 * seconds / total:5.1f}%  {label}")


# =========================================================================================
# main
# =========================================================================================


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--full", action="store_true", help="full sizes (W3 up to 1M events)")
    parser.add_argument("--only", default="", help="comma-separated workloads to run (W1,W2,W3,W4)")
    parser.add_argument(
        "--profile", metavar="W1|W2|W3", help="profile our side of one workload with pyinstrument, then stop"
    )
    parser.add_argument(
        "--rebuild-child", nargs=4, metavar=("SYSTEM", "SOURCE", "TARGET", "EVENTS"), help=argparse.SUPPRESS
    )
    parser.add_argument("--durable", dest="durable", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--not-durable", dest="durable", action="store_false", help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_logs()

    if args.rebuild_child:
        system, source, target, events = args.rebuild_child
        rebuild_child(system, Path(source), Path(target), int(events), args.durable)
        return

    if args.profile:
        with tempfile.TemporaryDirectory(prefix="escqrs-profile-") as directory:
            profile(args.profile.upper(), Path(directory))
        return

    sizes = FULL if args.full else QUICK
    only = {part.strip().upper() for part in args.only.split(",") if part.strip()}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="escqrs-bench-") as directory:
        run = Run(sizes, Path(directory), only)
        for name, workload in (("W1", run_w1), ("W2", run_w2), ("W3", run_w3), ("W4", run_w4)):
            if run.wants(name):
                workload(run)
    elapsed = time.perf_counter() - started
    header = [
        f"## eventsourcing-cqrs vs eventsourcing {version('eventsourcing')} vs raw sqlite3 "
        f"({'full' if args.full else 'quick'} sizes)",
        "",
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, "
        f"pydantic {version('pydantic')}, {platform.machine()}, {os.cpu_count()} cores; "
        f"run took {elapsed:,.0f} s.",
        "Rates are events/s (higher is better); ratios > 1x mean ours is faster (or smaller).",
    ]
    print_table(run.rows, header)


if __name__ == "__main__":
    main()
