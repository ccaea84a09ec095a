"""Group commit: writes from several threads share one transaction, each with its own outcome.

A store whose commit is expensive (SQLite at ``synchronous=FULL`` syncs the file once per
commit) commits many writers' work at the cost of one when they arrive together. This is the
leader/follower scheme of database write-ahead logs, with no thread of its own:

* a writer that finds no commit under way becomes the *leader* and commits its own work at
  once, so a lone writer waits for no one;
* a writer that arrives while a leader is committing queues its work and sleeps;
* when the leader's commit is done it hands each queued writer of its group its outcome, and
  makes the oldest writer still queued the next leader, which commits everything queued by then
  (at most ``max_group`` works) in one transaction of its own.

The store's ``commit_group`` callable does the work: it receives the group and sets each
member's ``outcome`` or ``error`` (it keeps each member's checks apart; see
``SQLiteEventStore``). This module only hands work and outcomes between threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from eventsourcing_cqrs.errors import EventStoreError

__all__ = ["GroupCommitter", "Pending"]

W = TypeVar("W")
R = TypeVar("R")


class Pending(Generic[W, R]):
    """One writer's work, and, once its group is committed, its outcome or its error."""

    __slots__ = ("_leads", "_wake", "error", "outcome", "work")

    def __init__(self, work: W) -> None:
        self.work = work
        self.outcome: R | None = None
        self.error: BaseException | None = None
        self._wake = threading.Event()
        self._leads = False


class GroupCommitter(Generic[W, R]):
    """Runs ``commit_group`` on groups of works submitted by concurrent threads (see the module).

    :param commit_group: commits a group in one transaction, setting every member's ``outcome``
        or ``error``; it should not raise (if it does, its members that have no outcome get an
        :class:`~eventsourcing_cqrs.errors.EventStoreError`, and the leader's thread the exception).
    :param max_group: the most works committed in one transaction.
    :param enabled: false commits each work alone in its own thread (no queue, no hand-off).
    """

    def __init__(
        self,
        commit_group: Callable[[list[Pending[W, R]]], None],
        *,
        max_group: int = 128,
        enabled: bool = True,
    ) -> None:
        self._commit_group = commit_group
        self._max_group = max_group
        self.enabled = enabled
        self._lock = threading.Lock()
        # Invariant: while no one leads, nothing is queued.
        self._queued: list[Pending[W, R]] = []
        self._leading = False

    def submit(self, work: W) -> R:
        """Commit ``work`` (alone or with others' work); its outcome, or raise its error."""
        pending: Pending[W, R] = Pending(work)
        if not self.enabled:
            self._run([pending], pending)
        else:
            with self._lock:
                self._queued.append(pending)
                if not self._leading:
                    self._leading = pending._leads = True
            if not pending._leads:
                pending._wake.wait()
            if pending._leads:
                self._lead(pending)
        if pending.error is not None:
            raise pending.error
        assert pending.outcome is not None
        return pending.outcome

    def _lead(self, leader: Pending[W, R]) -> None:
        # The leader is the oldest queued work (first to arrive, or handed the lead as the oldest).
        with self._lock:
            group = self._queued[: self._max_group]
            del self._queued[: self._max_group]
        try:
            self._run(group, leader)
        finally:
            for member in group:
                if member is not leader:
                    member._wake.set()
            with self._lock:
                if self._queued:
                    successor = self._queued[0]
                    successor._leads = True
                    successor._wake.set()
                else:
                    self._leading = False

    def _run(self, group: list[Pending[W, R]], leader: Pending[W, R]) -> None:
        try:
            self._commit_group(group)
        except BaseException as exc:
            for member in group:
                if member is not leader and member.outcome is None and member.error is None:
                    member.error = EventStoreError(
                        f"The commit this write shared with others failed ({exc!r}); it was not written."
                    )
            raise
