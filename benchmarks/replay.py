"""W2 side by side: loading one account of 10 000 events, ours (any checkout) against eventsourcing.

Run ``python benchmarks/replay.py`` (add ``--before PATH`` to put another checkout of this project,
e.g. a ``git worktree`` of ``HEAD``, beside the working tree). It loads the same account, written the
way ``_ours.py`` and ``_eventsourcing.py`` write it for ``compare.py``'s W2, by

* **full replay** — every event from the start of the stream, no snapshot;
* **snapshot** — the latest snapshot (taken 50 events before the end) plus the 50-event tail;

on these sides, each in a process of its own (so two checkouts of this project can sit side by side):

* ``ours`` — the working tree; ``ours, cache`` — the same with ``Repository(cache_size=16)``, where
  a load after the first is a cache hit: a copy of the cached account plus one read of the events
  after its version (none here);
* ``before`` — the checkout given by ``--before`` (no cache);
* ``eventsourcing`` — its ``Application`` with its cache off (its default) and on
  (``AGGREGATE_CACHE_MAXSIZE=16``, which fast-forwards from the store and deep-copies, like ours).

The sides take turns, one load each per round, so that load from elsewhere on the machine falls on
all of them alike; each figure is the median. A benchmark, not a test: the numbers depend on the
machine and on what else it is running.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog
from _common import AMOUNT, SNAPSHOT_TAIL
from _eventsourcing import EsAccount, EsBank, their_env

# Each side runs in a child whose PYTHONPATH puts its checkout first: these come from there.
from escqrs.examples.bank.account import Account
from escqrs.examples.bank.events import registry
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from eventsourcing_cqrs.repository import Repository

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CACHE_SIZE = 16


# =========================================================================================
# In a child: one side, serving loads on request
# =========================================================================================


def ours_loaders(directory: Path, events: int, cache_size: int) -> tuple[Callable[[], object], ...]:
    """(full replay, snapshot + tail) for one account of ``events`` events, as ``_ours.py`` writes it."""
    cache = {"cache_size": cache_size} if cache_size else {}
    store = SQLiteEventStore(directory / "w2-ours.db", durable=False)
    plain = Repository(store, Account, registry, **cache)  # type: ignore[arg-type]
    snapshotting = Repository(store, Account, registry, snapshot_every=10**9, **cache)  # type: ignore[arg-type]
    writer = Repository(store, Account, registry)
    account = Account.open("long", "Bench")
    head = events - SNAPSHOT_TAIL
    while account.version < head - 1:
        for _ in range(min(1000, head - 1 - account.version - len(account.pending_events))):
            account.deposit(AMOUNT)
        writer.save(account)
    snapshotting.take_snapshot("long")
    for _ in range(SNAPSHOT_TAIL):
        account.deposit(AMOUNT)
    writer.save(account)
    expected = AMOUNT * (events - 1)
    assert account.version == events - 1
    assert snapshotting.load("long").balance == plain.load("long").balance == expected
    return (lambda: plain.load("long")), (lambda: snapshotting.load("long"))


def theirs_loaders(directory: Path, events: int, cache_size: int) -> tuple[Callable[[], object], ...]:
    """(full replay, snapshot + tail), eventsourcing's ``Application``, as ``_eventsourcing.py`` has it."""
    path = directory / "w2-theirs.db"
    writer = EsBank(env=their_env(path, durable=False, snapshots=True))
    account = EsAccount("Bench")
    head = events - SNAPSHOT_TAIL
    while account.version < head:
        for _ in range(min(1000, head - account.version)):
            account.deposit(AMOUNT)
        writer.save(account)
    writer.take_snapshot(account.id)
    for _ in range(SNAPSHOT_TAIL):
        account.deposit(AMOUNT)
    writer.save(account)
    writer.close()
    cache = {"AGGREGATE_CACHE_MAXSIZE": str(cache_size)} if cache_size else {}
    plain = EsBank(env={**their_env(path, durable=False, snapshots=False), **cache})
    snapshotting = EsBank(env={**their_env(path, durable=False, snapshots=True), **cache})
    expected = AMOUNT * (events - 1)
    assert plain.repository.get(account.id).balance == expected
    assert snapshotting.repository.get(account.id).balance == expected
    return (lambda: plain.repository.get(account.id)), (lambda: snapshotting.repository.get(account.id))


def serve(kind: str, directory: Path, events: int, cache_size: int, clock: str) -> None:
    """Set up one side, then answer each line ``0`` (full) or ``1`` (snapshot) with a load's seconds."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    directory.mkdir(parents=True, exist_ok=True)
    loaders = (ours_loaders if kind == "ours" else theirs_loaders)(directory, events, cache_size)
    print("ready", flush=True)
    now = time.thread_time if clock == "cpu" else time.perf_counter
    for line in sys.stdin:
        load = loaders[int(line)]
        started = now()
        load()
        print(now() - started, flush=True)


# =========================================================================================
# In the parent: the sides in turn, and the table
# =========================================================================================


@dataclass
class Side:
    name: str
    process: subprocess.Popen[str]

    def load(self, kind: int) -> float:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{kind}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())


@dataclass(frozen=True)
class Plan:
    name: str
    kind: str  # "ours" or "theirs"
    tree: Path  # the checkout whose packages the child imports
    cache_size: int


def start(plan: Plan, directory: Path, events: int, clock: str) -> Side:
    environment = {**os.environ, "PYTHONPATH": f"{plan.tree}{os.pathsep}{HERE}"}
    command = [sys.executable, str(HERE / "replay.py"), "--serve", plan.kind, str(directory), str(events)]
    process = subprocess.Popen(
        [*command, str(plan.cache_size), clock],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=environment,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        raise SystemExit(f"{plan.name}: the side failed to start (see its error above)")
    return Side(plan.name, process)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", type=Path, help="another checkout of this project to compare")
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument(
        "--repeat", type=int, default=15, help="full replays per side (20x as many snapshot loads)"
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time loads by the wall clock or by the loading thread's CPU time (steadier on a busy host)",
    )
    parser.add_argument("--serve", nargs=5, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.serve:
        kind, directory, events, cache_size, clock = arguments.serve
        serve(kind, Path(directory), int(events), int(cache_size), clock)
        return
    events = arguments.events
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        plans = [Plan("ours", "ours", ROOT, 0), Plan("ours, cache", "ours", ROOT, CACHE_SIZE)]
        if arguments.before is not None:
            plans.append(Plan("before", "ours", arguments.before.resolve(), 0))
        plans += [
            Plan("eventsourcing", "theirs", ROOT, 0),
            Plan("eventsourcing, cache", "theirs", ROOT, CACHE_SIZE),
        ]
        sides = [
            start(plan, base / f"side{number}", events, arguments.clock) for number, plan in enumerate(plans)
        ]
        times: dict[str, tuple[list[float], list[float]]] = {side.name: ([], []) for side in sides}
        try:
            for kind, repeat in ((0, arguments.repeat), (1, arguments.repeat * 20)):
                for _ in range(repeat):
                    for side in sides:
                        times[side.name][kind].append(side.load(kind))
        finally:
            for side in sides:
                assert side.process.stdin is not None
                side.process.stdin.close()
                side.process.wait()
    medians = {
        name: (statistics.median(full), statistics.median(snap)) for name, (full, snap) in times.items()
    }
    theirs_full, theirs_snap = medians["eventsourcing"]
    cached_full, cached_snap = medians["eventsourcing, cache"]
    print(f"W2: one account of {events:,} events; median of {arguments.repeat} full replays and")
    print(
        f"{arguments.repeat * 20} snapshot loads per side, taken in turns; {arguments.clock} clock. "
        f"Python {sys.version.split()[0]}."
    )
    print()
    print("| side | full replay | events/s | ÷ es | ÷ es cache | snapshot + tail | ÷ es | ÷ es cache |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, (full, snap) in medians.items():
        print(
            f"| {name} | {full * 1000:,.2f} ms | {events / full:,.0f} | {theirs_full / full:.2f}x "
            f"| {cached_full / full:.2f}x | {snap * 1e6:,.0f} µs | {theirs_snap / snap:.2f}x "
            f"| {cached_snap / snap:.2f}x |"
        )


if __name__ == "__main__":
    main()
