"""Where reactors and process managers get the time: an injectable clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from eventsourcing_cqrs.errors import InvalidInputError

__all__ = ["Clock", "check_now", "system_clock"]

#: A clock: a callable returning the current time as a timezone-aware datetime.
Clock = Callable[[], datetime]


def system_clock() -> datetime:
    """The current time in UTC (the default clock)."""
    return datetime.now(UTC)


def check_now(now: object) -> datetime:
    """``now`` if it is a timezone-aware datetime (what a clock must return)."""
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInputError("clock", now, "a clock returns a timezone-aware datetime")
    return now
