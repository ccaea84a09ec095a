"""The bounded in-memory cache of committed event ids behind EventStoreDB's idempotency for ANY/EXISTS.

EventStoreDB 24.10 recognises a re-append with expected version ``ANY`` or ``STREAM_EXISTS`` only
through ``IndexWriter._committedEvents`` (``src/EventStore.Core/Services/Storage/ReaderIndex/
IndexWriter.cs``): a ``BoundedCache<Guid, EventInfo>(int.MaxValue, ESConsts.CommitedEventsMemCacheLimit,
x => 16 + 4 + IntPtr.Size + inMemorySizer.GetSizeInBytes(x.StreamId))``. The limit is 8 MiB
(``Settings/ESConsts.cs``); the LogV2 sizer is ``MemSizer.SizeOf(string)`` =
``(20 + 2 * length + 1)`` rounded up to a multiple of 8, or 0 for an empty string
(``Caching/MemSizer.cs``, ``LogV2/LogV2Sizer.cs``). Only ``StorageWriterService`` fills it
(``IndexWriter.PreCommit``), so a restarted node starts with it empty.

:class:`CommittedEventsCache` keeps ``BoundedCache``'s exact bookkeeping (``BoundedCache.cs``):
FIFO eviction *before* an insert while the queue is non-empty and the size is over the limit; a
duplicate id is queued and counted again but keeps its first value, and evicting it a second time
subtracts nothing (the size accounting of the real cache drifts the same way).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

COMMITTED_EVENTS_MEM_CACHE_LIMIT: Final = 8 * 1024 * 1024
"""``ESConsts.CommitedEventsMemCacheLimit`` in EventStoreDB 24.10: the cache's size limit in bytes."""

_GUID_BYTES: Final = 16
_EVENT_NUMBER_HALF: Final = 4
_POINTER_BYTES: Final = 8
_STRING_OVERHEAD: Final = 20


def entry_cost(stream: str) -> int:
    """The size EventStoreDB charges one cached event id of ``stream`` (64-bit process, LogV2)."""
    return _GUID_BYTES + _EVENT_NUMBER_HALF + _POINTER_BYTES + _string_size(stream)


def _string_size(value: str) -> int:
    if not value:
        return 0
    utf16_length = len(value.encode("utf-16-le")) // 2  # .NET string length counts UTF-16 units
    size = _STRING_OVERHEAD + 2 * utf16_length + 1
    return -(-size // _POINTER_BYTES) * _POINTER_BYTES


@dataclass(frozen=True, slots=True)
class CommittedEvent:
    """What the cache remembers of a committed event id: its stream and event number."""

    stream: str
    number: int


class CommittedEventsCache:
    """A size-bounded FIFO map from event id to :class:`CommittedEvent` (not thread-safe)."""

    def __init__(self, max_bytes: int = COMMITTED_EVENTS_MEM_CACHE_LIMIT) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self._max_bytes = max_bytes
        self._entries: dict[str, CommittedEvent] = {}
        self._queue: deque[str] = deque()
        self._size = 0

    @property
    def max_bytes(self) -> int:
        """The configured size limit."""
        return self._max_bytes

    @property
    def size(self) -> int:
        """Bytes currently charged, as the real cache counts them."""
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, event_id: str) -> CommittedEvent | None:
        """The remembered stream and number of ``event_id``, or ``None`` if evicted or never seen."""
        return self._entries.get(event_id)

    def put(self, event_id: str, stream: str, number: int) -> None:
        """Remember a committed event, evicting the oldest entries first while over the limit."""
        while self._size > self._max_bytes and self._queue:
            old = self._entries.pop(self._queue.popleft(), None)
            if old is not None:
                self._size -= entry_cost(old.stream)
        self._size += entry_cost(stream)
        self._queue.append(event_id)
        self._entries.setdefault(event_id, CommittedEvent(stream, number))

    def clear(self) -> None:
        """Forget everything, as a node restart does."""
        self._entries.clear()
        self._queue.clear()
        self._size = 0
