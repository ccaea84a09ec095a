"""Where a projection stands, and waiting for it: for operators, the CLI and read-your-writes.

Both functions work from any process: they read the read model store and the event store, not
the runner's memory.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from eventsourcing_cqrs.event_store import read_after
from eventsourcing_cqrs.event_store.port import EventReader, RecordedEvent, validate_position
from projections.errors import ProjectionHaltedError, WaitTimeoutError
from projections.projection import Projection, key_function, segment_of
from projections.read_model_store.port import (
    MAX_SEGMENTS,
    Generation,
    LeaseRole,
    ParkedEvent,
    ProjectionState,
    ReadModelStore,
)

__all__ = [
    "BuildingStatus",
    "ProjectionStatus",
    "SegmentStatus",
    "projection_status",
    "wait_for",
    "wait_until_reflected",
]

_ACTIVE_STATES = frozenset(
    {
        ProjectionState.WAITING_FOR_LEASE,
        ProjectionState.CATCHING_UP,
        ProjectionState.LIVE,
        ProjectionState.REBUILDING,
    }
)


@dataclass(frozen=True, slots=True)
class BuildingStatus:
    """A generation being rebuilt beside the live one."""

    generation: int
    version: int
    checkpoint: int | None
    events_applied: int


@dataclass(frozen=True, slots=True)
class SegmentStatus:
    """One segment of a segmented projection's live generation.

    ``owner`` is who took the segment's lease last (``host:pid``) and ``running`` whether
    someone holds it now; ``lag_events`` counts the segment's own events after its checkpoint
    (at most the status call's ``count_limit``).
    """

    segment: int
    checkpoint: int | None
    events_applied: int
    owner: str | None
    running: bool
    lag_events: int
    lag_seconds: float
    parked: int


@dataclass(frozen=True, slots=True)
class ProjectionStatus:
    """A projection's state as an operator needs it.

    ``lag_events`` counts the events the projection still has to consider (those passing its
    filter after the checkpoint), counting at most ``count_limit`` of them (``lag_capped`` then
    says so); ``lag_seconds`` is how long the oldest of them has been waiting. ``state`` is
    what the runner last recorded, except that an active state whose lease nobody holds reads as
    ``STOPPED`` (the runner died).

    For a segmented projection, ``segments`` has one :class:`SegmentStatus` per segment,
    ``checkpoint`` is the lowest segment checkpoint, the lag sums the segments' own lags
    (``lag_seconds`` is the oldest segment's), and ``workers`` counts the live worker processes.
    """

    name: str
    version: int
    live_version: int | None
    generation: int | None
    checkpoint: int | None
    head_position: int
    lag_events: int
    lag_capped: bool
    lag_seconds: float
    state: ProjectionState
    running: bool
    parked: int
    last_error: str | None
    last_error_at: datetime | None
    building: BuildingStatus | None
    segments: tuple[SegmentStatus, ...] = ()
    workers: int = 0


def _first_pending(
    projection: Projection, events: EventReader, checkpoint: int | None
) -> RecordedEvent | None:
    return next(read_after(events, checkpoint, filter=projection.event_filter(), limit=1), None)


def projection_status(
    projection: Projection, events: EventReader, store: ReadModelStore, *, count_limit: int = 100_000
) -> ProjectionStatus:
    """The status of ``projection`` in ``store`` against ``events``."""
    record = store.describe(projection.name)
    live = record.live
    checkpoint = None if live is None else live.checkpoint
    head = events.head_position()
    parked = store.parked_events(projection.name)
    segments: tuple[SegmentStatus, ...] = ()
    workers = 0
    if live is not None and live.segments > 1:
        segments = _segment_statuses(projection, events, store, live, count_limit=count_limit, parked=parked)
        lag = sum(segment.lag_events for segment in segments)
        capped = lag > count_limit
        lag_seconds = max(segment.lag_seconds for segment in segments)
        workers = len(store.leases_held(projection.name, LeaseRole.WORKER, MAX_SEGMENTS))
        running = workers > 0 or any(segment.running for segment in segments)
    else:
        lag, lag_seconds = _lag(projection, events, checkpoint, count_limit)
        capped = lag > count_limit
        running = store.lease_held(projection.name, LeaseRole.RUN)
    running = running or store.lease_held(projection.name, LeaseRole.REBUILD)
    state = record.state
    if state in _ACTIVE_STATES and not running:
        state = ProjectionState.STOPPED
    building = record.building
    return ProjectionStatus(
        name=projection.name,
        version=projection.version,
        live_version=None if live is None else live.version,
        generation=None if live is None else live.number,
        checkpoint=checkpoint,
        head_position=head,
        lag_events=min(lag, count_limit),
        lag_capped=capped,
        lag_seconds=lag_seconds,
        state=state,
        running=running,
        parked=len(parked),
        last_error=record.last_error,
        last_error_at=record.last_error_at,
        building=None
        if building is None
        else BuildingStatus(building.number, building.version, building.checkpoint, building.events_applied),
        segments=segments,
        workers=workers,
    )


def _lag(
    projection: Projection, events: EventReader, checkpoint: int | None, count_limit: int
) -> tuple[int, float]:
    """How many events after ``checkpoint`` the projection has to consider (up to
    ``count_limit + 1``), and how long the oldest has waited, in seconds."""
    # One read: the first pending event (for the lag in seconds) and how many there are.
    pending: RecordedEvent | None = None
    lag = 0
    for event in read_after(events, checkpoint, filter=projection.event_filter(), limit=count_limit + 1):
        if pending is None:
            pending = event
        lag += 1
    return lag, _waited(pending)


def _waited(pending: RecordedEvent | None) -> float:
    """How long ``pending`` (the oldest event still to consider) has waited, in seconds."""
    if pending is None:
        return 0.0
    return max(0.0, (datetime.now(UTC) - pending.recorded_at).total_seconds())


def _segment_statuses(
    projection: Projection,
    events: EventReader,
    store: ReadModelStore,
    live: Generation,
    *,
    count_limit: int,
    parked: list[ParkedEvent],
) -> tuple[SegmentStatus, ...]:
    """Each segment's status, its lag counted in one read of ``$all`` from the lowest checkpoint.

    The read stops after ``count_limit + 1`` events of any segment, so every segment's count is
    capped by the same read.
    """
    held = store.leases_held(projection.name, LeaseRole.RUN, live.segments)
    progress = live.segment_progress
    lags = [0] * live.segments
    oldest: list[RecordedEvent | None] = [None] * live.segments
    key_of = key_function(projection)
    for event in read_after(events, live.checkpoint, filter=projection.event_filter(), limit=count_limit + 1):
        segment = segment_of(key_of(event), live.segments)
        checkpoint = progress[segment].checkpoint
        if checkpoint is None or event.position > checkpoint:
            lags[segment] += 1
            oldest[segment] = oldest[segment] or event
    return tuple(
        SegmentStatus(
            segment=segment.segment,
            checkpoint=segment.checkpoint,
            events_applied=segment.events_applied,
            owner=segment.owner,
            running=segment.segment in held,
            lag_events=min(lags[segment.segment], count_limit),
            lag_seconds=_waited(oldest[segment.segment]),
            parked=sum(1 for event in parked if event.segment == segment.segment),
        )
        for segment in progress
    )


def wait_for(
    projection: Projection,
    events: EventReader,
    store: ReadModelStore,
    position: int,
    timeout: float = 5.0,
    *,
    poll_interval: float = 0.01,
) -> None:
    """Block until ``projection``'s live read model reflects every event up to ``position``.

    Use it after a command for read-your-writes: pass the commit position the append returned.
    It returns as soon as the checkpoint reaches ``position``, or when no event the projection
    handles lies between its checkpoint and ``position`` (so an event it ignores is not waited
    for). Raises :class:`~projections.errors.WaitTimeoutError` (a ``TimeoutError``) otherwise,
    and :class:`~projections.errors.ProjectionHaltedError` at once, with the error the runner
    recorded, when the projection's runner failed (state ``FAILED`` and nobody holds its lease).

    While a version bump is being rebuilt, the live read model is the old version's and is not
    updated (the new code cannot write it), so waiting for a new event times out until the switch.
    """
    wait_until_reflected(projection, events, store, position, timeout, poll_interval=poll_interval)


def wait_until_reflected(
    projection: Projection,
    events: EventReader,
    store: ReadModelStore,
    position: int,
    timeout: float,
    *,
    poll_interval: float = 0.01,
    failure: Callable[[], BaseException | None] | None = None,
) -> None:
    """:func:`wait_for`, also raising at once what ``failure()`` returns when it returns something
    (a runner in this process passes its own error)."""
    validate_position(position)
    deadline = time.monotonic() + timeout
    while True:
        if failure is not None:
            error = failure()
            if error is not None:
                raise error
        record = store.describe(projection.name)
        checkpoint = None if record.live is None else record.live.checkpoint
        if checkpoint is not None and checkpoint >= position:
            return
        if record.live is not None:
            pending = _first_pending(projection, events, checkpoint)
            if pending is None or pending.position > position:
                return
        # A failed runner records FAILED, then gives its lease up: nobody is coming (a runner
        # restarted since holds the lease again, or records another state).
        if record.state is ProjectionState.FAILED and not store.lease_held(projection.name, LeaseRole.RUN):
            raise ProjectionHaltedError(projection.name, position, checkpoint, record.last_error)
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(projection.name, position, checkpoint, timeout)
        time.sleep(poll_interval)
