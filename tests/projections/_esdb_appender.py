"""The appender both EventStoreDB fault tests run (restarts, leader changes): it appends event n
of each stream at expected revision n - 1 and retries outages with the same event."""

from __future__ import annotations

import json
import threading
import time
import uuid

from eventsourcing_cqrs.errors import EventStoreTimeoutError, EventStoreUnavailableError
from eventsourcing_cqrs.event_store.esdb import EsdbEventStore
from eventsourcing_cqrs.event_store.port import NewEvent, StreamState


class Appender(threading.Thread):
    """Appends event n of each stream at expected revision n - 1, retrying outages with the
    same event id (so a retry of an append that did commit is idempotent)."""

    def __init__(self, events: EsdbEventStore, streams: list[str], event_type: str) -> None:
        super().__init__(name="appender", daemon=True)
        self._events = events
        self._streams = streams
        self._type = event_type
        self.appended: dict[str, list[uuid.UUID]] = {stream: [] for stream in streams}
        self.last_position = 0
        self.retries = 0
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            turn = 0
            while not self.done.is_set():
                stream = self._streams[turn % len(self._streams)]
                turn += 1
                ids = self.appended[stream]
                event = NewEvent(self._type, json.dumps({"n": len(ids)}).encode(), b"{}")
                expected = len(ids) - 1 if ids else StreamState.NO_STREAM
                while True:
                    try:
                        result = self._events.append(stream, [event], expected_version=expected)
                        break
                    except (EventStoreUnavailableError, EventStoreTimeoutError):
                        self.retries += 1
                        time.sleep(0.02)
                if result.revision != len(ids):
                    self.error = AssertionError(
                        f"event {len(ids)} of {stream} landed at revision {result.revision}"
                    )
                    return
                ids.append(event.id)
                self.last_position = result.position
                time.sleep(0.002)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    @property
    def total(self) -> int:
        return sum(len(ids) for ids in self.appended.values())
