"""The read side: projections that follow the event store into queryable read models.

* :class:`Projection` — a stable name, a version, tables, and handlers per event type.
* :class:`ProjectionRunner` — catch-up subscription, batches with atomic checkpoints, a lease
  per projection, retries with backoff, parking, graceful stop, blue/green rebuilds.
* :class:`ReactorRunner` — the same guarantees for reactors and process managers
  (:mod:`eventsourcing_cqrs.reactions`), which dispatch commands instead of writing a read model.
* :func:`rebuild` — rebuild a read model from scratch beside the live one.
* :func:`projection_status` and :func:`wait_for` — operations and read-your-writes.
* :mod:`projections.read_model_store` — the :class:`ReadModelStore` port, its memory, SQLite and
  PostgreSQL adapters, and ``connect(uri)``.
* Every exception the read side raises, rooted at
  :class:`~eventsourcing_cqrs.errors.CQRSError` (the tree is drawn in :mod:`projections.errors`).
"""

from __future__ import annotations

from projections._progress import Progress, RebuildReport
from projections.errors import (
    DocumentNotFoundError,
    GenerationChangedError,
    InvalidNameError,
    LeaseLostError,
    NotAReadModelStoreError,
    ParkedEventNotFoundError,
    ProjectionDefinitionError,
    ProjectionError,
    ProjectionFailedError,
    ProjectionHaltedError,
    ProjectionNotFoundError,
    ProjectionRunningError,
    ProjectionVersionError,
    ReadModelStoreError,
    ReadModelStoreLockedError,
    ReadModelStoreRefusedError,
    ReadModelStoreUnavailableError,
    RunnerAlreadyRunningError,
    UnknownTableError,
    UnsupportedOperationError,
    WaitTimeoutError,
)
from projections.projection import Backoff, EventContext, FailurePolicy, Projection, segment_of
from projections.reactor_runner import ReactorRunner, StartFrom
from projections.read_model_store.port import (
    MAX_SEGMENTS,
    ParkedEvent,
    ProjectionState,
    ReadModelStore,
    ReadModelWriter,
    ReadView,
    SegmentProgress,
    Table,
    TableReader,
    TableSpec,
)
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner, RunOutcome
from projections.status import ProjectionStatus, SegmentStatus, projection_status, wait_for

__all__ = [
    "MAX_SEGMENTS",
    "Backoff",
    "DocumentNotFoundError",
    "EventContext",
    "FailurePolicy",
    "GenerationChangedError",
    "InvalidNameError",
    "LeaseLostError",
    "NotAReadModelStoreError",
    "ParkedEvent",
    "ParkedEventNotFoundError",
    "Progress",
    "Projection",
    "ProjectionDefinitionError",
    "ProjectionError",
    "ProjectionFailedError",
    "ProjectionHaltedError",
    "ProjectionNotFoundError",
    "ProjectionRunner",
    "ProjectionRunningError",
    "ProjectionState",
    "ProjectionStatus",
    "ProjectionVersionError",
    "ReactorRunner",
    "ReadModelStore",
    "ReadModelStoreError",
    "ReadModelStoreLockedError",
    "ReadModelStoreRefusedError",
    "ReadModelStoreUnavailableError",
    "ReadModelWriter",
    "ReadView",
    "RebuildReport",
    "RunOutcome",
    "RunnerAlreadyRunningError",
    "SegmentProgress",
    "SegmentStatus",
    "StartFrom",
    "Table",
    "TableReader",
    "TableSpec",
    "UnknownTableError",
    "UnsupportedOperationError",
    "WaitTimeoutError",
    "projection_status",
    "rebuild",
    "segment_of",
    "wait_for",
]
