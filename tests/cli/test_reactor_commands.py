"""``escqrs projections ...`` operating the bank's reactors and process managers beside its projections.

Each test has its own SQLite event store, written in this process before the command runs: two
accounts and a transfer of 30 from ``a`` (holding 100) to ``b`` that no process manager has
reacted to yet. The commands run in subprocesses, with no terminal on stdin unless a test gives
them one (a pseudo-terminal, to answer the question of where a new reactor starts).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from cli._helpers import COMMAND, ROOT, Backend, environment, ok
from escqrs.examples.bank.commands import Deposit, OpenAccount, TransferMoney
from escqrs.examples.bank.handlers import account_repository, bank_bus
from eventsourcing_cqrs.errors import StreamNotFoundError
from eventsourcing_cqrs.event_store import connect
from eventsourcing_cqrs.event_store.port import EventFilter
from projections.read_model_store import connect as connect_read_models
from projections.read_model_store.port import LeaseRole

APP = "escqrs.examples.bank.app:bank"
PROJECTIONS = ["account_list", "account_detail", "daily_transactions"]


class Bank:
    """A fresh bank on an SQLite file, with one transfer requested before any reactor ran."""

    def __init__(self, directory: Path) -> None:
        self.store = f"sqlite:///{directory / 'events.db'}"
        self.read_models = f"sqlite:///{directory / 'views.db'}"
        self.env = {"ESCQRS_STORE": self.store, "ESCQRS_READ_MODELS": self.read_models, "ESCQRS_APP": APP}
        store = connect(self.store)
        try:
            bus = bank_bus(store)
            bus.dispatch(OpenAccount(account_id="a", owner="Ada"))
            bus.dispatch(Deposit(account_id="a", amount=Decimal(100)))
            bus.dispatch(OpenAccount(account_id="b", owner="Bob"))
        finally:
            store.close()
        self.transfer("t1", 30)

    def transfer(self, transfer_id: str, amount: int) -> None:
        """Request a transfer of ``amount`` from ``a`` to ``b`` (the process manager carries it out)."""
        store = connect(self.store)
        try:
            bus = bank_bus(store)
            bus.dispatch(
                TransferMoney(transfer_id=transfer_id, source="a", target="b", amount=Decimal(amount))
            )
        finally:
            store.close()

    def balances(self) -> tuple[Decimal, Decimal]:
        store = connect(self.store)
        try:
            repository = account_repository(store)
            return repository.load("a").balance, repository.load("b").balance
        finally:
            store.close()

    def transfer_steps(self, transfer_id: str) -> list[str]:
        """The event types of the transfer's stream (empty if the process manager never started it)."""
        store = connect(self.store)
        try:
            return [event.type for event in store.read_stream(f"Transfer-{transfer_id}")]
        except StreamNotFoundError:
            return []
        finally:
            store.close()

    def position_of(self, event_type: str) -> int:
        store = connect(self.store)
        try:
            (event,) = store.read_all(filter=EventFilter.for_event_types([event_type]))
            return event.position
        finally:
            store.close()


@pytest.fixture
def bank(tmp_path: Path) -> Bank:
    return Bank(tmp_path)


def escqrs(
    *args: str, env: dict[str, str] | None = None, stdin: int | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``escqrs args...`` with ``stdin`` (no terminal by default), never raising on its exit."""
    return subprocess.run(
        [*COMMAND, *args],
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        capture_output=True,
        text=True,
        env=environment(env),
        cwd=ROOT,
        timeout=90,
        check=False,
    )


def failed(result: subprocess.CompletedProcess[str]) -> str:
    """The one-line error of a run that must have failed with exit code 1."""
    assert result.returncode == 1, (
        f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stderr.strip()


def wait_until(condition: str, check: Callable[[], bool], timeout: float = 45.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {condition}"
        time.sleep(0.1)


@pytest.fixture
def background() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``escqrs args...`` in the background (no terminal on stdin); killed if a test leaves it."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [*COMMAND, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment(env),
            cwd=ROOT,
        )
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


def test_list_shows_each_kind_and_what_it_handles() -> None:
    listed = json.loads(ok(escqrs("projections", "list", "--app", APP, "--json")))
    assert [(item["name"], item["kind"]) for item in listed] == [
        *((name, "projection") for name in PROJECTIONS),
        ("transfers", "process manager"),
        ("welcome_bonus", "reactor"),
    ]
    transfers, bonus = listed[3], listed[4]
    assert transfers["category"] == "Transfer"
    assert {"TransferRequested", "MoneyWithdrawn", "MoneyDeposited"} <= set(transfers["event_types"])
    assert (bonus["event_types"], bonus["failure_policy"]) == (["AccountOpened"], "stop")

    table = ok(escqrs("projections", "list", "--app", APP))
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if line.startswith("│")}
    assert "│ process manager │" in rows["transfers"]
    assert "streams Transfer-{id}" in rows["transfers"]
    assert "│ reactor " in rows["welcome_bonus"]
    assert "│ projection " in rows["account_list"]


def test_status_shows_reactors_beside_projections_with_their_kind(bank: Bank) -> None:
    ok(escqrs("projections", "run", "transfers", "--until-caught-up", env=bank.env))
    statuses = {
        row["name"]: row for row in json.loads(ok(escqrs("projections", "status", "--json", env=bank.env)))
    }
    assert list(statuses) == [*PROJECTIONS, "transfers", "welcome_bonus"]
    assert [statuses[name]["kind"] for name in statuses] == [
        *(["projection"] * 3),
        "process manager",
        "reactor",
    ]
    transfers = statuses["transfers"]
    assert (transfers["state"], transfers["lag_events"], transfers["parked"]) == ("stopped", 0, 0)
    assert transfers["checkpoint"] == transfers["head_position"]
    assert (statuses["welcome_bonus"]["state"], statuses["welcome_bonus"]["checkpoint"]) == ("new", None)

    table = ok(escqrs("projections", "status", "transfers", "welcome_bonus", env=bank.env))
    assert "Projections and reactors" in table
    assert "│ transfers     │ process manager │" in table
    assert "│ welcome_bonus │ reactor         │" in table


def test_run_from_the_beginning_carries_out_a_transfer_requested_before_and_stops_on_sigterm(
    bank: Bank, background: Callable[..., subprocess.Popen[str]]
) -> None:
    process = background(
        "projections", "run", "transfers", "account_list", "--from", "beginning", env=bank.env
    )
    wait_until("the earlier transfer is completed", lambda: "ProcessFinished" in bank.transfer_steps("t1"))
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 0, stderr
    assert "Running transfers, account_list. Press Ctrl-C to stop." in stderr
    assert "Stopped: every batch in flight was committed." in stderr
    assert "│ transfers    │ process manager │" in stdout
    assert "│ account_list │ projection      │" in stdout
    steps = bank.transfer_steps("t1")
    assert steps[0] == "TransferStarted"
    assert "TransferCompleted" in steps
    assert bank.balances() == (Decimal(70), Decimal(30))


def test_without_from_and_without_a_terminal_a_new_reactor_starts_from_now(bank: Bank) -> None:
    first = escqrs("projections", "run", "transfers", "--until-caught-up", env=bank.env)
    ok(first)
    assert "Process manager 'transfers' has never run" in first.stderr
    assert "starting it from now" in first.stderr
    assert "--from beginning" in first.stderr
    assert bank.transfer_steps("t1") == []  # history fired nothing
    assert bank.balances() == (Decimal(100), Decimal(0))

    bank.transfer("t2", 20)
    again = escqrs(
        "projections", "run", "transfers", "--from", "beginning", "--until-caught-up", env=bank.env
    )
    ok(again)
    assert "--from beginning is ignored for process manager 'transfers': it has a checkpoint" in again.stderr
    assert "'escqrs projections drop transfers'" in again.stderr
    assert "never run" not in again.stderr
    assert "TransferCompleted" in bank.transfer_steps("t2")  # what came after its start is reacted to
    assert bank.transfer_steps("t1") == []
    assert bank.balances() == (Decimal(80), Decimal(20))


def test_a_new_reactor_on_a_terminal_asks_where_to_start(bank: Bank) -> None:
    controller, terminal = os.openpty()
    try:
        os.write(controller, b"beginning\n")
        answered = escqrs(
            "projections", "run", "transfers", "--until-caught-up", env=bank.env, stdin=terminal
        )
    finally:
        os.close(terminal)
        os.close(controller)
    ok(answered)
    assert "Where should it start?" in answered.stderr
    assert "beginning  react to the whole history" in answered.stderr
    assert "each still applies once" in answered.stderr
    assert "Start transfers from [now]:" in answered.stderr
    assert "TransferCompleted" in bank.transfer_steps("t1")
    assert bank.balances() == (Decimal(70), Decimal(30))


def test_rebuild_of_a_reactor_is_refused_and_says_what_to_do_instead(bank: Bank) -> None:
    ok(escqrs("projections", "run", "transfers", "--until-caught-up", env=bank.env))
    (before,) = json.loads(ok(escqrs("projections", "status", "transfers", "--json", env=bank.env)))

    error = failed(escqrs("projections", "rebuild", "transfers", env=bank.env))
    assert error == (
        "error: Process manager 'transfers' is not rebuilt: it has no read model, and rebuilding would fire "
        "the effects of its history again. To react to its history from the beginning (each effect still "
        "applies once): 'escqrs projections drop transfers', then 'escqrs projections run transfers --from "
        "beginning'."
    )
    assert "is not rebuilt" in failed(escqrs("projections", "rebuild", "welcome_bonus", env=bank.env))
    assert bank.transfer_steps("t1") == []
    (after,) = json.loads(ok(escqrs("projections", "status", "transfers", "--json", env=bank.env)))
    assert (after["generation"], after["checkpoint"]) == (before["generation"], before["checkpoint"])


def test_drop_then_run_from_the_beginning_reacts_to_the_history(bank: Bank) -> None:
    ok(escqrs("projections", "run", "transfers", "--until-caught-up", env=bank.env))
    assert bank.transfer_steps("t1") == []

    declined = escqrs("projections", "drop", "transfers", env=bank.env)
    assert declined.returncode == 1  # no terminal to confirm on: nothing dropped
    assert "Drop the checkpoint and parked events of process manager 'transfers'?" in declined.stderr
    (status,) = json.loads(ok(escqrs("projections", "status", "transfers", "--json", env=bank.env)))
    assert status["state"] == "stopped"

    dropped = ok(escqrs("projections", "drop", "transfers", "--yes", env=bank.env))
    assert "Dropped the checkpoint and parked events of transfers" in dropped
    assert "--from beginning" in dropped
    (status,) = json.loads(ok(escqrs("projections", "status", "transfers", "--json", env=bank.env)))
    assert (status["state"], status["checkpoint"]) == ("new", None)

    ok(escqrs("projections", "run", "transfers", "--from", "beginning", "--until-caught-up", env=bank.env))
    assert "TransferCompleted" in bank.transfer_steps("t1")
    assert bank.balances() == (Decimal(70), Decimal(30))

    # Dropped and run from the beginning once more: every effect is already applied, none again.
    ok(escqrs("projections", "drop", "transfers", "--yes", env=bank.env))
    steps = bank.transfer_steps("t1")
    ok(escqrs("projections", "run", "transfers", "--from", "beginning", "--until-caught-up", env=bank.env))
    assert bank.transfer_steps("t1") == steps
    assert bank.balances() == (Decimal(70), Decimal(30))


def test_parked_shows_and_retry_reacts_to_a_parked_event_of_a_process_manager(bank: Bank) -> None:
    ok(escqrs("projections", "run", "transfers", "--until-caught-up", env=bank.env))
    # Park the transfer's request as a failing reaction would have (the runner's own store calls).
    views = connect_read_models(bank.read_models)
    events = connect(bank.store)
    try:
        (request,) = events.read_all(filter=EventFilter.for_event_types(["TransferRequested"]))
        live = views.describe("transfers").live
        assert live is not None
        lease = views.lease("transfers", LeaseRole.RUN)
        assert lease.try_acquire()
        with views.transaction("transfers", live.number, lease=lease) as transaction:
            transaction.park(request, "RuntimeError: the bank was closed for lunch", 3)
        lease.release()
    finally:
        events.close()
        views.close()

    (parked,) = json.loads(ok(escqrs("projections", "parked", "--json", env=bank.env)))
    assert (parked["projection"], parked["kind"], parked["type"]) == (
        "transfers",
        "process manager",
        "TransferRequested",
    )
    assert parked["position"] == bank.position_of("TransferRequested")
    table = ok(escqrs("projections", "parked", "transfers", env=bank.env))
    assert "process manager" in table
    assert "closed for lunch" in table

    retried = json.loads(ok(escqrs("projections", "retry", "transfers", "--json", env=bank.env)))
    assert (retried["retried"], retried["still_parked"]) == ([parked["position"]], [])
    assert bank.transfer_steps("t1")[0] == "TransferStarted"  # the retry reacted: the transfer began
    ok(escqrs("projections", "run", "transfers", "--until-caught-up", env=bank.env))
    assert "TransferCompleted" in bank.transfer_steps("t1")
    assert bank.balances() == (Decimal(70), Decimal(30))


@pytest.mark.parametrize("command", [["status"], ["run"], ["parked"], ["retry"], ["rebuild"]])
def test_an_unknown_name_is_refused_listing_projections_and_reactors(bank: Bank, command: list[str]) -> None:
    error = failed(escqrs("projections", *command, "transfer", env=bank.env))
    assert error == (
        "error: No projection, reactor or process manager called 'transfer': application 'bank' has "
        "projections: account_list, account_detail, daily_transactions; reactors and process managers: "
        "transfers (process manager), welcome_bonus (reactor)."
    )


def test_help_of_run_explains_where_a_new_reactor_starts() -> None:
    helped = ok(escqrs("projections", "run", "--help"))
    assert "--from" in helped
    assert "escqrs projections run transfers --from beginning" in helped
    assert "never run" in helped


def test_new_reactors_started_from_now_on_a_demo_store_fire_nothing(backend: Backend, tmp_path: Path) -> None:
    # The demo's store on SQLite and on EventStoreDB, with a fresh read model store: the reactors
    # have never run there, so 'now' puts them at the head without reacting to anything.
    env = {**backend.env(), "ESCQRS_READ_MODELS": f"sqlite:///{tmp_path / 'views.db'}", "ESCQRS_APP": APP}
    connect_read_models(env["ESCQRS_READ_MODELS"]).close()  # an empty read model store
    names = ["transfers", "welcome_bonus"]
    before = {
        row["name"]: row for row in json.loads(ok(escqrs("projections", "status", *names, "--json", env=env)))
    }
    assert [(row["kind"], row["state"], row["checkpoint"]) for row in before.values()] == [
        ("process manager", "new", None),
        ("reactor", "new", None),
    ]
    assert before["welcome_bonus"]["lag_events"] > 0  # the demo opened accounts: history it could react to

    ok(escqrs("projections", "run", *names, "--from", "now", "--until-caught-up", env=env))
    after = json.loads(ok(escqrs("projections", "status", *names, "--json", env=env)))
    assert [(row["lag_events"], row["parked"]) for row in after] == [(0, 0), (0, 0)]
    assert [row["head_position"] for row in after] == [row["head_position"] for row in before.values()]
