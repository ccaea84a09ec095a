"""An event store in this process's memory, with EventStoreDB's semantics.

For tests and short-lived tools. It passes the same contract suite as the SQLite and
EventStoreDB adapters; it is thread-safe but not shared between processes, and nothing
survives :meth:`InMemoryEventStore.close`.
"""

from __future__ import annotations

import bisect
import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

import structlog

from eventsourcing_cqrs.errors import (
    StreamDeletedError,
    StreamNotFoundError,
)
from eventsourcing_cqrs.event_store._commit import (
    DELETED_REVISION,
    AlreadyWritten,
    StreamInfo,
    check_delete,
    decide,
)
from eventsourcing_cqrs.event_store._subscription import Notifier, PollingSubscription
from eventsourcing_cqrs.event_store.port import (
    AppendResult,
    EventFilter,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StreamName,
    checked_append,
    checked_delete,
    checked_read_all,
    checked_read_stream,
    checked_subscribe,
)

__all__ = ["InMemoryEventStore"]

logger = structlog.get_logger(__name__)


@dataclass
class _Stream:
    events: list[RecordedEvent] = field(default_factory=list)
    ids: dict[uuid.UUID, RecordedEvent] = field(default_factory=dict)
    last_revision: int = -1
    visible_from: int = 0
    tombstoned: bool = False

    @property
    def soft_deleted(self) -> bool:
        return self.visible_from == DELETED_REVISION

    def info(self) -> StreamInfo:
        return StreamInfo(self.last_revision, self.soft_deleted, self.tombstoned)


class InMemoryEventStore:
    """The event store port over Python lists, for tests and embedded tools."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._log: list[RecordedEvent] = []
        self._positions: list[int] = []
        self._streams: dict[str, _Stream] = {}
        self._notifier = Notifier()

    def __repr__(self) -> str:
        return "InMemoryEventStore()"

    # -- writing --------------------------------------------------------------------------

    def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        name, expected, new = checked_append(stream, events, expected_version)
        with self._lock:
            state = self._streams.get(name) or _Stream()
            existing = {
                event.id: (state.ids[event.id].revision, state.ids[event.id].position)
                for event in new
                if event.id in state.ids
            }
            decision = decide(name, expected, [e.id for e in new], state.info(), existing)
            if isinstance(decision, AlreadyWritten):
                return AppendResult(name, decision.revision, decision.position, already_written=True)
            self._streams[name] = state
            if decision.undelete:
                state.visible_from = state.last_revision + 1
                self._write_metadata(name, {"$tb": state.visible_from})
            for event in new:
                self._record(state, name, event, state.last_revision + 1)
            self._notifier.notify()
            if not new:
                return AppendResult(name, state.last_revision, self._head())
            return AppendResult(name, state.last_revision, self._log[-1].position)

    def _record(self, state: _Stream, stream: str, event: NewEvent, revision: int) -> None:
        position = (self._positions[-1] if self._positions else 0) + 1
        recorded = RecordedEvent(
            id=event.id,
            type=event.type,
            data=event.data,
            metadata=event.metadata,
            stream=stream,
            revision=revision,
            position=position,
            recorded_at=datetime.now(UTC),
            content_type=event.content_type,
        )
        self._log.append(recorded)
        self._positions.append(position)
        state.events.append(recorded)
        state.ids[event.id] = recorded
        if revision != DELETED_REVISION:
            state.last_revision = revision

    def _write_metadata(self, stream: str, metadata: dict[str, int]) -> None:
        meta_name = "$$" + stream
        meta = self._streams.setdefault(meta_name, _Stream())
        data = json.dumps(metadata).encode()
        self._record(meta, meta_name, NewEvent("$metadata", data), meta.last_revision + 1)

    def delete_stream(self, stream: str, *, expected_version: ExpectedVersion) -> None:
        name, expected = checked_delete(stream, expected_version)
        with self._lock:
            state = self._streams.get(name) or _Stream()
            check_delete(name, expected, state.info(), tombstone=False)
            state.visible_from = DELETED_REVISION
            self._write_metadata(name, {"$tb": DELETED_REVISION})
            self._notifier.notify()
        logger.info("event_store.stream_deleted", stream=name)

    def tombstone_stream(self, stream: str, *, expected_version: ExpectedVersion) -> None:
        name, expected = checked_delete(stream, expected_version)
        with self._lock:
            state = self._streams.setdefault(name, _Stream())
            check_delete(name, expected, state.info(), tombstone=True)
            self._record(state, name, NewEvent("$streamDeleted", b"", b""), DELETED_REVISION)
            state.tombstoned = True
            self._notifier.notify()
        logger.info("event_store.stream_tombstoned", stream=name)

    # -- reading --------------------------------------------------------------------------

    def read_stream(
        self,
        stream: str,
        *,
        from_revision: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> Iterator[RecordedEvent]:
        name, from_revision, backwards, limit = checked_read_stream(stream, from_revision, backwards, limit)
        with self._lock:
            state = self._streams.get(name)
            if state is not None and state.tombstoned:
                raise StreamDeletedError(name)
            if state is None or state.last_revision < 0 or state.soft_deleted:
                raise StreamNotFoundError(name)
            visible = [e for e in state.events if state.visible_from <= e.revision < DELETED_REVISION]
        if backwards:
            start = state.last_revision if from_revision is None else from_revision
            selected = [e for e in reversed(visible) if e.revision <= start]
        else:
            start = 0 if from_revision is None else from_revision
            selected = [e for e in visible if e.revision >= start]
        return iter(selected if limit is None else selected[:limit])

    def read_all(
        self,
        *,
        from_position: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        filter: EventFilter | None = None,
    ) -> Iterator[RecordedEvent]:
        from_position, backwards, limit, predicate = checked_read_all(from_position, backwards, limit, filter)
        with self._lock:
            log = self._log
            if backwards:
                end = (
                    len(log) if from_position is None else bisect.bisect_left(self._positions, from_position)
                )
                candidates = log[end - 1 :: -1] if end else []
            else:
                begin = bisect.bisect_left(self._positions, from_position or 0)
                candidates = log[begin:]
        return self._take(candidates, predicate, limit)

    @staticmethod
    def _take(
        candidates: list[RecordedEvent], predicate: EventFilter, limit: int | None
    ) -> Iterator[RecordedEvent]:
        count = 0
        for event in candidates:
            if limit is not None and count >= limit:
                return
            if predicate.matches(event.type, event.stream):
                count += 1
                yield event

    def stream_version(self, stream: str) -> int | None:
        name = StreamName(stream)
        with self._lock:
            state = self._streams.get(name)
            if state is None:
                return None
            if state.tombstoned:
                raise StreamDeletedError(name)
            if state.soft_deleted or state.last_revision < 0:
                return None
            return state.last_revision

    def head_position(self, filter: EventFilter | None = None) -> int:
        return next((e.position for e in self.read_all(backwards=True, filter=filter)), 0)

    def _head(self) -> int:
        return self._positions[-1] if self._positions else 0

    def subscribe(
        self,
        *,
        from_position: int | None = None,
        filter: EventFilter | None = None,
        checkpoint_interval: int = 150,
    ) -> PollingSubscription:
        from_position, predicate, checkpoint_interval = checked_subscribe(
            from_position, filter, checkpoint_interval
        )

        def fetch(after: int, page: int) -> tuple[list[RecordedEvent], int | None, int]:
            with self._lock:
                begin = bisect.bisect_right(self._positions, after)
                records = self._log[begin : begin + page]
            if not records:
                return [], None, 0
            matching = [e for e in records if predicate.matches(e.type, e.stream)]
            return matching, records[-1].position, len(records)

        return PollingSubscription(
            fetch,
            self._notifier,
            from_position=from_position,
            checkpoint_interval=checkpoint_interval,
        )

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Nothing to release: the events live as long as this object."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
