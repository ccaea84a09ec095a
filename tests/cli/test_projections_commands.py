"""``escqrs projections list | status | run | rebuild | parked | retry | drop`` on SQLite and EventStoreDB.

The tests use the test application ``cli._app:app`` (a projection that can be made to fail or
to go slowly) and a fresh read model store each; the event store is the backend's shared one.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from cli._app import BALANCES, Balances
from cli._helpers import COMMAND, Backend, environment, escqrs, ok, start_escqrs
from escqrs.examples.bank import handlers
from escqrs.examples.bank.commands import Deposit, OpenAccount
from eventsourcing_cqrs.bus import CommandBus
from eventsourcing_cqrs.event_store import connect
from projections.read_model_store import connect as connect_read_models
from projections.read_model_store.port import LeaseRole

APP = "cli._app:app"


@pytest.fixture(scope="module")
def poisoned(backend: Backend) -> Backend:
    """The backend's store with one more account, whose opening the projection can fail on."""
    store = connect(backend.store)
    try:
        bus = CommandBus()
        handlers.register(bus, handlers.account_repository(store))
        poison = f"poison-{uuid.uuid4().hex[:8]}"
        bus.dispatch(OpenAccount(account_id=poison, owner="Poison"))
        bus.dispatch(Deposit(account_id=poison, amount=Decimal("10.00")))
    finally:
        store.close()
    return backend


def settings(backend: Backend, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "ESCQRS_STORE": backend.store,
        "ESCQRS_READ_MODELS": f"sqlite:///{tmp_path / 'views.db'}",
        "ESCQRS_APP": APP,
        **extra,
    }


def handled_events(backend: Backend) -> int:
    store = connect(backend.store)
    try:
        return sum(1 for _ in store.read_all(filter=Balances().event_filter()))
    finally:
        store.close()


def wait_until(condition: str, check: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting until {condition}"
        time.sleep(0.05)


def test_list_names_each_projection_with_its_event_types() -> None:
    (listed,) = json.loads(ok(escqrs("projections", "list", "--app", APP, "--json")))
    assert (listed["name"], listed["version"]) == (BALANCES, 1)
    assert listed["event_types"] == ["AccountOpened", "MoneyDeposited", "MoneyWithdrawn"]
    table = ok(escqrs("projections", "list", "--app", APP))
    assert BALANCES in table
    assert "park" in table


def test_status_shows_the_bank_projections_the_demo_ran(backend: Backend) -> None:
    statuses = json.loads(ok(escqrs("projections", "status", "--json", env=backend.env())))
    projected = [s for s in statuses if s["kind"] == "projection"]
    assert [s["name"] for s in projected] == ["account_list", "account_detail", "daily_transactions"]
    assert all(s["lag_events"] == 0 and s["parked"] == 0 for s in projected)
    assert projected[0]["generation"] == 2  # the demo rebuilt account_list once
    reactions = {s["name"]: s["kind"] for s in statuses if s["kind"] != "projection"}
    assert reactions == {"transfers": "process manager", "welcome_bonus": "reactor"}


def test_run_parks_a_failing_event_status_and_parked_show_it_and_retry_applies_it(
    poisoned: Backend, tmp_path: Path
) -> None:
    marker = tmp_path / "poison"
    marker.touch()
    env = settings(poisoned, tmp_path, CLI_POISON_MARKER=str(marker))

    run = escqrs("projections", "run", "--until-caught-up", env=env)
    assert "Catching up cli_balances" in run.stderr
    assert BALANCES in ok(run)

    # Parking is ordered: the deposit after the failed opening is held back behind it.
    (status,) = json.loads(ok(escqrs("projections", "status", "--json", env=env)))
    assert (status["parked"], status["lag_events"], status["running"]) == (2, 0, False)
    assert status["checkpoint"] == status["head_position"]
    assert (status["segments"], status["workers"]) == ([], 0)

    failed, held = json.loads(ok(escqrs("projections", "parked", "--json", env=env)))
    assert (failed["type"], failed["held_back"], failed["attempts"]) == ("AccountOpened", False, 1)
    assert "poisoned" in failed["error"]
    assert (held["type"], held["held_back"], held["attempts"]) == ("MoneyDeposited", True, 0)
    assert failed["key"] == held["key"] == failed["stream"] == held["stream"]
    assert failed["segment"] is held["segment"] is None
    assert held["position"] > failed["position"]
    assert f"held back: an earlier event of {failed['key']!r} is parked" in held["error"]

    table = ok(escqrs("projections", "parked", env=env))
    assert "2 parked events in 1 key" in table
    assert f"1 (position {held['position']})" in table  # the held-back column of the key's row
    assert "MoneyDeposited" not in table  # one row per key: the failing event's

    marker.unlink()
    # One position retries its whole key, in order: the opening, then the deposit.
    retried = json.loads(
        ok(escqrs("projections", "retry", BALANCES, "--position", str(failed["position"]), "--json", env=env))
    )
    assert (retried["retried"], retried["still_parked"]) == ([failed["position"], held["position"]], [])
    assert (retried["count"], retried["keys"]) == (2, [failed["key"]])
    assert json.loads(ok(escqrs("projections", "parked", "--json", env=env))) == []
    views = connect_read_models(env["ESCQRS_READ_MODELS"])
    try:
        with views.read(BALANCES) as view:
            balance = view.table("balances").get(failed["stream"].removeprefix("Account-"))
    finally:
        views.close()
    assert balance is not None
    assert (balance["owner"], balance["balance"]) == ("Poison", "10.00")


def test_retry_without_parked_events_says_so_and_succeeds(poisoned: Backend, tmp_path: Path) -> None:
    if poisoned.name != "sqlite":
        pytest.skip("the answer comes from the read model store, whatever the event store")
    env = settings(poisoned, tmp_path)
    ok(escqrs("projections", "run", "--until-caught-up", env=env))
    result = escqrs("projections", "retry", BALANCES, env=env)
    assert ok(result).strip() == f"Nothing parked for {BALANCES}."
    assert result.stderr == ""
    answer = json.loads(ok(escqrs("projections", "retry", BALANCES, "--json", env=env)))
    assert (answer["projection"], answer["count"], answer["retried"]) == (BALANCES, 0, [])


def test_drop_forgets_a_read_model_so_the_next_run_rebuilds_it(poisoned: Backend, tmp_path: Path) -> None:
    if poisoned.name != "sqlite":
        pytest.skip("dropping is the read model store's business, whatever the event store")
    env = settings(poisoned, tmp_path)
    ok(escqrs("projections", "run", "--until-caught-up", env=env))
    ok(escqrs("projections", "rebuild", BALANCES, env=env))
    (status,) = json.loads(ok(escqrs("projections", "status", "--json", env=env)))
    assert status["generation"] == 2

    declined = subprocess.run(
        [*COMMAND, "projections", "drop", BALANCES],
        input="n\n",
        capture_output=True,
        text=True,
        env=environment(env),
        timeout=60,
        check=False,
    )
    assert declined.returncode == 1, declined.stderr
    assert f"Nothing was dropped for '{BALANCES}'." in declined.stderr
    (status,) = json.loads(ok(escqrs("projections", "status", "--json", env=env)))
    assert status["generation"] == 2

    views = connect_read_models(env["ESCQRS_READ_MODELS"])
    try:
        lease = views.lease(BALANCES, LeaseRole.RUN)
        assert lease.try_acquire()
        refused = escqrs("projections", "drop", BALANCES, "--yes", env=env)
        lease.release()
    finally:
        views.close()
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"error: Projection '{BALANCES}' is in use: a runner holds its run lease; stop it first."
    )

    dropped = json.loads(ok(escqrs("projections", "drop", BALANCES, "--yes", "--json", env=env)))
    assert dropped == {"projection": BALANCES, "dropped": True}
    (status,) = json.loads(ok(escqrs("projections", "status", "--json", env=env)))
    assert (status["generation"], status["checkpoint"], status["state"]) == (None, None, "new")
    assert "Nothing to drop" in ok(escqrs("projections", "drop", BALANCES, "--yes", env=env))

    ok(escqrs("projections", "run", "--until-caught-up", env=env))
    (status,) = json.loads(ok(escqrs("projections", "status", "--json", env=env)))
    assert (status["generation"], status["lag_events"]) == (1, 0)

    helped = ok(escqrs("projections", "drop", "--help"))
    assert "--yes" in helped
    assert "escqrs projections drop account_list" in helped


def test_rebuild_builds_a_new_generation_beside_the_live_one_and_switches(
    poisoned: Backend, tmp_path: Path
) -> None:
    env = settings(poisoned, tmp_path)
    ok(escqrs("projections", "run", "--until-caught-up", env=env))

    rebuilt = escqrs("projections", "rebuild", BALANCES, "--json", env=env)
    report = json.loads(ok(rebuilt))

    assert (report["generation"], report["switched"], report["resumed"]) == (2, True, False)
    assert report["events"] == handled_events(poisoned)
    assert "events/s" in rebuilt.stderr  # the progress bar's rate column
    (status,) = json.loads(ok(escqrs("projections", "status", "--json", env=env)))
    assert (status["generation"], status["lag_events"]) == (2, 0)


def test_run_in_the_foreground_stops_gracefully_on_ctrl_c(poisoned: Backend, tmp_path: Path) -> None:
    env = settings(poisoned, tmp_path)
    views = connect_read_models(env["ESCQRS_READ_MODELS"])
    process = start_escqrs("projections", "run", env=env)
    try:

        def caught_up() -> bool:
            live = views.describe(BALANCES).live
            return live is not None and live.events_applied == handled_events(poisoned)

        wait_until("the runner has caught up", caught_up)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        views.close()
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr
    assert "Press Ctrl-C to stop" in stderr
    assert "Stopped: every batch in flight was committed." in stderr
    assert BALANCES in stdout
    assert "0 events" in stdout  # the status table: no lag


def test_an_interrupted_rebuild_resumes_where_it_stopped(poisoned: Backend, tmp_path: Path) -> None:
    if poisoned.name != "sqlite":
        pytest.skip("interrupting is the command's business, the same on every event store")
    env = settings(poisoned, tmp_path)
    total = handled_events(poisoned)
    views = connect_read_models(env["ESCQRS_READ_MODELS"])
    slow = {**env, "CLI_SLOW_SECONDS": "0.3"}
    process = start_escqrs("projections", "rebuild", BALANCES, "--batch-size", "1", env=slow)
    try:

        def started() -> bool:
            building = views.describe(BALANCES).building
            return building is not None and building.events_applied >= 1

        wait_until("the rebuild has committed a batch", started)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise
    finally:
        views.close()
    assert process.returncode == 1, stderr
    assert stderr.rstrip().endswith(
        "error: The rebuild of 'cli_balances' was interrupted; run the same command again to resume it."
    )

    report = json.loads(ok(escqrs("projections", "rebuild", BALANCES, "--json", env=env)))
    assert report["resumed"] is True
    assert 0 < report["events"] < total
