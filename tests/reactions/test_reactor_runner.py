"""The ReactorRunner's guarantees, on real stores: effectively once, from now by default,
deadlines on a fake clock, one active runner across processes, and bad input.

Event stores: memory, an SQLite file and the EventStoreDB test server (a child process of this
module's own, so that a reactor started from the beginning reads only this module's events;
``ESDB_URI`` runs them against a real server instead). Read models: memory for the memory event
store, an SQLite file otherwise. Account ids carry a prefix of each test's own, every reactor
here ignores other accounts, and each test's process manager has a stream category of its own, so
tests sharing the server do not see each other's events; the test that writes an undecodable
event gets a server of its own. The fake clock is a tiny class here (no library helper).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import pytest
from structlog.testing import capture_logs

from escqrs.examples.bank.commands import Deposit, OpenAccount, Withdraw
from escqrs.examples.bank.events import AccountOpened, MoneyDeposited
from escqrs.examples.bank.handlers import account_repository, bank_bus
from escqrs.examples.bank.transfers import WelcomeBonus
from eventsourcing_cqrs import Command, CommandBus, DomainEvent
from eventsourcing_cqrs.errors import StreamNotFoundError
from eventsourcing_cqrs.event_store import connect as connect_events
from eventsourcing_cqrs.event_store.memory import InMemoryEventStore
from eventsourcing_cqrs.event_store.port import EventStore, NewEvent, RecordedEvent, StreamState
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from eventsourcing_cqrs.reactions import (
    Deadline,
    Process,
    ProcessManager,
    ReactionContext,
    Reactor,
    reaction_command_id,
)
from eventsourcing_cqrs.testing.esdb_server import EsdbServerProcess
from projections import (
    ProjectionFailedError,
    ProjectionNotFoundError,
    ProjectionState,
    ReactorRunner,
    StartFrom,
)
from projections.projection import Backoff, FailurePolicy
from projections.reactor_runner import DEADLINES_TABLE
from projections.read_model_store import ReadModelStore
from projections.read_model_store import connect as connect_read_models
from projections.read_model_store.memory import InMemoryReadModelStore
from projections.read_model_store.sqlite import SQLiteReadModelStore

CHILD = Path(__file__).with_name("reactor_child.py")
ROOT = Path(__file__).resolve().parents[2]

# -- stores ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def esdb_uri() -> Iterator[str]:
    """A test server of this module's own (or ``ESDB_URI``)."""
    external = os.environ.get("ESDB_URI")
    if external:
        yield external
        return
    with EsdbServerProcess(strict=True) as server:
        yield server.uri


@dataclass
class Stores:
    kind: str
    events: EventStore
    read_models: ReadModelStore
    tmp: Path

    def reopen_read_models(self) -> ReadModelStore:
        """The same read models as another process would open them (the memory store is kept)."""
        if isinstance(self.read_models, SQLiteReadModelStore):
            return SQLiteReadModelStore(self.tmp / "views.db", durable=False)
        return self.read_models


#: The bad-input case that writes an event no reactor of its type can decode.
UNDECODABLE = "an event that cannot be decoded"


def _open(kind: str, tmp: Path, uri: Callable[[], str]) -> Stores:
    if kind == "memory":
        return Stores(kind, InMemoryEventStore(), InMemoryReadModelStore(), tmp)
    views = SQLiteReadModelStore(tmp / "views.db", durable=False)
    if kind == "sqlite":
        return Stores(kind, SQLiteEventStore(tmp / "events.db", durable=False), views, tmp)
    return Stores(kind, connect_events(uri()), views, tmp)


@pytest.fixture(params=["memory", "sqlite", "esdb"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    with ExitStack() as stack:
        callspec = getattr(request.node, "callspec", None)
        if request.param == "esdb" and callspec is not None and callspec.params.get("case") == UNDECODABLE:
            # An undecodable AccountOpened would stop every later reactor on AccountOpened that
            # reads the server from the beginning: this test gets a server of its own.
            if os.environ.get("ESDB_URI"):
                pytest.skip("it would leave an undecodable event on the shared server of ESDB_URI")
            server = stack.enter_context(EsdbServerProcess(strict=True))
            opened = _open(request.param, tmp_path, lambda: server.uri)
        else:
            opened = _open(request.param, tmp_path, lambda: str(request.getfixturevalue("esdb_uri")))
        yield opened
        opened.read_models.close()
        opened.events.close()


@pytest.fixture
def prefix() -> str:
    return f"r{uuid.uuid4().hex[:8]}-"


# -- helpers -----------------------------------------------------------------------------------


class FakeClock:
    """A clock for the runner: returns :attr:`now` until the test moves it."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now = self.now + delta


FAST = Backoff(max_attempts=2, base_delay=0.001, max_delay=0.001)


def runner_for(
    reactor: Reactor | ProcessManager[Any], stores: Stores, bus: CommandBus, **options: Any
) -> ReactorRunner:
    settings: dict[str, Any] = {
        "batch_delay": 0.001,
        "lease_poll_interval": 0.05,
        "retry_check_interval": 0.05,
        "deadline_check_interval": 0.02,
        "backoff": FAST,
        **options,
    }
    read_models = settings.pop("read_models", stores.read_models)
    return ReactorRunner(reactor, stores.events, read_models, bus=bus, **settings)


@contextmanager
def running(runner: ReactorRunner) -> Iterator[ReactorRunner]:
    """The runner in its thread; stopped (and its error, if any, raised) on the way out."""
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()
        runner.join(20)


def until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def records(events: EventStore, stream: str) -> list[RecordedEvent]:
    try:
        return list(events.read_stream(stream))
    except StreamNotFoundError:
        return []


def types_in(events: EventStore, stream: str) -> list[str]:
    return [recorded.type for recorded in records(events, stream)]


def metadata(recorded: RecordedEvent) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(recorded.metadata)
    return found


def deposits(events: EventStore, account: str) -> list[RecordedEvent]:
    return [r for r in records(events, f"Account-{account}") if r.type == MoneyDeposited.event_type]


def balance(events: EventStore, account: str) -> Decimal:
    found: Decimal = account_repository(events).load(account).balance
    return found


def open_accounts(bus: CommandBus, ids: list[str]) -> int:
    """Open each account with a correlation id of its own (``corr-{id}``); the last position."""
    position = 0
    for account in ids:
        result = bus.dispatch(OpenAccount(account_id=account, owner="o"), correlation_id=f"corr-{account}")
        assert result.position is not None
        position = result.position
    return position


def started_from_now(read_models: ReadModelStore, name: str) -> bool:
    live = read_models.describe(name).live
    return live is not None and live.checkpoint is not None


# -- the reactors and the process manager under test -------------------------------------------


class Audit(Command):
    """A command no bus here handles until a test registers it (the "missing handler" case)."""

    account_id: str


class Bonus(Reactor):
    """Two deposits (5 and 1) into every new account of this test's; can be made to fail."""

    name: ClassVar[str] = "test_bonus"

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        #: Accounts whose handler raises.
        self.fail_for: set[str] = set()
        #: Accounts that also get an Audit command (which the bus may not handle).
        self.audit_for: set[str] = set()
        self.on(AccountOpened, self.opened)

    def opened(self, event: AccountOpened, context: ReactionContext) -> list[Command] | None:
        del context
        account = event.account_id
        if not account.startswith(self.prefix):
            return None
        if account in self.fail_for:
            raise RuntimeError(f"the bonus for {account} cannot be computed")
        commands: list[Command] = [
            Deposit(account_id=account, amount=Decimal(5)),
            Deposit(account_id=account, amount=Decimal(1)),
        ]
        if account in self.audit_for:
            commands.append(Audit(account_id=account))
        return commands


class Stingy(Reactor):
    """Withdraws from "poor" accounts (refused: they are empty), deposits into the others."""

    name: ClassVar[str] = "test_stingy"

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.on(AccountOpened, self.opened)

    def opened(self, event: AccountOpened, context: ReactionContext) -> Command | None:
        del context
        if not event.account_id.startswith(self.prefix):
            return None
        if "poor" in event.account_id:
            return Withdraw(account_id=event.account_id, amount=Decimal(100))
        return Deposit(account_id=event.account_id, amount=Decimal(2))


class ReminderStarted(DomainEvent):
    event_type: ClassVar[str] = "TestReminderStarted"

    account_id: str


class ReminderSent(DomainEvent):
    event_type: ClassVar[str] = "TestReminderSent"

    account_id: str


class Reminder(Process[ReminderStarted | ReminderSent]):
    category: ClassVar[str] = "TestReminder"

    def __init__(self, process_id: str) -> None:
        super().__init__(process_id)
        self.status = "new"

    def evolve(self, event: ReminderStarted | ReminderSent) -> None:
        self.status = "waiting" if isinstance(event, ReminderStarted) else "reminded"


class Reminders(ProcessManager[Reminder]):
    """A new account is reminded after 10 minutes (a deposit of 1) unless money arrives first."""

    name: ClassVar[str] = "test_reminders"
    process: ClassVar[type[Process[Any]]] = Reminder
    commands: ClassVar[tuple[type[Command], ...]] = (Deposit, Audit)

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.fail_for: set[str] = set()
        self.audit_for: set[str] = set()
        self.start(AccountOpened, key=self.key, handler=self.opened)
        self.on(MoneyDeposited, key=self.key, handler=self.deposited)
        self.on_deadline("reminder", self.remind)

    def key(self, event: AccountOpened | MoneyDeposited) -> str | None:
        return event.account_id if event.account_id.startswith(self.prefix) else None

    def opened(self, event: AccountOpened, reminder: Reminder) -> None:
        if event.account_id in self.fail_for:
            raise RuntimeError(f"no reminder for {event.account_id}")
        if reminder.status != "new":
            return
        reminder.apply(ReminderStarted(account_id=event.account_id))
        reminder.schedule("reminder", after=timedelta(minutes=10))
        if event.account_id in self.audit_for:
            reminder.send(Deposit(account_id=event.account_id, amount=Decimal(7)))
            reminder.send(Audit(account_id=event.account_id))

    def deposited(self, event: MoneyDeposited, reminder: Reminder) -> None:
        del event
        if reminder.status == "waiting":
            reminder.cancel("reminder")
            reminder.finish("paid in time")
        elif reminder.status == "reminded":
            reminder.finish("reminded")

    def remind(self, deadline: Deadline, reminder: Reminder) -> None:
        del deadline
        reminder.apply(ReminderSent(account_id=reminder.id))
        reminder.send(Deposit(account_id=reminder.id, amount=Decimal(1)))


# -- 1. effectively once -----------------------------------------------------------------------


def test_a_reactor_from_the_beginning_twice_applies_each_command_once(stores: Stores, prefix: str) -> None:
    bus = bank_bus(stores.events)
    accounts = [f"{prefix}{n}" for n in range(5)]
    open_accounts(bus, accounts[:3])
    runner_for(Bonus(prefix), stores, bus, start_from=StartFrom.BEGINNING).run(until_caught_up=True)
    open_accounts(bus, accounts[3:])
    runner_for(Bonus(prefix), stores, bus).run(until_caught_up=True)  # resumes from its checkpoint
    assert all(balance(stores.events, a) == Decimal(6) for a in accounts)

    # The checkpoint is lost; the reactor reacts to the whole history again, in a new bus.
    assert stores.read_models.drop_projection(Bonus.name)
    again = bank_bus(stores.events)
    runner_for(Bonus(prefix), stores, again, start_from=StartFrom.BEGINNING).run(until_caught_up=True)
    assert again.metrics.duplicates == 2 * len(accounts)
    assert again.metrics.succeeded == 0

    for account in accounts:
        assert balance(stores.events, account) == Decimal(6), account
        opened, *rest = records(stores.events, f"Account-{account}")
        assert [r.type for r in rest] == ["MoneyDeposited", "MoneyDeposited"], account
        for index, deposited in enumerate(rest):
            meta = metadata(deposited)
            assert meta["commandId"] == str(reaction_command_id(opened.id, Bonus.name, index))
            assert meta["$correlationId"] == f"corr-{account}" == metadata(opened)["$correlationId"]
            assert meta["$causationId"] == str(opened.id)
            assert meta["actor"] == f"reactor:{Bonus.name}"


# -- 2. from now by default --------------------------------------------------------------------


def test_a_new_reactor_starts_from_now_and_then_resumes_from_its_checkpoint(
    stores: Stores, prefix: str
) -> None:
    bus = bank_bus(stores.events)
    old = [f"{prefix}old{n}" for n in range(3)]
    open_accounts(bus, old)
    runner = runner_for(Bonus(prefix), stores, bus)
    with running(runner):
        until(lambda: started_from_now(stores.read_models, Bonus.name), "the reactor to start from now")
        runner.wait_for(open_accounts(bus, [f"{prefix}new"]), timeout=20)
    # Stopped meanwhile: an event appended now is reacted to by the next runner (its checkpoint).
    open_accounts(bus, [f"{prefix}later"])
    runner_for(Bonus(prefix), stores, bus).run(until_caught_up=True)

    assert balance(stores.events, f"{prefix}new") == Decimal(6)
    assert balance(stores.events, f"{prefix}later") == Decimal(6)
    assert [deposits(stores.events, account) for account in old] == [[], [], []]


# -- 3. deadlines ------------------------------------------------------------------------------


def category_of(prefix: str) -> str:
    """A stream category per test (``TestReminder{hex}``), so tests sharing a server never see
    each other's instances or deadlines."""
    return f"TestReminder{prefix[1:9]}"


def reminders(prefix: str) -> Reminders:
    """A :class:`Reminders` whose instances live in this test's own category."""
    process = type(f"Reminder_{prefix[1:9]}", (Reminder,), {"category": category_of(prefix)})
    manager = type(f"Reminders_{prefix[1:9]}", (Reminders,), {"process": process})
    made = manager(prefix)
    assert isinstance(made, Reminders)
    return made


def reminder_stream(account: str) -> str:
    """The stream of the reminder of ``account`` (whose id starts with its test's prefix)."""
    return f"{category_of(account)}-{account}"


def count(events: EventStore, stream: str, event_type: str) -> int:
    return types_in(events, stream).count(event_type)


def pending_deadlines(read_models: ReadModelStore) -> list[dict[str, Any]]:
    """The deadlines indexed in the process manager's read model (none before it exists)."""
    try:
        with read_models.read(Reminders.name) as view:
            return list(view.table(DEADLINES_TABLE).find())
    except ProjectionNotFoundError:
        return []


def assert_reminded_once(events: EventStore, account: str) -> None:
    stream = reminder_stream(account)
    assert count(events, stream, "ProcessDeadlineFired") == 1, types_in(events, stream)
    assert count(events, stream, ReminderSent.event_type) == 1
    assert count(events, stream, "ProcessCommandIssued") == 1
    assert [d.type for d in deposits(events, account)] == ["MoneyDeposited"]
    assert balance(events, account) == Decimal(1)


def test_a_deadline_fires_once_when_the_clock_passes_it(stores: Stores, prefix: str) -> None:
    clock = FakeClock()
    bus = bank_bus(stores.events)
    account = f"{prefix}a"
    stream = reminder_stream(account)
    runner = runner_for(reminders(prefix), stores, bus, clock=clock, start_from=StartFrom.BEGINNING)
    with running(runner):
        open_accounts(bus, [account])
        until(lambda: len(pending_deadlines(stores.read_models)) == 1, "the deadline to be indexed")
        (row,) = pending_deadlines(stores.read_models)
        assert row["due"] == (clock.now + timedelta(minutes=10)).timestamp()
        clock.advance(timedelta(minutes=9, seconds=59))
        assert runner.fire_due_deadlines() == 0  # not due: nothing is appended
        clock.advance(timedelta(seconds=2))
        until(lambda: "ProcessFinished" in types_in(stores.events, stream), "the reminder to finish")
        clock.advance(timedelta(hours=1))
        time.sleep(0.2)  # many deadline checks (every 0.02 s) while idle
    assert_reminded_once(stores.events, account)
    assert pending_deadlines(stores.read_models) == []
    assert runner.fire_due_deadlines() == 0


@pytest.mark.parametrize("stopped", ["before the fired deadline is reacted to", "after it was reacted to"])
def test_a_fired_deadline_is_reacted_to_once_across_a_restart(
    stores: Stores, prefix: str, stopped: str
) -> None:
    clock = FakeClock()
    bus = bank_bus(stores.events)
    account = f"{prefix}a"
    stream = reminder_stream(account)
    first = runner_for(reminders(prefix), stores, bus, clock=clock, start_from=StartFrom.BEGINNING)
    with running(first):
        open_accounts(bus, [account])
        until(lambda: len(pending_deadlines(stores.read_models)) == 1, "the deadline to be indexed")
        if stopped.startswith("after"):
            clock.advance(timedelta(minutes=11))
            until(lambda: "ProcessFinished" in types_in(stores.events, stream), "the reminder to finish")
    if stopped.startswith("before"):
        # What the runner does when idle, done here while it is stopped: the deadline's
        # ProcessDeadlineFired is recorded, and the runner is gone before it reads it back.
        clock.advance(timedelta(minutes=11))
        assert first.fire_due_deadlines() == 1
        assert count(stores.events, stream, "ProcessDeadlineFired") == 1
        assert count(stores.events, stream, ReminderSent.event_type) == 0
        assert first.fire_due_deadlines() == 0  # recorded once, even though still indexed

    clock.advance(timedelta(hours=1))
    bus = bank_bus(stores.events)  # another process, as far as the bus can tell
    second = runner_for(reminders(prefix), stores, bus, clock=clock, read_models=stores.reopen_read_models())
    with running(second):
        until(lambda: "ProcessFinished" in types_in(stores.events, stream), "the reminder to finish")
        until(lambda: pending_deadlines(second.store) == [], "the deadline to leave the index")
        time.sleep(0.2)  # many deadline checks while idle
    assert_reminded_once(stores.events, account)
    assert bus.metrics.succeeded == (1 if stopped.startswith("before") else 0)


def test_a_deadline_cancelled_in_time_never_fires(stores: Stores, prefix: str) -> None:
    clock = FakeClock()
    bus = bank_bus(stores.events)
    account = f"{prefix}a"
    stream = reminder_stream(account)
    runner = runner_for(reminders(prefix), stores, bus, clock=clock, start_from=StartFrom.BEGINNING)
    with running(runner):
        open_accounts(bus, [account])
        until(lambda: len(pending_deadlines(stores.read_models)) == 1, "the deadline to be indexed")
        clock.advance(timedelta(minutes=9))
        bus.dispatch(Deposit(account_id=account, amount=Decimal(50)))
        until(lambda: "ProcessFinished" in types_in(stores.events, stream), "the reminder to finish")
        until(lambda: pending_deadlines(stores.read_models) == [], "the deadline to leave the index")
        clock.advance(timedelta(days=1))
        time.sleep(0.2)  # many deadline checks while idle
    assert runner.fire_due_deadlines() == 0
    assert types_in(stores.events, stream) == [
        ReminderStarted.event_type,
        "ProcessDeadlineScheduled",
        "ProcessDeadlineCancelled",
        "ProcessFinished",
    ]
    assert balance(stores.events, account) == Decimal(50)


def test_a_deadline_that_passed_while_no_runner_ran_fires_when_one_starts(
    stores: Stores, prefix: str
) -> None:
    clock = FakeClock()
    bus = bank_bus(stores.events)
    account = f"{prefix}a"
    stream = reminder_stream(account)
    first = runner_for(reminders(prefix), stores, bus, clock=clock, start_from=StartFrom.BEGINNING)
    with running(first):
        open_accounts(bus, [account])
        until(lambda: len(pending_deadlines(stores.read_models)) == 1, "the deadline to be indexed")
    clock.advance(timedelta(minutes=30))
    assert count(stores.events, stream, "ProcessDeadlineFired") == 0
    second = runner_for(reminders(prefix), stores, bus, clock=clock, read_models=stores.reopen_read_models())
    with running(second):
        until(lambda: "ProcessFinished" in types_in(stores.events, stream), "the reminder to finish")
    assert_reminded_once(stores.events, account)


def test_a_run_until_caught_up_fires_the_deadlines_due_when_it_ends(stores: Stores, prefix: str) -> None:
    """What a cron-style ``escqrs projections run --until-caught-up`` relies on."""
    clock = FakeClock()
    bus = bank_bus(stores.events)
    account = f"{prefix}a"
    stream = reminder_stream(account)
    runner = runner_for(reminders(prefix), stores, bus, clock=clock, start_from=StartFrom.BEGINNING)
    open_accounts(bus, [account])
    runner.run(until_caught_up=True)  # goes round until what it caused is read too
    assert len(pending_deadlines(stores.read_models)) == 1
    assert count(stores.events, stream, "ProcessDeadlineFired") == 0
    clock.advance(timedelta(minutes=30))
    runner.run(until_caught_up=True)  # fires it at the end of a pass, then reacts to it
    assert count(stores.events, stream, "ProcessDeadlineFired") == 1
    assert "ProcessFinished" in types_in(stores.events, stream)
    runner.run(until_caught_up=True)  # nothing more
    assert_reminded_once(stores.events, account)


# -- 4. two runner processes -------------------------------------------------------------------


def spawn(events: Path, store_uri: str, log: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(events), store_uri, str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if line.strip() != "ready":
        child.kill()
        _, err = child.communicate()
        pytest.fail(f"reactor child did not start: {line!r} {err}")
    return child


@dataclass
class Dispatch:
    pid: int
    start: float
    end: float | None
    account: str


def dispatches(log: Path) -> list[Dispatch]:
    """The log's dispatches, each ``start`` paired with its process's next ``end``."""
    found: list[Dispatch] = []
    open_by_pid: dict[int, Dispatch] = {}
    text = log.read_text() if log.exists() else ""
    for line in text.splitlines():
        kind, pid, at, account, *_ = line.split()
        if kind == "start":
            assert int(pid) not in open_by_pid, f"two dispatches at once in one process: {line}"
            open_by_pid[int(pid)] = Dispatch(int(pid), float(at), None, account)
            found.append(open_by_pid[int(pid)])
        else:
            started = open_by_pid.pop(int(pid))
            assert started.account == account
            started.end = float(at)
    return found


def test_two_runner_processes_never_both_dispatch(tmp_path: Path) -> None:
    events = SQLiteEventStore(tmp_path / "events.db", durable=False)
    store_uri = f"sqlite:///{tmp_path / 'views.db'}"
    read_models = connect_read_models(store_uri)
    log = tmp_path / "dispatches.log"
    bus = bank_bus(events)
    accounts = [f"two-{n}" for n in range(60)]
    first = second = None
    try:
        open_accounts(bus, accounts[:10])
        first = spawn(events.path, store_uri, log)
        until(lambda: len(dispatches(log)) >= 5, "the first runner to dispatch")
        second = spawn(events.path, store_uri, log)
        until(
            lambda: read_models.describe("welcome_bonus").state is ProjectionState.WAITING_FOR_LEASE,
            "the second runner to wait for the lease",
        )
        open_accounts(bus, accounts[10:20])
        until(lambda: len({d.account for d in dispatches(log)}) >= 15, "the first runner to go on")
        open_accounts(bus, accounts[20:45])
        until(lambda: len({d.account for d in dispatches(log)}) >= 25, "the first runner to be mid-way")
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=10)
        killed_at = time.monotonic()
        open_accounts(bus, accounts[45:])
        until(
            lambda: all(len(deposits(events, a)) == 1 for a in accounts),
            "every account to get its bonus",
            timeout=30,
        )
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=15)
        assert second.returncode == 0, err
        found = dispatches(log)
    finally:
        for child in (first, second):
            if child is not None and child.poll() is None:
                child.kill()
                child.communicate(timeout=10)
        read_models.close()

    by_first = [d for d in found if d.pid == first.pid]
    by_second = [d for d in found if d.pid == second.pid]
    assert by_first
    assert by_second, "the second runner never took over"
    assert len(by_first) + len(by_second) == len(found)
    # The first runner's last dispatch may have been cut short by the kill: it ended by then.
    last_of_first = max(d.end if d.end is not None else killed_at for d in by_first)
    assert all(d.end is not None for d in by_second)
    assert last_of_first < min(d.start for d in by_second), "both runners dispatched at the same time"
    assert {d.account for d in found} == set(accounts)
    for account in accounts:
        assert balance(events, account) == WelcomeBonus.bonus, account
        assert len(deposits(events, account)) == 1, account
    events.close()


# -- 5. bad input ------------------------------------------------------------------------------


def append_corrupt_opening(events: EventStore, account: str) -> None:
    """An AccountOpened the registry cannot decode (its owner is missing)."""
    data = json.dumps({"account_id": account}).encode()
    events.append(
        f"Account-{account}",
        [NewEvent(AccountOpened.event_type, data)],
        expected_version=StreamState.NO_STREAM,
    )


BAD_CASES = ["a handler that raises", "a command without handler", UNDECODABLE]


def arrange_bad(
    case: str, stores: Stores, bus: CommandBus, reactor: Bonus | Reminders, prefix: str
) -> tuple[str, str, str]:
    """Open a good account, a bad one and another good one; their ids."""
    good, bad, after = f"{prefix}good", f"{prefix}bad", f"{prefix}after"
    open_accounts(bus, [good])
    if case == UNDECODABLE:
        append_corrupt_opening(stores.events, bad)
    else:
        (reactor.fail_for if case == "a handler that raises" else reactor.audit_for).add(bad)
        open_accounts(bus, [bad])
    open_accounts(bus, [after])
    return good, bad, after


def fix(case: str, reactor: Bonus | Reminders, bus: CommandBus, audited: list[str]) -> None:
    if case == "a handler that raises":
        reactor.fail_for.clear()
    elif case == "a command without handler":
        bus.register(Audit, lambda command: audited.append(command.account_id))


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_stops_the_reactor_naming_it_and_dispatches_nothing(
    stores: Stores, prefix: str, case: str
) -> None:
    bus = bank_bus(stores.events)
    reactor = Bonus(prefix)
    good, bad, after = arrange_bad(case, stores, bus, reactor, prefix)
    (bad_event,) = records(stores.events, f"Account-{bad}")
    runner = runner_for(reactor, stores, bus, start_from=StartFrom.BEGINNING)
    with pytest.raises(ProjectionFailedError) as failed:
        runner.run(until_caught_up=True)
    message = str(failed.value)
    assert (
        f"Reactor {Bonus.name!r} stopped: event 'AccountOpened' at revision 0 of stream 'Account-{bad}'"
        in (message)
    )
    assert f"(position {bad_event.position})" in message
    assert balance(stores.events, good) == Decimal(6)
    assert deposits(stores.events, after) == []  # stopped before it
    live = stores.read_models.describe(Bonus.name).live
    assert live is not None
    assert live.checkpoint is not None
    assert live.checkpoint < bad_event.position
    assert stores.read_models.describe(Bonus.name).state is ProjectionState.FAILED
    if case == UNDECODABLE:
        assert "owner" in message
        return
    assert deposits(stores.events, bad) == []  # nothing dispatched, not even the first deposit

    audited: list[str] = []
    fix(case, reactor, bus, audited)
    runner_for(reactor, stores, bus).run(until_caught_up=True)  # the restart retries the event
    assert balance(stores.events, bad) == Decimal(6)
    assert balance(stores.events, after) == Decimal(6)
    assert audited == ([bad] if case == "a command without handler" else [])


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_parked_and_a_retry_after_the_fix_dispatches_it_once(
    stores: Stores, prefix: str, case: str
) -> None:
    bus = bank_bus(stores.events)
    reactor = Bonus(prefix)
    good, bad, after = arrange_bad(case, stores, bus, reactor, prefix)
    (bad_event,) = records(stores.events, f"Account-{bad}")
    runner = runner_for(
        reactor, stores, bus, start_from=StartFrom.BEGINNING, failure_policy=FailurePolicy.PARK
    )
    runner.run(until_caught_up=True)
    (parked,) = stores.read_models.parked_events(Bonus.name)
    assert (parked.position, parked.stream, parked.revision) == (bad_event.position, f"Account-{bad}", 0)
    assert parked.attempts == FAST.max_attempts
    assert balance(stores.events, good) == Decimal(6)
    assert balance(stores.events, after) == Decimal(6)  # later events went on
    assert deposits(stores.events, bad) == []
    if case == UNDECODABLE:
        assert runner.retry_parked() == 0  # still undecodable: it stays parked
        assert len(stores.read_models.parked_events(Bonus.name)) == 1
        return

    audited: list[str] = []
    assert runner.retry_parked() == 0  # not fixed yet: still parked, still nothing dispatched
    assert deposits(stores.events, bad) == []
    fix(case, reactor, bus, audited)
    assert runner.retry_parked() == 1
    assert runner.retry_parked() == 0
    assert stores.read_models.parked_events(Bonus.name) == []
    assert balance(stores.events, bad) == Decimal(6)
    assert len(deposits(stores.events, bad)) == 2
    assert audited == ([bad] if case == "a command without handler" else [])


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_stops_a_process_manager_naming_it_and_records_nothing(
    stores: Stores, prefix: str, case: str
) -> None:
    bus = bank_bus(stores.events)
    manager = reminders(prefix)
    good, bad, after = arrange_bad(case, stores, bus, manager, prefix)
    (bad_event,) = records(stores.events, f"Account-{bad}")
    runner = runner_for(manager, stores, bus, clock=FakeClock(), start_from=StartFrom.BEGINNING)
    with pytest.raises(ProjectionFailedError) as failed:
        runner.run(until_caught_up=True)
    message = str(failed.value)
    assert (
        f"Process manager {Reminders.name!r} stopped: event 'AccountOpened' at revision 0 "
        f"of stream 'Account-{bad}'" in message
    )
    assert f"(position {bad_event.position})" in message
    assert ReminderStarted.event_type in types_in(stores.events, reminder_stream(good))
    assert records(stores.events, reminder_stream(bad)) == []  # nothing decided, nothing sent
    assert records(stores.events, reminder_stream(after)) == []
    assert deposits(stores.events, bad) == []


# -- 6. a refused command ----------------------------------------------------------------------


def test_a_refused_command_is_logged_and_the_reactor_goes_on(stores: Stores, prefix: str) -> None:
    bus = bank_bus(stores.events)
    poor, rich = f"{prefix}poor", f"{prefix}rich"
    position = open_accounts(bus, [poor, rich])
    with capture_logs() as logs:
        runner = runner_for(Stingy(prefix), stores, bus, start_from=StartFrom.BEGINNING)
        runner.run(until_caught_up=True)
    (refused,) = [log for log in logs if log["event"] == "reaction.command_refused"]
    assert refused["reactor"] == Stingy.name
    assert refused["command_type"] == "Withdraw"
    assert refused["error"] == "InsufficientFundsError"
    assert refused["stream"] == f"Account-{poor}"
    assert refused["revision"] == 0
    assert balance(stores.events, poor) == Decimal(0)
    assert balance(stores.events, rich) == Decimal(2)
    status = runner.status()
    assert status.parked == 0
    assert status.last_error is None
    assert status.checkpoint is not None
    assert status.checkpoint >= position


@pytest.mark.parametrize("case", ["a handler that raises", "a command without handler"])
def test_bad_input_parked_by_a_process_manager_is_decided_and_dispatched_once_after_the_fix(
    stores: Stores, prefix: str, case: str
) -> None:
    bus = bank_bus(stores.events)
    manager = reminders(prefix)
    good, bad, after = arrange_bad(case, stores, bus, manager, prefix)
    runner = runner_for(
        manager,
        stores,
        bus,
        clock=FakeClock(),
        start_from=StartFrom.BEGINNING,
        failure_policy=FailurePolicy.PARK,
    )
    runner.run(until_caught_up=True)
    (parked,) = stores.read_models.parked_events(Reminders.name)
    assert ReminderStarted.event_type in types_in(stores.events, reminder_stream(good))
    assert (parked.stream, parked.revision) == (f"Account-{bad}", 0)
    assert ReminderStarted.event_type in types_in(stores.events, reminder_stream(after))  # went on
    assert records(stores.events, reminder_stream(bad)) == []

    audited: list[str] = []
    fix(case, manager, bus, audited)
    assert runner.retry_parked() == 1
    assert runner.retry_parked() == 0
    runner.run(until_caught_up=True)  # the outcomes recorded by the retry are read back
    decided = types_in(stores.events, reminder_stream(bad))
    assert decided.count(ReminderStarted.event_type) == 1
    assert decided.count("ProcessDeadlineScheduled") == 1
    if case == "a command without handler":
        assert decided.count("ProcessCommandIssued") == 2
        assert decided.count("ProcessCommandSucceeded") == 2
        assert audited == [bad]
        assert balance(stores.events, bad) == Decimal(7)
        assert len(deposits(stores.events, bad)) == 1
    else:
        assert deposits(stores.events, bad) == []
