"""``escqrs projections`` on a segmented projection: workers, per-segment status, ordered parking.

The test application ``cli._app:segmented`` has one projection, ``cli_segmented_balances``, in
four segments. Each test has a fresh read model store; the event store is the backend's shared
one (the bank demo's), which the tests only read.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cli._app import SEGMENTED, SegmentedBalances
from cli._helpers import Backend, escqrs, ok, start_escqrs
from eventsourcing_cqrs.event_store import connect
from projections import segment_of
from projections.read_model_store import connect as connect_read_models
from projections.read_model_store.port import MAX_SEGMENTS, LeaseRole, ProjectionState

APP = "cli._app:segmented"
SEGMENTS = SegmentedBalances.segments


def settings(backend: Backend, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "ESCQRS_STORE": backend.store,
        "ESCQRS_READ_MODELS": f"sqlite:///{tmp_path / 'views.db'}",
        "ESCQRS_APP": APP,
        **extra,
    }


def expected_balances(backend: Backend) -> dict[str, str]:
    """What the projection must hold: each account's balance after its last movement."""
    store = connect(backend.store)
    try:
        balances: dict[str, str] = {}
        for recorded in store.read_all(filter=SegmentedBalances().event_filter()):
            data = json.loads(recorded.data)
            balances[data["account_id"]] = data.get("balance", balances.get(data["account_id"], "0"))
        return balances
    finally:
        store.close()


def handled_events(backend: Backend) -> int:
    store = connect(backend.store)
    try:
        return sum(1 for _ in store.read_all(filter=SegmentedBalances().event_filter()))
    finally:
        store.close()


def assert_balances(read_models: str, expected: dict[str, str]) -> None:
    """The live read model holds exactly the ``expected`` balances (account id to balance)."""
    views = connect_read_models(read_models)
    try:
        with views.read(SEGMENTED) as view:
            table = view.table("balances")
            found = {account: (table.get(account) or {}).get("balance") for account in expected}
            assert (found, table.count()) == (expected, len(expected))
    finally:
        views.close()


def wait_until(condition: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {condition}"
        time.sleep(0.05)


def worker_pids(stderr: str) -> set[int]:
    """The worker processes ``run --workers`` says it started."""
    found = re.search(r"pids ([\d, ]+)\.", stderr)
    assert found is not None, stderr
    return {int(pid) for pid in found.group(1).split(", ")}


def test_two_workers_catch_up_a_segmented_projection_and_status_shows_its_segments(
    backend: Backend, tmp_path: Path
) -> None:
    env = settings(backend, tmp_path)

    run = escqrs("projections", "run", SEGMENTED, "--workers", "2", "--until-caught-up", env=env)

    table = ok(run)
    pids = worker_pids(run.stderr)
    assert len(pids) == 2
    assert_balances(env["ESCQRS_READ_MODELS"], expected_balances(backend))
    (status,) = json.loads(ok(escqrs("projections", "status", "--json", env=env)))
    assert (status["lag_events"], status["parked"], status["workers"], status["running"]) == (0, 0, 0, False)
    assert [segment["segment"] for segment in status["segments"]] == list(range(SEGMENTS))
    assert sum(segment["events_applied"] for segment in status["segments"]) == handled_events(backend)
    assert all(segment["lag_events"] == 0 and not segment["running"] for segment in status["segments"])
    # Every segment was run by one of the two workers the command started, not by itself.
    owners = {int(segment["owner"].rsplit(":", 1)[1]) for segment in status["segments"]}
    assert owners <= pids
    assert status["checkpoint"] == min(segment["checkpoint"] for segment in status["segments"])
    assert f"Segments of {SEGMENTED} (0 workers running)" in table
    shown = ok(escqrs("projections", "status", env=env))
    assert f"{SEGMENTS} segments, 0 workers" in shown
    for segment in status["segments"]:
        owner = re.escape(segment["owner"])
        row = rf"│\s+{segment['segment']} │ {owner}\s+│ no\s+│\s+{segment['checkpoint']} │"
        assert re.search(row, shown), shown


def test_workers_retry_a_parked_key_in_order_and_stop_gracefully_on_sigterm(
    backend: Backend, tmp_path: Path
) -> None:
    if backend.name != "sqlite":
        pytest.skip("supervising the workers is the command's business, the same on every event store")
    marker = tmp_path / "poison"
    marker.touch()
    ada = backend.ada.removeprefix("Account-")
    env = settings(backend, tmp_path, CLI_POISON_MARKER=str(marker), CLI_POISON_ACCOUNT=ada)
    views = connect_read_models(env["ESCQRS_READ_MODELS"])
    process = start_escqrs("projections", "run", SEGMENTED, "--workers", "2", env=env)
    try:
        assert process.stderr is not None
        banner = ""
        while "pids" not in banner:  # the workers' own messages may come first
            line = process.stderr.readline()
            assert line, "the command ended before starting its workers"
            banner += line
        pids = worker_pids(banner)

        def both_workers_caught_up() -> bool:
            if len(views.leases_held(SEGMENTED, LeaseRole.WORKER, MAX_SEGMENTS)) != 2:
                return False
            live = views.describe(SEGMENTED).live
            parked = views.parked_events(SEGMENTED)
            return live is not None and live.events_applied + len(parked) == handled_events(backend)

        wait_until("both workers run and have caught up", both_workers_caught_up)
        parked = json.loads(ok(escqrs("projections", "parked", SEGMENTED, "--json", env=env)))
        assert {event["key"] for event in parked} == {backend.ada}
        assert {event["segment"] for event in parked} == {segment_of(backend.ada, SEGMENTS)}
        assert [event["held_back"] for event in parked] == [False] + [True] * (len(parked) - 1)
        assert len(parked) > 1  # Ada's deposits wait behind her opening

        marker.unlink()
        # A worker holds the segment: the command asks, the worker replays the key in order.
        retried = json.loads(
            ok(escqrs("projections", "retry", SEGMENTED, "--key", backend.ada, "--json", env=env))
        )
        assert retried["retried"] == [event["position"] for event in parked]
        assert retried["still_parked"] == []
        assert_balances(env["ESCQRS_READ_MODELS"], expected_balances(backend))

        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    except BaseException:
        process.kill()
        process.communicate()
        raise
    finally:
        views.close()
    assert process.returncode == 0, stderr
    assert "Stopped: every worker committed its batches in flight and stopped." in stderr
    assert f"Segments of {SEGMENTED}" in stdout
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} is still there"
    views = connect_read_models(env["ESCQRS_READ_MODELS"])
    try:
        assert views.leases_held(SEGMENTED, LeaseRole.WORKER, MAX_SEGMENTS) == set()
        assert views.leases_held(SEGMENTED, LeaseRole.RUN, SEGMENTS) == set()
        # Recorded by the last worker to stop gracefully (a killed one leaves "live" behind).
        assert views.describe(SEGMENTED).state is ProjectionState.STOPPED
    finally:
        views.close()


def test_a_worker_that_fails_stops_the_others_and_the_command_exits_1_naming_the_event(
    backend: Backend, tmp_path: Path
) -> None:
    if backend.name != "sqlite":
        pytest.skip("supervising the workers is the command's business, the same on every event store")
    marker = tmp_path / "poison"
    marker.touch()
    ada = backend.ada.removeprefix("Account-")
    env = settings(
        backend,
        tmp_path,
        CLI_POISON_MARKER=str(marker),
        CLI_POISON_ACCOUNT=ada,
        ESCQRS_APP="cli._app:segmented_stopping",
    )

    run = escqrs("projections", "run", SEGMENTED, "--workers", "2", env=env)

    assert run.returncode == 1, run.stderr
    pids = worker_pids(run.stderr)
    assert len(pids) == 2
    # The worker holding the poisoned account's segment fails; the other may take that segment
    # over and fail on the same event before the command stops it.
    assert re.search(
        r"[12] of the 2 workers of 'cli_segmented_balances' failed \(pid \d+ exited with 1", run.stderr
    )
    assert "exited with -" not in run.stderr  # a worker the command stopped did not fail
    assert f"stream 'Account-{ada}'" in run.stderr  # the worker's own error, naming the event
    for pid in pids:  # every worker is gone, the healthy one stopped by the command
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    views = connect_read_models(env["ESCQRS_READ_MODELS"])
    try:
        record = views.describe(SEGMENTED)
        assert record.state is ProjectionState.FAILED
        assert record.last_error is not None
        assert f"Account-{ada}" in record.last_error
        assert not views.leases_held(SEGMENTED, LeaseRole.RUN, SEGMENTS)
        assert not views.leases_held(SEGMENTED, LeaseRole.WORKER, MAX_SEGMENTS)
    finally:
        views.close()


def test_parked_groups_by_key_and_retry_refuses_an_unknown_key_then_applies_a_known_one(
    backend: Backend, tmp_path: Path
) -> None:
    marker = tmp_path / "poison"
    marker.touch()
    ada = backend.ada.removeprefix("Account-")
    env = settings(backend, tmp_path, CLI_POISON_MARKER=str(marker), CLI_POISON_ACCOUNT=ada)
    ok(escqrs("projections", "run", "--until-caught-up", env=env))

    parked = json.loads(ok(escqrs("projections", "parked", "--json", env=env)))
    first, *behind = parked
    segment = segment_of(backend.ada, SEGMENTS)
    assert (first["type"], first["held_back"], first["attempts"], first["segment"]) == (
        "AccountOpened",
        False,
        1,
        segment,
    )
    assert behind
    assert all(event["held_back"] and event["attempts"] == 0 for event in behind)
    assert {event["key"] for event in parked} == {backend.ada}
    (status,) = json.loads(ok(escqrs("projections", "status", "--json", env=env)))
    assert [s["parked"] for s in status["segments"]] == [
        len(parked) if s == segment else 0 for s in range(SEGMENTS)
    ]
    table = ok(escqrs("projections", "parked", env=env))
    assert f"{len(parked)} parked events in 1 key" in table
    assert "segment" in table
    positions = ", ".join(str(event["position"]) for event in behind)
    assert f"{len(behind)} (positions {positions})" in table

    marker.unlink()
    refused = escqrs("projections", "retry", SEGMENTED, "--key", "Account-nobody", env=env)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"error: Nothing was retried for '{SEGMENTED}': no parked event of key 'Account-nobody' "
        f"(parked keys: '{backend.ada}'); see 'escqrs projections parked {SEGMENTED}'."
    )
    assert json.loads(ok(escqrs("projections", "parked", "--json", env=env))) == parked

    retried = escqrs("projections", "retry", SEGMENTED, "--key", backend.ada, env=env)
    assert ok(retried).strip() == (
        f"Applied {len(parked)} parked event(s) of {SEGMENTED} (1 key retried); 0 still parked."
    )
    assert json.loads(ok(escqrs("projections", "parked", "--json", env=env))) == []
    assert_balances(env["ESCQRS_READ_MODELS"], expected_balances(backend))


def test_workers_are_refused_for_an_unsegmented_projection_and_below_one(tmp_path: Path) -> None:
    env = {
        "ESCQRS_STORE": f"sqlite:///{tmp_path / 'events.db'}",
        "ESCQRS_READ_MODELS": f"sqlite:///{tmp_path / 'views.db'}",
        "ESCQRS_APP": "cli._app:app",
    }
    refused = escqrs("projections", "run", "cli_balances", "--workers", "2", env=env)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        "error: --workers 2 is refused for projection 'cli_balances': it is not segmented, so one "
        "runner at a time holds its lease and the other workers would only wait for it. Run it "
        "without --workers, or give the projection 'segments = N' (N > 1) to share its events out."
    )
    assert not (tmp_path / "views.db").exists()  # refused before anything was opened

    below = escqrs("projections", "run", SEGMENTED, "--workers", "0", env={**env, "ESCQRS_APP": APP})
    assert below.returncode == 2
    assert "--workers" in below.stderr

    helped = ok(escqrs("projections", "run", "--help"))
    assert "--workers" in helped
    assert "worker processes" in helped


def test_rebuild_of_a_segmented_projection_shows_the_total_and_each_segment(
    backend: Backend, tmp_path: Path
) -> None:
    env = settings(backend, tmp_path)
    ok(escqrs("projections", "run", "--until-caught-up", env=env))

    rebuilt = escqrs("projections", "rebuild", SEGMENTED, "--json", env=env)

    report = json.loads(ok(rebuilt))
    assert (report["generation"], report["switched"], report["segments"]) == (2, True, SEGMENTS)
    assert report["events"] == handled_events(backend)
    # Not a terminal: the progress is printed once, at the end, not redrawn.
    assert rebuilt.stderr.count(f"rebuild {SEGMENTED}") == 1, rebuilt.stderr
    assert f"{SEGMENTS}/{SEGMENTS} segments built" in rebuilt.stderr
    for segment in range(SEGMENTS):
        assert re.search(rf"segment {segment} .* built", rebuilt.stderr), rebuilt.stderr
    assert "\x1b[" not in rebuilt.stderr  # no cursor movement
    assert_balances(env["ESCQRS_READ_MODELS"], expected_balances(backend))
