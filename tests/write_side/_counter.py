"""A counter aggregate whose one event type was renamed between schema versions 1 and 2, for the
replay and upcasting tests."""

from __future__ import annotations

from typing import ClassVar

from eventsourcing_cqrs.aggregate import Aggregate
from eventsourcing_cqrs.messages import DomainEvent
from eventsourcing_cqrs.serialization import EventRegistry


class Incremented(DomainEvent):
    """Version 1 stored ``amount``; version 2 calls it ``by``."""

    event_type: ClassVar[str] = "Incremented"
    schema_version: ClassVar[int] = 2

    by: int


class Counter(Aggregate[Incremented]):
    category: ClassVar[str] = "Counter"

    def __init__(self, aggregate_id: str) -> None:
        super().__init__(aggregate_id)
        self.total = 0

    def when(self, event: Incremented) -> None:
        self.total += event.by


def counter_registry() -> EventRegistry:
    """The registry with the upcaster from version 1 (``amount``) to 2 (``by``)."""
    counters = EventRegistry([Incremented])
    counters.add_upcaster("Incremented", 1, lambda payload: {"by": payload["amount"]})
    return counters
