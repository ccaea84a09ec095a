"""The audit-trail API on real stores: history, past states, diffs, exports, traces, stream lists."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from escqrs.examples.bank.account import Account
from escqrs.examples.bank.commands import Deposit, OpenAccount, Withdraw
from escqrs.examples.bank.events import registry
from eventsourcing_cqrs.audit import EXPORT_COLUMNS, AggregateSpec, AuditTrail
from eventsourcing_cqrs.bus import CommandBus, CommandResult
from eventsourcing_cqrs.errors import AggregateNotFoundError, InvalidInputError, StreamNotFoundError
from eventsourcing_cqrs.event_store import connect
from eventsourcing_cqrs.event_store.port import EventStore, NewEvent, StreamState
from eventsourcing_cqrs.repository import Repository

ACCOUNTS = (AggregateSpec(Account, registry, snapshot_every=3),)


def open_and_move(bus: CommandBus, account_id: str) -> list[CommandResult]:
    """Open the account and move money: versions 0..4, balance 0, 100, 70, 95, 45."""
    return [
        bus.dispatch(OpenAccount(account_id=account_id, owner="Ada"), actor="teller-1"),
        bus.dispatch(Deposit(account_id=account_id, amount=Decimal("100.00")), actor="payroll"),
        bus.dispatch(Withdraw(account_id=account_id, amount=Decimal("30.00")), actor="atm"),
        bus.dispatch(Deposit(account_id=account_id, amount=Decimal("25.00")), actor="teller-2"),
        bus.dispatch(Withdraw(account_id=account_id, amount=Decimal("50.00")), actor="atm"),
    ]


def test_history_lists_each_event_with_where_when_what_who_and_why(
    store: EventStore, bus: CommandBus, account_id: str
) -> None:
    results = open_and_move(bus, account_id)
    entries = list(AuditTrail(store).history(f"Account-{account_id}"))

    assert [e.revision for e in entries] == [0, 1, 2, 3, 4]
    assert [e.position for e in entries] == [r.position for r in results]
    assert [e.event_type for e in entries] == [
        "AccountOpened",
        "MoneyDeposited",
        "MoneyWithdrawn",
        "MoneyDeposited",
        "MoneyWithdrawn",
    ]
    assert [e.actor for e in entries] == ["teller-1", "payroll", "atm", "teller-2", "atm"]
    assert [e.correlation_id for e in entries] == [r.correlation_id for r in results]
    assert [e.command_id for e in entries] == [str(r.command_id) for r in results]
    times = [e.recorded_at for e in entries]
    assert times == sorted(times)
    assert all(t.tzinfo is not None for t in times)


def test_history_reads_backwards_from_a_revision_with_a_limit(
    store: EventStore, bus: CommandBus, account_id: str
) -> None:
    open_and_move(bus, account_id)
    entries = AuditTrail(store).history(f"Account-{account_id}", from_revision=3, backwards=True, limit=2)
    assert [e.revision for e in entries] == [3, 2]


def test_history_of_a_missing_stream_fails_at_the_call(store: EventStore) -> None:
    with pytest.raises(StreamNotFoundError, match="Account-nobody"):
        AuditTrail(store).history(f"Account-nobody-{uuid.uuid4().hex}")


def test_history_shows_events_whose_metadata_is_not_json_and_says_so(store: EventStore) -> None:
    stream = f"Legacy-{uuid.uuid4().hex}"
    store.append(
        stream,
        [NewEvent("Imported", b'{"n": 1}', metadata=b"not json"), NewEvent("Imported", b'{"n": 2}')],
        expected_version=StreamState.NO_STREAM,
    )
    first, second = AuditTrail(store).history(stream)
    assert first.metadata_error == "the metadata is not valid JSON"
    assert first.actor is None
    assert first.to_dict()["metadata_base64"] == "bm90IGpzb24="
    assert second.metadata_error is None
    assert second.data() == {"n": 2}


def test_state_at_a_version_is_the_aggregate_as_it_was_then(
    store: EventStore, bus: CommandBus, account_id: str
) -> None:
    open_and_move(bus, account_id)
    audit = AuditTrail(store, ACCOUNTS)
    stream = f"Account-{account_id}"

    then = audit.state(stream, at_version=2)
    now = audit.state(stream)

    assert (then.version, then.fields) == (2, {"owner": "Ada", "balance": "70.00", "closed": False})
    assert (now.version, now.fields["balance"]) == (4, "45.00")
    assert then.aggregate_type == "Account"
    assert then.aggregate_id == account_id
    history = list(audit.history(stream))
    assert then.recorded_at == history[2].recorded_at


def test_state_at_a_time_replays_the_events_recorded_by_then(
    store: EventStore, bus: CommandBus, account_id: str
) -> None:
    open_and_move(bus, account_id)
    audit = AuditTrail(store, ACCOUNTS)
    stream = f"Account-{account_id}"
    third = list(audit.history(stream))[2]

    state = audit.state(stream, at_time=third.recorded_at)

    assert (state.version, state.fields["balance"]) == (2, "70.00")
    opened_at = next(audit.history(stream)).recorded_at
    with pytest.raises(AggregateNotFoundError):
        audit.state(stream, at_time=opened_at - timedelta(seconds=1))


def test_state_before_the_stream_existed_says_when_its_first_event_was_recorded(
    store: EventStore, bus: CommandBus, account_id: str
) -> None:
    open_and_move(bus, account_id)
    audit = AuditTrail(store, ACCOUNTS)
    stream = f"Account-{account_id}"
    opened_at = next(audit.history(stream)).recorded_at
    before = opened_at - timedelta(seconds=1)
    with pytest.raises(AggregateNotFoundError) as caught:
        audit.state(stream, at_time=before)
    assert str(caught.value) == (
        f"Stream {stream!r} has no events at or before {before.isoformat()} "
        f"(its first event was recorded at {opened_at.isoformat()})."
    )
    assert "does not exist" not in str(caught.value)


def test_state_refuses_a_version_beyond_the_last_and_streams_of_unknown_aggregates(
    store: EventStore, bus: CommandBus, account_id: str
) -> None:
    open_and_move(bus, account_id)
    audit = AuditTrail(store, ACCOUNTS)
    with pytest.raises(InvalidInputError, match="only at version 4"):
        audit.state(f"Account-{account_id}", at_version=9)
    with pytest.raises(InvalidInputError, match="known categories: Account"):
        audit.state(f"Order-{account_id}")
    with pytest.raises(InvalidInputError, match="none was given"):
        AuditTrail(store).state(f"Account-{account_id}")


def test_diff_names_each_changed_field_and_the_events_that_changed_it(
    store: EventStore, bus: CommandBus, account_id: str
) -> None:
    open_and_move(bus, account_id)
    diff = AuditTrail(store, ACCOUNTS).diff(f"Account-{account_id}", 1, 4)

    assert (diff.before.version, diff.after.version) == (1, 4)
    assert [e.revision for e in diff.events] == [2, 3, 4]
    (balance,) = diff.changes
    assert (balance.field, balance.before, balance.after) == ("balance", "100.00", "45.00")
    assert [(e.revision, e.event_type) for e in balance.changed_by] == [
        (2, "MoneyWithdrawn"),
        (3, "MoneyDeposited"),
        (4, "MoneyWithdrawn"),
    ]
    assert diff.to_dict()["changes"][0]["changed_by"][0]["type"] == "MoneyWithdrawn"


def test_diff_from_the_opening_sees_the_owner_set_and_the_balance_move(
    store: EventStore, bus: CommandBus, accounts: Repository[Account], account_id: str
) -> None:
    open_and_move(bus, account_id)
    account = accounts.load(account_id)
    account.withdraw(Decimal("45.00"))
    account.close()
    accounts.save(account)

    diff = AuditTrail(store, ACCOUNTS).diff(f"Account-{account_id}", 4, 6)

    assert {c.field: (c.before, c.after) for c in diff.changes} == {
        "balance": ("45.00", "0.00"),
        "closed": (False, True),
    }
    assert diff.after.fields == {"owner": "Ada", "balance": "0.00", "closed": True}


def test_diff_of_a_version_with_itself_changes_nothing_and_bad_ranges_are_refused(
    store: EventStore, bus: CommandBus, account_id: str
) -> None:
    open_and_move(bus, account_id)
    audit = AuditTrail(store, ACCOUNTS)
    stream = f"Account-{account_id}"
    same = audit.diff(stream, 2, 2)
    assert (same.changes, same.events) == ((), ())
    with pytest.raises(InvalidInputError, match="must not be after"):
        audit.diff(stream, 3, 1)
    with pytest.raises(InvalidInputError, match="only at version 4"):
        audit.diff(stream, 1, 7)


def test_jsonl_export_of_a_stream_keeps_every_payload_and_metadata(
    store: EventStore, bus: CommandBus, account_id: str
) -> None:
    open_and_move(bus, account_id)
    stream = f"Account-{account_id}"
    out = io.StringIO()

    count = AuditTrail(store).export(out, stream=stream)

    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    stored = list(store.read_stream(stream))
    assert count == len(lines) == 5
    assert [line["data"] for line in lines] == [json.loads(e.data) for e in stored]
    assert [line["metadata"] for line in lines] == [json.loads(e.metadata) for e in stored]
    assert [line["id"] for line in lines] == [str(e.id) for e in stored]
    assert lines[1]["data"]["amount"] == "100.00"


def test_csv_export_of_all_has_a_header_and_one_row_per_event(
    store: EventStore, bus: CommandBus, account_id: str
) -> None:
    results = open_and_move(bus, account_id)
    first = results[0].position
    assert first is not None
    out = io.StringIO()

    count = AuditTrail(store).export(out, format="csv", from_position=first)

    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == list(EXPORT_COLUMNS)
    assert count == len(rows) - 1 >= 5  # the shared EventStoreDB may hold later events too
    ours = [row for row in rows[1:] if row[1] == f"Account-{account_id}"]
    assert [row[4] for row in ours][:2] == ["AccountOpened", "MoneyDeposited"]
    assert json.loads(ours[1][10]) == {
        "account_id": account_id,
        "amount": "100.00",
        "balance": "100.00",
        "transfer_id": None,
    }
    assert json.loads(ours[1][11])["actor"] == "payroll"


def test_export_of_a_payload_that_is_not_json_keeps_its_bytes(store: EventStore) -> None:
    stream = f"Blob-{uuid.uuid4().hex}"
    store.append(
        stream,
        [NewEvent("Blob", b"\x00\xff", content_type="application/octet-stream")],
        expected_version=StreamState.NO_STREAM,
    )
    out = io.StringIO()
    AuditTrail(store).export(out, stream=stream)
    (line,) = [json.loads(text) for text in out.getvalue().splitlines()]
    assert (line["data_base64"], line["content_type"]) == ("AP8=", "application/octet-stream")


def test_export_refuses_unknown_formats_and_all_only_options_for_a_stream(store: EventStore) -> None:
    audit = AuditTrail(store)
    with pytest.raises(InvalidInputError, match="jsonl"):
        audit.export(io.StringIO(), stream="Account-1", format="xml")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="apply to"):
        audit.export(io.StringIO(), stream="Account-1", from_position=1)


def test_trace_follows_one_correlation_across_streams_in_commit_order_with_depths(
    store: EventStore, bus: CommandBus, accounts: Repository[Account], account_id: str
) -> None:
    opened = bus.dispatch(OpenAccount(account_id=account_id, owner="Ada"), actor="teller")
    other = f"{account_id}-b"
    bus.dispatch(OpenAccount(account_id=other, owner="Bob"), actor="teller")  # another correlation
    opening = next(store.read_stream(f"Account-{account_id}"))
    bonus = bus.dispatch(Deposit(account_id=account_id, amount=Decimal(5)), caused_by=opening)
    first_deposit = next(store.read_stream(f"Account-{account_id}", from_revision=1))
    follow_up = bus.dispatch(Deposit(account_id=other, amount=Decimal(1)), caused_by=first_deposit)

    steps = list(AuditTrail(store).trace(opened.correlation_id))

    assert [(s.entry.stream, s.entry.revision, s.depth) for s in steps] == [
        (f"Account-{account_id}", 0, 0),
        (f"Account-{account_id}", 1, 1),
        (f"Account-{other}", 1, 2),
    ]
    assert [s.entry.position for s in steps] == [opened.position, bonus.position, follow_up.position]
    assert steps[2].to_dict()["depth"] == 2


def test_trace_matches_correlation_ids_that_json_escapes(store: EventStore, bus: CommandBus) -> None:
    account_id = uuid.uuid4().hex[:12]
    correlation = f'request "{account_id}" \\ é'
    bus.dispatch(OpenAccount(account_id=account_id, owner="Ada"), correlation_id=correlation)
    (step,) = AuditTrail(store).trace(correlation)
    assert step.entry.stream == f"Account-{account_id}"
    assert list(AuditTrail(store).trace(f"no-such-{account_id}")) == []


def test_streams_lists_each_stream_once_with_its_size_and_marks_deleted_ones(store: EventStore) -> None:
    category = f"T{uuid.uuid4().hex[:10]}"
    for name, count in (("a", 3), ("b", 1), ("c", 2)):
        store.append(
            f"{category}-{name}",
            [NewEvent("Happened", b"{}") for _ in range(count)],
            expected_version=StreamState.ANY,
        )
    store.append(f"{category}-a", [NewEvent("Happened", b"{}")], expected_version=StreamState.ANY)
    store.delete_stream(f"{category}-c", expected_version=StreamState.ANY)

    summaries = AuditTrail(store).streams(prefix=f"{category}-")

    assert [(s.stream, s.events, s.last_revision, s.deleted) for s in summaries] == [
        (f"{category}-a", 4, 3, False),
        (f"{category}-b", 1, 0, False),
        (f"{category}-c", 2, 1, True),
    ]
    a = summaries[0]
    assert a.first_position < a.last_position
    assert a.category == category
    assert a.to_dict()["events"] == 4


def test_streams_leave_out_system_events_unless_asked(
    store: EventStore, bus: CommandBus, account_id: str
) -> None:
    open_and_move(bus, account_id)  # snapshot_every=3 writes a $snapshot event
    audit = AuditTrail(store)
    prefix = "Account.snapshots-"
    names = [s.stream for s in audit.streams(prefix=prefix)]
    assert f"{prefix}{account_id}" not in names
    with_system = [s.stream for s in audit.streams(prefix=prefix, include_system=True)]
    assert f"{prefix}{account_id}" in with_system


class _Discard(io.StringIO):
    """An output that keeps nothing, so that only the export's own memory is measured."""

    def write(self, text: str) -> int:
        return len(text)


def test_export_memory_stays_flat_as_the_history_grows(tmp_path: Path) -> None:
    def peak_export(events: int) -> int:
        store = connect(f"sqlite:///{tmp_path}/flat-{events}.db?durable=false")
        try:
            for start in range(0, events, 500):
                batch = [NewEvent("Tick", b'{"payload": "%d"}' % n) for n in range(start, start + 500)]
                store.append("Clock-1", batch, expected_version=StreamState.ANY)
            tracemalloc.start()
            try:
                AuditTrail(store).export(_Discard(), stream="Clock-1")
                return tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
        finally:
            store.close()

    small, large = peak_export(1_000), peak_export(10_000)
    assert large < 2 * small, (small, large)
