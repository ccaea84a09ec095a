"""Side by side on EventStoreDB: this project's adapter and the ``eventsourcing`` library's.

    make bench-esdb                                        # creates .venv-es93, then runs this
    .venv/bin/python benchmarks/esdb_compare.py --es-python .venv-es93/bin/python [--quick] [--runs N]

``compare.py`` compares the two libraries on SQLite; this is the same domain (the bank
``Account``, ``Deposit`` commands, the balances projection) on EventStoreDB:

* **ours** (``_ours_esdb.py``, run by ``.venv/bin/python``) — the bank example through the
  :class:`~eventsourcing_cqrs.bus.CommandBus` and :class:`~eventsourcing_cqrs.repository.Repository`
  on :class:`~eventsourcing_cqrs.event_store.esdb.EsdbEventStore`, and the
  :class:`~projections.ProjectionRunner` into the SQLite read-model store: public API only, so it
  measures whatever the checkout's adapter does when it runs;
* **eventsourcing** (``_eventsourcing_esdb.py``, run by ``--es-python``) — eventsourcing 9.3 with
  ``eventsourcing-eventstoredb`` 1.1.2 (esdbclient 1.1), an ``Application`` and an ``Aggregate``
  as its documentation shows. It needs its own venv: this project's dev extra pins
  ``eventsourcing>=9.5``, and eventsourcing-eventstoredb 1.1.2 requires ``>=9.3,<9.4``.

Both run against the project's EventStoreDB test server
(:class:`~eventsourcing_cqrs.testing.esdb_server.EsdbServerProcess`, strict, in its own process): a
test double, so the figures measure the clients and the double, not EventStoreDB. Every
measurement is one child process of one side on a fresh server, so both sides meet the same log
size; the sides alternate (which goes first swaps every run) and each figure is the median of
``--runs`` runs. The two children measure alike (``_esdb_probe.py``): wall time around the timed
section only, **client CPU** = ``time.process_time()`` of the child over that section (all its
threads, gRPC's included) ÷ commands or events, **server CPU** = the server's utime + stime
from ``/proc/<pid>/stat`` over the same section ÷ commands or events (clock ticks of
``1/SC_CLK_TCK`` s: small phases are coarse). Ratios are ours ÷ eventsourcing of the row's
figure: above 1x in the rate column means ours is faster, below 1x in the CPU columns means ours
spends less.

Rows:

* **W1 open** — ``OpenAccount`` / ``open_account``: N new accounts, one command at a time.
* **W1 deposit, no cache** — then, after one untimed round of deposits, K deposits per account
  round robin, each a load (replaying the account's stream, 2 to K+1 events), a decision and an
  append at the expected version.
* **W1 deposit, warm cache** — the same with each side's aggregate cache on, holding every
  account (the opens and the untimed round put them there): ours ``Repository(cache_size=...)``
  (write-through, dropped on a conflict); eventsourcing ``AGGREGATE_CACHE_MAXSIZE`` with
  ``AGGREGATE_CACHE_FASTFORWARD=y``, its default and the mode that stays correct across
  processes (every hit reads the stream after the cached version).
* **W1c** — 1, 8 and 32 threads depositing on accounts of their own (two each) through one
  store/bus (ours, warm cache) or one shared ``Application`` (eventsourcing, cache as above);
  commands/s and the p99 of the per-command latency.
* **W2 replay** — load one aggregate of E events (no cache, no snapshot) L times; events/s.
* **W3 rebuild** — 20,000 events in ``$all`` (accounts of 100 events, untimed), projected into
  an SQLite balances table from scratch; events/s. Ours: the bank's ``AccountList`` by our
  runner (a catch-up subscription to ``$all``, up to 500 events per read-model transaction);
  eventsourcing: its notification log (``select_notifications`` over ``$all``, pages of 500,
  server-side topic filter), one transaction per event with its tracking row; both files at
  ``synchronous=NORMAL``.

After the table, one small counted pass per side (``--count-calls`` in the children, untimed:
the counting interceptor costs CPU) gives the gRPC calls, and the requests sent on streaming
calls, per command. ``--quick`` is a smoke run (small sizes, one run unless ``--runs``).
``--ours-src DIR`` runs our side from another source tree (e.g. ``git archive HEAD`` unpacked
there), put first on its ``PYTHONPATH``; the server always runs from this checkout.

A benchmark, not a test: the numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _common import ROOT, quiet_logs

from eventsourcing_cqrs.testing.esdb_server import EsdbServerProcess

HERE = Path(__file__).resolve().parent
CHILDREN = {"ours": HERE / "_ours_esdb.py", "es": HERE / "_eventsourcing_esdb.py"}
SIDES = ("ours", "es")
EVENTS_PER_ACCOUNT = 100  # W3: accounts of 100 events (as compare.py)


@dataclass(frozen=True)
class Sizes:
    accounts: int  # W1: accounts opened
    deposits: int  # W1: timed deposits per account (after one untimed round)
    threads: tuple[int, ...]  # W1c: writer threads
    concurrent_deposits: int  # W1c: deposits in all, split between the threads
    replay_events: int  # W2: events of the replayed aggregate
    replay_loads: int  # W2: loads timed
    rebuild_events: int  # W3: events in $all
    runs: int  # default --runs


FULL = Sizes(200, 10, (1, 8, 32), 1920, 5000, 5, 20_000, 3)
QUICK = Sizes(50, 4, (1, 8, 32), 320, 1000, 3, 5000, 1)


@dataclass(frozen=True)
class Case:
    """One child run: a workload, its command-line options, and the phases it reports."""

    key: str
    args: tuple[str, ...]
    sides: dict[str, tuple[str, ...]]  # side -> extra options for that side


def cases(sizes: Sizes) -> list[Case]:
    cache = str(max(1024, sizes.accounts * 2))
    w1 = ("--workload", "w1", "--accounts", str(sizes.accounts), "--deposits", str(sizes.deposits))
    found = [
        Case("w1", w1, {"ours": (), "es": ()}),
        Case("w1-cache", w1, {"ours": ("--cache", cache), "es": ("--cache", cache)}),
    ]
    for threads in sizes.threads:
        per_thread = str(sizes.concurrent_deposits // threads)
        options = ("--workload", "w1c", "--threads", str(threads), "--per-thread", per_thread)
        found.append(Case(f"w1c-{threads}", options, {"ours": ("--cache", cache), "es": ("--cache", cache)}))
    w2 = ("--workload", "w2", "--events", str(sizes.replay_events), "--loads", str(sizes.replay_loads))
    found.append(Case("w2", w2, {"ours": (), "es": ()}))
    found.append(
        Case("w3", ("--workload", "w3", "--events", str(sizes.rebuild_events)), {"ours": (), "es": ()})
    )
    return found


@dataclass
class Sides:
    """How to start each side's child."""

    pythons: dict[str, str]
    env: dict[str, dict[str, str]] = field(default_factory=dict)

    def run(self, side: str, case_args: Sequence[str], directory: Path) -> dict[str, dict[str, Any]]:
        """One child of ``side`` on a fresh test server; the phases it measured."""
        with EsdbServerProcess(strict=True) as server:  # as the test fixture runs it
            command = [
                self.pythons[side],
                str(CHILDREN[side]),
                "--uri",
                server.uri,
                "--server-pid",
                str(server.pid),
                "--directory",
                str(directory),
                *case_args,
            ]
            done = subprocess.run(
                command, capture_output=True, text=True, check=False, env=self.env.get(side), cwd=ROOT
            )
        if done.returncode != 0:
            raise RuntimeError(f"{side} {' '.join(case_args)} failed:\n{done.stderr[-4000:]}")
        phases: dict[str, dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])["phases"]
        return phases


# =========================================================================================
# The table
# =========================================================================================


@dataclass
class Figure:
    """Medians over the runs of one phase of one side."""

    rate: float  # commands or events per second
    client_us: float  # client CPU µs per command/event
    server_us: float  # server CPU µs per command/event
    p99_ms: float | None = None

    @classmethod
    def median_of(cls, measured: list[dict[str, Any]]) -> Figure:
        def med(values: list[float]) -> float:
            return statistics.median(values)

        p99s = [m["p99_ms"] for m in measured if "p99_ms" in m]
        return cls(
            rate=med([m["count"] / m["seconds"] for m in measured]),
            client_us=med([m["client_cpu"] * 1e6 / m["count"] for m in measured]),
            server_us=med([m["server_cpu"] * 1e6 / m["count"] for m in measured]),
            p99_ms=med(p99s) if p99s else None,
        )


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None or theirs == 0:
        return "—"
    return f"{ours / theirs:,.2f}x"


def _num(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def render(table: list[tuple[str, ...]], right_from: int = 2) -> list[str]:
    """A GitHub Markdown table, columns from ``right_from`` on right-aligned (as compare.py)."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]

    def line(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                cell.rjust(width) if i >= right_from else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join(("-" * (w + 1) + ":") if i >= right_from else "-" * (w + 2) for i, w in enumerate(widths))
        + "|"
    )
    return [line(table[0]), rule, *(line(cells) for cells in table[1:])]


def rows(
    sizes: Sizes, results: dict[tuple[str, str, str], list[dict[str, Any]]], cache: int
) -> list[tuple[str, ...]]:
    """The table's lines: one per (case, phase) with both sides, plus the W1c p99 lines."""
    labels = [
        ("w1", "open", f"W1 open account ({sizes.accounts} commands, new streams)", "commands/s"),
        (
            "w1",
            "deposit",
            f"W1 deposit, no cache ({sizes.accounts * sizes.deposits:,} commands, "
            f"streams of 2-{sizes.deposits + 1} events)",
            "commands/s",
        ),
        (
            "w1-cache",
            "deposit",
            f"W1 deposit, warm cache (ours cache_size={cache}; "
            f"es AGGREGATE_CACHE_MAXSIZE={cache}, fast-forward)",
            "commands/s",
        ),
    ]
    for threads in sizes.threads:
        per = sizes.concurrent_deposits // threads
        labels.append(
            (
                f"w1c-{threads}",
                "deposit",
                f"W1c {threads} thread{'s' if threads > 1 else ''} x {per} deposits, own accounts, cache on",
                "commands/s",
            )
        )
    labels.append(
        (
            "w2",
            "load",
            f"W2 replay {sizes.replay_events:,} events x {sizes.replay_loads} loads (no cache, no snapshot)",
            "events/s",
        )
    )
    labels.append(
        ("w3", "rebuild", f"W3 rebuild {sizes.rebuild_events:,} events from $all → SQLite", "events/s")
    )
    header = (
        "Workload",
        "unit",
        "ours",
        "eventsourcing",
        "ours ÷ es",
        "client µs ours",
        "client µs es",
        "ours ÷ es",
        "server µs ours",
        "server µs es",
        "ours ÷ es",
    )
    table: list[tuple[str, ...]] = [header]
    for key, phase, label, unit in labels:
        figures = {
            side: Figure.median_of(results[key, side, phase]) if results.get((key, side, phase)) else None
            for side in SIDES
        }
        ours, es = figures["ours"], figures["es"]
        table.append(
            (
                label,
                unit,
                _num(ours and ours.rate),
                _num(es and es.rate),
                _ratio(ours and ours.rate, es and es.rate),
                _num(ours and ours.client_us, 1),
                _num(es and es.client_us, 1),
                _ratio(ours and ours.client_us, es and es.client_us),
                _num(ours and ours.server_us, 1),
                _num(es and es.server_us, 1),
                _ratio(ours and ours.server_us, es and es.server_us),
            )
        )
        if key.startswith("w1c"):
            ours_p99, es_p99 = ours and ours.p99_ms, es and es.p99_ms
            table.append(
                (
                    "  ↳ p99 latency per command",
                    "ms",
                    _num(ours_p99, 2),
                    _num(es_p99, 2),
                    _ratio(ours_p99, es_p99),
                    *("",) * 6,
                )
            )
    return table


def call_counts(sides: Sides, directory: Path) -> list[str]:
    """gRPC calls (and requests on streaming calls) per command, from a small counted W1 pass."""
    lines = []
    w1 = ("--workload", "w1", "--accounts", "20", "--deposits", "3", "--count-calls")
    for label, extra in (("no cache", ()), ("warm cache", ("--cache", "1024"))):
        for side in SIDES:
            phases = sides.run(side, (*w1, *extra), directory)
            for phase in ("open", "deposit"):
                if label == "warm cache" and phase == "open":
                    continue
                measured = phases[phase]
                count = measured["count"]
                calls = ", ".join(
                    f"{name} {number / count:.2f}"
                    for name, number in sorted(measured.get("calls", {}).items())
                )
                lines.append(f"- {side}, W1 {phase} ({label}): {calls or 'none'}")
    return lines


# =========================================================================================
# main
# =========================================================================================


def es_versions(python: str) -> str:
    probe = (
        "import importlib.metadata as m;"
        "print(', '.join(f'{p} {m.version(p)}' for p in "
        "('eventsourcing', 'eventsourcing-eventstoredb', 'esdbclient', 'grpcio')))"
    )
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{python} has no eventsourcing-eventstoredb: run `make bench-esdb`.\n{done.stderr}")
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--es-python",
        required=True,
        help="python of the venv with eventsourcing 9.3 + eventsourcing-eventstoredb",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one run: a smoke run")
    parser.add_argument("--runs", type=int, default=None, help="alternating runs, medians shown (default 3)")
    parser.add_argument("--only", default="", help="comma-separated cases (w1,w1-cache,w1c-8,w2,w3)")
    parser.add_argument("--no-calls", action="store_true", help="skip the gRPC call count pass")
    parser.add_argument("--ours-src", default="", help="run our side from this source tree (PYTHONPATH)")
    args = parser.parse_args()
    quiet_logs()
    sizes = QUICK if args.quick else FULL
    runs = args.runs or sizes.runs
    versions = es_versions(args.es_python)
    sides = Sides({"ours": sys.executable, "es": args.es_python})
    if args.ours_src:
        source = str(Path(args.ours_src).resolve())
        sides.env["ours"] = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, (source, os.environ.get("PYTHONPATH"))))
        )
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    todo = [case for case in cases(sizes) if not only or case.key in only]
    cache = max(1024, sizes.accounts * 2)

    results: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="escqrs-esdb-bench-") as directory:
        for run in range(runs):
            order = SIDES if run % 2 == 0 else SIDES[::-1]  # who goes first alternates
            for case in todo:
                step = time.perf_counter()
                for side in order:
                    run_dir = Path(directory) / f"{case.key}-{side}-{run}"
                    run_dir.mkdir()
                    try:
                        phases = sides.run(side, (*case.args, *case.sides[side]), run_dir)
                    except RuntimeError as exc:  # keep the other side's figures; say what failed
                        print(exc, file=sys.stderr)
                        continue
                    for phase, measured in phases.items():
                        results.setdefault((case.key, side, phase), []).append(measured)
                print(
                    f"... run {run + 1}/{runs} {case.key}: {time.perf_counter() - step:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
        calls = [] if args.no_calls else call_counts(sides, Path(directory))
    elapsed = time.perf_counter() - started

    print(
        f"## eventsourcing-cqrs vs eventsourcing on EventStoreDB (test server, own process; "
        f"{'quick' if args.quick else 'full'} sizes, median of {runs} run{'s' if runs > 1 else ''})"
    )
    print()
    print(
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; ours: "
        f"esdbclient {version('esdbclient')}, grpcio {version('grpcio')}"
        f"{f', source {args.ours_src}' if args.ours_src else ''}; es: {versions}. Run took {elapsed:,.0f} s."
    )
    print(
        "Rates: higher is better; CPU: µs per command/event, lower is better (client = the side's "
        "process, server = the test server's process, over the timed section). Ratios are ours ÷ es."
    )
    print()
    for line in render(rows(sizes, results, cache)):
        print(line)
    if calls:
        print()
        print(
            "gRPC calls per command (a counted, untimed W1 pass: 20 accounts x 3 deposits; "
            "'(requests)' = messages sent on a streaming call):"
        )
        print()
        for line in calls:
            print(line)


if __name__ == "__main__":
    main()
