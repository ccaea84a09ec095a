"""One worker's share of a segmented projection: which segments it runs, and handing them over.

A :class:`SegmentPool` is what :meth:`ProjectionRunner.run` becomes for a projection with
``segments > 1``. Coordination goes through the read model store only, with the same locks
as every lease (a ``flock`` per segment on SQLite, a PostgreSQL session advisory lock):

* **Membership.** The worker holds a *worker slot*, the first free ``WORKER`` lease among
  ``0 .. MAX_SEGMENTS - 1``; the number of slots held is the number of live workers. A worker
  that dies loses its slot and its segments with its process (or its PostgreSQL sessions).
* **Fair share.** Every ``rebalance_interval`` seconds it counts the workers and aims at
  ``ceil(segments / workers)`` segments: it takes free ones (a segment's ``RUN`` lease that
  nobody holds) and, holding more than its share, asks the extra ones to stop after their
  current batch, releasing their leases for the newcomer. No segment waits for a coordinator:
  the leases decide, and a segment's lease is fenced (a transaction with a superseded lease
  fails), so a worker that lost one cannot commit.
* **One thread per segment, one reader per worker.** Each held segment is a segment runner of
  its own (a :class:`ProjectionRunner` restricted to the events whose key hashes to the
  segment), in a thread, with its own checkpoint, batches and transactions. The worker reads
  ``$all`` once for all of them (:class:`SharedFeed`) and hands each its own events, in order;
  segments give order per key and a fault boundary, and parallelism across cores comes from
  running several worker processes.

With ``until_caught_up`` a worker runs its share until each has caught up, then takes free
segments nobody caught up yet, and returns once every segment has caught up here or is being
run by another worker.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, Self

import structlog

from eventsourcing_cqrs.event_store.port import (
    CaughtUp,
    Checkpoint,
    EventFilter,
    EventReader,
    RecordedEvent,
    SubscriptionItem,
)
from projections._progress import ProgressCallback, ProgressTracker, RebuildReport
from projections.projection import segment_of
from projections.read_model_store.port import MAX_SEGMENTS, Lease, LeaseRole, ProjectionState, ReadModelStore

if TYPE_CHECKING:
    from projections.runner import ProjectionRunner

__all__ = ["Polled", "SegmentPool", "SharedFeed"]

logger = structlog.get_logger(__name__)

#: How often the pool looks at its threads (a stop or a failure is noticed this fast).
_TICK = 0.05


class Polled(Protocol):
    """What a runner follows: a subscription to ``$all``, or its share of a :class:`SharedFeed`."""

    def poll(self, timeout: float) -> SubscriptionItem | None: ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


#: How many of its own items a segment may have waiting before the reader waits for it.
_QUEUE_SIZE = 2000

#: How often (in events of other segments) the reader tells each segment how far it has read.
_PROGRESS_EVERY = 256


class _Share:
    """One segment's part of a :class:`SharedFeed`: its events, then how far the reader got."""

    def __init__(self, feed: SharedFeed, segment: int, after: int | None) -> None:
        self._feed = feed
        self.segment = segment
        #: The last position handed to this segment (its start, at first): nothing at or
        #: before it is handed again, also when the reader starts over from an earlier one.
        self.upto = after
        self.items: queue.Queue[SubscriptionItem | BaseException] = queue.Queue(_QUEUE_SIZE)
        self.closed = False
        #: Joined behind the reader: handed nothing until the reader starts over from its start.
        self.pending = False

    def wants(self, position: int) -> bool:
        """Whether ``position`` is past what this share was handed (and it is being served)."""
        return not self.pending and (self.upto is None or position > self.upto)

    def poll(self, timeout: float) -> SubscriptionItem | None:
        try:
            item = self.items.get(timeout=timeout) if timeout > 0 else self.items.get_nowait()
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.closed = True
        self._feed._leave(self)


class SharedFeed:
    """One subscription to ``$all`` for all of a worker's segment runners.

    Each segment registers with its checkpoint (:meth:`subscribe`) and gets, in order, the
    events whose sequencing key hashes to it, plus :class:`Checkpoint` items that carry it past
    the other segments' events, and the :class:`CaughtUp` of the subscription. The reader starts
    from the lowest checkpoint of the segments it serves and starts over from a lower one when a
    segment joins behind it (a segment taken over); a segment is never handed an event at or
    before what it was last handed. A failure of the subscription (an outage) is raised in every
    segment runner, which handles it as it handles its own subscription's, and subscribes again.
    """

    def __init__(
        self,
        events: EventReader,
        *,
        event_filter: EventFilter,
        checkpoint_interval: int,
        segments: int,
        key_of: Callable[[RecordedEvent], str],
        name: str,
    ) -> None:
        self._events = events
        self._filter = event_filter
        self._checkpoint_interval = checkpoint_interval
        self._segments = segments
        self._key_of = key_of
        self._name = name
        self._lock = threading.Lock()
        self._shares: dict[int, _Share] = {}
        self._thread: threading.Thread | None = None
        self._restart = False
        self._closing = False
        #: The last position the reader considered, and whether it has caught up.
        self._position: int | None = None
        self._live = False

    def subscribe(self, segment: int, after: int | None) -> _Share:
        """Segment ``segment``'s share of ``$all``, after position ``after`` (its checkpoint)."""
        share = _Share(self, segment, after)
        with self._lock:
            self._closing = False
            self._shares[segment] = share
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._read, name=f"feed-{self._name}", daemon=True)
                self._thread.start()
            elif after is None or (self._position is not None and after < self._position):
                share.pending = True  # it needs events the reader has passed: start over first
                self._restart = True
            elif self._live:
                share.items.put(CaughtUp(after))
        return share

    def close(self) -> None:
        """Stop the reader and wait for it (its worker stopped: nothing may read the store after)."""
        with self._lock:
            self._closing = True
            thread = self._thread
        if thread is not None:
            thread.join()

    def _leave(self, share: _Share) -> None:
        with self._lock:
            if self._shares.get(share.segment) is share:
                del self._shares[share.segment]

    def _read(self) -> None:
        while True:
            with self._lock:
                shares = list(self._shares.values())
                if not shares or self._closing:
                    self._thread = None
                    return
                starts = [share.upto for share in shares]
                start = None if None in starts else min(s for s in starts if s is not None)
                for share in shares:
                    share.pending = False
                self._restart, self._position, self._live = False, start, False
            try:
                self._follow(start)
            except BaseException as exc:  # noqa: BLE001 - handed to every segment runner
                with self._lock:
                    failed, self._shares = list(self._shares.values()), {}
                    self._thread = None
                for share in failed:
                    self._hand(share, exc)
                logger.warning(
                    "projection.feed_failed", projection=self._name, error=f"{type(exc).__name__}: {exc}"
                )
                return

    def _follow(self, start: int | None) -> None:
        segments, key_of, shares = self._segments, self._key_of, self._shares
        since_progress = 0
        with self._events.subscribe(
            from_position=start, filter=self._filter, checkpoint_interval=self._checkpoint_interval
        ) as subscription:
            while True:
                if self._restart or self._closing or not shares:
                    return
                item = subscription.poll(0.05)
                if item is None:
                    self._progress()
                    since_progress = 0
                    continue
                if isinstance(item, RecordedEvent):
                    self._position = position = item.position
                    share = shares.get(segment_of(key_of(item), segments))
                    if share is not None and share.wants(position) and self._hand(share, item):
                        share.upto = position
                    since_progress += 1
                    if since_progress >= _PROGRESS_EVERY:
                        self._progress()
                        since_progress = 0
                elif isinstance(item, Checkpoint):
                    self._position = item.position
                    self._progress()
                    since_progress = 0
                else:
                    self._position = item.position if item.position is not None else self._position
                    self._progress()
                    self._live = True
                    for share in list(shares.values()):
                        if not share.pending:
                            self._hand(share, CaughtUp(item.position))

    def _progress(self) -> None:
        """Carry every segment past the events it was not handed (as a subscription's checkpoint does)."""
        position = self._position
        if position is None:
            return
        for share in list(self._shares.values()):
            if share.wants(position) and self._hand(share, Checkpoint(position)):
                share.upto = position

    @staticmethod
    def _hand(share: _Share, item: SubscriptionItem | BaseException) -> bool:
        """Queue ``item`` for ``share``, waiting while it is full; whether it was (not if it left)."""
        while not share.closed:
            try:
                share.items.put(item, timeout=0.05)
            except queue.Full:
                continue
            return True
        return False


@dataclass
class _Child:
    """A segment runner and the thread running it."""

    runner: ProjectionRunner
    thread: threading.Thread
    result: list[bool] = field(default_factory=list)
    released: bool = False


class SegmentPool:
    """Runs this worker's share of ``runner``'s segments (see the module docstring)."""

    def __init__(
        self,
        runner: ProjectionRunner,
        store: ReadModelStore,
        name: str,
        *,
        segments: int,
        rebalance_interval: float,
        outages: tuple[type[Exception], ...],
    ) -> None:
        self._runner = runner
        self._store = store
        self._name = name
        self._segments = segments
        self._interval = rebalance_interval
        self._children: dict[int, _Child] = {}
        self._log = logger.bind(projection=name, segments=segments)
        self._outages = outages
        self._backoff = runner._store_backoff
        self._feed = SharedFeed(
            runner._events,
            event_filter=runner._filter,
            checkpoint_interval=runner._checkpoint_interval,
            segments=segments,
            key_of=runner._sequencing_key,
            name=name,
        )

    def _segment_runner(self, segment: int, lease: Lease | None) -> ProjectionRunner:
        """A runner of ``segment`` that reads ``$all`` through this worker's shared feed."""
        runner = self._runner._for_segment(segment, lease)
        runner._feed = self._feed
        return runner

    # -- running ----------------------------------------------------------------------------

    def run(self, *, until_caught_up: bool, stopping: Callable[[], bool]) -> bool:
        """Run segments until ``stopping()``; with ``until_caught_up``, whether all caught up.

        An outage of the read model store while looking at the other workers (or taking a slot
        or a segment) is retried with the runner's ``store_backoff``, as the runner retries its
        own; the segments it runs meanwhile handle theirs themselves.
        """
        slot: Lease | None = None
        done: set[int] = set()
        failed = False
        failures = 0
        try:
            next_check = 0.0
            while not stopping():
                try:
                    if slot is None or not slot.held:
                        first = slot is None
                        slot = self._take_slot(stopping)
                        if slot is None:
                            return False
                        if first:
                            # A worker starting (again) is the way out of a recorded failure.
                            self._store.set_state(self._name, ProjectionState.CATCHING_UP)
                        self._log.info("projection.worker_started", slot=slot.segment)
                    self._reap(done)
                    if until_caught_up and len(done) == self._segments:
                        return True
                    if time.monotonic() >= next_check:
                        next_check = time.monotonic() + self._interval
                        held_elsewhere = self._rebalance(done, until_caught_up=until_caught_up)
                        if (
                            until_caught_up
                            and not self._children
                            and done | held_elsewhere >= set(range(self._segments))
                        ):
                            return True
                    failures = 0
                except self._outages as exc:
                    failures += 1
                    if failures >= self._backoff.max_attempts:
                        raise
                    delay = self._backoff.delay(failures)
                    self._log.warning(
                        "projection.worker_store_unavailable",
                        attempt=failures,
                        retry_in=delay,
                        error=f"{type(exc).__name__}: {exc}",
                    )
                    self._runner._sleep(delay)
                    continue
                time.sleep(_TICK)
            return False
        except BaseException:
            failed = True  # the failed segment recorded FAILED and its error: leave them
            raise
        finally:
            self._stop_all()
            self._feed.close()
            if slot is not None:
                slot.release()
            self._record_stopped(failed)
            self._log.info("projection.worker_stopped", caught_up=sorted(done))

    def _record_stopped(self, failed: bool) -> None:
        """The last worker to stop records STOPPED, unless this one or another one failed.

        Another worker's failure (its segment recorded FAILED, with the error) stands: stopping
        the healthy ones does not mend it.
        """
        if failed:
            return
        try:
            others = self._store.leases_held(self._name, LeaseRole.WORKER, MAX_SEGMENTS)
            if others or self._store.describe(self._name).state is ProjectionState.FAILED:
                return
        except self._outages:
            return  # the store is away: status reads an active state nobody holds as stopped
        self._runner._record_state(ProjectionState.STOPPED)

    def _take_slot(self, stopping: Callable[[], bool]) -> Lease | None:
        while not stopping():
            for number in range(MAX_SEGMENTS):
                lease = self._store.lease(self._name, LeaseRole.WORKER, segment=number)
                if lease.try_acquire():
                    return lease
            time.sleep(self._interval)  # every slot taken: as many workers as segments can use
        return None

    def _reap(self, done: set[int]) -> None:
        """Forget finished segment runners; re-raise what made one fail."""
        for segment, child in list(self._children.items()):
            if child.thread.is_alive():
                continue
            del self._children[segment]
            error = child.runner.error
            if error is not None:
                # The others may have recorded an active state after it recorded FAILED: stop
                # them first, then record the failure last.
                self._stop_all()
                self._runner._record_state(ProjectionState.FAILED, error=f"{type(error).__name__}: {error}")
                raise error
            if child.result and child.result[0]:
                done.add(segment)

    def _rebalance(self, done: set[int], *, until_caught_up: bool) -> set[int]:
        """Take free segments up to the fair share, or hand extra ones back; segments held elsewhere."""
        workers = max(1, len(self._store.leases_held(self._name, LeaseRole.WORKER, MAX_SEGMENTS)))
        share = math.ceil(self._segments / workers)
        active = sorted(s for s, child in self._children.items() if not child.released)
        if len(active) > share:
            for segment in active[share:]:
                self._children[segment].released = True
                self._children[segment].runner.stop()
            self._log.info("projection.segments_released", segments=active[share:], workers=workers)
            return set()
        held = self._store.leases_held(self._name, LeaseRole.RUN, self._segments)
        held_elsewhere = held - set(self._children)
        for segment in range(self._segments):
            if len(active) >= share:
                break
            if segment in held or segment in self._children or segment in done:
                continue
            lease = self._store.lease(self._name, LeaseRole.RUN, segment=segment)
            if not lease.try_acquire():
                held_elsewhere.add(segment)
                continue
            self._start(segment, lease, until_caught_up=until_caught_up)
            active.append(segment)
            self._log.info("projection.segment_claimed", segment=segment, workers=workers, share=share)
        return held_elsewhere

    def _start(self, segment: int, lease: Lease, *, until_caught_up: bool) -> None:
        child_runner = self._segment_runner(segment, lease)
        result: list[bool] = []

        def target() -> None:
            try:
                outcome = child_runner._run_marked(
                    until_caught_up=until_caught_up, install_signal_handlers=False
                )
                result.append(outcome.value == "caught_up")
            except BaseException as exc:  # noqa: BLE001 - kept for the pool to re-raise
                child_runner._error = exc
                child_runner._log.exception("projection.segment_crashed")
            finally:
                lease.release()

        thread = threading.Thread(target=target, name=f"projection-{self._name}-{segment}", daemon=True)
        self._children[segment] = _Child(child_runner, thread, result)
        thread.start()

    def _stop_all(self) -> None:
        for child in self._children.values():
            child.runner.stop()
        for child in self._children.values():
            child.thread.join()
        self._children.clear()

    # -- rebuilding -------------------------------------------------------------------------

    def rebuild(
        self, progress: ProgressCallback | None, stopping: Callable[[], bool]
    ) -> RebuildReport | None:
        """Build every segment of the next generation (those no other worker builds) and switch.

        One thread per segment; each waits for its segment's rebuild lease, so segments another
        worker is building are left to it. Progress is the sum over the segments, read from the
        store, so it counts every worker's part. ``None`` if stopped before the switch.
        """
        started = time.monotonic()
        building = self._runner._create_shared(LeaseRole.REBUILD)
        if building is None:
            return None
        number = building.number
        threads: list[threading.Thread] = []
        runners: list[ProjectionRunner] = []
        switched: list[bool] = []
        for segment in range(self._segments):
            child = self._segment_runner(segment, None)
            runners.append(child)

            def target(child: ProjectionRunner = child) -> None:
                # Built, a segment waits for the others (maybe in other workers) and the switch.
                try:
                    while not child._stop_requested:
                        if child._build_segment(number):
                            switched.append(True)
                            return
                        record = self._store.describe(self._name)
                        if record.building is None or record.building.number != number:
                            return  # replaced or abandoned by another rebuild: nothing to wait for
                        child._sleep(child._lease_poll_interval)
                except BaseException as exc:  # noqa: BLE001 - kept to re-raise
                    child._error = exc

            threads.append(
                threading.Thread(target=target, name=f"rebuild-{self._name}-{segment}", daemon=True)
            )
        for thread in threads:
            thread.start()
        tracker: ProgressTracker | None = None
        before = 0
        try:
            while any(thread.is_alive() for thread in threads):
                if stopping():
                    for child in runners:
                        child.stop()
                building = self._store.describe(self._name).building
                if progress is not None and building is not None:
                    if tracker is None:
                        remaining = self._runner._count_after(None) - building.events_applied
                        tracker = ProgressTracker(
                            self._name, building.number, building.events_applied, max(remaining, 0), progress
                        )
                        before = building.events_applied
                    tracker.advance(
                        building.events_applied - before, building.checkpoint, building.segment_progress
                    )
                    before = building.events_applied
                time.sleep(0.5 if progress is not None else _TICK)
        finally:
            for child in runners:
                child.stop()
            for thread in threads:
                thread.join()
            self._feed.close()
        for child in runners:
            if child.error is not None:
                raise child.error
        record = self._store.describe(self._name)
        live = record.live
        if len(switched) < self._segments or live is None or live.number != number:
            return None
        if progress is not None:
            if tracker is None:
                tracker = ProgressTracker(self._name, number, 0, live.events_applied, progress)
            tracker.finish()
            tracker.advance(live.events_applied - before, live.checkpoint, live.segment_progress)
        return RebuildReport(
            projection=self._name,
            version=live.version,
            generation=live.number,
            events=live.events_applied,
            seconds=time.monotonic() - started,
            resumed=False,
            switched=True,
            position=live.checkpoint,
        )
