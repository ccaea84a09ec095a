"""When the runner commits its open batch: the batching rules, apart from any store or subscription.

:class:`BatchPolicy` is a small state machine that the runner's loop tells what the
subscription delivered and asks whether to commit and how long to wait for the next item. It
never reads positions or touches a store (the runner decides which checkpoints move it), and
it reads time only through the clock it is given, so every rule can be tested with a fake one.

The rules:

* A batch **opens** at its first event, or at a checkpoint the runner has not committed yet (a
  checkpoint without events still commits, so a projection of rare events moves forward).
  Opening starts the ``delay`` timer.
* It **commits** when it holds ``size`` events, when ``delay`` seconds have passed since it
  opened (checked whenever an item arrives), when a poll finds nothing waiting, and always at a
  caught-up marker, which also makes the policy **live** for good.
* While a batch is open the runner may wait for the next item until its deadline (at most
  ``idle_wait``); once live it does not wait at all, so a lone live event commits as soon as
  nothing more is waiting and batches grow only under load. With no batch open it waits
  ``idle_wait``.

The loop calls one method per item: keep them cheap (no allocation, one clock read at most).
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["BatchPolicy"]


class BatchPolicy:
    """The open batch's event count and deadline, and whether the subscription is live.

    ``size`` (at least 1) and ``delay`` (seconds, not negative) are trusted: the runner checks
    them. ``idle_wait`` is the longest single wait for the next item; ``clock`` gives the time
    in seconds (``time.monotonic`` unless a test passes its own).
    """

    __slots__ = ("_clock", "_count", "_deadline", "_delay", "_idle_wait", "_live", "_size")

    def __init__(
        self,
        size: int,
        delay: float,
        *,
        idle_wait: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._size = size
        self._delay = delay
        self._idle_wait = idle_wait
        self._clock = clock
        self._count = 0
        self._deadline: float | None = None
        self._live = False

    def __repr__(self) -> str:
        state = "live" if self._live else "catching up"
        return f"<BatchPolicy {self._count}/{self._size} events, deadline {self._deadline}, {state}>"

    @property
    def open(self) -> bool:
        """Whether a batch is open: an event or an uncommitted checkpoint since the last commit."""
        return self._deadline is not None

    @property
    def live(self) -> bool:
        """Whether the subscription has caught up (it stays live from then on)."""
        return self._live

    @property
    def events(self) -> int:
        """How many events the open batch holds."""
        return self._count

    def timeout(self) -> float:
        """How long the runner may wait for the next item, in seconds."""
        deadline = self._deadline
        if deadline is None:
            return self._idle_wait
        if self._live:
            return 0.0
        # max(0.0, min(idle_wait, left)) without the builtins' call overhead.
        left = deadline - self._clock()
        if left >= self._idle_wait:
            return self._idle_wait
        return left if left > 0.0 else 0.0

    def event_added(self) -> bool:
        """An event joined the batch (opening it if need be); whether to commit now."""
        self._count = count = self._count + 1
        if count >= self._size:
            return True
        deadline = self._deadline
        if deadline is None:
            self._deadline = self._clock() + self._delay
            return self._delay <= 0
        return self._clock() >= deadline

    def checkpoint_seen(self) -> bool:
        """A checkpoint past the committed one (opening the batch if need be); whether to commit now."""
        deadline = self._deadline
        if deadline is None:
            self._deadline = self._clock() + self._delay
            return self._delay <= 0
        return self._clock() >= deadline

    def due(self) -> bool:
        """Whether the open batch is past its deadline (after an item that added nothing to it)."""
        deadline = self._deadline
        return deadline is not None and self._clock() >= deadline

    def nothing_waiting(self) -> bool:
        """A poll found nothing within :meth:`timeout`; whether to commit now (if a batch is open)."""
        return self._deadline is not None

    def caught_up(self) -> bool:
        """The subscription caught up: the policy is live from now on; commit now (always)."""
        self._live = True
        return True

    def committed(self) -> None:
        """The batch was committed (or had nothing to commit): the next item opens a new one."""
        self._count = 0
        self._deadline = None
