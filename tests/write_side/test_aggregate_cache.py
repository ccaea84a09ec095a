"""The repository's aggregate cache (``Repository(cache_size=N)``): fresh, bounded, never shared.

Every test runs on a real store (memory and SQLite through the ``store`` fixture, or a SQLite
file opened twice, or by another process). ``ReadLog`` wraps a real store only to record which
revisions each load asked for, which is how a cache hit (a read after the cached version) is
told apart from a replay (a read from the start).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from escqrs.examples.bank import handlers
from escqrs.examples.bank.account import Account, InsufficientFundsError
from escqrs.examples.bank.commands import Deposit, OpenAccount, Withdraw
from escqrs.examples.bank.events import registry
from eventsourcing_cqrs.bus import CommandBus, RetryPolicy
from eventsourcing_cqrs.errors import (
    AggregateNotFoundError,
    CorruptEventError,
    InvalidInputError,
    StreamDeletedError,
)
from eventsourcing_cqrs.event_store import connect
from eventsourcing_cqrs.event_store.port import EventStore, NewEvent, RecordedEvent, StreamState
from eventsourcing_cqrs.repository import Repository

ROOT = Path(__file__).resolve().parents[2]


class ReadLog:
    """A real store, with a record of the ``from_revision`` of each read of an aggregate stream."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.reads: list[int | None] = []

    def read_stream(self, stream: str, **options: Any) -> Iterator[RecordedEvent]:
        if ".snapshots-" not in stream and not options.get("backwards"):
            self.reads.append(options.get("from_revision"))
        return self.store.read_stream(stream, **options)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def cached_accounts(store: EventStore, size: int = 8, **options: Any) -> Repository[Account]:
    return Repository(store, Account, registry, cache_size=size, **options)


def bank(accounts: Repository[Account]) -> CommandBus:
    bus = CommandBus(retry=RetryPolicy(max_attempts=50, base_delay=0.0001, max_delay=0.002))
    handlers.register(bus, accounts)
    return bus


def new_id() -> str:
    return uuid.uuid4().hex[:12]


# -- hits -----------------------------------------------------------------------------------


def test_a_command_on_a_cached_aggregate_reads_nothing_and_its_append_confirms_the_state(
    store: EventStore,
) -> None:
    log = ReadLog(store)
    accounts = cached_accounts(cast(EventStore, log))
    bus = bank(accounts)
    account_id = new_id()
    bus.dispatch(OpenAccount(account_id=account_id, owner="Ann"))
    results = [bus.dispatch(Deposit(account_id=account_id, amount=Decimal(n))) for n in (1, 2, 3)]
    assert log.reads == []  # each deposit's expected version is the check
    assert [result.version for result in results] == [1, 2, 3]
    assert [result.attempts for result in results] == [1, 1, 1]
    fresh = handlers.account_repository(store).load(account_id)  # no cache: a full replay
    assert (fresh.version, fresh.balance) == (3, Decimal(6))
    assert accounts.load(account_id).balance == Decimal(6)
    assert log.reads == [4]  # a load outside a command reads the events after the cached version
    assert accounts.cached == 1


def test_a_refusal_on_a_cached_aggregate_stands_after_one_read_confirms_the_state(store: EventStore) -> None:
    log = ReadLog(store)
    accounts = cached_accounts(cast(EventStore, log))
    bus = bank(accounts)
    account_id = new_id()
    bus.dispatch(OpenAccount(account_id=account_id, owner="Ann"))
    bus.dispatch(Deposit(account_id=account_id, amount=Decimal(5)))
    head = store.head_position()
    with pytest.raises(InsufficientFundsError):
        bus.dispatch(Withdraw(account_id=account_id, amount=Decimal(6)))
    assert log.reads == [2]  # the refusal rested on version 1: the store confirmed nothing came after
    assert store.head_position() == head
    assert bus.metrics.retries == 0


def test_a_command_that_read_a_moved_cached_aggregate_and_saved_another_decides_again(
    tmp_path: Path,
) -> None:
    ours, theirs = connect(f"sqlite:///{tmp_path}/e.db"), connect(f"sqlite:///{tmp_path}/e.db")
    try:
        accounts = cached_accounts(ours)
        source, target = new_id(), new_id()
        for account_id in (source, target):
            accounts.save(Account.open(account_id, "Ann"))  # and cached, write-through
        other = handlers.account_repository(theirs)
        moved = other.load(source)
        moved.deposit(Decimal(7))
        other.save(moved)  # the cached source still holds 0

        def match_balance(command: Deposit) -> None:  # deposits into target what source holds
            balance = accounts.load(source).balance
            account = accounts.load(command.account_id)
            account.deposit(balance)
            accounts.save(account)

        bus = CommandBus()
        bus.register(Deposit, match_balance)
        result = bus.dispatch(Deposit(account_id=target, amount=Decimal(1)))
        assert result.attempts == 2  # the source had moved: checked before the target's append
        assert accounts.load(target).balance == Decimal(7)
    finally:
        ours.close()
        theirs.close()


def test_a_loaded_copy_changed_without_saving_leaves_the_cache_unchanged(store: EventStore) -> None:
    accounts = cached_accounts(store)
    account_id = new_id()
    accounts.save(Account.open(account_id, "Ann"))
    first = accounts.load(account_id)
    first.deposit(Decimal(10))  # decided, never saved
    second = accounts.load(account_id)
    assert second is not first
    assert (second.balance, second.version, second.pending_events) == (Decimal(0), 0, ())


def test_a_saved_aggregate_changed_afterwards_leaves_the_cache_unchanged(store: EventStore) -> None:
    accounts = cached_accounts(store)
    account = Account.open(new_id(), "Ann")
    accounts.save(account)
    account.balance = Decimal(99)  # the caller's object is not the cached one
    assert accounts.load(account.id).balance == Decimal(0)


def test_past_states_bypass_the_cache(store: EventStore) -> None:
    log = ReadLog(store)
    accounts = cached_accounts(cast(EventStore, log))
    account = Account.open(new_id(), "Ann")
    account.deposit(Decimal(1))
    account.deposit(Decimal(2))
    accounts.save(account)
    past = accounts.load(account.id, at_version=1)
    assert (past.version, past.balance, past.is_historical) == (1, Decimal(1), True)
    assert log.reads == [None]
    assert accounts.load(account.id).balance == Decimal(3)


# -- other writers --------------------------------------------------------------------------


def test_a_plain_load_sees_another_connections_append(tmp_path: Path) -> None:
    ours, theirs = connect(f"sqlite:///{tmp_path}/e.db"), connect(f"sqlite:///{tmp_path}/e.db")
    try:
        accounts = cached_accounts(ours)
        account = Account.open(new_id(), "Ann")
        accounts.save(account)
        other = handlers.account_repository(theirs).load(account.id)
        other.deposit(Decimal(7))
        handlers.account_repository(theirs).save(other)
        loaded = accounts.load(account.id)
        assert (loaded.version, loaded.balance) == (1, Decimal(7))
    finally:
        ours.close()
        theirs.close()


def test_a_plain_load_sees_another_process_append(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    store = connect(f"sqlite:///{path}")
    try:
        accounts = cached_accounts(store)
        account_id = new_id()
        accounts.save(Account.open(account_id, "Ann"))
        assert accounts.load(account_id).balance == Decimal(0)
        script = (
            "from decimal import Decimal\n"
            "from escqrs.examples.bank import handlers\n"
            "from eventsourcing_cqrs.event_store import connect\n"
            f"store = connect('sqlite:///{path}')\n"
            "accounts = handlers.account_repository(store)\n"
            f"account = accounts.load({account_id!r})\n"
            "account.deposit(Decimal(5))\n"
            "accounts.save(account)\n"
            "store.close()\n"
        )
        subprocess.run([sys.executable, "-c", script], check=True, cwd=ROOT, timeout=60)
        loaded = accounts.load(account_id)
        assert (loaded.version, loaded.balance) == (1, Decimal(5))
    finally:
        store.close()


def test_an_append_racing_a_cached_command_is_kept_and_the_retry_reloads_from_the_store(
    tmp_path: Path,
) -> None:
    ours, theirs = connect(f"sqlite:///{tmp_path}/e.db"), connect(f"sqlite:///{tmp_path}/e.db")
    try:
        log = ReadLog(ours)
        accounts = cached_accounts(cast(EventStore, log))
        other = handlers.account_repository(theirs)
        account_id = new_id()
        accounts.save(Account.open(account_id, "Ann"))
        accounts.load(account_id)
        cached_before_attempt: list[int] = []
        bus = CommandBus()

        def deposit_elsewhere(account_id: str) -> None:
            account = other.load(account_id)
            account.deposit(Decimal(100))
            other.save(account)

        def deposit(command: Deposit) -> None:
            cached_before_attempt.append(accounts.cached)
            account = accounts.load(command.account_id)
            if len(cached_before_attempt) == 1:  # another writer appends after our load
                # (in a thread of its own: outside this command's unit of work)
                racer = threading.Thread(target=deposit_elsewhere, args=(command.account_id,))
                racer.start()
                racer.join()
            account.deposit(command.amount)
            accounts.save(account)

        bus.register(Deposit, deposit)
        log.reads.clear()
        result = bus.dispatch(Deposit(account_id=account_id, amount=Decimal(1)))
        assert result.attempts == 2
        assert cached_before_attempt == [1, 0]  # the conflict dropped the entry
        assert log.reads == [None]  # the first attempt read nothing; the retry replayed
        fresh = handlers.account_repository(theirs).load(account_id)
        assert (fresh.version, fresh.balance) == (2, Decimal(101))
        assert accounts.load(account_id).balance == Decimal(101)
    finally:
        ours.close()
        theirs.close()


def test_a_command_decides_on_another_writers_append_not_on_the_cached_state(tmp_path: Path) -> None:
    ours, theirs = connect(f"sqlite:///{tmp_path}/e.db"), connect(f"sqlite:///{tmp_path}/e.db")
    try:
        accounts = cached_accounts(ours)
        bus = bank(accounts)
        account_id = new_id()
        bus.dispatch(OpenAccount(account_id=account_id, owner="Ann"))
        other = handlers.account_repository(theirs)
        account = other.load(account_id)
        account.deposit(Decimal(5))
        other.save(account)
        # The cached account holds 0: a withdrawal would be refused if the cache were trusted.
        assert bus.dispatch(Withdraw(account_id=account_id, amount=Decimal(5))).version == 2
    finally:
        ours.close()
        theirs.close()


def test_a_failed_append_drops_the_cached_aggregate(store: EventStore) -> None:
    log = ReadLog(store)
    accounts = cached_accounts(cast(EventStore, log))
    account = Account.open(new_id(), "Ann")
    accounts.save(account)
    loaded = accounts.load(account.id)
    store.tombstone_stream(account.stream, expected_version=StreamState.ANY)
    loaded.deposit(Decimal(1))
    with pytest.raises(StreamDeletedError):
        accounts.save(loaded)
    assert accounts.cached == 0
    with pytest.raises(AggregateNotFoundError):
        accounts.load(account.id)


def test_a_deleted_stream_is_not_found_although_cached(store: EventStore) -> None:
    accounts = cached_accounts(store)
    account = Account.open(new_id(), "Ann")
    accounts.save(account)
    store.delete_stream(account.stream, expected_version=StreamState.ANY)
    with pytest.raises(AggregateNotFoundError):
        accounts.load(account.id)
    assert accounts.cached == 0


def test_a_corrupt_event_after_the_cached_version_names_its_stream_and_revision(store: EventStore) -> None:
    accounts = cached_accounts(store)
    account = Account.open(new_id(), "Ann")
    accounts.save(account)
    store.append(account.stream, [NewEvent("MoneyDeposited", b'{"amount": "x"}')], expected_version=0)
    with pytest.raises(CorruptEventError, match=rf"stream '{account.stream}', revision 1"):
        accounts.load(account.id)


# -- redelivery -----------------------------------------------------------------------------


@pytest.mark.parametrize("snapshot_every", [None, 3])
def test_a_redelivered_command_is_detected_with_the_aggregate_cached(
    store: EventStore, snapshot_every: int | None
) -> None:
    log = ReadLog(store)
    accounts = cached_accounts(cast(EventStore, log), snapshot_every=snapshot_every)
    bus = bank(accounts)
    account_id = new_id()
    bus.dispatch(OpenAccount(account_id=account_id, owner="Ann"))
    command = Deposit(account_id=account_id, amount=Decimal(1))
    first = bus.dispatch(command)
    for _ in range(4):
        bus.dispatch(Deposit(account_id=account_id, amount=Decimal(10)))
    head = store.head_position()
    log.reads.clear()
    again = bus.dispatch(command)
    assert again.duplicate
    assert (again.version, again.position) == (first.version, first.position)
    assert store.head_position() == head
    assert log.reads == [first.version]  # the original result read back, nothing else
    assert accounts.load(account_id).balance == Decimal(41)


def test_a_redelivery_written_by_another_connection_is_detected_with_a_stale_cache(tmp_path: Path) -> None:
    ours, theirs = connect(f"sqlite:///{tmp_path}/e.db"), connect(f"sqlite:///{tmp_path}/e.db")
    try:
        accounts = cached_accounts(ours)
        bus = bank(accounts)
        account_id = new_id()
        bus.dispatch(OpenAccount(account_id=account_id, owner="Ann"))
        command = Deposit(account_id=account_id, amount=Decimal(1))
        first = bank(handlers.account_repository(theirs)).dispatch(command)  # delivered elsewhere first
        again = bus.dispatch(command)
        assert again.duplicate
        assert again.version == first.version
        assert accounts.load(account_id).balance == Decimal(1)
    finally:
        ours.close()
        theirs.close()


# -- bounds and threads ---------------------------------------------------------------------


def test_the_cache_holds_at_most_cache_size_aggregates_dropping_the_least_recently_used(
    store: EventStore,
) -> None:
    log = ReadLog(store)
    accounts = cached_accounts(cast(EventStore, log), size=2)
    ids = [new_id() for _ in range(3)]
    for account_id in ids:
        accounts.save(Account.open(account_id, "Ann"))
    assert accounts.cached == 2
    log.reads.clear()
    accounts.load(ids[1])  # cached
    accounts.load(ids[2])  # cached
    accounts.load(ids[0])  # dropped first: replayed, and it pushes out ids[1], the least recent
    accounts.load(ids[1])
    assert log.reads == [1, 1, None, None]
    assert accounts.cached == 2
    assert accounts.cache_size == 2


@pytest.mark.parametrize("size", [-1, True, 2.0, "8"])
def test_a_cache_size_that_is_not_a_count_is_refused(store: EventStore, size: object) -> None:
    with pytest.raises(InvalidInputError, match="cache_size"):
        Repository(store, Account, registry, cache_size=size)  # type: ignore[arg-type]


def test_no_cache_by_default(store: EventStore) -> None:
    log = ReadLog(store)
    accounts = handlers.account_repository(cast(EventStore, log))
    account = Account.open(new_id(), "Ann")
    accounts.save(account)
    accounts.load(account.id)
    assert (accounts.cache_size, accounts.cached, log.reads) == (0, 0, [None])


def test_concurrent_commands_with_the_cache_lose_no_update(tmp_path: Path) -> None:
    store = connect(f"sqlite:///{tmp_path}/e.db")
    try:
        accounts = cached_accounts(store, size=4, snapshot_every=20)
        bus = bank(accounts)
        ids = [new_id() for _ in range(2)]
        for account_id in ids:
            bus.dispatch(OpenAccount(account_id=account_id, owner="Ann"))
        threads, deposits = 4, 40
        errors: list[BaseException] = []
        start = threading.Barrier(threads)

        def depositor(thread: int) -> None:
            start.wait()
            try:
                for n in range(deposits):
                    amount = Decimal(1 + thread * deposits + n) / 100
                    bus.dispatch(Deposit(account_id=ids[n % 2], amount=amount))
            except BaseException as exc:  # noqa: BLE001 - asserted below; a thread must not die silently
                errors.append(exc)

        workers = [threading.Thread(target=depositor, args=(t,)) for t in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == []
        for index, account_id in enumerate(ids):
            expected = sum(
                (
                    Decimal(1 + t * deposits + n) / 100
                    for t in range(threads)
                    for n in range(index, deposits, 2)
                ),
                Decimal(0),
            )
            for repository in (accounts, handlers.account_repository(store)):
                account = repository.load(account_id)
                assert (account.balance, account.version) == (expected, threads * deposits // 2)
        assert bus.metrics.exhausted == 0
    finally:
        store.close()
