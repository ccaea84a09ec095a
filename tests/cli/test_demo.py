"""``escqrs demo``: the bank end to end, on a fresh temporary store unless one is named."""

from __future__ import annotations

from pathlib import Path

from cli._helpers import escqrs, ok
from eventsourcing_cqrs.event_store import connect
from eventsourcing_cqrs.event_store.port import EventFilter


def test_demo_runs_the_bank_end_to_end_on_a_temporary_store_and_leaves_nothing_behind(tmp_path: Path) -> None:
    out = ok(escqrs("demo", cwd=tmp_path))

    assert "(temporary)" in out
    for section in ("1. Commands", "2. Projections", "3. Queries", "4. The audit trail of Account-ada"):
        assert section in out
    assert "OpenAccount(account_id=ada, owner=Ada Lovelace) by teller-1 → Account-ada v0" in out
    assert "refused — Account 'ada' holds 905.00" in out
    assert "delivered again: nothing written" in out
    assert "account_list blue/green: generation 2 is live" in out
    assert "in 1205.00, out 300.00, 3 movements, balance 905.00" in out  # from the read models
    assert "└ MoneyDeposited" in out  # the trace shows the reactor's deposit one level down
    assert "reactor:welcome_bonus" in out
    assert "5. Transfers are a process manager" in out
    assert "│ completed   │" in out
    assert "compensated │ Account 'grace' is closed." in out
    assert "└ ProcessCommandRefused" in out  # the saga's chain, from the request to the refund
    assert list(tmp_path.iterdir()) == []


def test_demo_on_a_named_store_can_be_run_again(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'bank.db'}"
    views = f"sqlite:///{tmp_path / 'views.db'}"
    ok(escqrs("demo", "--store", store, "--read-models", views))
    again = ok(escqrs("demo", env={"ESCQRS_STORE": store, "ESCQRS_READ_MODELS": views}))

    assert "(temporary)" not in again
    opened = connect(store)
    try:
        names = {e.stream for e in opened.read_all(filter=EventFilter.for_event_types(["AccountOpened"]))}
    finally:
        opened.close()
    assert len(names) == 8
    assert {"Account-ada", "Account-grace", "Account-alan", "Account-lin"} < names
