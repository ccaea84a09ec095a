"""Segmented projections: a CPU-bound projection rebuilt by 1, 2 and 4 worker processes.

    .venv/bin/python benchmarks/segments.py                 # the default size, SQLite (under a minute)
    .venv/bin/python benchmarks/segments.py --quick         # a smoke run (well under a minute)
    .venv/bin/python benchmarks/segments.py --postgres      # PostgreSQL as well (about two minutes)
    .venv/bin/python benchmarks/segments.py --events 50000 --streams 5000 --segments 16

The events (``--events`` ``Worked`` events spread over ``--streams`` streams, appended
round-robin in appends of a few events per stream, untimed) are written once to a SQLite event
store file that every measurement reads. Two projections, identical but for their handler's CPU:

* **busy** — the handler burns about ``--handler-ms`` of CPU per event (a busy loop of a count
  calibrated in the parent before the measurements and passed to every child; not a sleep, which
  would leave the core free and flatter the scaling), then reads and rewrites its stream's
  document (a count, the last revision, whether the stream's events came in revision order).
* **handler-free** — the same document write without the busy loop: what is left is the
  framework's cost, so the segmented rows show what segments themselves cost (every segment
  runner reads the whole of ``$all`` and skips the events of the other segments, and each
  segment commits its own batches and checkpoint).

Each projection is run from an empty read model until caught up, in these ways, every worker a
fresh child process (``segments.py --child``):

* **unsegmented** — today's runner: ``segments = 1``, one :class:`~projections.ProjectionRunner`.
* **segmented, 1 / 2 / 4 workers** — the same projection with ``segments = --segments`` (8),
  run by that many worker processes, each ``ProjectionRunner(...).run()``: a worker holds a
  worker slot and its fair share of the segments (one thread per segment), rebalancing every
  ``--rebalance-interval`` seconds. With ``run(until_caught_up=True)`` the first worker to look
  would take every segment (a catch-up run takes all it can), so the workers run continuously
  and the parent stops them once the work is done.

The workers start together: each imports, opens its stores and builds its runner, says it is
ready, and waits; the clock starts when the parent tells them all to go, and stops when the
parent, polling the read model store every ``POLL`` seconds, sees every segment's checkpoint
(the generation's, unsegmented) at the head of the projection's events. So the time includes
creating the generation, the workers sharing the segments out (the first worker to run takes
every segment until the others are counted at its next rebalance), and each segment's last
commit. ``events/s`` is events projected per wall second; ``CPU µs/event`` is the CPU of all the
workers (``time.process_time()`` from go to stopped, all threads) per event, on a machine whose
core count is printed above the table. Every run checks its result: one document per stream,
every event counted once, every stream's events applied in revision order.

Read models go to an SQLite file (``synchronous=NORMAL``, as in the other benchmarks) and, with
``--postgres``, to a fresh PostgreSQL schema as well. On SQLite a batch's transaction takes the
one database write lock when it opens and the batch's handlers run inside it, so the batches of
every segment and every worker take turns there, handlers and all; PostgreSQL lets segments
commit side by side. A benchmark, not a test: the numbers depend on the machine and on
what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import structlog
from _common import print_markdown_table, quiet_logs

from eventsourcing_cqrs.event_store import EventFilter, NewEvent, RecordedEvent, StreamState
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from projections import EventContext, Projection, ProjectionRunner, TableSpec
from projections.read_model_store import ReadModelStore, SQLiteReadModelStore

DEFAULT_POSTGRES = os.environ.get("POSTGRES_URI", "postgresql://postgres@127.0.0.1:5432/test")
EVENT_TYPE = "Worked"
#: Events per stream per append when seeding (round-robin over the streams).
SEED_CHUNK = 5
#: How often the parent looks at the read model store for the segments' checkpoints.
POLL = 0.02
#: How long one measurement may take before it is reported as failed.
TIMEOUT = 300.0
WORKERS = (1, 2, 4)
STORES = ("sqlite", "postgres")


@dataclass(frozen=True)
class Sizes:
    events: int
    streams: int


FULL = Sizes(events=20_000, streams=1_000)
QUICK = Sizes(events=4_000, streams=200)


# =========================================================================================
# The projection
# =========================================================================================


def burn(iterations: int) -> int:
    """Spend CPU: a pure-Python loop (it holds the GIL, as a real handler's Python code does)."""
    total = 0
    for n in range(iterations):
        total += n & 7
    return total


def calibrate(milliseconds: float) -> int:
    """The ``burn`` iterations that take about ``milliseconds`` of CPU per call in this process.

    Measured at the count it will run with, in calls as the handler makes them: the cost per
    iteration is not flat (past 256 the loop's integers are no longer the interpreter's cached
    small ones), so a long run's average would not do.
    """
    target = milliseconds / 1000
    iterations = 1000
    for _ in range(4):
        calls = max(10, round(0.2 / target))  # about 0.2 s per round
        started = time.process_time()
        for _ in range(calls):
            burn(iterations)
        per_call = (time.process_time() - started) / calls
        iterations = max(1, round(iterations * target / per_call))
    return iterations


def handler_cpu(iterations: int) -> float:
    """What ``burn(iterations)`` costs per call here, in milliseconds (a second's worth of calls)."""
    calls = 0
    started = time.process_time()
    while time.process_time() - started < 1.0:
        burn(iterations)
        calls += 1
    return (time.process_time() - started) * 1000 / calls


class Work(Projection):
    """One document per stream; each event optionally burns CPU first (``spin`` iterations)."""

    name = "work"
    version = 1
    tables = (TableSpec("streams"),)

    def __init__(self, spin: int) -> None:
        super().__init__()
        self._spin = spin
        self.on_recorded(EVENT_TYPE, self.worked)

    def worked(self, event: RecordedEvent, context: EventContext) -> None:
        """Burn the handler's CPU, then count the event in its stream's document."""
        if self._spin:
            burn(self._spin)
        streams = context.table("streams")
        row = streams.get(event.stream) or {"count": 0, "last_revision": -1, "in_order": True}
        streams.put(
            event.stream,
            {
                "count": row["count"] + 1,
                "last_revision": event.revision,
                "in_order": bool(row["in_order"]) and event.revision > row["last_revision"],
            },
        )


def projection_class(segments: int) -> type[Work]:
    """:class:`Work` with ``segments`` segments (the class attribute the runner reads)."""
    if segments == 1:
        return Work

    class SegmentedWork(Work):
        pass

    SegmentedWork.segments = segments
    return SegmentedWork


# =========================================================================================
# Stores
# =========================================================================================


def seed(path: Path, events: int, streams: int) -> float:
    """Append ``events`` events over ``streams`` streams, round-robin; seconds taken."""
    started = time.perf_counter()
    store = SQLiteEventStore(path, durable=False)
    try:
        written = 0
        revision = 0
        while written < events:
            for stream in range(streams):
                size = min(SEED_CHUNK, events - written)
                if size <= 0:
                    break
                batch = [NewEvent(EVENT_TYPE, json.dumps({"n": revision + k}).encode()) for k in range(size)]
                store.append(f"Work-{stream:05d}", batch, expected_version=StreamState.ANY)
                written += size
            revision += SEED_CHUNK
    finally:
        store.close()
    return time.perf_counter() - started


@contextmanager
def read_model_store(kind: str, location: str, segments: int) -> Iterator[ReadModelStore]:
    """The read model store at ``location`` (an SQLite file, or ``uri#schema`` on PostgreSQL)."""
    store: ReadModelStore
    if kind == "sqlite":
        store = SQLiteReadModelStore(location, durable=False)
    else:
        # An optional dependency (the postgres extra): imported only when asked for.
        from projections.read_model_store.postgres import PostgresReadModelStore  # noqa: PLC0415

        uri, schema = location.rsplit("#", 1)
        # One connection per segment thread and a few for the runner: the default pool of 4
        # would make a worker's segments queue for connections rather than for the database.
        store = PostgresReadModelStore(uri, schema=schema, max_connections=segments + 4)
    try:
        yield store
    finally:
        store.close()


def drop_schema(location: str) -> None:
    import psycopg  # noqa: PLC0415 - the postgres extra

    uri, schema = location.rsplit("#", 1)
    with psycopg.connect(uri, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def postgres_available(uri: str) -> str | None:
    """``None`` if PostgreSQL answers at ``uri``, else why not (one sentence)."""
    try:
        import psycopg  # noqa: PLC0415 - the postgres extra

        with psycopg.connect(uri, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - any reason is reported, the SQLite rows still run
        return f"PostgreSQL is not available at {uri}: {type(exc).__name__}: {exc}".strip()
    return None


# =========================================================================================
# The child: one worker
# =========================================================================================


def child(args: argparse.Namespace) -> None:
    """One worker: get ready, wait for ``go`` on stdin, run until ``stop``; its CPU as JSON."""
    # Log lines to stderr (the worker's log file): stdout is the pipe its result is read from.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    projection = projection_class(args.segments)(args.spin)
    events = SQLiteEventStore(args.events_db, durable=False)
    with read_model_store(args.child, args.views, args.segments) as store:
        runner = ProjectionRunner(
            projection, events, store, batch_size=args.batch_size, rebalance_interval=args.rebalance_interval
        )
        print("ready", flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        cpu = time.process_time()

        def stop_on_request() -> None:
            sys.stdin.readline()  # "stop", or the parent went away (EOF)
            runner.stop()

        threading.Thread(target=stop_on_request, daemon=True).start()
        runner.run()
        cpu = time.process_time() - cpu
    events.close()
    print(json.dumps({"cpu": cpu}), flush=True)


# =========================================================================================
# The parent: the workers of one measurement, the table
# =========================================================================================


@dataclass
class Measured:
    seconds: float
    #: All the workers' CPU seconds, go to stopped.
    cpu: float
    #: CPU seconds the whole machine spent busy (``/proc/stat``), go to caught up.
    machine: float
    events: int


@dataclass(frozen=True)
class Plan:
    """One measurement: the read model store, the projection's segments, its workers, its handler."""

    kind: str
    segments: int
    workers: int
    spin: int


def machine_busy() -> float:
    """CPU seconds this machine has spent busy since boot, all cores (0 where there is no /proc/stat)."""
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # not guest time: counted in user


class _Worker:
    """A child worker process and its pipes (stderr to a file, read if it fails)."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.log = log
        self._stderr = log.open("w")
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )

    @property
    def stdin(self) -> IO[str]:
        assert self.process.stdin is not None
        return self.process.stdin

    def readline(self) -> str:
        assert self.process.stdout is not None
        return self.process.stdout.readline()

    def send(self, line: str) -> None:
        try:
            self.stdin.write(line + "\n")
            self.stdin.flush()
        except BrokenPipeError:
            pass

    def failure(self) -> str:
        self._stderr.flush()
        lines = self.log.read_text().strip().splitlines()
        return lines[-1] if lines else f"exit status {self.process.poll()}"

    def finish(self, timeout: float) -> dict[str, Any]:
        """Wait for the worker to stop; the JSON of its last line of output."""
        assert self.process.stdout is not None
        try:
            out, _ = self.process.communicate(timeout=timeout)
        finally:
            self._stderr.close()
        if self.process.returncode != 0 or not out.strip():
            raise RuntimeError(f"a worker failed: {self.failure()}")
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return result

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # only this worker, which this script started
            self.process.wait()
        self._stderr.close()


def _done(store: ReadModelStore, head: int) -> bool:
    """Whether the live generation's every segment (or the whole, unsegmented) is at ``head``."""
    live = store.describe(Work.name).live
    if live is None:
        return False
    if live.segments > 1:
        return all(p.checkpoint is not None and p.checkpoint >= head for p in live.segment_progress)
    return live.checkpoint is not None and live.checkpoint >= head


def _check(store: ReadModelStore, sizes: Sizes) -> None:
    """Raise unless every stream has its document and every event was counted once, in order."""
    with store.read(Work.name) as view:
        documents = view.table("streams").find()
    counted = sum(int(d["count"]) for d in documents)
    in_order = all(d["in_order"] for d in documents)
    if len(documents) != sizes.streams or counted != sizes.events or not in_order:
        raise RuntimeError(
            f"The read model holds {len(documents)} stream documents counting {counted} events "
            f"(in order: {in_order}), not {sizes.streams} counting {sizes.events}."
        )


def run_workers(args: argparse.Namespace, plan: Plan, location: str, sizes: Sizes) -> Measured:
    """Start ``plan.workers`` children on a fresh read model, time them until every segment is at the head."""
    events = SQLiteEventStore(args.events_db, durable=False)
    try:
        head = events.head_position(EventFilter.for_event_types([EVENT_TYPE]))
    finally:
        events.close()
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        plan.kind,
        "--views",
        location,
        "--events-db",
        str(args.events_db),
        "--segments",
        str(plan.segments),
        "--spin",
        str(plan.spin),
        "--batch-size",
        str(args.batch_size),
        "--rebalance-interval",
        str(args.rebalance_interval),
    ]
    logs = Path(args.events_db).parent
    started_workers: list[_Worker] = []
    with read_model_store(plan.kind, location, plan.segments) as store:
        try:
            for n in range(plan.workers):
                started_workers.append(_Worker(command, logs / f"worker-{uuid.uuid4().hex[:8]}-{n}.log"))
            for worker in started_workers:
                if worker.readline().strip() != "ready":
                    raise RuntimeError(f"a worker failed to start: {worker.failure()}")
            busy = machine_busy()
            started = time.perf_counter()
            for worker in started_workers:
                worker.send("go")
            while not _done(store, head):
                if time.perf_counter() - started > TIMEOUT:
                    raise RuntimeError(f"the workers had not caught up after {TIMEOUT:.0f} s")
                for worker in started_workers:
                    if worker.process.poll() is not None:
                        raise RuntimeError(f"a worker stopped early: {worker.failure()}")
                time.sleep(POLL)
            seconds = time.perf_counter() - started
            busy = machine_busy() - busy
            for worker in started_workers:
                worker.send("stop")
            cpu = sum(worker.finish(timeout=60)["cpu"] for worker in started_workers)
            _check(store, sizes)
        finally:
            for worker in started_workers:
                worker.kill()
    return Measured(seconds=seconds, cpu=cpu, machine=busy, events=sizes.events)


def measure_one(args: argparse.Namespace, plan: Plan, sizes: Sizes) -> Measured:
    """One measurement on a fresh read model (a new SQLite file, or a new schema dropped after)."""
    if plan.kind == "sqlite":
        views = Path(args.events_db).parent / f"views-{uuid.uuid4().hex[:8]}.db"
        try:
            return run_workers(args, plan, str(views), sizes)
        finally:
            for path in views.parent.glob(f"{views.name}*"):  # the file, its -wal, -shm, locks
                if path.is_file():
                    path.unlink()
    location = f"{args.postgres}#bench_seg_{uuid.uuid4().hex[:10]}"
    try:
        return run_workers(args, plan, location, sizes)
    finally:
        drop_schema(location)


def _rate(measured: Measured | None) -> float | None:
    return None if measured is None else measured.events / measured.seconds


def _print_table(rows: list[tuple[str, ...]]) -> None:
    header = (
        "read models",
        "handler",
        "runner",
        "workers",
        "seconds",
        "events/s",
        "vs 1 worker",
        "vs unsegmented",
        "CPU µs/event",
        "worker cores",
        "machine cores",
    )
    print_markdown_table(header, rows, right={3, 4, 5, 6, 7, 8, 9, 10})


def measure(args: argparse.Namespace, sizes: Sizes) -> None:
    kinds = ["sqlite"]
    skipped: str | None = None
    if args.postgres:
        skipped = postgres_available(args.postgres)
        if skipped is None:
            kinds.append("postgres")
    print(f"seeding {sizes.events:,} events over {sizes.streams:,} streams ...", flush=True)
    print(f"  {seed(Path(args.events_db), sizes.events, sizes.streams):.1f} s", flush=True)
    spin = calibrate(args.handler_ms)
    spin_ms = handler_cpu(spin)
    handlers = {"busy": spin, "handler-free": 0}
    rows: list[tuple[str, ...]] = []
    failures: list[str] = []
    for kind in kinds:
        for handler, iterations in handlers.items():
            plans = [("unsegmented", 1, 1)] + [
                (f"{args.segments} segments", args.segments, w) for w in WORKERS
            ]
            results: dict[tuple[int, int], Measured | None] = {}
            for label, segments, workers in plans:
                print(f"{kind}: {handler}, {label}, {workers} worker(s) ...", flush=True)
                try:
                    results[segments, workers] = measure_one(
                        args, Plan(kind, segments, workers, iterations), sizes
                    )
                except RuntimeError as exc:  # report it, keep the other rows' numbers
                    failures.append(f"{kind} {handler} {label} x{workers}: {exc}")
                    results[segments, workers] = None
            unsegmented = _rate(results[1, 1])
            one_worker = _rate(results[args.segments, 1])
            for label, segments, workers in plans:
                measured = results[segments, workers]
                rate = _rate(measured)
                if measured is None or rate is None:
                    rows.append((kind, handler, label, str(workers), "failed", *["—"] * 6))
                    continue
                scaling = f"{rate / one_worker:.2f}x" if segments > 1 and one_worker else "—"
                versus = f"{rate / unsegmented:.2f}x" if segments > 1 and unsegmented else "—"
                rows.append(
                    (
                        kind,
                        handler,
                        label,
                        str(workers),
                        f"{measured.seconds:.2f}",
                        f"{rate:,.0f}",
                        scaling,
                        versus,
                        f"{measured.cpu * 1e6 / measured.events:,.0f}",
                        f"{measured.cpu / measured.seconds:.2f}",
                        f"{measured.machine / measured.seconds:.2f}",
                    )
                )
    print()
    print(
        f"Segmented projection rebuild from empty: {sizes.events:,} events over {sizes.streams:,} streams "
        f"(SQLite event store), batches of {args.batch_size}, rebalance every {args.rebalance_interval} s; "
        f"this machine has {os.cpu_count()} CPUs"
    )
    print(
        f"busy handler: {spin:,} loop iterations, calibrated to {args.handler_ms} ms of CPU per event "
        f"(measured after: {spin_ms:.3f} ms), then one document read and write; handler-free: the "
        "document read and write alone"
    )
    print()
    _print_table(rows)
    print()
    print(
        "- vs 1 worker: events/s over the same projection's 1-worker row (the scaling); vs unsegmented: "
        "over today's unsegmented runner (at 1 worker, the overhead of segments). CPU µs/event: all "
        "workers' CPU (every thread), go to stopped, per event; worker cores: that CPU per wall second. "
        f"machine cores: the whole machine's busy CPU (/proc/stat) per wall second, out of {os.cpu_count()}: "
        "beyond the workers', the PostgreSQL server's (postgres rows), this script's polling, and whatever "
        "else runs on the machine, which the numbers then do not isolate."
    )
    print(
        "- sqlite: a segment's batch runs its handlers on a read snapshot and takes the database's one "
        "write lock only to write, so the handlers of several workers run side by side while their "
        "commits take turns; an unsegmented batch holds the lock throughout (one writer anyway). "
        "PostgreSQL commits segments side by side."
    )
    print(
        "- a worker reads $all once for all its segments and hands each its own events; each segment "
        "still commits its own batches, so more workers than cores add commits, not speed (the "
        "handler-free rows show that cost)."
    )
    if skipped:
        print(f"- postgres skipped: {skipped}")
    for failure in failures:
        print(f"- failed: {failure}")
    if failures:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--events", type=int, help=f"events (default {FULL.events:,})")
    parser.add_argument(
        "--streams", type=int, help=f"streams they are spread over (default {FULL.streams:,})"
    )
    parser.add_argument("--segments", type=int, default=8, help="segments of the segmented rows (default 8)")
    parser.add_argument(
        "--handler-ms", type=float, default=0.2, help="busy handler CPU per event (default 0.2)"
    )
    parser.add_argument("--batch-size", type=int, default=500, help="runner batch size (default 500)")
    parser.add_argument(
        "--rebalance-interval", type=float, default=0.25, help="workers' rebalance interval, s (default 0.25)"
    )
    parser.add_argument(
        "--postgres",
        nargs="?",
        const=DEFAULT_POSTGRES,
        help=f"also PostgreSQL read models, at this URI (default {DEFAULT_POSTGRES}, or $POSTGRES_URI)",
    )
    parser.add_argument("--workdir", help="where the SQLite files go (default: the system's temp dir)")
    parser.add_argument("--child", choices=STORES, help=argparse.SUPPRESS)
    parser.add_argument("--views", help=argparse.SUPPRESS)
    parser.add_argument("--events-db", help=argparse.SUPPRESS)
    parser.add_argument("--spin", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    quiet_logs()
    if args.child:
        child(args)
        return
    base = QUICK if args.quick else FULL
    sizes = Sizes(events=args.events or base.events, streams=args.streams or base.streams)
    with tempfile.TemporaryDirectory(prefix="segments-bench-", dir=args.workdir) as directory:
        args.events_db = str(Path(directory) / "events.db")
        measure(args, sizes)


if __name__ == "__main__":
    main()
