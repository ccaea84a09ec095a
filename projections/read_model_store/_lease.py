"""What every adapter's lease shares: identity, the fencing epoch, and the acquire protocol.

A lease is a lock that the adapter knows how to take without waiting (a thread lock, a
``flock``, a PostgreSQL session advisory lock: see the adapters) plus an *epoch* that the store
bumps each time the lock is taken (per projection, role and segment; the store also records who
took it, ``host:pid``, for status). :class:`LeaseBase` holds the part that does not depend on
the lock: the projection and role it is for, the epoch of the current acquisition, and the
order of the steps in :meth:`~LeaseBase.try_acquire` (take the lock, then bump the epoch, and
give the lock back if the bump fails). An adapter provides :meth:`~LeaseBase._lock`,
:meth:`~LeaseBase._unlock` and :attr:`~LeaseBase.held`.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

from eventsourcing_cqrs.errors import InvalidInputError
from projections.errors import ProjectionRunningError
from projections.read_model_store._names import validate_projection_name
from projections.read_model_store.port import MAX_SEGMENTS, Lease, LeaseRole

__all__ = [
    "BumpEpoch",
    "LeaseBase",
    "holding_every_lease",
    "lease_owner",
    "refuse_segment_lease",
    "validate_segment",
    "validate_segment_count",
    "writes_generation",
]

logger = structlog.get_logger(__name__)

#: The store's side of an acquisition: bump the epoch of (projection, role, segment), record
#: the owner, and return the new epoch.
BumpEpoch = Callable[[str, LeaseRole, "int | None", str], int]


def lease_owner() -> str:
    """Who this process is, as lease records show it: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def validate_segment(role: LeaseRole, segment: int | None) -> int | None:
    """``segment`` if it is a segment number (or ``None`` where the role allows it)."""
    if segment is None:
        if role is LeaseRole.WORKER:
            raise InvalidInputError("segment", None, "a worker lease needs its slot number")
        return None
    if isinstance(segment, bool) or not isinstance(segment, int) or not 0 <= segment < MAX_SEGMENTS:
        raise InvalidInputError(
            "segment", segment, f"a segment is a whole number from 0 to {MAX_SEGMENTS - 1}"
        )
    return segment


def validate_segment_count(segments: int) -> int:
    """``segments`` if it is a number of segments a generation may have."""
    if isinstance(segments, bool) or not isinstance(segments, int) or not 1 <= segments <= MAX_SEGMENTS:
        raise InvalidInputError("segments", segments, f"a whole number from 1 to {MAX_SEGMENTS}")
    return segments


def writes_generation(lease: Lease, segments: int) -> bool:
    """Whether ``lease`` may write a generation of ``segments`` segments.

    A segment's lease writes one segment of a segmented generation; the whole projection's lease
    writes an unsegmented one. Any other pairing would move a checkpoint nothing reads.
    """
    if lease.segment is None:
        return segments == 1
    return segments > 1 and lease.segment < segments


def refuse_segment_lease(lease: Lease) -> None:
    """Raise unless ``lease`` is the whole projection's (generations are created and switched so)."""
    if lease.segment is not None:
        raise InvalidInputError(
            "lease", lease, "a generation is created under the whole projection's lease, not a segment's"
        )


class LeaseBase(ABC):
    """A :class:`~projections.read_model_store.port.Lease` over an adapter's non-blocking lock."""

    def __init__(
        self, projection: str, role: LeaseRole, bump_epoch: BumpEpoch, segment: int | None = None
    ) -> None:
        self._projection = validate_projection_name(projection)
        self._role = role
        self._segment = validate_segment(role, segment)
        self._bump_epoch = bump_epoch
        self._epoch = 0

    @property
    def projection(self) -> str:
        return self._projection

    @property
    def role(self) -> LeaseRole:
        return self._role

    @property
    def segment(self) -> int | None:
        return self._segment

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    @abstractmethod
    def held(self) -> bool:
        """Whether this object holds the lock."""

    def try_acquire(self) -> bool:
        if self.held:
            return True
        if not self._lock():
            return False
        try:
            self._epoch = self._bump_epoch(self._projection, self._role, self._segment, lease_owner())
        except BaseException:
            self._unlock()
            raise
        logger.debug(
            "projection.lease_acquired",
            projection=self._projection,
            role=self._role.value,
            segment=self._segment,
        )
        return True

    def release(self) -> None:
        if self.held:
            self._unlock()

    @abstractmethod
    def _lock(self) -> bool:
        """Take the lock without waiting; whether it was free. Afterwards :attr:`held` is true."""

    @abstractmethod
    def _unlock(self) -> None:
        """Give the lock up (called only while it is held, or just taken)."""


@contextmanager
def holding_every_lease(
    lease: Callable[[str, LeaseRole], Lease],
    leases_held: Callable[[str, LeaseRole, int], set[int]],
    projection: str,
) -> Iterator[None]:
    """Hold both of ``projection``'s leases (from the store's ``lease`` factory) for the block.

    Raises :class:`~projections.errors.ProjectionRunningError` without waiting if a runner holds
    either of them, or any segment's or worker slot's (``leases_held``).
    """
    held: list[Lease] = []
    try:
        for role in (LeaseRole.RUN, LeaseRole.REBUILD):
            acquired = lease(projection, role)
            if not acquired.try_acquire():
                raise ProjectionRunningError(projection, role.value)
            held.append(acquired)
        for role in LeaseRole:
            if leases_held(projection, role, MAX_SEGMENTS):
                raise ProjectionRunningError(projection, role.value)
        yield
    finally:
        for acquired in held:
            acquired.release()
