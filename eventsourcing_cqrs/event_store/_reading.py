"""Reading ``$all`` *after* a position, the one way every store accepts."""

from __future__ import annotations

from collections.abc import Iterator

from eventsourcing_cqrs.event_store.port import EventFilter, EventReader, RecordedEvent


def read_after(
    events: EventReader,
    position: int | None,
    *,
    filter: EventFilter | None = None,
    limit: int | None = None,
) -> Iterator[RecordedEvent]:
    """The events of ``$all`` after ``position`` (exclusive; ``None``: from the start), at most
    ``limit`` of them, passing ``filter``.

    It reads from ``position`` itself and skips it: EventStoreDB reads only from a position
    where a record sits, so ``position + 1`` must never be asked for (see
    :meth:`~eventsourcing_cqrs.event_store.port.EventReader.read_all`).
    """
    if limit == 0:
        return
    extra = None if limit is None else limit + 1
    found = 0
    for event in events.read_all(from_position=position, filter=filter, limit=extra):
        if position is not None and event.position <= position:
            continue
        yield event
        found += 1
        if limit is not None and found >= limit:
            return
