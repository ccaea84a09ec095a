"""``escqrs audit history | state | diff | export | trace`` on SQLite and EventStoreDB."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

from cli._helpers import Backend, escqrs, ok


def test_history_shows_revision_position_time_type_actor_and_correlation(backend: Backend) -> None:
    table = ok(escqrs("audit", "history", backend.ada, "--store", backend.store))
    for text in ("AccountOpened", "reactor:welcome_bonus", "payroll", "atm-17", backend.correlation_id):
        assert text in table

    entries = json.loads(ok(escqrs("audit", "history", backend.ada, "--json", env=backend.env())))
    assert [e["type"] for e in entries] == [
        "AccountOpened",
        "MoneyDeposited",
        "MoneyDeposited",
        "MoneyWithdrawn",
    ]
    assert [e["actor"] for e in entries] == ["teller-1", "reactor:welcome_bonus", "payroll", "atm-17"]
    assert entries[0]["correlation_id"] == entries[1]["correlation_id"] == backend.correlation_id
    assert entries[0]["position"] < entries[3]["position"]
    assert set(entries[0]) >= {"revision", "position", "recorded_at", "type", "actor", "correlation_id"}


def test_state_at_a_version_and_at_a_time(backend: Backend) -> None:
    at_one = json.loads(
        ok(escqrs("audit", "state", backend.ada, "--at-version", "1", "--json", env=backend.env()))
    )
    assert (at_one["version"], at_one["fields"]["balance"]) == (1, "5.00")

    history = json.loads(ok(escqrs("audit", "history", backend.ada, "--json", env=backend.env())))
    at_time = ok(
        escqrs("audit", "state", backend.ada, "--at-time", history[2]["recorded_at"], env=backend.env())
    )
    assert "at version 2" in at_time
    assert "1205.00" in at_time


def test_diff_names_changed_fields_and_the_events_that_changed_them(backend: Backend) -> None:
    diff = json.loads(ok(escqrs("audit", "diff", backend.ada, "--from", "1", "--json", env=backend.env())))
    assert (diff["from_version"], diff["to_version"]) == (1, 3)
    (change,) = diff["changes"]
    assert (change["field"], change["before"], change["after"]) == ("balance", "5.00", "905.00")
    assert [(e["revision"], e["type"]) for e in change["changed_by"]] == [
        (2, "MoneyDeposited"),
        (3, "MoneyWithdrawn"),
    ]

    table = ok(escqrs("audit", "diff", backend.grace, "--from", "0", "--to", "3", env=backend.env()))
    assert "r3 AccountClosed" in table


def test_export_of_a_stream_as_csv_to_a_file_and_of_all_as_jsonl_to_stdout(
    backend: Backend, tmp_path: Path
) -> None:
    target = tmp_path / "ada.csv"
    result = escqrs("audit", "export", backend.ada, "--format", "csv", "-o", str(target), env=backend.env())
    ok(result)
    assert "Exported 4 events" in result.stderr
    rows = list(csv.DictReader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert [row["type"] for row in rows] == [
        "AccountOpened",
        "MoneyDeposited",
        "MoneyDeposited",
        "MoneyWithdrawn",
    ]
    assert json.loads(rows[3]["data"])["balance"] == "905.00"

    lines = ok(escqrs("audit", "export", "--all", env=backend.env())).splitlines()
    exported = [json.loads(line) for line in lines]
    ours = [e for e in exported if e["stream"] in (backend.ada, backend.grace)]
    assert len(ours) == 8
    positions = [e["position"] for e in exported]
    assert positions == sorted(positions)


def test_trace_shows_the_opening_and_the_policy_deposit_it_caused(backend: Backend) -> None:
    steps = json.loads(ok(escqrs("audit", "trace", backend.correlation_id, "--json", env=backend.env())))
    assert [(s["type"], s["depth"]) for s in steps] == [("AccountOpened", 0), ("MoneyDeposited", 1)]
    assert steps[1]["actor"] == "reactor:welcome_bonus"

    table = ok(escqrs("audit", "trace", backend.correlation_id, env=backend.env()))
    assert "└ MoneyDeposited" in table


def test_a_read_only_command_given_the_read_model_file_refuses_it_and_writes_nothing(
    backend: Backend,
) -> None:
    if backend.name != "sqlite":
        return
    views = Path(backend.read_models.removeprefix("sqlite:///"))

    def tables() -> list[str]:
        with sqlite3.connect(f"file:{views}?mode=ro", uri=True) as reader:
            return [name for (name,) in reader.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]

    before = (tables(), views.stat().st_mtime_ns, views.stat().st_size)
    result = escqrs("audit", "history", backend.ada, "--store", backend.read_models)
    assert result.returncode != 0
    assert "is not an event store file: it holds tables" in result.stderr, result.stderr
    assert "read_models.db" in result.stderr
    assert (tables(), views.stat().st_mtime_ns, views.stat().st_size) == before
    assert not {"events", "streams"} & set(tables())


def test_state_at_a_time_before_the_stream_existed_names_its_first_event_time(backend: Backend) -> None:
    history = json.loads(ok(escqrs("audit", "history", backend.ada, "--json", env=backend.env())))
    result = escqrs(
        "audit", "state", backend.ada, "--at-time", "2001-01-01T00:00:00+00:00", env=backend.env()
    )
    assert result.returncode != 0
    message = " ".join(result.stderr.split())
    assert f"Stream '{backend.ada}' has no events at or before 2001-01-01T00:00:00+00:00" in message, message
    assert "its first event was recorded at" in message
    assert history[0]["recorded_at"][:19] in message
