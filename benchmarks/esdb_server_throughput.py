"""Append and catch-up throughput over gRPC through the in-process EventStoreDB test server.

    .venv/bin/python benchmarks/esdb_server_throughput.py                 # 20,000 events
    .venv/bin/python benchmarks/esdb_server_throughput.py --events 1000   # smallest

What ``compare.py`` does not: the EventStoreDB path (``compare.py`` is SQLite only). It prints one
row per path, esdbclient alone and :class:`~eventsourcing_cqrs.event_store.esdb.EsdbEventStore`
(the adapter) on top of it: appends of 1 and of 100 events per call, a catch-up subscription to
``$all``, and a catch-up whose server-side filter drops every event (records scanned per second).
The server (:mod:`eventsourcing_cqrs.testing.esdb_server`) runs in this process, so the figures
include both ends of the gRPC connection on the same CPU cores; they measure the test double and
the adapter's overhead over esdbclient, not EventStoreDB. Needs the ``esdb`` extra.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Callable

import esdbclient
from _common import quiet_logs

from eventsourcing_cqrs.event_store import CaughtUp, EventFilter, NewEvent, RecordedEvent, StreamState
from eventsourcing_cqrs.event_store.esdb import EsdbEventStore
from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer

PAYLOAD = json.dumps({"amount": 100, "note": "x" * 150}).encode()


def _timed(action: Callable[[], int]) -> tuple[int, float]:
    started = time.perf_counter()
    count = action()
    return count, time.perf_counter() - started


def _client_appends(client: esdbclient.EventStoreDBClient, events: int, batch: int) -> int:
    stream = f"Bench-{uuid.uuid4().hex}"
    for n in range(0, events, batch):
        client.append_events(
            stream,
            current_version=n - 1 if n else esdbclient.StreamState.NO_STREAM,
            events=[esdbclient.NewEvent(type="Deposited", data=PAYLOAD) for _ in range(batch)],
        )
    return events


def _store_appends(store: EsdbEventStore, events: int, batch: int) -> int:
    stream = f"Bench-{uuid.uuid4().hex}"
    for n in range(0, events, batch):
        store.append(
            stream,
            [NewEvent("Deposited", PAYLOAD) for _ in range(batch)],
            expected_version=n - 1 if n else StreamState.NO_STREAM,
        )
    return events


def _client_catch_up(client: esdbclient.EventStoreDBClient) -> int:
    count = 0
    with client.subscribe_to_all(include_caught_up=True) as subscription:
        for item in subscription:
            if isinstance(item, esdbclient.CaughtUp):
                return count
            count += 1
    return count


def _store_catch_up(store: EsdbEventStore, event_filter: EventFilter | None) -> int:
    count = 0
    with store.subscribe(filter=event_filter) as subscription:
        for item in subscription:
            if isinstance(item, CaughtUp):
                return count
            if isinstance(item, RecordedEvent):
                count += 1
    return count


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000, help="events per catch-up run")
    args = parser.parse_args()
    quiet_logs()

    rows: list[tuple[str, int, float]] = []
    with EsdbTestServer() as server:
        client = esdbclient.EventStoreDBClient(server.uri)
        store = EsdbEventStore(server.uri)
        singles = min(args.events // 10, 2_000)
        rows.append(
            ("append, 1 event/call, esdbclient", *_timed(lambda: _client_appends(client, singles, 1)))
        )
        rows.append(
            ("append, 1 event/call, EsdbEventStore", *_timed(lambda: _store_appends(store, singles, 1)))
        )
        half = args.events // 2
        rows.append(
            ("append, 100 events/call, esdbclient", *_timed(lambda: _client_appends(client, half, 100)))
        )
        rows.append(
            ("append, 100 events/call, EsdbEventStore", *_timed(lambda: _store_appends(store, half, 100)))
        )
        rows.append(("catch-up $all, esdbclient", *_timed(lambda: _client_catch_up(client))))
        rows.append(("catch-up $all, EsdbEventStore", *_timed(lambda: _store_catch_up(store, None))))
        nothing = EventFilter(prefixes=("NoSuchType",))
        scanned = len(list(store.read_all(filter=EventFilter(include_system_events=True))))
        _, seconds = _timed(lambda: _store_catch_up(store, nothing))
        rows.append(("catch-up, filter drops all (records scanned)", scanned, seconds))
        store.close()
        client.close()

    print(f"{'path':<46} {'events':>8} {'seconds':>8} {'events/s':>10}")
    for name, count, seconds in rows:
        rate = count / seconds if seconds else float("inf")
        print(f"{name:<46} {count:>8} {seconds:>8.2f} {rate:>10,.0f}")


if __name__ == "__main__":
    main()
