"""Group commit: concurrent appends to one SQLiteEventStore share a transaction, each with its own outcome."""

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from eventsourcing_cqrs.errors import EventStoreError, InvalidInputError, WrongExpectedVersionError
from eventsourcing_cqrs.event_store import AppendResult, StreamState
from eventsourcing_cqrs.event_store._group_commit import GroupCommitter, Pending
from eventsourcing_cqrs.event_store.sqlite import SQLiteEventStore
from eventsourcing_cqrs.testing.contracts import new_events


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


# -- the committer alone ---------------------------------------------------------------------


def test_writers_arriving_during_a_commit_share_the_next_one_and_each_get_their_outcome() -> None:
    groups: list[list[int]] = []
    inside, release = threading.Event(), threading.Event()

    def commit_group(group: list[Pending[int, int]]) -> None:
        groups.append([member.work for member in group])
        if len(groups) == 1:
            inside.set()
            release.wait(10)
        for member in group:
            if member.work == 3:
                member.error = ValueError("three fails alone")
            else:
                member.outcome = member.work * 10

    committer: GroupCommitter[int, int] = GroupCommitter(commit_group)
    outcomes: dict[int, object] = {}

    def submit(work: int) -> None:
        try:
            outcomes[work] = committer.submit(work)
        except ValueError as exc:
            outcomes[work] = str(exc)

    leader = threading.Thread(target=submit, args=(0,))
    leader.start()
    inside.wait(10)
    followers = [threading.Thread(target=submit, args=(n,)) for n in range(1, 6)]
    for follower in followers:
        follower.start()
    _wait_for(lambda: len(committer._queued) == 5)
    release.set()
    for thread in [leader, *followers]:
        thread.join(10)
    assert groups[0] == [0]
    assert sorted(groups[1]) == [1, 2, 3, 4, 5]
    assert len(groups) == 2
    assert outcomes == {0: 0, 1: 10, 2: 20, 3: "three fails alone", 4: 40, 5: 50}
    assert committer.submit(7) == 70  # a lone writer commits at once, alone
    assert groups[-1] == [7]


def test_a_group_whose_commit_raises_fails_every_member_and_the_next_writer_still_commits() -> None:
    inside, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def commit_group(group: list[Pending[int, int]]) -> None:
        calls.append(len(group))
        if len(calls) == 1:
            inside.set()
            release.wait(10)
            for member in group:
                member.outcome = 1
        elif len(calls) == 2:
            raise RuntimeError("disk on fire")
        else:
            for member in group:
                member.outcome = 2

    committer: GroupCommitter[int, int] = GroupCommitter(commit_group)
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            committer.submit(0)
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertions
            errors.append(exc)

    first = threading.Thread(target=submit)
    first.start()
    inside.wait(10)
    failing = [threading.Thread(target=submit) for _ in range(3)]
    for thread in failing:
        thread.start()
    _wait_for(lambda: len(committer._queued) == 3)
    release.set()
    for thread in [first, *failing]:
        thread.join(10)
    assert calls[:2] == [1, 3]
    assert sorted(type(exc).__name__ for exc in errors) == [
        "EventStoreError",
        "EventStoreError",
        "RuntimeError",
    ]
    assert all("not written" in str(exc) for exc in errors if isinstance(exc, EventStoreError))
    assert committer.submit(0) == 2


# -- through the SQLite store ------------------------------------------------------------------


@contextlib.contextmanager
def _write_lock_held(path: Path) -> Iterator[Callable[[], None]]:
    """Hold the file's write lock from another connection until the yielded ``release`` is called."""
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")

    def release() -> None:
        holder.execute("ROLLBACK")

    try:
        yield release
    finally:
        if holder.in_transaction:
            holder.execute("ROLLBACK")
        holder.close()


def test_appends_queued_behind_a_commit_share_one_transaction_and_keep_their_own_checks(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.db"
    store = SQLiteEventStore(path)
    committer = store._committer
    group_sizes: list[int] = []
    commit_group = committer._commit_group

    def recording(group: list[Pending[object, object]]) -> None:
        group_sizes.append(len(group))
        commit_group(group)  # type: ignore[arg-type]

    committer._commit_group = recording  # type: ignore[assignment]
    for n in range(4):
        store.append(f"Order-{n}", new_events(1), expected_version=StreamState.NO_STREAM)
    group_sizes.clear()
    outcomes: dict[str, object] = {}

    def append(label: str, stream: str, expected: int) -> None:
        try:
            outcomes[label] = store.append(stream, new_events(1), expected_version=expected)
        except WrongExpectedVersionError as exc:
            outcomes[label] = exc

    try:
        with _write_lock_held(path) as release:
            # The leader has taken its group and waits for the lock in BEGIN IMMEDIATE; the others queue.
            leader = threading.Thread(target=append, args=("leader", "Order-0", 0))
            leader.start()
            _wait_for(lambda: committer._leading and not committer._queued)
            queued = [
                ("first", "Order-1", 0),
                ("stale", "Order-2", 5),  # a wrong expected version: fails alone
                ("racer-a", "Order-3", 0),  # two appends to one stream at one version:
                ("racer-b", "Order-3", 0),  # the first in the group wins, the second loses
            ]
            threads = [threading.Thread(target=append, args=args) for args in queued]
            for thread in threads:
                thread.start()
            _wait_for(lambda: len(committer._queued) == 4)
            release()
            for thread in [leader, *threads]:
                thread.join(10)
    finally:
        store.close()

    assert group_sizes == [1, 4]
    assert isinstance(outcomes["leader"], AppendResult)
    assert isinstance(outcomes["first"], AppendResult)
    stale = outcomes["stale"]
    assert isinstance(stale, WrongExpectedVersionError)
    assert (stale.stream, stale.expected, stale.actual) == ("Order-2", 5, 0)
    racers = [outcomes["racer-a"], outcomes["racer-b"]]
    assert sum(isinstance(outcome, AppendResult) for outcome in racers) == 1
    lost = next(outcome for outcome in racers if isinstance(outcome, WrongExpectedVersionError))
    assert (lost.stream, lost.expected, lost.actual) == ("Order-3", 0, 1)

    reopened = SQLiteEventStore(path)
    try:
        versions = [reopened.stream_version(f"Order-{n}") for n in range(4)]
        assert versions == [1, 1, 0, 1]
        winners = [o for o in outcomes.values() if isinstance(o, AppendResult)]
        positions = sorted(o.position for o in winners)
        assert len(set(positions)) == 3
        assert [e.position for e in reopened.read_all() if e.revision == 1] == positions
    finally:
        reopened.close()


@pytest.mark.parametrize("group_commit", [True, False])
def test_threads_on_disjoint_streams_all_commit_with_or_without_group_commit(
    tmp_path: Path, group_commit: bool
) -> None:
    store = SQLiteEventStore(tmp_path / "events.db", durable=False, group_commit=group_commit)
    barrier = threading.Barrier(8)

    def writer(n: int) -> None:
        barrier.wait()
        for revision in range(20):
            expected = StreamState.NO_STREAM if revision == 0 else revision - 1
            store.append(f"Order-{n}", new_events(1), expected_version=expected)

    try:
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert [store.stream_version(f"Order-{n}") for n in range(8)] == [19] * 8
        positions = [e.position for e in store.read_all()]
        assert positions == sorted(set(positions))
        assert len(positions) == 160
    finally:
        store.close()


def test_group_commit_must_be_a_bool(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError) as caught:
        SQLiteEventStore(tmp_path / "events.db", group_commit="yes")  # type: ignore[arg-type]
    assert caught.value.field == "group_commit"
    assert not (tmp_path / "events.db").exists()
