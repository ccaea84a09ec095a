"""The :class:`ProjectionRunner`: a catch-up subscription that keeps one read model up to date.

What it guarantees:

* **Exactly-once effect.** Events are applied in batches (``batch_size`` events or
  ``batch_delay`` seconds after the first one, whichever comes first; once live, as soon as
  no further event is waiting, so batches grow only under load); each batch's writes and
  the checkpoint commit in one transaction, so after a crash the runner resumes from the last
  committed checkpoint and no event is applied twice or skipped.
* **One active runner per projection**, across processes: the runner holds the projection's
  lease (a file lock on SQLite, an advisory lock on PostgreSQL) and every transaction checks it,
  so a second runner waits and takes over when the first dies.
* **Failures.** A handler that raises is retried with the projection's
  :class:`~projections.projection.Backoff` (each attempt in a fresh transaction, after the
  events before it were committed). If it still fails, the runner stops with
  :class:`~projections.errors.ProjectionFailedError` (policy ``STOP``, the default: the
  checkpoint stays before the event) or parks the event and goes on (policy ``PARK``).
  Parking is **ordered**: the later events of the parked event's sequencing key (its stream,
  unless the projection says otherwise) are parked behind it, recorded but not applied, so
  that key's events are never applied out of order; other keys go on. Parked events are listed
  by :meth:`ReadModelStore.parked_events` and retried with :meth:`ProjectionRunner.retry_parked`
  (or ``store.request_retry`` from another process): a key's parked events are replayed
  together, in order, up to the first that fails again.
* **Segments.** A projection with ``segments = N`` (N > 1) is run as N segments, each with its
  own lease, checkpoint and parked events (see :mod:`projections.projection`). ``run()`` then
  makes this process one *worker*: it holds a worker slot in the store, counts the live
  workers every ``rebalance_interval`` seconds, and holds its fair share of the segments
  (``ceil(N / workers)``), taking free ones and handing extra ones back after their current
  batch, so that workers started or killed on any machine sharing the read model store share
  the segments out without stopping the others. A segment's lease is fenced like the
  projection's: a worker that lost it cannot commit.
* **Outages.** An event store or read model store that is unavailable or locked is retried with backoff,
  resuming from the last committed checkpoint; a runner whose lease was taken over goes back
  to waiting for it.
* **Graceful stop.** :meth:`ProjectionRunner.stop`, SIGTERM or Ctrl-C (with
  ``install_signal_handlers=True``) let the current batch commit, then the runner returns.
* **Blue/green rebuilds.** When the live read model was built by an older ``version`` of the
  projection, the runner builds a new generation from the start of ``$all`` while the old one
  keeps serving queries, switches atomically when it has caught up, and goes on live. A
  rebuild started by :func:`projections.rebuild.rebuild` in another process is picked up at
  the next batch.
"""

from __future__ import annotations

import copy
import enum
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

import structlog

from eventsourcing_cqrs.errors import (
    EventStoreLockedError,
    EventStoreTimeoutError,
    EventStoreUnavailableError,
)
from eventsourcing_cqrs.event_store import read_after
from eventsourcing_cqrs.event_store.port import (
    CaughtUp,
    Checkpoint,
    EventFilter,
    EventReader,
    RecordedEvent,
    validate_count,
    validate_seconds,
)
from projections._batching import BatchPolicy
from projections._progress import ProgressCallback, ProgressTracker, RebuildReport
from projections._segments import Polled, SegmentPool, SharedFeed
from projections.errors import (
    GenerationChangedError,
    LeaseLostError,
    ProjectionError,
    ProjectionFailedError,
    ProjectionHaltedError,
    ProjectionVersionError,
    ReadModelStoreError,
    ReadModelStoreLockedError,
    ReadModelStoreUnavailableError,
    RunnerAlreadyRunningError,
)
from projections.projection import Backoff, FailurePolicy, Projection, key_function
from projections.read_model_store.port import (
    Generation,
    Lease,
    LeaseRole,
    ParkedEvent,
    ProjectionState,
    ReadModelStore,
)
from projections.status import ProjectionStatus, projection_status, wait_until_reflected

__all__ = ["ProjectionRunner", "RunOutcome"]

logger = structlog.get_logger(__name__)

#: Failures of the stores themselves, retried with the runner's ``store_backoff``.
_OUTAGES = (
    ReadModelStoreUnavailableError,
    ReadModelStoreLockedError,
    EventStoreUnavailableError,
    EventStoreTimeoutError,
    EventStoreLockedError,
)

#: The longest single wait for the subscription's next item, so that a stop is noticed promptly.
_IDLE_WAIT = 0.1

#: How often a segment runner tries for the whole projection's lease, which is held only for
#: the moment of creating or switching a generation.
_SHARED_LEASE_POLL = 0.02

#: Store errors that say nothing about the event: they stop the runner instead of parking.
_INFRASTRUCTURE_ERRORS = (ReadModelStoreUnavailableError, ReadModelStoreLockedError, GenerationChangedError)


class RunOutcome(enum.Enum):
    """Why :meth:`ProjectionRunner.run` returned."""

    STOPPED = "stopped"
    CAUGHT_UP = "caught_up"


class _EventFailed(ProjectionError):  # noqa: N818 - a signal inside the runner, never raised out
    """A handler raised inside a batch (never escapes the runner)."""

    def __init__(self, index: int, error: Exception) -> None:
        self.index = index
        self.error = error
        super().__init__(f"event {index} of the batch failed")


class _StopRequested(ProjectionError):  # noqa: N818 - a signal inside the runner, never raised out
    """The runner was asked to stop while it was retrying an event (never escapes)."""


class _Follow(enum.Enum):
    STOPPED = "stopped"
    CAUGHT_UP = "caught_up"
    GENERATION_CHANGED = "generation_changed"


def _describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _held_back(key: str) -> str:
    """The error recorded for an event parked behind an earlier parked event of its key."""
    return f"held back: an earlier event of {key!r} is parked"


@dataclass
class _Batch:
    """What the open batch holds; when it commits is the :class:`BatchPolicy`'s call."""

    events: list[RecordedEvent]
    position: int | None = None

    def clear(self) -> None:
        self.events = []
        self.position = None


class ProjectionRunner:
    """Runs one :class:`~projections.projection.Projection` against an event store and a read model store.

    ``run()`` blocks (in the calling thread); ``start()`` runs it in a daemon thread. Every
    keyword argument has a default that suits a service; tests shorten the delays:

    ``batch_size``, ``batch_delay``
        A batch commits when it holds ``batch_size`` events or ``batch_delay`` seconds after
        its first one, whichever comes first (and whenever the subscription catches up). Once
        live, it also commits as soon as the subscription has nothing more waiting, so a lone
        event is visible at once and ``batch_delay`` only caps a batch under sustained load.
    ``backoff``, ``failure_policy``
        Override the projection's own retry schedule and policy for failing events.
    ``lease_poll_interval``
        How often a runner waiting for the lease tries again, in seconds.
    ``retry_check_interval``
        How often an idle runner looks for parked events whose retry was requested.
    ``checkpoint_interval``
        How many filtered-out events the subscription may skip before it reports a checkpoint.
    ``store_backoff``
        How a read model store that is unavailable or locked is retried before the runner
        gives up (by default 10 attempts, from 0.5 s apart doubling to 30 s).
    ``rebalance_interval``
        For a segmented projection: how often this worker counts the others and takes or
        gives back segments, in seconds.

    A ``batch_size`` that is not a whole number of at least 1, or a ``batch_delay`` that is not
    a number of seconds, zero or more, raises :class:`~eventsourcing_cqrs.errors.InvalidInputError`.
    """

    def __init__(
        self,
        projection: Projection,
        events: EventReader,
        store: ReadModelStore,
        *,
        batch_size: int = 500,
        batch_delay: float = 0.05,
        backoff: Backoff | None = None,
        failure_policy: FailurePolicy | None = None,
        lease_poll_interval: float = 0.5,
        retry_check_interval: float = 1.0,
        checkpoint_interval: int = 500,
        store_backoff: Backoff | None = None,
        rebalance_interval: float = 1.0,
    ) -> None:
        validate_count(batch_size, "batch_size", "events")
        validate_seconds(batch_delay, "batch_delay", zero_allowed=True)
        validate_seconds(rebalance_interval, "rebalance_interval")
        self._rebalance_interval = rebalance_interval
        self._projection = projection
        self._name = projection.name
        self._filter: EventFilter = projection.event_filter()
        self._events = events
        self._store = store
        self._batch_size = batch_size
        self._batch_delay = batch_delay
        self._backoff = backoff or projection.backoff
        self._policy = failure_policy or projection.failure_policy
        self._lease_poll_interval = lease_poll_interval
        self._retry_check_interval = retry_check_interval
        self._checkpoint_interval = checkpoint_interval
        self._store_backoff = store_backoff or Backoff(max_attempts=10, base_delay=0.5, max_delay=30.0)
        self._store_failures = 0
        # A plain flag, so that a signal handler may set it without taking any lock.
        self._stop_requested = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._running = threading.Event()
        self._log = logger.bind(projection=self._name)
        #: What the runner calls its consumer in messages ("Projection", "Reactor", ...).
        self._kind = "Projection"
        #: Whether events have effects outside the read model, carried out before their
        #: transaction by :meth:`_react` (reactors): see :class:`projections.ReactorRunner`.
        self._reacts = False
        #: Errors that say nothing about the event: they go to the outage and stop paths.
        self._infrastructure: tuple[type[Exception], ...] = _INFRASTRUCTURE_ERRORS
        #: How many segments the projection has, and which one this runner writes (``None``:
        #: the whole projection; a segmented one then runs a SegmentPool of segment runners).
        self._segments = projection.segments
        self._segment: int | None = None
        #: The segment lease the pool took for this runner, which it must not wait for again.
        self._claimed: Lease | None = None
        self._sequencing_key = key_function(projection)
        #: The sequencing keys with parked events in the generation (and segment) followed.
        self._blocked: set[str] = set()
        #: The reader of $all a segment runner shares with its worker's other segments.
        self._feed: SharedFeed | None = None

    def __repr__(self) -> str:
        return f"<ProjectionRunner {self._name!r}>"

    @property
    def projection(self) -> Projection:
        """The projection this runner applies."""
        return self._projection

    @property
    def store(self) -> ReadModelStore:
        """The read model store it writes."""
        return self._store

    # -- lifetime -------------------------------------------------------------------------

    def run(self, *, until_caught_up: bool = False, install_signal_handlers: bool = False) -> RunOutcome:
        """Apply events until :meth:`stop` (or, with ``until_caught_up``, until live).

        With ``install_signal_handlers`` (main thread only) SIGTERM and SIGINT stop the runner
        gracefully: the current batch commits, then ``run`` returns ``RunOutcome.STOPPED``.
        Raises :class:`~projections.errors.ProjectionFailedError` when an event fails for good
        under the ``STOP`` policy.
        """
        self._stop_requested = False
        return self._run_marked(until_caught_up, install_signal_handlers)

    def _run_marked(self, until_caught_up: bool, install_signal_handlers: bool) -> RunOutcome:
        self._running.set()
        with self._signals(install_signal_handlers):
            try:
                return self._run(until_caught_up=until_caught_up)
            finally:
                self._running.clear()

    def start(self) -> None:
        """Run in a background thread; see :meth:`join` and :attr:`error`.

        Raises :class:`~projections.errors.RunnerAlreadyRunningError` (a ``RuntimeError``) if
        its thread is still running.
        """
        if self._thread is not None and self._thread.is_alive():
            raise RunnerAlreadyRunningError(self._name)
        self._error = None
        self._stop_requested = False
        self._running.set()

        def target() -> None:
            try:
                # Not run(): a stop() called right after start() must not be forgotten.
                self._run_marked(until_caught_up=False, install_signal_handlers=False)
            except BaseException as exc:  # noqa: BLE001 - kept for join() to re-raise
                self._error = exc
                self._log.exception("projection.runner_crashed")

        self._thread = threading.Thread(target=target, name=f"projection-{self._name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the runner to stop after the current batch; safe from any thread or a signal handler."""
        self._stop_requested = True

    def join(self, timeout: float | None = None) -> None:
        """Wait for the background thread; re-raise what made it fail."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"Projection runner {self._name!r} did not stop within {timeout} s.")
        if self._error is not None:
            raise self._error

    @property
    def running(self) -> bool:
        """Whether :meth:`run` is executing."""
        return self._running.is_set()

    @property
    def error(self) -> BaseException | None:
        """What made the background thread stop, if anything did."""
        return self._error

    @contextmanager
    def _signals(self, install: bool) -> Iterator[None]:
        if not install or threading.current_thread() is not threading.main_thread():
            yield
            return

        def handle(signum: int, frame: FrameType | None) -> None:
            del frame
            self._stop_requested = True

        previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # -- queries --------------------------------------------------------------------------

    def status(self) -> ProjectionStatus:
        """Checkpoint, head of ``$all``, lag, state, parked count and last error."""
        return projection_status(self._projection, self._events, self._store)

    def wait_for(self, position: int, timeout: float = 5.0) -> None:
        """Block until the live read model reflects every relevant event up to ``position``.

        Raises what made this runner's thread fail (e.g.
        :class:`~projections.errors.ProjectionFailedError`) as soon as it has failed, and
        :class:`~projections.errors.ProjectionHaltedError` when the store says its runner (in any
        process) failed, rather than waiting out ``timeout``.
        """
        try:
            wait_until_reflected(
                self._projection, self._events, self._store, position, timeout, failure=lambda: self._error
            )
        except ProjectionHaltedError as exc:
            halted = exc
        else:
            return
        # This runner's thread may be just ending: its own error says more than the record.
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)
        if self._error is not None:
            raise self._error
        raise halted

    def retry_parked(
        self, positions: list[int] | None = None, *, keys: list[str] | None = None, timeout: float = 30.0
    ) -> int:
        """Retry parked events (all by default, else those at ``positions`` and of ``keys``).

        Every parked event of a key is replayed with it, in order, up to the first that fails
        again. Returns how many were applied. When this runner is running, it retries them at
        its next opportunity and this call waits for that; otherwise the retries run here, under
        the projection's lease (each segment's, for a segmented projection).
        """
        before = {event.position for event in self._store.parked_events(self._name)}
        requested = self._store.request_retry(self._name, positions, keys=keys)
        if requested == 0:
            return 0
        if self.running:
            deadline = time.monotonic() + timeout
            while any(e.retry_requested for e in self._store.parked_events(self._name)):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"Parked events of {self._name!r} were not retried within {timeout} s."
                    )
                time.sleep(0.01)
        else:
            self._stop_requested = False
            parked = self._store.parked_events(self._name)
            if self._segments == 1:
                self._retry_under_lease(self, timeout)
            for segment in sorted({e.segment for e in parked if e.retry_requested and e.segment is not None}):
                self._retry_under_lease(self._for_segment(segment, None), timeout)
        after = {event.position for event in self._store.parked_events(self._name)}
        return len(before - after)

    def _retry_under_lease(self, runner: ProjectionRunner, timeout: float) -> None:
        """Run ``runner``'s requested retries (its segment's, if it has one) under its lease."""
        lease = self._store.lease(self._name, LeaseRole.RUN, segment=runner._segment)
        if not runner._acquire(lease, timeout=timeout):
            raise TimeoutError(f"The lease of {self._name!r} stayed taken for {timeout} s.")
        try:
            live = self._store.describe(self._name).live
            if live is not None:
                with self._store.transaction(self._name, live.number, lease=lease) as transaction:
                    runner._blocked = transaction.parked_keys()
                runner._retry_requested(live, lease)
        finally:
            lease.release()

    # -- the loop -------------------------------------------------------------------------

    def _acquire(self, lease: Lease, *, timeout: float | None = None, poll: float | None = None) -> bool:
        """Wait for ``lease`` (every ``poll`` seconds, by default ``lease_poll_interval``); whether got."""
        deadline = None if timeout is None else time.monotonic() + timeout
        waiting_logged = False
        while not self._stop_requested:
            if lease.try_acquire():
                self._log.info("projection.lease_acquired", role=lease.role.value, epoch=lease.epoch)
                return True
            if not waiting_logged:
                self._log.info("projection.lease_waiting", role=lease.role.value)
                waiting_logged = True
                if lease.role is LeaseRole.RUN:
                    self._set_state(ProjectionState.WAITING_FOR_LEASE)
            if deadline is not None and time.monotonic() >= deadline:
                return False
            self._sleep(self._lease_poll_interval if poll is None else poll)
        return False

    def _sleep(self, seconds: float) -> None:
        """Sleep in short slices so that a stop request is noticed promptly."""
        end = time.monotonic() + seconds
        while not self._stop_requested:
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def _for_segment(self, segment: int, lease: Lease | None) -> ProjectionRunner:
        """A runner of one segment, with this one's settings, holding ``lease`` (the pool's claim)."""
        runner = copy.copy(self)
        runner._segment = segment
        runner._claimed = lease
        runner._stop_requested = False
        runner._thread = None
        runner._error = None
        runner._running = threading.Event()
        runner._blocked = set()
        runner._store_failures = 0
        runner._log = self._log.bind(segment=segment)
        return runner

    def _checkpoint_of(self, generation: Generation) -> int | None:
        """Where this runner resumes in ``generation``: its segment's checkpoint, or the generation's."""
        if self._segment is None:
            return generation.checkpoint
        return generation.segment_progress[self._segment].checkpoint

    def _fresh(self, generation: Generation) -> bool:
        """Whether nothing was followed in ``generation`` yet (by this runner's segment)."""
        if self._segment is None:
            return generation.checkpoint is None and generation.events_applied == 0
        progress = generation.segment_progress[self._segment]
        return progress.checkpoint is None and progress.events_applied == 0

    def _outdated(self, generation: Generation) -> bool:
        """Whether ``generation`` was built by an older version or another number of segments."""
        return generation.version < self._projection.version or generation.segments != self._segments

    def _set_state(self, state: ProjectionState, *, error: str | None = None) -> None:
        """Record the state.

        A segment runner never waits for its lease (its pool claimed it), and records no active
        state over a FAILED one: another segment's failure, maybe in another worker, stands until
        a worker starts again (its pool records CATCHING_UP first).
        """
        if self._segment is not None and error is None:
            if state is ProjectionState.WAITING_FOR_LEASE:
                return
            if self._store.describe(self._name).state is ProjectionState.FAILED:
                return
        self._store.set_state(self._name, state, error=error)

    def _run(self, *, until_caught_up: bool) -> RunOutcome:
        if self._segments > 1 and self._segment is None:
            pool = SegmentPool(
                self,
                self._store,
                self._name,
                segments=self._segments,
                rebalance_interval=self._rebalance_interval,
                outages=_OUTAGES,
            )
            caught_up = pool.run(until_caught_up=until_caught_up, stopping=lambda: self._stop_requested)
            return RunOutcome.CAUGHT_UP if caught_up else RunOutcome.STOPPED
        lease = self._claimed or self._store.lease(self._name, LeaseRole.RUN)
        failed = False
        self._store_failures = 0
        try:
            while not self._stop_requested:
                try:
                    if not lease.held and not self._acquire(lease):
                        return RunOutcome.STOPPED
                    return self._run_leased(lease, until_caught_up=until_caught_up)
                except LeaseLostError as exc:
                    # Another runner took over (ours was presumed dead): stand by again (a
                    # segment runner hands its segment back to its pool instead).
                    self._log.warning("projection.lease_lost", error=_describe_error(exc))
                    lease.release()
                    if self._claimed is not None:
                        return RunOutcome.STOPPED
                except _OUTAGES as exc:
                    self._store_failures += 1
                    if self._store_failures >= self._store_backoff.max_attempts:
                        raise
                    delay = self._store_backoff.delay(self._store_failures)
                    self._log.warning(
                        "projection.store_unavailable",
                        attempt=self._store_failures,
                        retry_in=delay,
                        error=_describe_error(exc),
                    )
                    self._sleep(delay)
            return RunOutcome.STOPPED
        except ProjectionVersionError:
            # A newer version owns the read model: leave its state alone.
            failed = True
            raise
        except Exception as exc:
            failed = True
            self._record_state(ProjectionState.FAILED, error=_describe_error(exc))
            raise
        finally:
            if lease.held:
                if not failed and self._segment is None:
                    self._record_state(ProjectionState.STOPPED)
                lease.release()
            self._log.info("projection.runner_stopped")

    def _run_leased(self, lease: Lease, *, until_caught_up: bool) -> RunOutcome:
        while not self._stop_requested:
            record = self._store.describe(self._name)
            live = record.live
            self._check_version(live)
            if self._segment is not None and (live is None or self._outdated(live)):
                # Segments share the generation: it is created (or rebuilt) under the whole
                # projection's lease, taken briefly by whichever segment runner gets there first.
                if live is None:
                    self._create_shared(LeaseRole.RUN)
                elif not self._build_segment():
                    self._sleep(self._lease_poll_interval)  # the other segments are still building
                continue
            if live is not None and self._outdated(live):
                self._log.info(
                    "projection.version_changed",
                    live_version=live.version,
                    version=self._projection.version,
                    live_segments=live.segments,
                    segments=self._segments,
                )
                report = self._build(None)
                if report is None or not report.switched:
                    return RunOutcome.STOPPED
                continue
            if live is None:
                live = self._store.create_generation(
                    self._name, self._projection.version, self._projection.tables, lease=lease
                )
                live = self._started(live, lease)
            elif self._fresh(live):
                # A first run that died between creating its generation and recording where it
                # starts (a reactor records a checkpoint at once): nothing was followed yet.
                live = self._started(live, lease)
            outcome = self._follow(live, lease, stop_when_caught_up=until_caught_up)
            if outcome is _Follow.GENERATION_CHANGED:
                self._log.info("projection.generation_changed", generation=live.number)
                continue
            return RunOutcome.CAUGHT_UP if outcome is _Follow.CAUGHT_UP else RunOutcome.STOPPED
        return RunOutcome.STOPPED

    def _check_version(self, live: Generation | None) -> None:
        if live is not None and live.version > self._projection.version:
            raise ProjectionVersionError(self._name, self._projection.version, live.version)

    def _record_state(self, state: ProjectionState, *, error: str | None = None) -> None:
        """Record the state, without letting a store failure hide the error being reported."""
        try:
            self._store.set_state(self._name, state, error=error)
        except ProjectionError as exc:
            self._log.warning("projection.state_not_recorded", state=state.value, error=_describe_error(exc))

    # -- rebuilding -----------------------------------------------------------------------

    def rebuild(self, progress: ProgressCallback | None = None) -> RebuildReport | None:
        """Build a new generation from the start of ``$all`` beside the live one and switch to it.

        Resumes an interrupted rebuild of the same version. Holds only the rebuild lease, so a
        runner of the live generation (in any process) keeps serving and writing meanwhile, and
        moves to the new generation at its next batch. Returns ``None`` if stopped before the
        switch (run it again to resume). See :func:`projections.rebuild.rebuild`.
        """
        self._stop_requested = False
        self._running.set()
        try:
            if self._segments > 1 and self._segment is None:
                pool = SegmentPool(
                    self,
                    self._store,
                    self._name,
                    segments=self._segments,
                    rebalance_interval=self._rebalance_interval,
                    outages=_OUTAGES,
                )
                return pool.rebuild(progress, stopping=lambda: self._stop_requested)
            return self._build(progress)
        finally:
            self._running.clear()

    def _build(self, progress: ProgressCallback | None) -> RebuildReport | None:
        lease = self._store.lease(self._name, LeaseRole.REBUILD)
        if not self._acquire(lease):
            return None
        try:
            record = self._store.describe(self._name)
            self._check_version(record.live)
            building = record.building
            resumed = building is not None and not self._outdated(building)
            if not resumed or building is None:
                building = self._store.create_generation(
                    self._name, self._projection.version, self._projection.tables, lease=lease
                )
            # Counting reads the rest of $all once more: only worth it when someone watches.
            remaining = self._count_after(building.checkpoint) if progress is not None else 0
            tracker = ProgressTracker(
                self._name, building.number, building.events_applied, remaining, progress
            )
            log = self._log.bind(generation=building.number, version=self._projection.version)
            log.info(
                "projection.rebuild_started",
                resumed=resumed,
                done=building.events_applied,
                remaining=remaining,
            )
            self._set_state(ProjectionState.REBUILDING)
            outcome = self._follow(building, lease, stop_when_caught_up=True, tracker=tracker)
            if outcome is not _Follow.CAUGHT_UP:
                log.info("projection.rebuild_interrupted", done=tracker.applied_now)
                return None
            tracker.finish()
            self._store.switch_generation(self._name, building.number, lease=lease)
            final = self._store.describe(self._name).live
            report = RebuildReport(
                projection=self._name,
                version=self._projection.version,
                generation=building.number,
                events=tracker.applied_now,
                seconds=tracker.seconds,
                resumed=resumed,
                switched=True,
                position=None if final is None else final.checkpoint,
            )
            log.info("projection.rebuild_switched", events=report.events, seconds=round(report.seconds, 3))
            return report
        finally:
            lease.release()

    # -- segments: the generation they share ------------------------------------------------

    def _create_shared(self, role: LeaseRole, *, unless_current: bool = False) -> Generation | None:
        """The live (``RUN``) or building (``REBUILD``) generation every segment writes.

        Created under the whole projection's lease (held only for this), unless another segment
        runner created it first; ``None`` if stopped while waiting for that lease, or, with
        ``unless_current``, if the live generation no longer needs a rebuild (another segment
        switched it meanwhile).
        """
        if role is LeaseRole.RUN:
            live = self._store.describe(self._name).live
            if live is not None:
                return live  # created by another segment runner: no need for the lease
        lease = self._store.lease(self._name, role)
        if not self._acquire(lease, poll=_SHARED_LEASE_POLL):
            return None
        try:
            record = self._store.describe(self._name)
            current = record.live if role is LeaseRole.RUN else record.building
            if role is LeaseRole.RUN and current is not None:
                return current
            if unless_current and record.live is not None and not self._outdated(record.live):
                return None
            if current is None or self._outdated(current):
                current = self._store.create_generation(
                    self._name,
                    self._projection.version,
                    self._projection.tables,
                    lease=lease,
                    segments=self._segments,
                )
            return current
        finally:
            lease.release()

    def _build_segment(self, target: int | None = None) -> bool:
        """Build this runner's segment of the next generation; whether the projection switched to it.

        The segment follows the new generation from the start of ``$all`` until it has caught
        up, records that, and the last segment to catch up switches the projection over (under
        the whole projection's rebuild lease, held only for the switch). Until then the live
        generation keeps serving queries. ``target`` is the building generation's number when
        a rebuild asked for that one: it is then never replaced by a new one.
        """
        segment = self._segment
        assert segment is not None
        lease = self._store.lease(self._name, LeaseRole.REBUILD, segment=segment)
        if not self._acquire(lease):
            return False
        try:
            record = self._store.describe(self._name)
            building = record.building
            if target is not None:
                if building is None or building.number != target:
                    return record.live is not None and record.live.number == target
            elif record.live is not None and not self._outdated(record.live):
                return True  # another segment switched it since the caller looked
            elif building is None or self._outdated(building):
                building = self._create_shared(LeaseRole.REBUILD, unless_current=True)
            if building is None:
                return False
            if not building.segment_progress[segment].caught_up:
                log = self._log.bind(generation=building.number, version=self._projection.version)
                log.info(
                    "projection.segment_rebuild_started",
                    done=building.segment_progress[segment].events_applied,
                )
                self._set_state(ProjectionState.REBUILDING)
                if self._follow(building, lease, stop_when_caught_up=True) is not _Follow.CAUGHT_UP:
                    return False
                with self._store.transaction(self._name, building.number, lease=lease) as transaction:
                    transaction.mark_caught_up()
                log.info("projection.segment_rebuilt")
        except (GenerationChangedError, LeaseLostError) as exc:
            self._log.info("projection.segment_rebuild_interrupted", error=_describe_error(exc))
            return False
        finally:
            lease.release()
        return self._switch_when_built(building.number)

    def _switch_when_built(self, number: int) -> bool:
        """Switch to building generation ``number`` if every segment caught up; whether it is live."""
        lease = self._store.lease(self._name, LeaseRole.REBUILD)
        if not self._acquire(lease, poll=_SHARED_LEASE_POLL):
            return False
        try:
            record = self._store.describe(self._name)
            if record.live is not None and record.live.number == number:
                return True
            building = record.building
            if building is None or building.number != number:
                return False
            if not all(progress.caught_up for progress in building.segment_progress):
                return False
            self._store.switch_generation(self._name, number, lease=lease)
            self._log.info(
                "projection.rebuild_switched",
                generation=number,
                events=building.events_applied,
                segments=self._segments,
            )
            return True
        finally:
            lease.release()

    def _count_after(self, checkpoint: int | None) -> int:
        return sum(1 for _ in read_after(self._events, checkpoint, filter=self._filter))

    # -- following one generation ---------------------------------------------------------

    def _follow(
        self,
        generation: Generation,
        lease: Lease,
        *,
        stop_when_caught_up: bool,
        tracker: ProgressTracker | None = None,
    ) -> _Follow:
        committed = self._checkpoint_of(generation)
        batch = _Batch([])
        policy = BatchPolicy(self._batch_size, self._batch_delay, idle_wait=_IDLE_WAIT)
        next_retry_check = time.monotonic()
        building = lease.role is LeaseRole.REBUILD
        if not building:
            self._set_state(ProjectionState.CATCHING_UP)
        with self._store.transaction(self._name, generation.number, lease=lease) as transaction:
            self._blocked = transaction.parked_keys()
        segment = self._segment

        def flush() -> None:
            nonlocal committed
            policy.committed()
            if batch.position is None or (committed is not None and batch.position <= committed):
                batch.clear()
                return
            applied = self._commit(generation, lease, batch.events, batch.position)
            committed = batch.position
            if tracker is not None:
                tracker.advance(applied, committed)
            batch.clear()

        subscription: Polled
        if segment is not None:
            # A segment runner follows its share of its worker's one reader of $all: its own events.
            assert self._feed is not None, "a segment runner follows $all through its pool's feed"
            subscription = self._feed.subscribe(segment, committed)
        else:
            subscription = self._events.subscribe(
                from_position=committed, filter=self._filter, checkpoint_interval=self._checkpoint_interval
            )
        # Bound once: this loop runs per event (see projections._batching for the rules).
        poll = subscription.poll
        timeout = policy.timeout
        event_added = policy.event_added
        try:
            with subscription:
                while True:
                    if self._stop_requested:
                        flush()
                        return _Follow.STOPPED
                    item = poll(timeout())
                    if isinstance(item, RecordedEvent):
                        batch.events.append(item)
                        batch.position = item.position
                        if event_added():
                            flush()
                    elif item is None:
                        if policy.nothing_waiting():
                            flush()
                        if not building and policy.live:
                            self._idle(generation, lease)
                        if not building and time.monotonic() >= next_retry_check:
                            next_retry_check = time.monotonic() + self._retry_check_interval
                            if any(
                                e.retry_requested and e.segment == segment
                                for e in self._store.parked_events(self._name)
                            ):
                                self._retry_requested(generation, lease)
                    elif isinstance(item, Checkpoint):
                        if committed is None or item.position > committed:
                            batch.position = max(batch.position or 0, item.position)
                            if policy.checkpoint_seen():
                                flush()
                        elif policy.due():
                            flush()
                    elif isinstance(item, CaughtUp):
                        if item.position is not None and (committed is None or item.position > committed):
                            batch.position = max(batch.position or 0, item.position)
                        newly_live = not policy.live
                        if policy.caught_up():
                            flush()
                        if newly_live:
                            self._log.info(
                                "projection.caught_up", position=committed, generation=generation.number
                            )
                            if not building:
                                self._set_state(ProjectionState.LIVE)
                        if stop_when_caught_up:
                            if not building:
                                self._idle(generation, lease)  # a run to catch up ends idle
                            return _Follow.CAUGHT_UP
        except GenerationChangedError:
            return _Follow.GENERATION_CHANGED
        except _StopRequested:
            return _Follow.STOPPED

    def _commit(
        self,
        generation: Generation,
        lease: Lease,
        events: list[RecordedEvent],
        position: int,
        *,
        reacted: bool = False,
    ) -> int:
        """Apply ``events`` and move the checkpoint to ``position`` in one transaction; how many applied.

        A runner whose events have effects (``_reacts``) carries them out first, event by event,
        unless ``reacted`` says they were; an effect that fails is handled like a handler that
        raises (the events before it are committed, it is retried, then stops or is parked).
        """
        try:
            if self._reacts and not reacted:
                self._react_all(generation, lease, events)
                reacted = True
            with self._store.transaction(self._name, generation.number, lease=lease) as transaction:
                apply = self._projection.applier(transaction)
                blocked, key_of = self._blocked, self._sequencing_key
                index = held = 0
                try:
                    # One try around the loop rather than one per event: the loop runs per event.
                    for event in events:
                        if blocked and (key := key_of(event)) in blocked:
                            # Behind a parked event of its key: recorded, not applied (ordered parking).
                            transaction.park(event, _held_back(key), 0, key=key, held_back=True)
                            held += 1
                        else:
                            apply(event)
                        index += 1
                except self._infrastructure:
                    raise
                except Exception as exc:
                    raise _EventFailed(index, exc) from exc
                transaction.set_checkpoint(position, len(events) - held)
        except _EventFailed as failed:
            # Effects are carried out for a prefix only when one fails (``reacted`` is still
            # false then): the events before the failing one had theirs, the rest not yet.
            good, bad, rest = events[: failed.index], events[failed.index], events[failed.index + 1 :]
            applied = self._commit(generation, lease, good, good[-1].position, reacted=True) if good else 0
            applied += self._retry(generation, lease, bad, failed.error, reacted=reacted)
            if rest or position > bad.position:
                applied += self._commit(generation, lease, rest, position, reacted=reacted)
            return applied
        except ReadModelStoreError as exc:
            # Not an outage, and no handler raised: the store refused the batch's writes when
            # they were flushed. Find the event by committing one at a time; that one is then
            # retried, parked or stops the runner like any failing event, naming itself.
            if isinstance(exc, self._infrastructure) or not events:
                raise
            self._log.error(
                "projection.batch_refused",
                generation=generation.number,
                events=len(events),
                first_position=events[0].position,
                last_position=position,
                error=_describe_error(exc),
            )
            if len(events) == 1:
                applied = self._retry(generation, lease, events[0], exc, reacted=reacted)
            else:
                applied = sum(
                    self._commit(generation, lease, [event], event.position, reacted=reacted)
                    for event in events
                )
            if position > events[-1].position:
                applied += self._commit(generation, lease, [], position)
            return applied
        self._store_failures = 0
        if events:
            self._log.debug(
                "projection.batch_committed",
                generation=generation.number,
                events=len(events),
                position=position,
            )
        return len(events)

    def _retry(
        self,
        generation: Generation,
        lease: Lease,
        event: RecordedEvent,
        error: Exception,
        *,
        reacted: bool = False,
    ) -> int:
        """Retry a failing event with backoff; park it or raise when it keeps failing.

        Its effects (a reactor's) are carried out again on each attempt unless ``reacted``
        says they succeeded and only the transaction failed.
        """
        log = self._log.bind(
            event_type=event.type, stream=event.stream, revision=event.revision, position=event.position
        )
        attempts = 1
        log.warning("projection.event_failed", attempt=attempts, error=_describe_error(error))
        while attempts < self._backoff.max_attempts:
            self._sleep(self._backoff.delay(attempts))
            if self._stop_requested:
                raise _StopRequested(f"{self._name} stopped while retrying")
            attempts += 1
            try:
                if self._reacts and not reacted:
                    self._react(lease, event)
                    reacted = True
                with self._store.transaction(self._name, generation.number, lease=lease) as transaction:
                    self._projection.apply(event, transaction)
                    transaction.set_checkpoint(event.position, 1)
            except self._infrastructure:
                raise
            except Exception as exc:  # noqa: BLE001 - a handler may raise anything; it is retried
                error = exc
                log.warning("projection.event_failed", attempt=attempts, error=_describe_error(exc))
                continue
            log.info("projection.event_recovered", attempts=attempts)
            return 1
        failure = ProjectionFailedError(
            self._name,
            kind=self._kind,
            event_type=event.type,
            stream=event.stream,
            revision=event.revision,
            position=event.position,
            attempts=attempts,
            error=error,
        )
        if self._policy is FailurePolicy.STOP:
            log.error("projection.event_gave_up", attempts=attempts, error=_describe_error(error))
            raise failure from error
        key = self._sequencing_key(event)
        with self._store.transaction(self._name, generation.number, lease=lease) as transaction:
            transaction.park(event, _describe_error(error), attempts, key=key)
            transaction.set_checkpoint(event.position, 0)
        self._blocked.add(key)  # its key's later events are held back behind it from now on
        state = ProjectionState.REBUILDING if lease.role is LeaseRole.REBUILD else ProjectionState.CATCHING_UP
        self._set_state(state, error=str(failure))
        log.warning("projection.event_parked", attempts=attempts, key=key, error=_describe_error(error))
        return 0

    def _retry_requested(self, generation: Generation, lease: Lease) -> None:
        """Replay the parked events of each key with a retry request, in order, one transaction each.

        A key's replay stops at the first event that fails again: it and the rest of its key stay
        parked (the rest still held back) and the key stays blocked. Every parked event of the key
        is replayed, also those parked behind it after the request.
        """
        with self._store.transaction(self._name, generation.number, lease=lease) as transaction:
            keys = {event.key for event in transaction.parked_for_retry()}
        by_key: dict[str, list[ParkedEvent]] = {}
        for event in self._store.parked_events(self._name):
            if event.segment == self._segment and event.key in keys:
                by_key.setdefault(event.key, []).append(event)
        for key, parked in by_key.items():
            if self._replay_parked(generation, lease, key, parked):
                self._blocked.discard(key)

    def _replay_parked(
        self, generation: Generation, lease: Lease, key: str, parked: list[ParkedEvent]
    ) -> bool:
        """Replay one key's parked events in order; whether all of them were applied."""
        for index, event in enumerate(parked):
            log = self._log.bind(
                position=event.position, event_type=event.event_type, stream=event.stream, key=key
            )
            try:
                if self._reacts:
                    # Other keys' later events went on while it was parked: not in $all order now.
                    self._react(lease, event.to_recorded(), out_of_order=True)
                with self._store.transaction(self._name, generation.number, lease=lease) as transaction:
                    self._projection.apply(event.to_recorded(), transaction)
                    transaction.unpark(event.position)
                    transaction.set_checkpoint(event.position, 1)  # counted as applied now
            except self._infrastructure:
                raise
            except Exception as exc:  # noqa: BLE001 - a handler may raise anything; it stays parked
                with self._store.transaction(self._name, generation.number, lease=lease) as transaction:
                    transaction.parked_failed_again(event.position, _describe_error(exc), 1)
                    for behind in parked[index + 1 :]:
                        transaction.parked_failed_again(behind.position, _held_back(key), 0)
                log.warning(
                    "projection.parked_retry_failed",
                    held_back=len(parked) - index - 1,
                    error=_describe_error(exc),
                )
                return False
            log.info("projection.parked_retry_succeeded")
        return True

    # -- hooks for runners whose events have effects (projections.ReactorRunner) -------------

    def _react_all(self, generation: Generation, lease: Lease, events: list[RecordedEvent]) -> None:
        """Carry out each event's effects in order; :class:`_EventFailed` names the one that failed."""
        del generation  # what a runner that fences its effects checks the lease against
        blocked, key_of = self._blocked, self._sequencing_key
        index = 0
        try:
            for event in events:
                if not (blocked and key_of(event) in blocked):  # held back: no effect until retried
                    self._react(lease, event)
                index += 1
        except self._infrastructure:
            raise
        except Exception as exc:
            raise _EventFailed(index, exc) from exc

    def _react(self, lease: Lease, event: RecordedEvent, *, out_of_order: bool = False) -> None:
        """Carry out ``event``'s effects outside the read model (nothing for a projection).

        ``out_of_order`` when later events may have been reacted to already (a parked event).
        """

    def _started(self, generation: Generation, lease: Lease) -> Generation:
        """Called once when the first generation was just created; the generation to follow."""
        return generation

    def _idle(self, generation: Generation, lease: Lease) -> None:
        """Called whenever the subscription has nothing waiting (a reactor fires deadlines here)."""
