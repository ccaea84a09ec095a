"""Repository: replay, optimistic concurrency, past states, snapshots, bad stored events."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import ClassVar

import pytest
from structlog.testing import capture_logs

from escqrs.examples.bank.account import Account
from escqrs.examples.bank.events import registry
from escqrs.examples.bank.handlers import account_repository
from eventsourcing_cqrs.errors import (
    AggregateAlreadyExistsError,
    AggregateNotFoundError,
    CorruptEventError,
    InvalidInputError,
    UnknownEventTypeError,
    UpcastError,
    WrongExpectedVersionError,
)
from eventsourcing_cqrs.event_store.port import EventStore, NewEvent, StreamState
from eventsourcing_cqrs.messages import DomainEvent
from eventsourcing_cqrs.repository import SNAPSHOT_EVENT_TYPE, Repository
from eventsourcing_cqrs.serialization import EventRegistry

from ._counter import Counter, Incremented, counter_registry


def new_id() -> str:
    return uuid.uuid4().hex[:12]


def opened_with_deposits(accounts: Repository[Account], deposits: int, account_id: str | None = None) -> str:
    account_id = account_id or new_id()
    account = Account.open(account_id, "Ann")
    for _ in range(deposits):
        account.deposit(Decimal(1))
    accounts.save(account)
    return account_id


def test_a_saved_aggregate_loads_with_its_state_and_version(accounts: Repository[Account]) -> None:
    account_id = opened_with_deposits(accounts, 3)
    loaded = accounts.load(account_id)
    assert (loaded.owner, loaded.balance, loaded.version) == ("Ann", Decimal(3), 3)
    assert loaded.pending_events == ()


def test_save_reports_the_new_revision_and_commit_position(
    accounts: Repository[Account], store: EventStore
) -> None:
    account = Account.open(new_id(), "Ann")
    result = accounts.save(account)
    assert result is not None
    assert (result.stream, result.revision) == (f"Account-{account.id}", 0)
    assert result.position == store.head_position()
    assert account.version == 0
    assert account.pending_events == ()


def test_saving_nothing_pending_appends_nothing(accounts: Repository[Account], store: EventStore) -> None:
    account_id = opened_with_deposits(accounts, 0)
    head = store.head_position()
    assert accounts.save(accounts.load(account_id)) is None
    assert store.head_position() == head


def test_loading_a_missing_aggregate_raises_not_found(accounts: Repository[Account]) -> None:
    with pytest.raises(AggregateNotFoundError, match=r"Account 'nobody' does not exist"):
        accounts.load("nobody")
    assert not accounts.exists("nobody")


def test_creating_an_aggregate_whose_id_is_taken_raises_already_exists(accounts: Repository[Account]) -> None:
    account_id = opened_with_deposits(accounts, 0)
    with pytest.raises(AggregateAlreadyExistsError, match=f"Account '{account_id}' already exists"):
        accounts.save(Account.open(account_id, "Bob"))
    assert accounts.load(account_id).owner == "Ann"


def test_a_stale_aggregate_cannot_overwrite_a_concurrent_change(accounts: Repository[Account]) -> None:
    account_id = opened_with_deposits(accounts, 0)
    first, second = accounts.load(account_id), accounts.load(account_id)
    first.deposit(Decimal(5))
    accounts.save(first)
    second.deposit(Decimal(7))
    with pytest.raises(WrongExpectedVersionError) as caught:
        accounts.save(second)
    assert (caught.value.expected, caught.value.actual) == (0, 1)
    assert accounts.load(account_id).balance == Decimal(5)


def test_load_at_version_rebuilds_a_past_state(accounts: Repository[Account]) -> None:
    account_id = opened_with_deposits(accounts, 5)
    past = accounts.load(account_id, at_version=2)
    assert (past.version, past.balance) == (2, Decimal(2))
    assert past.is_historical


def test_load_beyond_the_last_version_is_refused(accounts: Repository[Account]) -> None:
    account_id = opened_with_deposits(accounts, 1)
    with pytest.raises(InvalidInputError, match="is only at version 1"):
        accounts.load(account_id, at_version=9)


def test_load_at_time_rebuilds_the_state_at_that_moment(accounts: Repository[Account]) -> None:
    account_id = opened_with_deposits(accounts, 2)
    time.sleep(0.002)
    moment = datetime.now(UTC)
    time.sleep(0.002)
    account = accounts.load(account_id)
    account.deposit(Decimal(10))
    accounts.save(account)
    assert accounts.load(account_id, at_time=moment).balance == Decimal(2)
    assert accounts.load(account_id).balance == Decimal(12)


def test_load_at_a_time_before_the_first_event_raises_not_found(accounts: Repository[Account]) -> None:
    account_id = opened_with_deposits(accounts, 0)
    with pytest.raises(AggregateNotFoundError):
        accounts.load(account_id, at_time=datetime.now(UTC) - timedelta(days=1))


def test_load_at_a_naive_time_is_refused(accounts: Repository[Account]) -> None:
    with pytest.raises(InvalidInputError, match="timezone-aware"):
        accounts.load("x", at_time=datetime.now())


def test_a_past_state_cannot_be_saved(accounts: Repository[Account]) -> None:
    account_id = opened_with_deposits(accounts, 2)
    past = accounts.load(account_id, at_version=1)
    past.deposit(Decimal(1))
    with pytest.raises(InvalidInputError, match="read-only"):
        accounts.save(past)


def test_history_lists_events_with_metadata_and_positions(accounts: Repository[Account]) -> None:
    account_id = opened_with_deposits(accounts, 1)
    history = list(accounts.history(account_id))
    assert [envelope.event_type for envelope in history] == ["AccountOpened", "MoneyDeposited"]
    assert [envelope.revision for envelope in history] == [0, 1]
    assert history[0].position < history[1].position


def test_an_unknown_event_in_the_stream_names_stream_revision_and_type(
    accounts: Repository[Account], store: EventStore
) -> None:
    account_id = opened_with_deposits(accounts, 1)
    store.append(f"Account-{account_id}", [NewEvent("AccountFrozen", b"{}")], expected_version=1)
    with pytest.raises(UnknownEventTypeError) as caught:
        accounts.load(account_id)
    assert (caught.value.stream, caught.value.revision, caught.value.event_type) == (
        f"Account-{account_id}",
        2,
        "AccountFrozen",
    )


def test_a_corrupt_payload_in_the_stream_names_stream_revision_and_type(
    accounts: Repository[Account], store: EventStore
) -> None:
    account_id = opened_with_deposits(accounts, 0)
    store.append(
        f"Account-{account_id}", [NewEvent("MoneyDeposited", b'{"amount": "x"}')], expected_version=0
    )
    with pytest.raises(
        CorruptEventError, match=rf"stream 'Account-{account_id}', revision 1, type 'MoneyDeposited'"
    ):
        accounts.load(account_id)


def test_an_event_of_another_aggregate_in_the_stream_is_refused(store: EventStore) -> None:
    class Audited(DomainEvent):
        event_type: ClassVar[str] = "Audited"

    mixed = EventRegistry([Audited])
    mixed.include(registry)
    accounts = Repository(store, Account, mixed)
    account_id = opened_with_deposits(accounts, 0)
    store.append(f"Account-{account_id}", [mixed.encode(Audited())], expected_version=0)
    with pytest.raises(CorruptEventError, match="Account does not handle 'Audited' events"):
        accounts.load(account_id)


def test_old_event_versions_are_upcast_on_load(store: EventStore) -> None:
    stream = f"Counter-{new_id()}"
    v1 = NewEvent("Incremented", b'{"amount": 4}', b'{"schemaVersion":1}')
    store.append(stream, [v1], expected_version=StreamState.NO_STREAM)
    store.append(stream, [counter_registry().encode(Incremented(by=1))], expected_version=0)
    counter = Repository(store, Counter, counter_registry()).load(stream.removeprefix("Counter-"))
    assert (counter.total, counter.version) == (5, 1)


def test_a_missing_upcaster_on_load_names_stream_and_revision(store: EventStore) -> None:
    stream = f"Counter-{new_id()}"
    v1 = NewEvent("Incremented", b'{"amount": 4}', b'{"schemaVersion":1}')
    store.append(stream, [v1], expected_version=StreamState.NO_STREAM)
    with pytest.raises(UpcastError, match=rf"stream '{stream}', revision 0, type 'Incremented'"):
        Repository(store, Counter).load(stream.removeprefix("Counter-"))


# -- snapshots ------------------------------------------------------------------------------


def snapshots_of(store: EventStore, account_id: str) -> list[int]:
    return [
        json.loads(recorded.metadata)["aggregateVersion"]
        for recorded in store.read_stream(f"Account.snapshots-{account_id}")
    ]


def test_a_snapshot_is_stored_each_time_the_stream_crosses_a_multiple_of_n(store: EventStore) -> None:
    accounts = account_repository(store, snapshot_every=4)
    account_id = opened_with_deposits(accounts, 2)  # revisions 0..2: 3 events, no snapshot
    account = accounts.load(account_id)
    for _ in range(6):  # revisions 3..8: crosses 4 and 8
        account.deposit(Decimal(1))
        accounts.save(account)
    assert snapshots_of(store, account_id) == [3, 7]


def test_a_snapshot_is_a_system_event_that_all_readers_skip(store: EventStore) -> None:
    accounts = account_repository(store, snapshot_every=1)
    account_id = opened_with_deposits(accounts, 0)
    types = [recorded.type for recorded in store.read_all()]
    assert SNAPSHOT_EVENT_TYPE not in types
    assert [r.type for r in store.read_stream(f"Account.snapshots-{account_id}")] == [SNAPSHOT_EVENT_TYPE]


def test_loading_from_a_snapshot_replays_only_the_tail(store: EventStore) -> None:
    accounts = account_repository(store, snapshot_every=10)
    account_id = opened_with_deposits(accounts, 11)  # one save of 12 events: snapshot at 11
    account = accounts.load(account_id)
    account.deposit(Decimal("0.50"))
    accounts.save(account)
    # Corrupt history *before* the snapshot is never read again; the tail still is.
    loaded = accounts.load(account_id)
    assert (loaded.version, loaded.balance) == (12, Decimal("11.50"))
    assert snapshots_of(store, account_id) == [11]
    full = account_repository(store).load(account_id)
    assert (full.version, full.balance) == (loaded.version, loaded.balance)


def test_a_snapshot_of_another_snapshot_version_is_ignored(store: EventStore) -> None:
    account_id = opened_with_deposits(account_repository(store, snapshot_every=2), 3)

    class AccountWithNewSnapshots(Account):
        snapshot_version: ClassVar[int] = 2

    newer = Repository(store, AccountWithNewSnapshots, registry, snapshot_every=2)
    with capture_logs() as logs:
        loaded = newer.load(account_id)
    assert loaded.balance == Decimal(3)
    ignored = [log for log in logs if log["event"] == "snapshot.ignored"]
    assert ignored
    assert "snapshot version 1, current 2" in ignored[0]["reason"]


def test_a_snapshot_that_no_longer_validates_is_ignored(store: EventStore) -> None:
    accounts = account_repository(store, snapshot_every=1)
    account_id = opened_with_deposits(accounts, 1)
    store.append(
        f"Account.snapshots-{account_id}",
        [NewEvent(SNAPSHOT_EVENT_TYPE, b'{"owner": 1}', b'{"aggregateVersion":1,"snapshotVersion":1}')],
        expected_version=StreamState.ANY,
    )
    with capture_logs() as logs:
        assert accounts.load(account_id).balance == Decimal(1)
    assert any(log["event"] == "snapshot.ignored" for log in logs)


def test_load_at_version_starts_from_an_earlier_snapshot(store: EventStore) -> None:
    accounts = account_repository(store, snapshot_every=2)
    account_id = opened_with_deposits(accounts, 0)
    for _ in range(6):
        account = accounts.load(account_id)
        account.deposit(Decimal(1))
        accounts.save(account)
    assert snapshots_of(store, account_id) == [1, 3, 5]
    assert accounts.load(account_id, at_version=4).balance == Decimal(4)
    assert accounts.load(account_id, at_version=3).balance == Decimal(3)
    assert accounts.load(account_id, at_version=0).balance == Decimal(0)


def test_snapshots_need_a_snapshot_type(store: EventStore) -> None:
    class Plain(Account):
        snapshot_type = None  # type: ignore[assignment]  # turning snapshots off on purpose

    with pytest.raises(InvalidInputError, match="has no snapshot_type"):
        Repository(store, Plain, registry, snapshot_every=10)
