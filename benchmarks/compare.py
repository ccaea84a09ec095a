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

* **W1 commands** — N accounts, each written with 20 events first (set-up, untimed), then one
  untimed round of deposits, then K timed deposits each (round robin). Every command loads the
  account, decides, and appends with an optimistic version check. With no aggregate cache (both
  libraries' default) a load replays the 21+ events of the stream, so replay cost shows; the
  cache rows run the same commands with an aggregate cache on each side: ours
  (``Repository(cache_size=...)``: write-through after each append, dropped on a conflict, the
  expected-version check still the truth) and eventsourcing's (``AGGREGATE_CACHE_MAXSIZE``, with
  its default fast-forward, which reads the stream after the cached version on every hit, and,
  as a diagnostic, without it: write-through, no read on a hit, but a stale entry is not dropped
  on a conflict). Rows whose side is missing (a checkout without ``cache_size``) print n/a.
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
PRAGMA on each connection its pool opens). Every W1 and W3 run reads ``journal_mode`` and
``synchronous`` back from each connection each side holds open to the files it writes, and stops
without a table if any differs from what its row says; the PRAGMAs found are printed.

W3 at ``synchronous=FULL`` measures fsyncs more than code: eventsourcing's projection API commits
its tracking record with each event's write (one transaction, so one fsync, per event), while
ours and raw commit once per batch of up to 500 events.

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
    require_pragmas,
    run_child,
    watch_connections,
)

SIDES: dict[str, ModuleType] = {"ours": ours, "theirs": theirs, "raw": raw}


#: W1 cache rows: aggregates each side's cache holds (more than W1's accounts: every load can hit).
CACHE_SIZE = 1024


@dataclass(frozen=True)
class Sizes:
    accounts: int  # W1: accounts
    history: int  # W1: events per account written before the commands (set-up, untimed)
    deposits: int  # W1: timed deposits per account, after one untimed round
    replay_events: int  # W2: events in the replayed aggregate
    replay_repeat: int  # W2: full replays timed per side (median); 20x as many snapshot loads
    rebuild_sizes: tuple[int, ...]  # W3: events per rebuild run (each in its own subprocess)
    rebuild_full_sync_sizes: tuple[int, ...]  # W3: sizes also rebuilt with synchronous=FULL
    latency_samples: int  # W4: appends timed


QUICK = Sizes(
    accounts=50,
    history=20,
    deposits=10,
    replay_events=10_000,
    replay_repeat=5,
    rebuild_sizes=(10_000, 100_000),
    rebuild_full_sync_sizes=(10_000,),
    latency_samples=200,
)
FULL = Sizes(
    accounts=200,
    history=20,
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


#: W1's sides: name -> (module, constructor keywords). The cached ones need CACHE_SIZE to fit.
W1_SIDES: dict[str, tuple[ModuleType, dict[str, Any]]] = {
    "ours": (ours, {}),
    "ours_cached": (ours, {"cache": CACHE_SIZE}),
    "ours_without_bus": (ours, {}),
    "theirs": (theirs, {}),
    "theirs_cached": (theirs, {"cache": CACHE_SIZE, "fastforward": True}),
    "theirs_write_through": (theirs, {"cache": CACHE_SIZE, "fastforward": False}),
    "raw": (raw, {}),
}


def w1(directory: Path, sizes: Sizes, durable: bool) -> tuple[dict[str, float], dict[str, str]]:
    """Commands/s per side, and the PRAGMAs each side's connections ran under.

    Every account first gets ``sizes.history`` events (set-up) and one deposit (a warm-up round,
    which also fills the caches); then the timed rounds. The sides take turns, one round (a
    deposit to every account) at a time, so that a burst of load from elsewhere on the machine
    hits all of them alike.
    """
    mode = SYNC_MODES[durable]
    paths: dict[str, Path] = {}
    sides: dict[str, Any] = {}
    spent: dict[str, float] = {}
    ids: dict[str, list[Any]] = {}
    pragmas: dict[str, str] = {}
    with watch_connections() as watch:
        try:
            for name, (module, options) in W1_SIDES.items():
                if name == "ours_cached" and not ours.CACHE_SUPPORTED:
                    continue
                paths[name] = directory / f"w1-{name}-{mode}.db"
                factory = module.CommandsWithoutBus if name == "ours_without_bus" else module.Commands
                sides[name] = factory(paths[name], durable, **options)
                ids[name] = [sides[name].seed(number, sizes.history) for number in range(sizes.accounts)]
                spent[name] = 0.0
            for round_number in range(1 + sizes.deposits):  # round 0: the untimed warm-up
                for name, side in sides.items():
                    deposit = side.deposit
                    started = time.perf_counter()
                    for account_id in ids[name]:
                        deposit(account_id)
                    if round_number:
                        spent[name] += time.perf_counter() - started
            for name, side in sides.items():  # after the timing: every side did the same work
                balance = side.balance(ids[name][0])
                expected = AMOUNT * (sizes.history + sizes.deposits)  # history - 1 + warm-up + timed
                assert balance == expected, f"{name}: balance {balance}, expected {expected}"
                pragmas[name] = require_pragmas(f"W1 {name}", paths[name], watch.pragmas(paths[name]), mode)
        finally:
            for side in sides.values():
                side.close()
    commands = sizes.accounts * sizes.deposits
    return {name: commands / seconds for name, seconds in spent.items()}, pragmas


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
    with watch_connections() as watch:
        (count, total), measured = measure_here(lambda: SIDES[system].rebuild(source, target, durable))
        # What the read model's connections (still open: total() reads through them) ran under.
        pragmas = watch.pragmas(target)
    expected_total = (events // EVENTS_PER_ACCOUNT) * AMOUNT * (EVENTS_PER_ACCOUNT - 1)
    if count != events or total() != expected_total:
        raise SystemExit(
            f"{system}: projected {count} events, balances sum to {total()}, expected {expected_total}"
        )
    print(json.dumps({**measured, "pragmas": pragmas}))


@dataclass
class RebuildResult:
    events: int
    seconds: float
    rss_before_mib: float
    rss_peak_mib: float
    pragmas: dict[str, int]  # "journal_mode=... synchronous=..." -> read-model connections

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
        events,
        measured["seconds"],
        measured["rss_before_kib"] / 1024,
        measured["rss_peak_kib"] / 1024,
        measured["pragmas"],
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
    #: What each side's connections reported, one line per workload and durability.
    pragmas: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        print(f"... {name}", file=sys.stderr, flush=True)
        yield
        self.timings[name] = time.perf_counter() - started
        print(f"    {name}: {self.timings[name]:.1f} s", file=sys.stderr, flush=True)

    def wants(self, workload: str) -> bool:
        return not self.only or workload in self.only


def pragma_summary(found: dict[str, str]) -> str:
    """``{side: "journal_mode=wal synchronous=FULL (x2)"}`` as one line, the sides grouped by PRAGMAs."""
    by_pragmas: dict[str, list[str]] = {}
    for side, line in found.items():
        pragmas, _, count = line.partition(" (x")
        by_pragmas.setdefault(pragmas, []).append(f"{side} x{count.rstrip(')')}")
    return "; ".join(f"{pragmas} on {', '.join(sides)}" for pragmas, sides in by_pragmas.items())


def run_w1(run: Run) -> None:
    sizes = run.sizes
    for durable in (True, False):
        mode = SYNC_MODES[durable]
        with run.step(f"W1 {mode}"):
            rates, pragmas = w1(run.directory, sizes, durable)
        run.pragmas.append(f"W1 synchronous={mode}: {pragma_summary(pragmas)}")
        scale = f"{sizes.accounts} accounts of {sizes.history}+ events x {sizes.deposits} deposits"
        run.rows.append(
            Row(
                f"W1 commands ({scale}, no aggregate cache, synchronous={mode})",
                rates["ours"],
                rates["theirs"],
                rates["raw"],
                target="≥ 3x es",
                summary=f"W1 commands, no cache, synchronous={mode}",
            )
        )
        run.rows.append(
            Row(
                f"  ↳ ours without the CommandBus (Repository + Account only, synchronous={mode})",
                rates["ours_without_bus"],
                rates["theirs"],
                rates["raw"],
            )
        )
        run.rows.append(
            Row(
                f"W1 commands, aggregate cache on (ours cache_size={CACHE_SIZE}; es "
                f"AGGREGATE_CACHE_MAXSIZE={CACHE_SIZE}, fast-forward; synchronous={mode})",
                rates.get("ours_cached"),
                rates["theirs_cached"],
                rates["raw"],
                summary=f"W1 commands, cache on, synchronous={mode}",
            )
        )
        run.rows.append(
            Row(
                f"  ↳ es cache, no fast-forward (write-through, stale across processes; synchronous={mode})",
                rates.get("ours_cached"),
                rates["theirs_write_through"],
                rates["raw"],
            )
        )
    commands = sizes.accounts * sizes.deposits
    missing = "" if ours.CACHE_SUPPORTED else " (n/a for ours: this checkout's Repository has no cache_size)"
    run.rows[-1].note = (
        f"W1: {sizes.accounts} accounts, each written with {sizes.history} events (set-up) and one "
        f"untimed deposit; then {commands:,} timed deposits per side, one event each (commands/s = "
        f"events/s). Without a cache every command replays its stream ({sizes.history + 1} to "
        f"{sizes.history + sizes.deposits} events). The cache rows{missing}: ours is write-through after "
        "each append and dropped on a conflict, the append's expected-version check still deciding; "
        "eventsourcing's, with its default fast-forward, reads the events after the cached version on "
        "every hit (so another process's appends are seen) and deep-copies the aggregate out of the cache. "
        "The es ↳ cache row turns fast-forward off: write-through, no read on a hit, but a save that "
        "conflicts with another process's append leaves the stale aggregate cached, so every later "
        "command on it fails until it is evicted; it is eventsourcing's upper bound, not a like-for-like "
        "comparison. The raw column never caches. The ours ↳ row is a diagnostic: the same work through "
        "our Repository without the bus (no context, metadata, deterministic ids, redelivery check, "
        "retries, logging)."
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
            target="≥ 6x es",
            summary="W2 replay, no snapshot",
        )
    )
    run.rows.append(
        Row(
            f"W2 replay {events:,} events, snapshot + {SNAPSHOT_TAIL}-event tail",
            rates["ours"][1],
            rates["theirs"][1],
            rates["raw"][1],
            summary="W2 replay, snapshot + tail",
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
            found: dict[str, str] = {}
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
                        found[system] = require_pragmas(
                            f"W3 {system}", target, result.pragmas, SYNC_MODES[durable]
                        )
                        best = measured.get(system)
                        if best is None or result.seconds < best.seconds:
                            measured[system] = result
            run.pragmas.append(
                f"W3 {events:,} events, synchronous={SYNC_MODES[durable]}, read models: "
                + pragma_summary(found)
            )
        for path in run.directory.glob(f"w3-*-{events}*.db*"):
            path.unlink()

    for (events, durable), measured in sorted(results.items(), key=lambda item: (item[0][1], item[0][0])):
        ours_result, theirs_result, raw_result = (measured.get(system) for system in SIDES)
        mode = SYNC_MODES[durable]
        run.rows.append(
            Row(
                f"W3 rebuild {events:,} events (synchronous={mode}"
                + ("; es: one fsync per event, see notes)" if durable else ")"),
                ours_result and ours_result.rate,
                theirs_result and theirs_result.rate,
                raw_result and raw_result.rate,
                # At FULL the ratio to eventsourcing counts fsyncs (one per event there, one per
                # batch here), not code speed: no target for it.
                target="" if durable else "≥ 12x es, ≥ 0.7x raw",
                summary=f"W3 rebuild {events:,}, synchronous={mode}"
                + (" (fsyncs, not code)" if durable else ""),
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
        "AccountList projection and our runner, batches of up to 500 events; eventsourcing: its Projection "
        "and a SQLiteTrackingRecorder view, one transaction per event as its API requires; raw: batches of "
        "500 with a checkpoint); peak RSS is the subprocess's VmHWM, growth is peak minus RSS before the "
        "rebuild started. The synchronous=FULL rows measure eventsourcing's fsync per event (its tracking "
        "recorder commits each event's write with its tracking record), against one fsync per batch of "
        "500 for ours and raw: the ratio there is about the number of fsyncs and the disk's fsync time, "
        "not code speed; compare code at synchronous=NORMAL."
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
        ids = [side.seed(number, QUICK.history) for number in range(QUICK.accounts)]

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
    if run.pragmas:
        print()
        print("PRAGMAs read back from every connection each side held open to the files it wrote, with")
        print("the number of connections (the run stops without a table if any differs from its row):")
        print()
        for line in run.pragmas:
            print(f"- {line}")


if __name__ == "__main__":
    main()
