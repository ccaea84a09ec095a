"""What every benchmark side shares: the data each workload writes, timing, peak-RSS measurement,
the fresh-subprocess runner, the check of the PRAGMAs each side really runs under, and the
Markdown table.

Nothing here knows about any side (ours, eventsourcing, raw sqlite3); ``compare.py`` and
``rebuild.py`` import it. It is not a script.
"""

from __future__ import annotations

import gc
import json
import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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
# The PRAGMAs each side really runs under
# -----------------------------------------------------------------------------------------

#: PRAGMA synchronous as SQLite reports it, by number.
SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


class ConnectionWatch:
    """Every ``sqlite3`` connection opened while :func:`watch_connections` is active, by file.

    A side's durability is what its connections run under, not what its settings say: this reads
    ``journal_mode`` and ``synchronous`` back from each connection the side still holds open
    (eventsourcing's pool, our store's per-thread connections, the raw side's), so that a table
    is only printed when every side ran as its row claims.
    """

    def __init__(self) -> None:
        self._opened: list[tuple[Path, sqlite3.Connection]] = []

    def record(self, database: object, connection: sqlite3.Connection) -> None:
        if isinstance(database, str | Path) and str(database) != ":memory:":
            self._opened.append(
                (Path(str(database).removeprefix("file:").split("?")[0]).resolve(), connection)
            )

    def pragmas(self, path: Path) -> dict[str, int]:
        """``"journal_mode=... synchronous=..."`` -> how many open connections to ``path`` report it."""
        seen: dict[str, int] = {}
        wanted = path.resolve()
        for database, connection in self._opened:
            if database != wanted:
                continue
            try:
                (journal,) = connection.execute("PRAGMA journal_mode").fetchone()
                (synchronous,) = connection.execute("PRAGMA synchronous").fetchone()
            except sqlite3.ProgrammingError:  # closed by its side already: nothing left to check
                continue
            key = pragma_key(str(journal).lower(), SYNCHRONOUS_NAMES.get(synchronous, str(synchronous)))
            seen[key] = seen.get(key, 0) + 1
        return seen


def pragma_key(journal_mode: str, synchronous: str) -> str:
    return f"journal_mode={journal_mode} synchronous={synchronous}"


def require_pragmas(side: str, path: Path, seen: dict[str, int], synchronous: str) -> str:
    """Raise ``SystemExit`` unless every connection in ``seen`` (from :meth:`ConnectionWatch.pragmas`)
    runs WAL at ``synchronous``; what was found, e.g. ``"journal_mode=wal synchronous=FULL (x3)"``."""
    expected = pragma_key("wal", synchronous)
    if set(seen) != {expected}:
        found = ", ".join(f"{key} (x{count})" for key, count in seen.items()) or "no open connection"
        raise SystemExit(f"{side}: every connection to {path.name} should run {expected}, found {found}.")
    return f"{expected} (x{seen[expected]})"


@contextmanager
def watch_connections() -> Iterator[ConnectionWatch]:
    """Record every ``sqlite3.connect`` made in this process (on any side) until the block ends.

    Every side calls ``sqlite3.connect`` through the module attribute, so wrapping it sees them all
    without touching any side's code; the connections are held (``sqlite3.Connection`` takes no
    weak reference) only until the block ends.
    """
    watch = ConnectionWatch()
    original = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        connection = original(*args, **kwargs)
        watch.record(args[0] if args else kwargs.get("database"), connection)
        return connection

    sqlite3.connect = connect
    try:
        yield watch
    finally:
        sqlite3.connect = original
        watch._opened.clear()


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
    #: The row's label in the summary of ratios printed under the table ("" = not summarised).
    summary: str = ""


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
    summarised = [row for row in rows if row.summary]
    if summarised:
        # The ratios alone, as the README quotes them: computed from this run's rows above.
        print()
        print("Ratios measured in this run (ours ÷ eventsourcing, ours ÷ raw sqlite3):")
        print()
        width = max(len(row.summary) for row in summarised)
        print(f"| {'workload'.ljust(width)} | ours ÷ es | ours ÷ raw |")
        print(f"|{'-' * (width + 2)}|----------:|-----------:|")
        for row in summarised:
            es = _ratio(row.ours, row.theirs, row.higher_is_better)
            raw = _ratio(row.ours, row.raw, row.higher_is_better)
            print(f"| {row.summary.ljust(width)} | {es:>9} | {raw:>10} |")


def print_markdown_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], right: set[int]) -> None:
    """Print ``rows`` under ``header`` as a Markdown table, the columns in ``right`` right-aligned."""
    table = [header, *rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]

    def render(cells: tuple[str, ...]) -> str:
        padded = (
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    print(render(header))
    print(
        "|"
        + "|".join(("-" * (w + 1) + ":") if i in right else "-" * (w + 2) for i, w in enumerate(widths))
        + "|"
    )
    for row in rows:
        print(render(row))
