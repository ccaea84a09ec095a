"""Rebuild progress: the values handed to a progress callback, and how they are computed."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from projections.read_model_store.port import SegmentProgress

__all__ = ["Progress", "ProgressCallback", "ProgressTracker", "RebuildReport"]


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a rebuild has got.

    ``done`` counts events applied to the new generation (across interrupted runs), ``total``
    is ``done`` plus the matching events still ahead of it when last counted (it grows if
    events keep arriving), ``rate`` is events per second over the last few seconds and
    ``eta`` the seconds left at that rate (``None`` until there is a rate). For a segmented
    projection, ``segments`` holds each segment's progress (``position`` is then the lowest
    segment checkpoint).
    """

    projection: str
    generation: int
    done: int
    total: int
    rate: float
    eta: float | None
    position: int | None
    segments: tuple[SegmentProgress, ...] = ()

    @property
    def fraction(self) -> float:
        """``done / total`` (1.0 when there is nothing to do)."""
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)


#: What a rebuild calls after each committed batch.
ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """What a rebuild did: the generation it built and made live, and how fast."""

    projection: str
    version: int
    generation: int
    events: int
    seconds: float
    resumed: bool
    switched: bool
    position: int | None

    @property
    def rate(self) -> float:
        """Events per second during this run."""
        return self.events / self.seconds if self.seconds > 0 else 0.0


class ProgressTracker:
    """Counts applied events and reports :class:`Progress` with a rate over a sliding window."""

    WINDOW = 5.0

    def __init__(
        self, projection: str, generation: int, done: int, remaining: int, callback: ProgressCallback | None
    ) -> None:
        self._projection = projection
        self._generation = generation
        self._done = done
        self._total = done + remaining
        self._callback = callback
        self._started = time.monotonic()
        self._samples: deque[tuple[float, int]] = deque([(self._started, done)])
        self.applied_now = 0

    def advance(
        self, applied: int, position: int | None, segments: tuple[SegmentProgress, ...] = ()
    ) -> Progress:
        """Record ``applied`` more events and tell the callback."""
        self._done += applied
        self.applied_now += applied
        self._total = max(self._total, self._done)
        now = time.monotonic()
        self._samples.append((now, self._done))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.WINDOW:
            self._samples.popleft()
        first_time, first_done = self._samples[0]
        elapsed = now - first_time
        rate = (self._done - first_done) / elapsed if elapsed > 0 else 0.0
        eta = (self._total - self._done) / rate if rate > 0 else None
        progress = Progress(
            self._projection, self._generation, self._done, self._total, rate, eta, position, segments
        )
        if self._callback is not None:
            self._callback(progress)
        return progress

    def finish(self) -> None:
        """The rebuild caught up: whatever was counted as ahead has been seen."""
        self._total = self._done

    @property
    def seconds(self) -> float:
        """Time since the tracker started."""
        return time.monotonic() - self._started
