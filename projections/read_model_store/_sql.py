"""Pieces shared by the SQL adapters: lease checks and row conversions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from projections.errors import GenerationChangedError, LeaseLostError
from projections.read_model_store.port import (
    Generation,
    Lease,
    LeaseRole,
    ParkedEvent,
    ProjectionState,
    tables_from_json,
)

__all__ = ["check_writer", "generation_from_row", "now", "parked_from_row", "state_from_text"]


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_datetime(value: Any) -> datetime:
    """A stored timestamp (ISO text on SQLite, ``timestamptz`` on PostgreSQL) as a datetime."""
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def check_writer(
    projection: str,
    lease: Lease,
    *,
    run_epoch: int,
    rebuild_epoch: int,
    live: int | None,
    building: int | None,
    generation: int | None,
) -> None:
    """Raise unless ``lease`` is current and its role writes ``generation`` (``None``: any)."""
    current = run_epoch if lease.role is LeaseRole.RUN else rebuild_epoch
    if not lease.held or lease.epoch != current:
        raise LeaseLostError(projection, lease.role.value, lease.epoch, current)
    if generation is None:
        return
    expected = live if lease.role is LeaseRole.RUN else building
    if expected != generation:
        raise GenerationChangedError(projection, generation)


def generation_from_row(projection: str, row: tuple[Any, ...]) -> Generation:
    """``(generation, version, tables, checkpoint, events_applied, created_at)`` as a Generation."""
    number, version, tables, checkpoint, applied, created_at = row
    return Generation(
        projection=projection,
        number=int(number),
        version=int(version),
        tables=tables_from_json(tables if isinstance(tables, str) else bytes(tables).decode()),
        checkpoint=None if checkpoint is None else int(checkpoint),
        events_applied=int(applied),
        created_at=as_datetime(created_at),
    )


#: The columns of the parked table, in the order :func:`parked_from_row` reads them.
PARKED_COLUMNS = (
    "projection, generation, position, event_id, event_type, stream, revision, data, metadata, "
    "content_type, recorded_at, error, attempts, parked_at, retry_requested"
)


def parked_from_row(row: tuple[Any, ...]) -> ParkedEvent:
    """A row of :data:`PARKED_COLUMNS` as a ParkedEvent."""
    return ParkedEvent(
        projection=str(row[0]),
        generation=int(row[1]),
        position=int(row[2]),
        event_id=uuid.UUID(str(row[3])),
        event_type=str(row[4]),
        stream=str(row[5]),
        revision=int(row[6]),
        data=bytes(row[7]),
        metadata=bytes(row[8]),
        content_type=str(row[9]),
        recorded_at=as_datetime(row[10]),
        error=str(row[11]),
        attempts=int(row[12]),
        parked_at=as_datetime(row[13]),
        retry_requested=bool(row[14]),
    )


def state_from_text(value: Any) -> ProjectionState:
    """A stored state name as a ProjectionState (unknown names read as stopped)."""
    try:
        return ProjectionState(str(value))
    except ValueError:
        return ProjectionState.STOPPED
