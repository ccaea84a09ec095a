"""What every benchmark side shares: the data each workload writes, timing, peak-RSS measurement,
the fresh-subprocess runner, and the Markdown table.

Nothing here knows about any side (ours, eventsourcing, raw sqlite3); ``compare.py`` and
``rebuild.py`` import it. It is not a script.
"""

from __future__ import annotations

import gc
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import structlog

ROOT = Path(__file__).resolve().parent.parent  # the repository
AMOUNT = Decimal("1.25")  # every deposit, on every side
EVENTS_PER_ACCOUNT = 100  # W3 data: each account is opened, then has 99 deposits
SNAPSHOT_TAIL = 50  # W2: events written after the snapshot, replayed on top of it
SYNC_MODES = {True: "FULL", False: "NORMAL"}  # durable -> SQLite's PRAGMA synchronous

# W2: (full replay, snapshot + tail, close) for one long account; every side returns these.
Loaders = tuple[Callable[[], object], Callable[[], object], Callable[[], None]]


def quiet_logs() -> None:
    """Show warnings and errors only. A benchmark is the application: it, not the library,
    decides what is logged (and the library's debug lines would swamp the table)."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))


# -----------------------------------------------------------------------------------------
# Timing
# -----------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def wait_until(read: Callable[[], str | None], expected: str, deadline: float) -> None:
    """Poll ``read`` until it returns ``expected``; ``TimeoutError`` after ``deadline`` (perf_counter)."""
    while read() != expected:
        if time.perf_counter() > deadline:
            raise TimeoutError(f"balance {expected} not visible in time")
        time.sleep(0.0001)


# -----------------------------------------------------------------------------------------
# Memory, and one measurement per fresh subprocess
# -----------------------------------------------------------------------------------------


def memory_kib(field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in KiB. Unlike ru_maxrss, which Linux
    carries over from the parent across fork and exec, VmHWM starts afresh in the new program."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure_here(action: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """Run ``action`` in this (fresh) process: its result, and seconds, RSS before and peak RSS.

    Call it in a child started by :func:`run_child`, and print the dict as the child's last line
    of output (``print(json.dumps(...))``).
    """
    gc.collect()
    before = memory_kib("VmRSS")
    started = time.perf_counter()
    result = action()
    elapsed = time.perf_counter() - started
    peak = memory_kib("VmHWM")
    return result, {"seconds": elapsed, "rss_before_kib": before, "rss_peak_kib": peak}


def run_child(script: Path, *args: str) -> dict[str, Any]:
    """Run ``python script *args`` in a fresh interpreter; the JSON object on its last stdout line.

    ``script`` is the benchmark's own file (pass ``Path(__file__)`` from the script, not from here)
    run with the hidden flag that makes it do one measurement and print it.
    """
    command = [sys.executable, str(script.resolve()), *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{script.name} {' '.join(args)} failed:\n{done.stderr}")
    measured: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return measured


# -----------------------------------------------------------------------------------------
# The table
# -----------------------------------------------------------------------------------------


@dataclass
class Row:
    workload: str
    ours: float | str | None = None
    theirs: float | str | None = None
    raw: float | str | None = None
    unit: str = "events/s"
    target: str = ""
    higher_is_better: bool = True
    note: str = ""


def _fmt(value: float | str | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if unit == "ms":
        return f"{value:,.2f} ms"
    return f"{value:,.0f}"


def _ratio(a: float | str | None, b: float | str | None, higher_is_better: bool) -> str:
    if not isinstance(a, float | int) or not isinstance(b, float | int) or a == 0 or b == 0:
        return "—"
    return f"{(a / b if higher_is_better else b / a):,.2f}x"


def print_table(rows: list[Row], header_lines: list[str]) -> None:
    """The header lines, a Markdown table (ours, eventsourcing, raw and the ratios), then the notes."""
    for line in header_lines:
        print(line)
    print()
    header = ("Workload", "unit", "ours", "eventsourcing", "raw sqlite3", "ours ÷ es", "ours ÷ raw", "target")
    table = [header]
    for row in rows:
        table.append(
            (
                row.workload,
                row.unit,
                _fmt(row.ours, row.unit),
                _fmt(row.theirs, row.unit),
                _fmt(row.raw, row.unit),
                _ratio(row.ours, row.theirs, row.higher_is_better),
                _ratio(row.ours, row.raw, row.higher_is_better),
                row.target,
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    right = {2, 3, 4, 5, 6}

    def render(cells: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(
                cell.rjust(width) if i in right else cell.ljust(width)
                for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    print(render(header))
    print(
        "|"
        + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths))
        + "|"
    )
    for line in table[1:]:
        print(render(line))
    notes = [row.note for row in rows if row.note]
    if notes:
        print()
        for note in notes:
            print(f"- {note}")
