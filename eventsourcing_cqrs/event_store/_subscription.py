"""A pull-based catch-up subscription shared by the embedded stores.

It reads ``$all`` in pages after its last position until a page comes back empty, then waits on
the store's :class:`Notifier` (woken at once by appends in this process, and polling at a short
interval for appends by other processes). Because the same query serves catch-up and live, there
is no switch-over to get wrong: no gap, no duplicate.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Self

import structlog

from eventsourcing_cqrs.event_store.port import (
    CaughtUp,
    Checkpoint,
    RecordedEvent,
    SubscriptionItem,
)

logger = structlog.get_logger(__name__)

#: ``fetch(after, limit)`` returns the events passing the filter among the next ``limit``
#: records after position ``after``, the position of the last record considered (``None`` if
#: there were none) and how many records were considered.
PageFetcher = Callable[[int, int], tuple[list[RecordedEvent], int | None, int]]


class Notifier:
    """Wakes waiting subscriptions when this process appends."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    def notify(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    @property
    def generation(self) -> int:
        return self._generation

    def wait(self, generation: int, timeout: float) -> None:
        """Wait until a notification newer than ``generation``, or ``timeout`` seconds."""
        with self._condition:
            if self._generation == generation:
                self._condition.wait(timeout)


class PollingSubscription:
    """A :class:`~eventsourcing_cqrs.event_store.port.Subscription` over a page fetcher."""

    def __init__(
        self,
        fetch: PageFetcher,
        notifier: Notifier,
        *,
        from_position: int | None,
        checkpoint_interval: int,
        page_size: int = 500,
        poll_interval: float = 0.02,
    ) -> None:
        self._fetch = fetch
        self._notifier = notifier
        self._after = from_position or 0
        self._interval = max(1, checkpoint_interval)
        self._page_size = page_size
        self._poll_interval = poll_interval
        self._buffer: deque[SubscriptionItem] = deque()
        self._considered = 0
        # The highest position of an event or checkpoint put in the buffer: once the buffer is
        # empty (the only time it is read), every item up to it has been yielded.
        self._highest_buffered = self._after
        self._caught_up = False
        # A plain flag (set from any thread, read once per item), not a threading.Event:
        # ``stop`` also notifies, which wakes a waiting poll.
        self._stopped = False

    # -- iteration ------------------------------------------------------------------------

    def __iter__(self) -> Iterator[SubscriptionItem]:
        return self

    def __next__(self) -> SubscriptionItem:
        while True:
            item = self.poll(3600.0)
            if item is not None:
                return item
            if self._stopped:
                raise StopIteration

    def poll(self, timeout: float) -> SubscriptionItem | None:
        """The next item, or ``None`` if none arrives within ``timeout`` seconds (or if stopped)."""
        # Once per event while catching up: an item already read needs no clock and no query.
        buffer = self._buffer
        if buffer and not self._stopped:
            return buffer.popleft()
        deadline = time.monotonic() + timeout
        while not self._stopped:
            if buffer:
                return buffer.popleft()
            generation = self._notifier.generation
            if self._fill():
                continue
            if not self._caught_up:
                self._caught_up = True
                if self._after > self._highest_buffered:
                    self._buffer.append(Checkpoint(self._after))
                self._buffer.append(CaughtUp(self._after or None))
                continue
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._notifier.wait(generation, min(remaining, self._poll_interval))
        self._close()
        return None

    def _fill(self) -> bool:
        events, last_considered, considered = self._fetch(self._after, self._page_size)
        if last_considered is None:
            return False
        self._after = last_considered
        if events:
            self._buffer.extend(events)
            self._highest_buffered = max(self._highest_buffered, events[-1].position)
        self._considered += considered
        if self._considered >= self._interval:
            self._considered %= self._interval
            self._buffer.append(Checkpoint(last_considered))
            self._highest_buffered = max(self._highest_buffered, last_considered)
        return True

    # -- lifetime -------------------------------------------------------------------------

    def stop(self) -> None:
        """End the subscription; a blocked iteration returns promptly."""
        self._stopped = True
        self._notifier.notify()

    @property
    def stopped(self) -> bool:
        return self._stopped

    def _close(self) -> None:
        self._buffer.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
