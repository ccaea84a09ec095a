"""Three workers share one 8-segment projection while one of them is killed again and again.

The workload: 50,000 events over 500 streams (100 each), appended in small batches (1 to 20
events of one random stream at a time, so the streams interleave in ``$all``), paced over a few
seconds. Three workers (``segment_worker.py``, :class:`segment_worker.SegmentTally` run by
:meth:`~projections.ProjectionRunner.run`, 8 segments) follow them; at 12 random moments of the
appending, a random worker is SIGKILLed and started again a moment later (the others take its
segments over, then hand some back to it). The last round (the 100th event of every stream) is
appended once the three workers have shared the segments out again. Then:

* every event was applied exactly once (``applied`` holds each appended event id once, with
  ``times == 1``), every stream counted its 100 events, last revision 99, ``in_order``;
* the applied order is recorded (who applied each event, when) and checked: within each segment
  events were applied in commit order, so per stream in revision order, across every takeover;
* the read model equals what a single unsegmented runner (:class:`segment_worker.SingleTally`)
  rebuilds from the same events into a fresh store (``by`` and ``at``, who applied an event and
  when, left out: they differ by design);
* every segment's checkpoint is at or past the last event;
* segments changed owner: taken over after a kill, and handed over (rebalanced) to a worker that
  joined while the others ran; the status shows 3 workers with the segments spread over 3
  owners (at most ceil(8 / 3) = 3 each), and the last round was applied by exactly 3 workers.

It runs with SQLite events and an SQLite read model, SQLite events and a PostgreSQL read model
(``postgres``: skipped without a server unless ``REQUIRE_POSTGRES=1``), the EventStoreDB test
server (in a process of its own) with an SQLite read model, and in-process on the memory stores
with 3 runner threads, where a "kill" is one runner stopped and started again.

The random schedule is seeded; the seed is in every failure message and
``SEGMENT_KILL_SEED=N`` replays one. The summary line is printed (``pytest -s``) and its figures
recorded as test properties (``--junitxml``).
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import select
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import psycopg
import pytest
from segment_worker import SegmentTally, SingleTally

from eventsourcing_cqrs import event_store
from eventsourcing_cqrs.event_store import EventStore, InMemoryEventStore
from eventsourcing_cqrs.event_store.port import NewEvent, StreamState
from eventsourcing_cqrs.testing.esdb_server import EsdbServerProcess
from projections import ProjectionRunner, projection_status, rebuild, segment_of
from projections.read_model_store import InMemoryReadModelStore, ReadModelStore, connect
from projections.read_model_store.port import MAX_SEGMENTS, LeaseRole
from projections.testing.contracts import read_model_snapshot

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("segment_worker.py")
ROOT = Path(__file__).resolve().parents[2]
NAME = SegmentTally.name
SEGMENTS = SegmentTally.segments
WORKERS = 3
STREAMS = 500
EVENTS = 50_000
KILLS = 12
#: Over how long the appends are spread, per event store (about the time the workers need).
APPEND_SECONDS = {"sqlite": 9.0, "esdb": 8.0, "memory": 8.0}
#: How often a worker counts the others and takes or hands back segments, in seconds.
REBALANCE = 0.2
#: How long the last workers may take to catch up with the appends, in seconds.
SETTLE_LIMIT = 90.0
#: Fields of ``applied`` that say who applied an event and when: not in a rebuild's read model.
WHO_AND_WHEN = ("by", "at")


# -- the workers -------------------------------------------------------------------------------


class Workers(Protocol):
    """Three slots of workers, each started, killed and started again under a new label."""

    def start(self, slot: int, label: str, batch_size: int) -> None: ...

    def kill(self, slot: int) -> None: ...

    def check(self) -> None:
        """Fail if a worker ended by itself."""

    def close(self) -> None: ...


class ProcessWorkers:
    """``segment_worker.py`` in child processes; their stderr goes to one file (shown on failure)."""

    def __init__(self, events_uri: str, read_models_uri: str, event_type: str, log: Path) -> None:
        self._command = [sys.executable, str(WORKER), events_uri, read_models_uri, event_type]
        self._log = log
        self._env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self._processes: dict[int, subprocess.Popen[str]] = {}
        #: The workers started whose ``ready`` line was not read yet (slot to label).
        self._unconfirmed: dict[int, str] = {}

    def start(self, slot: int, label: str, batch_size: int) -> None:
        options = ["--batch-size", str(batch_size), "--rebalance-interval", str(REBALANCE)]
        with self._log.open("a") as stderr:
            process = subprocess.Popen(
                [*self._command, label, *options],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=self._env,
            )
        # Not waited for here (that takes the parent half a second a start): check() does it.
        self._processes[slot] = process
        self._unconfirmed[slot] = label

    def kill(self, slot: int) -> None:
        self._unconfirmed.pop(slot, None)
        process = self._processes.pop(slot)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.communicate(timeout=10)
        if process.returncode != -signal.SIGKILL:
            pytest.fail(
                f"a worker had ended by itself ({process.returncode}) before it was killed:\n{self._tail()}",
                pytrace=False,
            )

    def check(self) -> None:
        for slot, label in list(self._unconfirmed.items()):
            stdout = self._processes[slot].stdout
            assert stdout is not None
            if select.select([stdout], [], [], 0)[0]:
                line = stdout.readline()
                if line.strip() != "ready":
                    pytest.fail(f"worker {label} did not start: {line!r}\n{self._tail()}", pytrace=False)
                del self._unconfirmed[slot]
        for process in self._processes.values():
            if process.poll() is not None:
                pytest.fail(
                    f"a worker ended by itself ({process.returncode}):\n{self._tail()}", pytrace=False
                )

    def close(self) -> None:
        for process in self._processes.values():
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=10)
        self._processes.clear()

    def _tail(self) -> str:
        return self._log.read_text()[-4000:] if self._log.exists() else ""


class ThreadWorkers:
    """Runner threads in this process over the same memory stores; a kill is a stop."""

    def __init__(self, events: EventStore, read_models: ReadModelStore, event_type: str) -> None:
        self._events = events
        self._read_models = read_models
        self._event_type = event_type
        self._runners: dict[int, ProjectionRunner] = {}

    def start(self, slot: int, label: str, batch_size: int) -> None:
        runner = ProjectionRunner(
            # A tiny pause per event (the GIL free meanwhile), or the runners would keep up with
            # any burst of appends and a stop would never find one with events in hand.
            SegmentTally(self._event_type, label=label, delay=0.00005),
            self._events,
            self._read_models,
            batch_size=batch_size,
            batch_delay=0.01,
            lease_poll_interval=0.05,
            rebalance_interval=REBALANCE,
        )
        runner.start()
        self._runners[slot] = runner

    def kill(self, slot: int) -> None:
        runner = self._runners.pop(slot)
        runner.stop()
        runner.join(30)  # re-raises what made it fail, if anything did

    def check(self) -> None:
        for runner in self._runners.values():
            if not runner.running:
                runner.join(1)
                pytest.fail("a runner thread ended by itself", pytrace=False)

    def close(self) -> None:
        for runner in self._runners.values():
            runner.stop()
        for runner in self._runners.values():
            runner.join(30)
        self._runners.clear()


# -- the figures ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kill:
    label: str
    #: ``time.time()`` just before the kill (the worker applied nothing after it).
    at: float
    #: The head of ``$all`` just before the kill.
    head: int


@dataclass
class Figures:
    events: int = 0
    kills: int = 0
    #: Kills that landed while the worker had events of its segments in hand, not yet committed.
    mid_batch: int = 0
    #: A segment's next event applied by another worker after the one before it was killed.
    takeovers: int = 0
    #: A segment's next event applied by another worker while the one before it still ran.
    handovers: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    max_workers_seen: int = 0
    seconds: float = 0.0
    #: How long the appends (with the kills), the last round and catching up, and the single
    #: runner's rebuild took, in seconds.
    phases: dict[str, float] = field(default_factory=dict)
    kill_log: list[Kill] = field(default_factory=list)

    def line(self, backend: str, seed: int) -> str:
        return (
            f"segment kill test: backend={backend} seed={seed} kills={self.kills} "
            f"({self.mid_batch} mid-batch) events={self.events} takeovers={self.takeovers} "
            f"handovers={self.handovers} duplicates={self.duplicates} "
            f"out_of_order={self.out_of_order} seconds={self.seconds:.1f} "
            f"({', '.join(f'{phase} {seconds:.1f}' for phase, seconds in self.phases.items())})"
        )


def _failer(backend: str, seed: int, figures: Figures) -> Callable[[str], NoReturn]:
    def fail(what: str) -> NoReturn:
        pytest.fail(
            f"{figures.line(backend, seed)}\n(replay with SEGMENT_KILL_SEED={seed}): {what}", pytrace=False
        )

    return fail


# -- the scenario ------------------------------------------------------------------------------------


def _plan(rng: random.Random, streams: list[str], per_stream: int) -> list[tuple[str, int]]:
    """The appends before the last round: (stream, how many), 1 to 20 events of one stream each."""
    left = dict.fromkeys(streams, per_stream - 1)
    plan: list[tuple[str, int]] = []
    open_streams = list(streams)
    while open_streams:
        index = rng.randrange(len(open_streams))
        stream = open_streams[index]
        count = min(left[stream], rng.randint(1, 20))
        plan.append((stream, count))
        left[stream] -= count
        if left[stream] == 0:
            open_streams[index] = open_streams[-1]
            open_streams.pop()
    return plan


def _live_checkpoints(read_models: ReadModelStore) -> list[int | None]:
    live = read_models.describe(NAME).live
    if live is None or not live.segment_progress:
        return [None] * SEGMENTS
    return [progress.checkpoint for progress in live.segment_progress]


def _until(condition: Callable[[], bool], what: str, fail: Callable[[str], NoReturn], limit: float) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            fail(f"timed out after {limit} s waiting for {what}")
        time.sleep(0.05)


def run_scenario(
    backend: str,
    events: EventStore,
    read_models: ReadModelStore,
    reference: ReadModelStore,
    workers: Workers,
    *,
    event_type: str,
    record_property: Callable[[str, object], None],
    total: int,
    append_seconds: float,
    kill_delay: float,
    min_up: float,
    processes: bool,
) -> None:
    """Append ``total`` events over ``append_seconds`` s while killing workers; check the end state.

    Each kill comes after a burst of appends and then a random pause of up to ``kill_delay`` s
    (the workers then have a backlog: the kill lands while a worker has events in hand). The
    victim is a worker up for ``min_up`` s at least.
    """
    seed = int(os.environ.get("SEGMENT_KILL_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    figures = Figures()
    fail = _failer(backend, seed, figures)
    started = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    streams = [f"Seg-{tag}-{n:03}" for n in range(STREAMS)]
    per_stream = total // STREAMS
    appended: dict[str, list[uuid.UUID]] = {stream: [] for stream in streams}
    incarnations = [0] * WORKERS

    def label(slot: int) -> str:
        return f"w{slot}.{incarnations[slot]}"

    started_at = [0.0] * WORKERS

    def start(slot: int) -> None:
        started_at[slot] = time.monotonic()
        incarnations[slot] += 1
        workers.start(slot, label(slot), rng.choice([20, 50, 100]))

    def append(stream: str, count: int) -> int:
        batch = [
            NewEvent(
                type=event_type, data=json.dumps({"n": len(appended[stream]) + n}).encode(), metadata=b"{}"
            )
            for n in range(count)
        ]
        result = events.append(stream, batch, expected_version=StreamState.ANY)
        appended[stream].extend(event.id for event in batch)
        return result.position

    def sample() -> None:
        seen = len(read_models.leases_held(NAME, LeaseRole.WORKER, MAX_SEGMENTS))
        figures.max_workers_seen = max(figures.max_workers_seen, seen)

    for slot in range(WORKERS):
        start(slot)

    # -- the appends, with the kills ----------------------------------------------------------
    plan = _plan(rng, streams, per_stream)
    planned = sum(count for _, count in plan)
    kill_points = sorted(rng.sample(range(planned // 8, planned - planned // 50), KILLS))
    down: tuple[int, float] | None = None  # the slot being down, and when it starts again
    done = 0
    next_sample = 0.0
    appending_since = time.monotonic()
    burst = rng.randint(500, 2000)

    def up() -> list[int]:
        """The workers a kill may pick: up long enough to have started and claimed segments (one
        still importing holds nothing to take over)."""
        now = time.monotonic()
        return [
            slot
            for slot in range(WORKERS)
            if (down is None or slot != down[0]) and now - started_at[slot] >= min_up
        ]

    def kill(victims: list[int]) -> None:
        nonlocal burst, down
        kill_points.pop(0)
        if down is not None:  # one worker down at a time: the last one starts again first
            start(down[0])
        burst = rng.randint(500, 2000)
        time.sleep(rng.uniform(0, kill_delay))
        slot = rng.choice(victims)
        figures.kill_log.append(Kill(label(slot), time.time(), events.head_position()))
        workers.kill(slot)
        figures.kills += 1
        down = (slot, time.monotonic() + rng.uniform(0.05, 0.5))

    def restart_when_due() -> None:
        nonlocal down
        if down is not None and time.monotonic() >= down[1]:
            start(down[0])
            down = None

    for stream, count in plan:
        victims = up()
        # Paced: ``append_seconds`` for the lot, so that the kills spread over the workers' work;
        # but the events just before a kill come in a burst, so that the workers have a backlog.
        ahead = appending_since + append_seconds * done / planned - time.monotonic()
        if ahead > 0 and not (victims and kill_points and done >= kill_points[0] - burst):
            time.sleep(ahead)
        append(stream, count)
        done += count
        restart_when_due()
        if kill_points and done >= kill_points[0] and victims:
            kill(victims)
        if time.monotonic() >= next_sample:
            next_sample = time.monotonic() + 0.25
            workers.check()
            sample()
    # A kill still waiting for a worker up long enough comes now (the workers have a backlog).
    deadline = time.monotonic() + 10
    while kill_points and time.monotonic() < deadline:
        restart_when_due()
        if victims := up():
            kill(victims)
        time.sleep(0.05)
    if down is not None:
        start(down[0])
    if kill_points:
        fail(f"{len(kill_points)} kills found no worker up for {min_up} s to kill")
    figures.phases["appends"] = time.monotonic() - appending_since
    settling_since = time.monotonic()

    # -- the last round, once the three workers have shared the segments out again -----------------
    share = math.ceil(SEGMENTS / WORKERS)
    projection = SegmentTally(event_type)

    def spread() -> bool:
        workers.check()
        sample()
        status = projection_status(projection, events, read_models, count_limit=100)
        if status.workers != WORKERS or not all(segment.running for segment in status.segments):
            return False
        if not processes:
            return True  # one process: every owner reads the same host:pid
        owners = Counter(segment.owner for segment in status.segments)
        return len(owners) == WORKERS and max(owners.values()) <= share

    _until(spread, f"{WORKERS} workers sharing the {SEGMENTS} segments out", fail, SETTLE_LIMIT)
    time.sleep(5 * REBALANCE)  # in one process the owners say nothing: give the hand-over time
    last_round_from = events.head_position()
    last = 0
    for stream in streams:
        last = append(stream, 1)
    figures.events = sum(len(ids) for ids in appended.values())
    _until(
        lambda: all(c is not None and c >= last for c in _live_checkpoints(read_models)),
        "every segment to reach the last event",
        fail,
        SETTLE_LIMIT,
    )
    workers.check()
    workers.close()
    figures.phases["settling"] = time.monotonic() - settling_since

    # -- the end state ------------------------------------------------------------------------------
    problems = check_read_model(read_models, appended, figures, last_round_from)
    if problems:
        fail("\n".join(problems[:20]))
    rebuilding_since = time.monotonic()
    report = rebuild(SingleTally(event_type), events, reference)
    figures.phases["rebuild"] = time.monotonic() - rebuilding_since
    if report is None or report.events != figures.events:
        fail(f"the single runner's rebuild applied {report and report.events} events, not {figures.events}")
    ours = _comparable(read_model_snapshot(read_models, NAME, ("streams", "applied")))
    theirs = _comparable(read_model_snapshot(reference, NAME, ("streams", "applied")))
    if ours != theirs:
        differ = [a for a, b in zip(ours["applied"], theirs["applied"], strict=False) if a != b][:5]
        fail(f"the read model differs from a single runner's rebuild, e.g. {differ}")
    figures.seconds = time.monotonic() - started
    if figures.kills < 10:
        fail(f"only {figures.kills} kills")
    if figures.max_workers_seen != WORKERS:
        fail(f"the store saw at most {figures.max_workers_seen} workers at once, not {WORKERS}")
    if figures.takeovers == 0:
        fail("no killed worker's segment was taken over by another worker")
    if figures.handovers == 0:
        fail("no segment was handed over to a worker that joined")
    # Kept loose (a loaded machine shifts the moments; the figures say how many did).
    if figures.mid_batch == 0:
        fail("no kill landed while the worker had events in hand")
    print(figures.line(backend, seed))
    for name in ("events", "kills", "mid_batch", "takeovers", "handovers", "duplicates", "out_of_order"):
        record_property(name, getattr(figures, name))
    record_property("seed", seed)


def _comparable(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The snapshot without who applied an event and when."""
    applied = [{k: v for k, v in doc.items() if k not in WHO_AND_WHEN} for doc in snapshot["applied"]]
    return {"streams": snapshot["streams"], "applied": applied}


def check_read_model(
    read_models: ReadModelStore, appended: dict[str, list[uuid.UUID]], figures: Figures, last_round_from: int
) -> list[str]:
    """What is wrong with the read model; fills in the figures the applied order gives."""
    problems: list[str] = []
    snapshot = read_model_snapshot(read_models, NAME, ("streams", "applied"))
    applied: list[dict[str, Any]] = snapshot["applied"]
    by_id = {doc["id"]: doc for doc in applied}
    wanted = {str(event_id) for ids in appended.values() for event_id in ids}
    if set(by_id) != wanted:
        problems.append(
            f"{len(wanted - set(by_id))} events never applied, "
            f"{len(set(by_id) - wanted)} unknown ones applied"
        )
    figures.duplicates = sum(doc["times"] - 1 for doc in applied)
    if figures.duplicates:
        problems.append(f"{figures.duplicates} applications of an event already applied")
    streams = {doc["stream"] for doc in applied}
    counted = {row["count"] for row in snapshot["streams"]}
    if len(snapshot["streams"]) != len(appended) or counted != {len(next(iter(appended.values())))}:
        problems.append(f"{len(snapshot['streams'])} streams counted, counts {sorted(counted)[:10]}")
    if not all(row["in_order"] and row["last_revision"] == row["count"] - 1 for row in snapshot["streams"]):
        problems.append("a stream's events were applied out of revision order")

    # The applied order: within a segment, commit order (so per stream, revision order).
    per_segment: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for doc in applied:
        per_segment[segment_of(doc["stream"], SEGMENTS)].append(doc)
    per_stream: dict[str, list[dict[str, Any]]] = defaultdict(list)
    killed_at = {kill.label: kill.at for kill in figures.kill_log}
    mid_batch: set[str] = set()
    for docs in per_segment.values():
        docs.sort(key=lambda doc: (doc["position"], doc["revision"]))
        for before, after in itertools.pairwise(docs):
            if after["at"] < before["at"]:
                figures.out_of_order += 1
            if after["by"] == before["by"]:
                continue
            death = killed_at.get(before["by"])
            if death is not None and after["at"] > death:
                figures.takeovers += 1
                kill = next(k for k in figures.kill_log if k.label == before["by"])
                if after["position"] <= kill.head:
                    mid_batch.add(kill.label)  # appended before the kill, left for the next owner
            else:
                figures.handovers += 1
        for doc in docs:
            per_stream[doc["stream"]].append(doc)
    for stream, docs in per_stream.items():
        if [doc["revision"] for doc in docs] != list(range(len(docs))):
            figures.out_of_order += 1
            problems.append(
                f"{stream}: applied in the order of revisions {[d['revision'] for d in docs][:20]}"
            )
    figures.mid_batch = len(mid_batch)
    if figures.out_of_order:
        problems.append(f"{figures.out_of_order} events applied before an earlier one of their segment")
    if streams != set(appended):
        problems.append("events of streams the test did not append were applied")

    # The last round, appended once the three workers shared the segments: by exactly three.
    last_round: dict[str, set[int]] = defaultdict(set)
    for doc in applied:
        if doc["position"] > last_round_from:
            last_round[doc["by"]].add(segment_of(doc["stream"], SEGMENTS))
    share = math.ceil(SEGMENTS / WORKERS)
    if len(last_round) != WORKERS or max(len(s) for s in last_round.values()) > share:
        problems.append(f"the last round was applied by {dict(last_round)}, not {WORKERS} workers of {share}")

    # Every segment's checkpoint at or past the last event.
    last = max(doc["position"] for doc in applied)
    checkpoints = _live_checkpoints(read_models)
    if not all(c is not None and c >= last for c in checkpoints):
        problems.append(f"segment checkpoints {checkpoints} are not all at or past {last}")
    return problems


# -- the backends ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def esdb_uri() -> Iterator[str]:
    """A test server in a process of its own: the workers' subscriptions do not share our GIL."""
    with EsdbServerProcess(strict=True) as server:
        yield server.uri


BACKENDS = [
    pytest.param("sqlite", "sqlite", id="sqlite-events-sqlite-read-models"),
    pytest.param("sqlite", "postgres", id="sqlite-events-postgres-read-models", marks=pytest.mark.postgres),
    pytest.param("esdb", "sqlite", id="esdb-events-sqlite-read-models"),
]


@pytest.mark.parametrize(("events_kind", "read_models_kind"), BACKENDS)
def test_three_workers_one_killed_again_and_again_apply_every_event_once_in_order(
    events_kind: str,
    read_models_kind: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    record_property: Callable[[str, object], None],
) -> None:
    total = EVENTS
    if events_kind == "esdb":
        events_uri = request.getfixturevalue("esdb_uri")
    else:
        events_uri = f"sqlite:///{tmp_path / 'events.db'}?durable=false"
    schema = ""
    if read_models_kind == "postgres":
        postgres_uri = request.getfixturevalue("postgres_uri")
        schema = f"segkill_{uuid.uuid4().hex[:12]}"
        read_models_uri = f"{postgres_uri}?schema={schema}"
    else:
        read_models_uri = f"sqlite:///{tmp_path / 'read_models.db'}"
    event_type = f"SegTallied{uuid.uuid4().hex[:8]}"
    events = event_store.connect(events_uri)
    read_models = connect(read_models_uri)
    # The single runner's rebuild goes to a fresh memory store: every store holds the same
    # documents (the store contract), and it takes a second where PostgreSQL takes twenty.
    reference = InMemoryReadModelStore()
    workers = ProcessWorkers(events_uri, read_models_uri, event_type, tmp_path / "workers.log")
    try:
        run_scenario(
            f"{events_kind}/{read_models_kind}",
            events,
            read_models,
            reference,
            workers,
            event_type=event_type,
            record_property=record_property,
            total=total,
            append_seconds=APPEND_SECONDS[events_kind],
            kill_delay=0.03,
            min_up=1.0,
            processes=True,
        )
    finally:
        workers.close()
        reference.close()
        read_models.close()
        events.close()
        if schema:
            with psycopg.connect(request.getfixturevalue("postgres_uri"), autocommit=True) as connection:
                connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_three_runner_threads_one_stopped_again_and_again_apply_every_event_once_in_order(
    record_property: Callable[[str, object], None],
) -> None:
    event_type = f"SegTallied{uuid.uuid4().hex[:8]}"
    events = InMemoryEventStore()
    read_models = InMemoryReadModelStore()
    workers = ThreadWorkers(events, read_models, event_type)
    try:
        run_scenario(
            "memory/memory (threads)",
            events,
            read_models,
            InMemoryReadModelStore(),
            workers,
            event_type=event_type,
            record_property=record_property,
            total=EVENTS,
            append_seconds=APPEND_SECONDS["memory"],
            # In one process the runners keep up with a burst within milliseconds.
            kill_delay=0.01,
            min_up=0.5,
            processes=False,
        )
    finally:
        workers.close()
