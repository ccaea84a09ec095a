"""In-memory, thread-safe transaction log behind the EventStoreDB test server.

One ``Log`` holds every record ever written, in commit-position order, plus per-stream indexes.
Writes are serialised under one lock; positions are assigned inside it (GRPC_SPEC §2.1). Readers
take short snapshots under the same lock and wait on a condition for new records.

Expected versions use EventStoreDB's internal longs (``ANY = -2``, ``NO_STREAM = -1``,
``STREAM_EXISTS = -4``, or an exact revision) so that error texts can quote them verbatim.
The commit decision is ``IndexWriter.CheckCommit`` as GRPC_SPEC §4 gives it. For ``ANY`` and
``STREAM_EXISTS`` the real server recognises a re-append only through a bounded cache of recently
committed event ids (see ``_idempotency.py``). A ``Log`` given a ``CommittedEventsCache`` (strict
mode) does the same; without one (lenient, the default) every event id ever written counts, so the
log is "more idempotent" than EventStoreDB for old writes and across restarts. Exact expected
versions (and ``NO_STREAM``) are checked against the log itself in both modes, as the real
``CheckCommit`` falls back to ``IndexReader.ReadPrepare``.

Positions: the seed record sits at ``_FIRST_POSITION`` and every record is followed by a gap
(``_RECORD_OVERHEAD`` plus its size), as real positions are byte offsets of records in the
transaction file. :meth:`Log.is_boundary` tells which positions a real server could read from.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from eventsourcing_cqrs.testing.esdb_server._idempotency import CommittedEventsCache

ANY: Final = -2
NO_STREAM: Final = -1
STREAM_EXISTS: Final = -4

DELETED_STREAM_NUMBER: Final = 2**63 - 1
"""Event number of a tombstone record, and the ``$tb`` value that marks a soft delete."""

SYSTEM_METADATA_TYPE: Final = "$metadata"
TOMBSTONE_TYPE: Final = "$streamDeleted"
LINK_TYPE: Final = "$>"

_FIRST_POSITION: Final = 4_096
_RECORD_OVERHEAD: Final = 64
_TICKS_PER_SECOND: Final = 10_000_000
_SEED_STREAM: Final = "$$$scavenges"
_SEED_DATA: Final = b'{"$maxAge":2592000,"$acl":{"$r":"$ops","$w":[],"$d":[],"$mr":[],"$mw":[]}}'
_SOFT_DELETE_DATA: Final = b'{"$tb":9223372036854775807}'


def now_ticks() -> int:
    """Return the current time in .NET ticks (100 ns) since the Unix epoch."""
    return time.time_ns() // 100


def is_metastream(stream: str) -> bool:
    """Tell whether ``stream`` is the metadata stream (``$$X``) of another stream."""
    return stream.startswith("$$")


def original_stream(metastream: str) -> str:
    """Return ``X`` for the metastream ``$$X``."""
    return metastream[2:]


@dataclass(frozen=True, slots=True)
class ProposedEvent:
    """An event as a client proposes it, before it has a number and a position."""

    event_id: str
    type: str
    is_json: bool
    data: bytes
    metadata: bytes

    @property
    def size(self) -> int:
        """Size as EventStoreDB counts it against the append size limits."""
        return len(self.data) + len(self.metadata) + 2 * len(self.type)


@dataclass(frozen=True, slots=True)
class Record:
    """One record of the log: a user event, a ``$metadata`` event or a tombstone."""

    position: int
    stream: str
    number: int
    event_id: str
    type: str
    is_json: bool
    data: bytes
    metadata: bytes
    created_ticks: int


@dataclass(frozen=True, slots=True)
class Written:
    """A commit that succeeded (or was recognised as an idempotent replay)."""

    last_number: int
    position: int


@dataclass(frozen=True, slots=True)
class WrongVersion:
    """The expected version did not match; ``current`` is the raw last event number."""

    current: int


@dataclass(frozen=True, slots=True)
class StreamDeleted:
    """The stream is tombstoned (or soft-deleted, for ``STREAM_EXISTS``)."""


Outcome = Written | WrongVersion | StreamDeleted


@dataclass(frozen=True, slots=True)
class _Ok:
    undelete: bool


@dataclass(frozen=True, slots=True)
class _Idempotent:
    number: int
    position: int


_Decision = _Ok | _Idempotent | WrongVersion | StreamDeleted


@dataclass(frozen=True, slots=True)
class StreamView:
    """What a reader of one stream may see: EventStoreDB's visibility rules applied."""

    tombstoned: bool
    exists: bool
    first_visible: int
    min_created_ticks: int | None


class Log:
    """The whole store: an append-only list of records plus per-stream indexes.

    Every public method is thread-safe. ``changed`` is a condition notified after every commit
    so that subscriptions can wait for new records without polling hard.
    """

    def __init__(self, *, committed_events: CommittedEventsCache | None = None) -> None:
        self._lock = threading.RLock()
        #: Strict mode: the bounded id cache that alone decides ANY/EXISTS idempotency.
        self._committed_events = committed_events
        self._record_end = 0
        self.changed = threading.Condition(self._lock)
        self._records: list[Record] = []
        self._positions: list[int] = []
        self._streams: dict[str, list[Record]] = {}
        self._ids: dict[str, dict[str, Record]] = {}
        self._tombstones: dict[str, Record] = {}
        self._next_position = _FIRST_POSITION
        self._write(
            _SEED_STREAM,
            [ProposedEvent(str(uuid.uuid4()), SYSTEM_METADATA_TYPE, True, _SEED_DATA, b"")],
        )

    # ----------------------------------------------------------------------------- writes

    def append(self, stream: str, expected: int, events: Sequence[ProposedEvent]) -> Outcome:
        """Append ``events`` to ``stream`` if ``expected`` allows it (GRPC_SPEC §4)."""
        with self._lock:
            decision = self._check_commit(stream, expected, [e.event_id for e in events])
            if isinstance(decision, WrongVersion | StreamDeleted):
                return decision
            if isinstance(decision, _Idempotent):
                return Written(decision.number, decision.position)
            current = self._last_number(stream)
            metastream_target_was_soft_deleted = is_metastream(stream) and self._soft_deleted(
                original_stream(stream)
            )
            if decision.undelete:
                self._soft_undelete(stream, first_new_number=current + 1)
            if not events:
                position = self._next_position
                self._next_position += _RECORD_OVERHEAD
                self.changed.notify_all()
                return Written(current, position)
            written = self._write(stream, events)
            if metastream_target_was_soft_deleted:
                self._undelete_after_metadata_write(original_stream(stream), written[-1])
            self.changed.notify_all()
            return Written(written[-1].number, written[-1].position)

    def delete(self, stream: str, expected: int) -> Outcome:
        """Soft-delete ``stream``: write ``{"$tb": 2^63-1}`` to its metastream (GRPC_SPEC §7)."""
        with self._lock:
            decision = self._check_commit(stream, expected, [str(uuid.uuid4())])
            if isinstance(decision, WrongVersion | StreamDeleted):
                return decision
            current = self._last_number(stream)
            metastream = "$$" + stream
            if current < 0 and self._last_number(metastream) < 0:
                return WrongVersion(NO_STREAM)
            (record,) = self._write(
                metastream,
                [ProposedEvent(str(uuid.uuid4()), SYSTEM_METADATA_TYPE, True, _SOFT_DELETE_DATA, b"")],
            )
            self.changed.notify_all()
            return Written(current, record.position)

    def tombstone(self, stream: str, expected: int) -> Outcome:
        """Hard-delete ``stream``: write a ``$streamDeleted`` record; it can never come back."""
        with self._lock:
            decision = self._check_commit(stream, expected, [str(uuid.uuid4())])
            if isinstance(decision, WrongVersion | StreamDeleted):
                return decision
            record = Record(
                position=self._next_position,
                stream=stream,
                number=DELETED_STREAM_NUMBER,
                event_id=str(uuid.uuid4()),
                type=TOMBSTONE_TYPE,
                is_json=False,
                data=b"",
                metadata=b"",
                created_ticks=now_ticks(),
            )
            self._next_position += _RECORD_OVERHEAD + 2 * len(TOMBSTONE_TYPE)
            self._record_end = self._next_position
            if self._committed_events is not None:
                self._committed_events.put(record.event_id, stream, record.number)
            self._records.append(record)
            self._positions.append(record.position)
            self._tombstones[stream] = record
            self.changed.notify_all()
            return Written(DELETED_STREAM_NUMBER, record.position)

    def _write(self, stream: str, events: Iterable[ProposedEvent]) -> list[Record]:
        numbered = self._streams.setdefault(stream, [])
        by_id = self._ids.setdefault(stream, {})
        written: list[Record] = []
        created = now_ticks()
        for event in events:
            record = Record(
                position=self._next_position,
                stream=stream,
                number=len(numbered),
                event_id=event.event_id,
                type=event.type,
                is_json=event.is_json,
                data=event.data,
                metadata=event.metadata,
                created_ticks=created,
            )
            self._next_position += _RECORD_OVERHEAD + event.size
            self._record_end = self._next_position
            if self._committed_events is not None:
                # IndexWriter.PreCommit caches every written prepare, system writes included.
                self._committed_events.put(record.event_id, stream, record.number)
            numbered.append(record)
            by_id[record.event_id] = record
            self._records.append(record)
            self._positions.append(record.position)
            written.append(record)
        return written

    def _soft_undelete(self, stream: str, first_new_number: int) -> None:
        metadata = self._metadata(stream) or {}
        metadata["$tb"] = first_new_number
        self._write_metadata(stream, metadata)

    def _undelete_after_metadata_write(self, stream: str, written: Record) -> None:
        parsed = _parse_json_object(written.data) if written.is_json else None
        if parsed is None or self._last_number(stream) == DELETED_STREAM_NUMBER:
            return
        parsed["$tb"] = self._last_number(stream) + 1
        self._write_metadata(stream, parsed)

    def _write_metadata(self, stream: str, metadata: dict[str, Any]) -> None:
        data = json.dumps(metadata, separators=(",", ":")).encode()
        self._write(
            "$$" + stream,
            [ProposedEvent(str(uuid.uuid4()), SYSTEM_METADATA_TYPE, True, data, b"")],
        )

    # ------------------------------------------------------------------- commit decision

    def _check_commit(self, stream: str, expected: int, ids: Sequence[str]) -> _Decision:
        current = self._last_number(stream)
        if current == DELETED_STREAM_NUMBER:
            return StreamDeleted()
        soft_deleted = self._soft_deleted(stream)
        if expected == STREAM_EXISTS:
            if soft_deleted:
                return StreamDeleted()
            if current < 0 and self._last_number("$$" + stream) < 0:
                return WrongVersion(NO_STREAM)
        if expected in (ANY, STREAM_EXISTS):
            return self._check_by_ids(stream, current, ids, soft_deleted)
        if expected < current:
            return self._check_replay(stream, current, expected, ids, soft_deleted)
        if expected > current:
            return WrongVersion(current)
        return _Ok(undelete=soft_deleted)

    def _check_by_ids(self, stream: str, current: int, ids: Sequence[str], soft_deleted: bool) -> _Decision:
        if self._committed_events is not None:
            return self._check_by_cached_ids(stream, current, ids, soft_deleted)
        by_id = self._ids.get(stream, {})
        if not ids or ids[0] not in by_id:
            return _Ok(undelete=soft_deleted)
        if all(event_id in by_id for event_id in ids):
            last = by_id[ids[-1]]
            return _Idempotent(last.number, last.position)
        return WrongVersion(current)

    def _check_by_cached_ids(
        self, stream: str, current: int, ids: Sequence[str], soft_deleted: bool
    ) -> _Decision:
        # IndexWriter.CheckCommit (24.10): a miss on the first id is a new write (all events are
        # appended again, duplicates included); a miss on a later id is CorruptedIdempotency,
        # which the gRPC layer reports as a wrong expected version.
        assert self._committed_events is not None
        last = None
        for index, event_id in enumerate(ids):
            cached = self._committed_events.get(event_id)
            if cached is None or cached.stream != stream:
                return _Ok(undelete=soft_deleted) if index == 0 else WrongVersion(current)
            last = cached
        if last is None:
            return _Ok(undelete=soft_deleted)
        record = self._stream_record(stream, last.number)
        # The real server reads the position back from the index; -1 if it is gone.
        return _Idempotent(last.number, record.position if record is not None else -1)

    def clear_idempotency_cache(self) -> None:
        """Forget the recently committed event ids (strict mode), as a node restart does."""
        with self._lock:
            if self._committed_events is not None:
                self._committed_events.clear()

    def _check_replay(
        self, stream: str, current: int, expected: int, ids: Sequence[str], soft_deleted: bool
    ) -> _Decision:
        numbered = self._streams.get(stream, [])
        number = expected
        for event_id in ids:
            number += 1
            if number < len(numbered) and numbered[number].event_id == event_id:
                continue
            if number == expected + 1 and expected == NO_STREAM and soft_deleted:
                return _Ok(undelete=True)
            return WrongVersion(current)
        if not ids:
            return WrongVersion(current)
        return _Idempotent(number, numbered[number].position)

    # ------------------------------------------------------------------- stream state

    def _last_number(self, stream: str) -> int:
        if stream in self._tombstones:
            return DELETED_STREAM_NUMBER
        return len(self._streams.get(stream, ())) - 1

    def _metadata(self, stream: str) -> dict[str, Any] | None:
        numbered = self._streams.get("$$" + stream)
        if not numbered or not numbered[-1].is_json:
            return None
        return _parse_json_object(numbered[-1].data)

    def _soft_deleted(self, stream: str) -> bool:
        metadata = self._metadata(stream)
        return metadata is not None and metadata.get("$tb") == DELETED_STREAM_NUMBER

    def last_number(self, stream: str) -> int:
        """Raw last event number: -1 if none ever, 2^63-1 if tombstoned (GRPC_SPEC §2.2)."""
        with self._lock:
            return self._last_number(stream)

    def view(self, stream: str) -> StreamView:
        """Apply ``$tb``, ``$maxCount``, ``$maxAge``, soft delete and tombstones to ``stream``."""
        with self._lock:
            tombstoned = stream in self._tombstones or (
                is_metastream(stream) and original_stream(stream) in self._tombstones
            )
            last = len(self._streams.get(stream, ())) - 1
            metadata = self._metadata(stream) or {}
            truncate_before = _int_or_none(metadata.get("$tb"))
            if truncate_before == DELETED_STREAM_NUMBER:
                return StreamView(tombstoned, False, last + 1, None)
            first = 0
            max_count = 1 if is_metastream(stream) else _int_or_none(metadata.get("$maxCount"))
            if max_count is not None:
                first = max(first, last - max_count + 1)
            if truncate_before is not None:
                first = max(first, truncate_before)
            max_age = _int_or_none(metadata.get("$maxAge"))
            min_created = None if max_age is None else now_ticks() - max_age * _TICKS_PER_SECOND
            return StreamView(tombstoned, last >= 0, first, min_created)

    def stream_records(self, stream: str, start: int, stop: int) -> list[Record]:
        """Records ``start <= number < stop`` of ``stream`` (tombstone excluded), ascending."""
        with self._lock:
            numbered = self._streams.get(stream, [])
            return numbered[max(start, 0) : max(stop, 0)]

    def stream_record(self, stream: str, number: int) -> Record | None:
        """Record ``number`` of ``stream``, or ``None``."""
        with self._lock:
            return self._stream_record(stream, number)

    def _stream_record(self, stream: str, number: int) -> Record | None:
        if number == DELETED_STREAM_NUMBER:
            return self._tombstones.get(stream)
        numbered = self._streams.get(stream, [])
        return numbered[number] if 0 <= number < len(numbered) else None

    def tombstone_record(self, stream: str) -> Record | None:
        """The ``$streamDeleted`` record of ``stream`` if it is tombstoned."""
        with self._lock:
            return self._tombstones.get(stream)

    # ------------------------------------------------------------------------- $all

    @property
    def head(self) -> int:
        """Position of the last record in the log."""
        with self._lock:
            return self._positions[-1]

    @property
    def end(self) -> int:
        """The writer checkpoint: the position after the last record (or any empty append)."""
        with self._lock:
            return self._next_position

    def is_boundary(self, position: int) -> bool:
        """Whether a real transaction file could start or end a read at ``position``.

        That is 0 (the start), the position of a record, the position just after the last
        record, or the writer checkpoint. Any other position lies inside a record (or inside the
        system records a real node writes before the seed), where EventStoreDB's chunk reader
        fails with ``InvalidReadException``.
        """
        with self._lock:
            if position in (0, self._record_end, self._next_position):
                return True
            index = bisect_left(self._positions, position)
            return index < len(self._positions) and self._positions[index] == position

    def records_from(self, position: int, limit: int) -> list[Record]:
        """Up to ``limit`` records with ``position >= position``, ascending."""
        with self._lock:
            index = bisect_left(self._positions, position)
            return self._records[index : index + limit]

    def records_before(self, position: int, limit: int) -> list[Record]:
        """Up to ``limit`` records with ``position < position``, descending."""
        with self._lock:
            index = bisect_left(self._positions, position)
            return self._records[max(index - limit, 0) : index][::-1]

    def wait_for_records_after(self, position: int, timeout: float) -> bool:
        """Block until a record after ``position`` exists, or ``timeout`` seconds pass."""
        with self.changed:
            return self.changed.wait_for(lambda: self._positions[-1] > position, timeout)

    def wake_all(self) -> None:
        """Wake every waiting subscription, e.g. because one of them was cancelled."""
        with self.changed:
            self.changed.notify_all()


def _parse_json_object(data: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
