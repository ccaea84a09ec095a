"""EventStoreDB's commit decision (expected version + idempotency), shared by the embedded stores.

This is pure logic: the adapter reads the stream's state and the ids already in it, asks
:func:`decide`, and writes (or not) inside the same transaction. It follows EventStoreDB's
``IndexWriter.CheckCommit`` as described in ``shared/esdb/GRPC_SPEC.md`` §4. ``existing`` need
only hold the ids at the revisions an exact expected version would take (the SQLite store reads
just those, through its stream index); for ``ANY``/``STREAM_EXISTS`` it holds what the adapter
found of the ids (the SQLite store looks among the stream's last events only, like
EventStoreDB's bounded cache of recent ids; the memory store looks at the whole stream).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eventsourcing_cqrs.errors import StreamDeletedError, StreamNotFoundError, WrongExpectedVersionError
from eventsourcing_cqrs.event_store.port import ExpectedVersion, StreamState

#: EventStoreDB's event number of a tombstone record (and its "$tb" of a soft-deleted stream).
DELETED_REVISION = 2**63 - 1


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What the decision needs to know of a stream.

    ``last_revision`` is the raw number of the last event ever written (-1 if none), unaffected
    by soft delete, as in EventStoreDB.
    """

    last_revision: int = -1
    soft_deleted: bool = False
    tombstoned: bool = False

    @property
    def actual(self) -> int | None:
        """The version reported in a :class:`WrongExpectedVersionError`."""
        return None if self.last_revision < 0 else self.last_revision


@dataclass(frozen=True, slots=True)
class Write:
    """Append the events at ``last_revision + 1``...; ``undelete`` if the stream was soft-deleted."""

    undelete: bool


@dataclass(frozen=True, slots=True)
class AlreadyWritten:
    """The same events are already in the stream: write nothing, report the original result."""

    revision: int
    position: int


Decision = Write | AlreadyWritten


def decide(
    stream: str,
    expected: ExpectedVersion,
    ids: Sequence[uuid.UUID],
    info: StreamInfo,
    existing: Mapping[uuid.UUID, tuple[int, int]],
) -> Decision:
    """Decide an append of events with ``ids`` to ``stream`` expected at ``expected``.

    ``existing`` maps those of ``ids`` already written to *this* stream to their
    ``(revision, position)``. Raises :class:`WrongExpectedVersionError` or
    :class:`StreamDeletedError`.
    """
    cur = info.last_revision
    if info.tombstoned:
        raise StreamDeletedError(stream)
    if expected is StreamState.STREAM_EXISTS:
        if info.soft_deleted:
            raise StreamDeletedError(stream)
        if cur < 0:
            raise WrongExpectedVersionError(stream, expected, None)
    if isinstance(expected, StreamState) and expected is not StreamState.NO_STREAM:
        if not ids or ids[0] not in existing:
            return Write(undelete=info.soft_deleted)
        if all(event_id in existing for event_id in ids):
            revision, position = existing[ids[-1]]
            return AlreadyWritten(revision, position)
        raise WrongExpectedVersionError(stream, expected, info.actual)

    wanted = -1 if expected is StreamState.NO_STREAM else expected
    assert isinstance(wanted, int)
    if wanted < cur:
        revision = wanted
        last: tuple[int, int] | None = None
        for event_id in ids:
            revision += 1
            found = existing.get(event_id)
            if found is not None and found[0] == revision:
                last = found
                continue
            if revision == wanted + 1 and wanted == -1 and info.soft_deleted:
                return Write(undelete=True)
            raise WrongExpectedVersionError(stream, expected, info.actual)
        if last is None:
            raise WrongExpectedVersionError(stream, expected, info.actual)
        return AlreadyWritten(*last)
    if wanted > cur:
        raise WrongExpectedVersionError(stream, expected, info.actual)
    return Write(undelete=info.soft_deleted)


def check_delete(stream: str, expected: ExpectedVersion, info: StreamInfo, *, tombstone: bool) -> None:
    """Raise unless ``stream`` may be soft-deleted (or, with ``tombstone``, tombstoned) now.

    Both run the commit decision with one fresh id, as EventStoreDB does. A soft delete also
    needs a stream with events: otherwise, like a version check against no stream, it reports
    :class:`StreamNotFoundError` (esdbclient's reading of "actual version -1").
    """
    try:
        decide(stream, expected, [uuid.uuid4()], info, {})
    except WrongExpectedVersionError as exc:
        if exc.actual is None and not tombstone:
            raise StreamNotFoundError(stream) from None
        raise
    if info.last_revision < 0 and not tombstone:
        raise StreamNotFoundError(stream)
