"""Crash safety of the transfer process manager: killed at random moments, nothing lost or doubled.

The workload: 20 accounts, 4 of them closed (with a zero balance, so that they could be closed),
the 16 open ones funded generously so that no withdrawal is ever refused, and 240 transfers
between them, about a fifth to a closed account (the deposit is refused and the source is paid
back). The parent dispatches ``TransferMoney`` commands all along while the reactor's process
(``transfer_worker.py``, a :class:`~projections.ReactorRunner` of
:class:`~escqrs.examples.bank.transfers.TransferProcess`) is SIGKILLed at random moments 12
times and started again. After a final run until idle:

* every transfer is finished with the outcome its target dictates (``completed`` into an open
  account, ``compensated`` into a closed one), and its stream holds exactly the steps of that
  outcome, each decision once and each command with exactly one outcome;
* every command was applied once: per transfer, one ``MoneyWithdrawn`` from the source and one
  ``MoneyDeposited`` into the target (completed) or back into the source (compensated), each
  written by the command its stream issued; no two events of the account streams share a
  ``commandId``;
* each balance is its funding plus what completed transfers brought minus what they took, so
  the sum of all balances is unchanged.

Then the reactor's checkpoint is dropped and it is started from position 0
(``StartFrom.BEGINNING``) and killed 3 more times during the replay: afterwards not one event
was written anywhere (``$all``'s head and every account's and transfer's stream are identical).

This runs on an SQLite event store file and on the EventStoreDB test server (a server of its
own, so that the replay from position 0 reads only this test's history), both with an SQLite
read model file, and in-process on the memory stores, where the "crash" is the runner stopped
and started again at random moments.

The random schedule is seeded; the seed is in every failure message and
``TRANSFER_CRASH_SEED=N`` replays one. The figures (kills, transfers, completed, compensated,
duplicates, redeliveries the bus recognised) are printed (``pytest -s``) and recorded as test
properties (``--junitxml``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import NoReturn

import pytest

from escqrs.examples.bank.commands import CloseAccount, Deposit, OpenAccount, TransferMoney
from escqrs.examples.bank.handlers import account_repository, bank_bus
from escqrs.examples.bank.transfers import TransferProcess
from eventsourcing_cqrs import event_store
from eventsourcing_cqrs.errors import StreamNotFoundError
from eventsourcing_cqrs.event_store import EventStore, InMemoryEventStore, RecordedEvent
from eventsourcing_cqrs.testing.esdb_server import EsdbServerProcess
from projections import ReactorRunner, StartFrom
from projections.read_model_store import InMemoryReadModelStore, ReadModelStore, connect

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("transfer_worker.py")
ROOT = Path(__file__).resolve().parents[2]
NAME = "transfers"

ACCOUNTS = 20
CLOSED = 4
TRANSFERS = 240
#: About this share of the transfers goes to a closed account.
TO_CLOSED = 0.2
KILLS = 12
REPLAY_KILLS = 3
FUNDS = Decimal("1000000.00")
#: How long the final run until idle may take.
SETTLE_LIMIT = 60.0

COMPLETED_STEPS = (
    "TransferStarted",
    "ProcessCommandIssued",
    "ProcessDeadlineScheduled",
    "ProcessCommandSucceeded",
    "TransferDebited",
    "ProcessCommandIssued",
    "ProcessCommandSucceeded",
    "TransferCredited",
    "TransferCompleted",
    "ProcessDeadlineCancelled",
    "ProcessFinished",
)
COMPENSATED_STEPS = (
    "TransferStarted",
    "ProcessCommandIssued",
    "ProcessDeadlineScheduled",
    "ProcessCommandSucceeded",
    "TransferDebited",
    "ProcessCommandIssued",
    "ProcessCommandRefused",
    "TransferCompensating",
    "ProcessCommandIssued",
    "ProcessCommandSucceeded",
    "TransferCompensated",
    "ProcessDeadlineCancelled",
    "ProcessFinished",
)


# -- the workload ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Planned:
    transfer_id: str
    source: str
    target: str
    amount: Decimal
    #: What must become of it: ``completed`` (the target is open) or ``compensated`` (closed).
    outcome: str


@dataclass
class Bank:
    """The accounts, the planned transfers, and the parent's own command bus over the store."""

    store: EventStore
    rng: random.Random
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    dispatched: int = 0

    def __post_init__(self) -> None:
        self.accounts = [f"{self.tag}-a{n:02}" for n in range(ACCOUNTS)]
        self.closed = set(self.accounts[ACCOUNTS - CLOSED :])
        self.open = [a for a in self.accounts if a not in self.closed]
        self.bus = bank_bus(self.store)
        self.plan: list[Planned] = []
        for n in range(TRANSFERS):
            source = self.rng.choice(self.open)
            if self.rng.random() < TO_CLOSED:
                target = self.rng.choice(sorted(self.closed))
            else:
                target = self.rng.choice([a for a in self.open if a != source])
            amount = Decimal(self.rng.randrange(1, 50_000)) / 100
            outcome = "compensated" if target in self.closed else "completed"
            self.plan.append(Planned(f"{self.tag}-t{n:03}", source, target, amount, outcome))

    def open_accounts(self) -> None:
        for account in self.accounts:
            self.bus.dispatch(OpenAccount(account_id=account, owner=f"Owner of {account}"))
        for account in self.open:
            self.bus.dispatch(Deposit(account_id=account, amount=FUNDS))
        for account in sorted(self.closed):
            self.bus.dispatch(CloseAccount(account_id=account))

    @property
    def left(self) -> int:
        return TRANSFERS - self.dispatched

    def dispatch(self, count: int = 1) -> None:
        for _ in range(min(count, self.left)):
            planned = self.plan[self.dispatched]
            self.bus.dispatch(
                TransferMoney(
                    transfer_id=planned.transfer_id,
                    source=planned.source,
                    target=planned.target,
                    amount=planned.amount,
                )
            )
            self.dispatched += 1

    def dispatch_in_bursts(self, count: int, bursts: int, spread: float) -> None:
        """Dispatch ``count`` transfers in ``bursts`` bursts, random pauses (up to ``spread`` s) apart."""
        for burst in range(bursts):
            if burst:
                time.sleep(self.rng.uniform(0, spread))
            self.dispatch(count // bursts + (burst < count % bursts))


# -- what the end state must be ------------------------------------------------------------------


@dataclass
class Figures:
    kills: int = 0
    replay_kills: int = 0
    transfers: int = 0
    completed: int = 0
    compensated: int = 0
    duplicates: int = 0
    #: Commands the bus found already applied (a redelivery recognised, nothing written).
    redeliveries: int = 0
    #: Kills after which some dispatched transfer was not finished yet.
    kills_mid_way: int = 0
    #: Kills after which a transfer had a recorded command without an outcome (the outbox pending).
    kills_outbox_pending: int = 0
    #: Replay kills that landed before the replay reached the head of ``$all``.
    replay_kills_mid_way: int = 0

    def line(self, backend: str, seed: int) -> str:
        return (
            f"transfer crash test [{backend}] seed={seed}: kills={self.kills} "
            f"(mid-way {self.kills_mid_way}, outbox pending {self.kills_outbox_pending}), "
            f"transfers={self.transfers}, completed={self.completed}, "
            f"compensated={self.compensated}, duplicates={self.duplicates}, "
            f"redeliveries recognised={self.redeliveries}, replay kills={self.replay_kills} "
            f"(mid-replay {self.replay_kills_mid_way})"
        )


def _stream(store: EventStore, stream: str) -> list[RecordedEvent]:
    try:
        return list(store.read_stream(stream))
    except StreamNotFoundError:
        return []


def _metadata(recorded: RecordedEvent) -> dict[str, object]:
    found = json.loads(recorded.metadata) if recorded.metadata else {}
    assert isinstance(found, dict)
    return found


def _data(recorded: RecordedEvent) -> dict[str, object]:
    found = json.loads(recorded.data)
    assert isinstance(found, dict)
    return found


def in_flight(store: EventStore, bank: Bank, done: set[str]) -> tuple[int, int]:
    """Of the dispatched transfers: how many are not finished, and how many of those have a
    recorded command without an outcome (the outbox pending). Adds the finished ones to ``done``."""
    unfinished = pending = 0
    for planned in bank.plan[: bank.dispatched]:
        if planned.transfer_id in done:
            continue
        types = [recorded.type for recorded in _stream(store, f"Transfer-{planned.transfer_id}")]
        if types and types[-1] == "ProcessFinished":
            done.add(planned.transfer_id)
            continue
        unfinished += 1
        outcomes = types.count("ProcessCommandSucceeded") + types.count("ProcessCommandRefused")
        pending += types.count("ProcessCommandIssued") > outcomes
    return unfinished, pending


def check_end_state(store: EventStore, bank: Bank, figures: Figures) -> list[str]:
    """Every check of the module docstring; the problems found (none when all hold)."""
    problems: list[str] = []
    assert bank.dispatched == TRANSFERS
    account_events = {account: _stream(store, f"Account-{account}") for account in bank.accounts}
    by_command: Counter[str] = Counter()
    for account, recorded_events in account_events.items():
        for recorded in recorded_events:
            command_id = _metadata(recorded).get("commandId")
            if not isinstance(command_id, str):
                problems.append(f"Account-{account}@{recorded.revision} has no commandId")
                continue
            by_command[command_id] += 1
    doubled = {command_id: n for command_id, n in by_command.items() if n > 1}
    figures.duplicates = sum(n - 1 for n in doubled.values())
    if doubled:
        problems.append(f"{len(doubled)} commands wrote events twice or more: {sorted(doubled.items())[:5]}")

    movements: dict[tuple[str, str, str], list[RecordedEvent]] = {}
    for account, recorded_events in account_events.items():
        for recorded in recorded_events:
            if recorded.type in ("MoneyWithdrawn", "MoneyDeposited"):
                transfer_id = _data(recorded).get("transfer_id")
                if isinstance(transfer_id, str):
                    movements.setdefault((transfer_id, account, recorded.type), []).append(recorded)

    expected = {account: Decimal(0) if account in bank.closed else FUNDS for account in bank.accounts}
    figures.transfers = len(bank.plan)
    figures.completed = figures.compensated = figures.redeliveries = 0
    for planned in bank.plan:
        stream = f"Transfer-{planned.transfer_id}"
        steps = _stream(store, stream)
        types = tuple(recorded.type for recorded in steps)
        outcome = _data(steps[-1]).get("outcome") if types and types[-1] == "ProcessFinished" else None
        if outcome == "completed":
            figures.completed += 1
        elif outcome == "compensated":
            figures.compensated += 1
        if outcome != planned.outcome:
            problems.append(f"{stream} ended {outcome!r}, not {planned.outcome!r}: {types}")
            continue
        wanted = COMPLETED_STEPS if outcome == "completed" else COMPENSATED_STEPS
        if types != wanted:
            problems.append(f"{stream} holds {types}, not the steps of a {outcome} transfer {wanted}")
        issued = [_data(r) for r in steps if r.type == "ProcessCommandIssued"]
        settled = Counter(
            str(_data(r)["command_id"])
            for r in steps
            if r.type in ("ProcessCommandSucceeded", "ProcessCommandRefused")
        )
        figures.redeliveries += sum(
            1 for r in steps if r.type == "ProcessCommandSucceeded" and _data(r).get("duplicate") is True
        )
        for decision in issued:
            outcomes = settled[str(decision["command_id"])]
            if outcomes != 1:
                problems.append(f"{stream}: command {decision['command_id']} has {outcomes} outcomes")
        if len(settled) != len(issued):
            problems.append(f"{stream}: outcomes of commands it never issued: {settled}")
        # The account side: exactly the movements of its outcome, each by the command it issued.
        withdraw_ids = [str(d["command_id"]) for d in issued if d["command_type"] == "Withdraw"]
        deposit_ids = [str(d["command_id"]) for d in issued if d["command_type"] == "Deposit"]
        credited = planned.target if outcome == "completed" else planned.source
        wanted_movements = {
            (planned.transfer_id, planned.source, "MoneyWithdrawn"): withdraw_ids,
            (planned.transfer_id, credited, "MoneyDeposited"): deposit_ids[-1:],
        }
        found_keys = {key for key in movements if key[0] == planned.transfer_id}
        for key in found_keys - set(wanted_movements):
            problems.append(f"{stream}: unexpected {key[2]} in Account-{key[1]}: {len(movements[key])}")
        for key, command_ids in wanted_movements.items():
            found = movements.get(key, [])
            if len(found) != 1:
                problems.append(f"{stream}: {len(found)} {key[2]} in Account-{key[1]}, not 1")
                figures.duplicates += max(0, len(found) - 1)
                continue
            written_by = _metadata(found[0]).get("commandId")
            if [written_by] != command_ids:
                problems.append(
                    f"{stream}: {key[2]} in Account-{key[1]} written by {written_by}, not {command_ids}"
                )
            if Decimal(str(_data(found[0])["amount"])) != planned.amount:
                problems.append(f"{stream}: {key[2]} in Account-{key[1]} moved the wrong amount")
        if outcome == "completed":
            expected[planned.source] -= planned.amount
            expected[planned.target] += planned.amount

    accounts = account_repository(store)
    balances = {account: accounts.load(account).balance for account in bank.accounts}
    wrong = {a: (balances[a], expected[a]) for a in bank.accounts if balances[a] != expected[a]}
    if wrong:
        problems.append(f"balances (found, expected) differ: {wrong}")
    if sum(balances.values()) != FUNDS * len(bank.open):
        problems.append(f"the sum of the balances is {sum(balances.values())}, not {FUNDS * len(bank.open)}")
    return problems


def snapshot(store: EventStore, bank: Bank) -> dict[str, list[uuid.UUID]]:
    """The ids of every event of the test's streams, and the head of ``$all``."""
    streams = [f"Account-{a}" for a in bank.accounts] + [f"Transfer-{p.transfer_id}" for p in bank.plan]
    taken = {stream: [recorded.id for recorded in _stream(store, stream)] for stream in streams}
    taken["$all head"] = [uuid.UUID(int=store.head_position())]
    return taken


# -- running the reactor ------------------------------------------------------------------------


def run_until_idle(store: EventStore, read_models: ReadModelStore, start_from: StartFrom) -> None:
    """Run the reactor here until a run to the head of ``$all`` writes nothing more.

    Idle: the run appended nothing, and its checkpoint is at or past the last event its filter
    lets through (EventStoreDB checkpoints a filtered subscription there, not at the head).
    """
    watched = TransferProcess().event_filter()
    deadline = time.monotonic() + SETTLE_LIMIT
    while True:
        head = store.head_position()
        runner = ReactorRunner(
            TransferProcess(),
            store,
            read_models,
            bus=bank_bus(store),
            start_from=start_from,
            batch_delay=0.001,
        )
        runner.run(until_caught_up=True)
        reached = checkpoint(read_models)
        last_watched = store.head_position(watched)
        if store.head_position() == head and reached is not None and reached >= last_watched:
            return
        if time.monotonic() > deadline:
            pytest.fail(
                f"the reactor did not become idle within {SETTLE_LIMIT} s: head {head} then "
                f"{store.head_position()}, checkpoint {reached}, last event it reads {last_watched}",
                pytrace=False,
            )


def checkpoint(read_models: ReadModelStore) -> int | None:
    live = read_models.describe(NAME).live
    return None if live is None else live.checkpoint


def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}", pytrace=False)
        time.sleep(0.01)


class Worker:
    """``transfer_worker.py`` in a child process; its stderr goes to a file (shown on failure)."""

    def __init__(self, events_uri: str, read_models_uri: str, log: Path, *options: str) -> None:
        self.log = log
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with log.open("a") as stderr:
            self.process = subprocess.Popen(
                [sys.executable, str(WORKER), events_uri, read_models_uri, *options],
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                env=env,
            )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            self.kill()
            pytest.fail(f"the transfer worker did not start: {line!r}\n{log.read_text()}", pytrace=False)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.communicate(timeout=10)
        if self.process.returncode != -signal.SIGKILL:
            pytest.fail(
                f"the transfer worker had ended by itself ({self.process.returncode}) before it was killed:\n"
                f"{self.log.read_text()[-4000:]}",
                pytrace=False,
            )


# -- the scenarios --------------------------------------------------------------------------------


def busy_moment(store: EventStore, rng: random.Random, work: float) -> None:
    """Wait for a random moment while the reactor is busy with what was just dispatched.

    Once in four times, any moment in the next ``work`` seconds (the reactor may still be
    starting, or done); otherwise, a random moment in the ``work`` seconds after it began
    writing (the head of ``$all`` moved past the dispatched transfers).
    """
    if rng.random() < 0.25:
        time.sleep(rng.uniform(0, work))
        return
    head = store.head_position()
    deadline = time.monotonic() + 10
    while store.head_position() == head and time.monotonic() < deadline:
        time.sleep(0.002)
    time.sleep(rng.uniform(0, work))


def _seed() -> int:
    return int(os.environ.get("TRANSFER_CRASH_SEED", random.randrange(2**32)))


def _report(
    backend: str, seed: int, figures: Figures, record_property: Callable[[str, object], None]
) -> None:
    print(figures.line(backend, seed))
    for name in (
        "kills",
        "kills_mid_way",
        "kills_outbox_pending",
        "transfers",
        "completed",
        "compensated",
        "duplicates",
        "redeliveries",
        "replay_kills",
        "replay_kills_mid_way",
    ):
        record_property(name, getattr(figures, name))
    record_property("seed", seed)


def _failer(seed: int, figures: Figures, backend: str) -> Callable[[str], NoReturn]:
    def fail(what: str) -> NoReturn:
        pytest.fail(
            f"{figures.line(backend, seed)}\n(replay with TRANSFER_CRASH_SEED={seed}): {what}", pytrace=False
        )

    return fail


def crash_in_processes(
    backend: str,
    events_uri: str,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
    *,
    work: float,
) -> None:
    """The scenario over processes; ``work`` is about how long the worker takes over a burst of
    transfers on this backend (the kills are spread over that time)."""
    seed = _seed()
    rng = random.Random(seed)
    figures = Figures()
    fail = _failer(seed, figures, backend)
    read_models_uri = f"sqlite:///{tmp_path / 'read_models.db'}"
    log = tmp_path / "worker.log"
    store = event_store.connect(events_uri)
    read_models = connect(read_models_uri)
    workers: list[Worker] = []
    try:
        bank = Bank(store, rng)
        bank.open_accounts()
        checkpoints: list[int | None] = []
        done: set[str] = set()
        for cycle in range(KILLS):
            worker = Worker(events_uri, read_models_uri, log, "--batch-size", str(rng.choice([1, 5, 20])))
            workers.append(worker)
            if cycle == 0:
                # From now: its start is the head when it first runs, so nothing is sent before it is set.
                until(lambda: checkpoint(read_models) is not None, "the reactor's first checkpoint")
            share = bank.left // (KILLS - cycle)
            while_down = rng.randrange(share // 3 + 1)
            bank.dispatch_in_bursts(share - while_down, rng.randint(1, 3), spread=0.2)
            busy_moment(store, rng, work)
            worker.kill()
            figures.kills += 1
            checkpoints.append(checkpoint(read_models))
            unfinished, pending = in_flight(store, bank, done)
            figures.kills_mid_way += unfinished > 0
            figures.kills_outbox_pending += pending > 0
            bank.dispatch(while_down)  # the parent keeps dispatching while the reactor is down
        bank.dispatch(bank.left)
        # That the kills did land in the middle of things (kept loose: a loaded machine shifts
        # the moments; the figures say how many did).
        progressed = sum(1 for a, b in zip([None, *checkpoints], checkpoints, strict=False) if a != b)
        if progressed < KILLS // 4:
            fail(f"the reactor should make progress between kills: checkpoints {checkpoints}")
        if figures.kills_mid_way < 2:
            fail("some kills should land while transfers are in flight")
        run_until_idle(store, read_models, StartFrom.NOW)
        problems = check_end_state(store, bank, figures)
        if problems:
            fail("after the kills:\n" + "\n".join(problems[:20]))
        before = snapshot(store, bank)
        head = store.head_position()

        # The checkpoint is lost: the reactor starts again from position 0 and is killed again.
        assert read_models.drop_projection(NAME)
        for _ in range(REPLAY_KILLS):
            batch_size = str(rng.choice([1, 1, 5]))
            worker = Worker(
                events_uri, read_models_uri, log, "--start-from", "beginning", "--batch-size", batch_size
            )
            workers.append(worker)
            until(lambda: checkpoint(read_models) is not None, "the replay's first checkpoint")
            time.sleep(rng.uniform(0, 2 * work))
            worker.kill()
            figures.replay_kills += 1
            reached = checkpoint(read_models)
            figures.replay_kills_mid_way += reached is None or reached < head
        run_until_idle(store, read_models, StartFrom.BEGINNING)
        live = read_models.describe(NAME).live
        assert live is not None
        if live.events_applied == 0:
            fail("the replay from position 0 reacted to nothing")
        if snapshot(store, bank) != before:
            changed = [s for s, ids in snapshot(store, bank).items() if before.get(s) != ids]
            fail(f"the replay from position 0 wrote events: {changed[:10]}")
        problems = check_end_state(store, bank, figures)
        if problems:
            fail("after the replay from position 0:\n" + "\n".join(problems[:20]))
        if figures.replay_kills_mid_way == 0:
            fail("no replay kill landed before the replay reached the head")
        _report(backend, seed, figures, record_property)
    finally:
        for worker in workers:
            if worker.process.poll() is None:
                worker.process.kill()
                worker.process.communicate(timeout=10)
        read_models.close()
        store.close()


def test_sqlite_transfers_survive_sigkills_and_a_replay_from_position_0(
    tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    events_uri = f"sqlite:///{tmp_path / 'events.db'}?durable=false"
    crash_in_processes("sqlite", events_uri, tmp_path, record_property, work=0.06)


@pytest.fixture(scope="module")
def esdb_uri() -> Iterator[str]:
    """A test server of this module's own: the replay from position 0 then reads only its history."""
    with EsdbServerProcess(strict=True) as server:
        yield server.uri


def test_esdb_transfers_survive_sigkills_and_a_replay_from_position_0(
    esdb_uri: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    crash_in_processes("esdb", esdb_uri, tmp_path, record_property, work=0.2)


def test_memory_transfers_survive_random_stops_and_a_replay_from_position_0(
    record_property: Callable[[str, object], None],
) -> None:
    seed = _seed()
    rng = random.Random(seed)
    figures = Figures()
    fail = _failer(seed, figures, "memory")
    store = InMemoryEventStore()
    read_models = InMemoryReadModelStore()
    bank = Bank(store, rng)
    bank.open_accounts()

    def runner(start_from: StartFrom, batch_size: int) -> ReactorRunner:
        return ReactorRunner(
            TransferProcess(),
            store,
            read_models,
            bus=bank_bus(store),
            start_from=start_from,
            batch_size=batch_size,
            batch_delay=0.002,
            lease_poll_interval=0.01,
        )

    def stop(running: ReactorRunner) -> None:
        running.stop()
        running.join(15)

    done: set[str] = set()
    for cycle in range(KILLS):
        running = runner(StartFrom.NOW, rng.choice([1, 5, 20]))
        running.start()
        if cycle == 0:
            until(lambda: checkpoint(read_models) is not None, "the reactor's first checkpoint")
        share = bank.left // (KILLS - cycle)
        while_down = rng.randrange(share // 3 + 1)
        bank.dispatch_in_bursts(share - while_down, rng.randint(1, 3), spread=0.05)
        busy_moment(store, rng, 0.05)
        stop(running)
        figures.kills += 1
        unfinished, pending = in_flight(store, bank, done)
        figures.kills_mid_way += unfinished > 0
        figures.kills_outbox_pending += pending > 0
        bank.dispatch(while_down)
    bank.dispatch(bank.left)
    run_until_idle(store, read_models, StartFrom.NOW)
    problems = check_end_state(store, bank, figures)
    if problems:
        fail("after the stops:\n" + "\n".join(problems[:20]))
    before = snapshot(store, bank)
    head = store.head_position()

    assert read_models.drop_projection(NAME)
    for _ in range(REPLAY_KILLS):
        running = runner(StartFrom.BEGINNING, rng.choice([1, 1, 5]))
        running.start()
        until(lambda: checkpoint(read_models) is not None, "the replay's first checkpoint")
        time.sleep(rng.uniform(0, 0.05))
        stop(running)
        figures.replay_kills += 1
        reached = checkpoint(read_models)
        figures.replay_kills_mid_way += reached is None or reached < head
    run_until_idle(store, read_models, StartFrom.BEGINNING)
    if snapshot(store, bank) != before:
        fail("the replay from position 0 wrote events")
    problems = check_end_state(store, bank, figures)
    if problems:
        fail("after the replay from position 0:\n" + "\n".join(problems[:20]))
    _report("memory", seed, figures, record_property)
