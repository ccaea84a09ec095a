"""What every adapter's lease shares: identity, the fencing epoch, and the acquire protocol.

A lease is a lock that the adapter knows how to take without waiting (a thread lock, a
``flock``, a PostgreSQL session advisory lock: see the adapters) plus an *epoch* that the store
bumps each time the lock is taken. :class:`LeaseBase` holds the part that does not depend on
the lock: the projection and role it is for, the epoch of the current acquisition, and the
order of the steps in :meth:`~LeaseBase.try_acquire` (take the lock, then bump the epoch, and
give the lock back if the bump fails). An adapter provides :meth:`~LeaseBase._lock`,
:meth:`~LeaseBase._unlock` and :attr:`~LeaseBase.held`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import structlog

from projections.errors import ProjectionRunningError
from projections.read_model_store._names import validate_projection_name
from projections.read_model_store.port import Lease, LeaseRole

__all__ = ["BumpEpoch", "LeaseBase", "holding_every_lease"]

logger = structlog.get_logger(__name__)

#: The store's side of an acquisition: bump the role's epoch and return the new one.
BumpEpoch = Callable[[str, LeaseRole], int]


class LeaseBase(ABC):
    """A :class:`~projections.read_model_store.port.Lease` over an adapter's non-blocking lock."""

    def __init__(self, projection: str, role: LeaseRole, bump_epoch: BumpEpoch) -> None:
        self._projection = validate_projection_name(projection)
        self._role = role
        self._bump_epoch = bump_epoch
        self._epoch = 0

    @property
    def projection(self) -> str:
        return self._projection

    @property
    def role(self) -> LeaseRole:
        return self._role

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
            self._epoch = self._bump_epoch(self._projection, self._role)
        except BaseException:
            self._unlock()
            raise
        logger.debug("projection.lease_acquired", projection=self._projection, role=self._role.value)
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
def holding_every_lease(lease: Callable[[str, LeaseRole], Lease], projection: str) -> Iterator[None]:
    """Hold both of ``projection``'s leases (from the store's ``lease`` factory) for the block.

    Raises :class:`~projections.errors.ProjectionRunningError` without waiting if a runner holds
    either of them.
    """
    held: list[Lease] = []
    try:
        for role in LeaseRole:
            acquired = lease(projection, role)
            if not acquired.try_acquire():
                raise ProjectionRunningError(projection, role.value)
            held.append(acquired)
        yield
    finally:
        for acquired in held:
            acquired.release()
