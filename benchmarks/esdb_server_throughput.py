"""Append and catch-up throughput over gRPC through the EventStoreDB test server, with the server
in this process and in a child process, esdbclient alone beside the adapter.

    .venv/bin/python benchmarks/esdb_server_throughput.py                 # 20,000 events
    .venv/bin/python benchmarks/esdb_server_throughput.py --events 1000   # smallest

What ``compare.py`` does not: the EventStoreDB path (``compare.py`` is SQLite only). For each place
the server runs (:class:`~eventsourcing_cqrs.testing.esdb_server.EsdbTestServer` in this process,
:class:`~eventsourcing_cqrs.testing.esdb_server.EsdbServerProcess` in its own, as the test fixture
runs it) it prints one row per path, esdbclient alone and
:class:`~eventsourcing_cqrs.event_store.esdb.EsdbEventStore` (the adapter) on top of it: appends of 1
event per call from one thread and from 8 and 32 threads sharing one client or
store (esdbclient opens a BatchAppend call per append; the adapter multiplexes every append over one
long-lived BatchAppend call), esdbclient's ``Append`` RPC for comparison (what it uses for a lone
``NewEvent``), a catch-up subscription to ``$all``, and a catch-up whose server-side
filter drops every event (records scanned per second). The adapter's rows also give its cost in
µs per event over esdbclient's on the same server (negative: cheaper). Each measurement runs
``--rounds`` times, alternating esdbclient and the adapter, and the table shows the median round. The figures
measure the test double and the adapter's overhead over esdbclient, not EventStoreDB; with the
server in this process both ends of the gRPC connection share one GIL. Needs the ``esdb`` extra.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import esdbclient
from _common import quiet_logs
from _esdb_probe import run_threads

from eventsourcing_cqrs.event_store import CaughtUp, EventFilter, NewEvent, RecordedEvent, StreamState
from eventsourcing_cqrs.event_store.esdb import EsdbEventStore
from eventsourcing_cqrs.testing.esdb_server import EsdbServerProcess, EsdbTestServer

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


def _client_unary_appends(client: esdbclient.EventStoreDBClient, events: int) -> int:
    """One event per call through esdbclient's ``Append`` RPC (what it uses for a lone NewEvent)."""
    stream = f"Bench-{uuid.uuid4().hex}"
    for n in range(events):
        client.append_to_stream(
            stream,
            current_version=n - 1 if n else esdbclient.StreamState.NO_STREAM,
            events=esdbclient.NewEvent(type="Deposited", data=PAYLOAD),
        )
    return events


def _threads(action: Callable[[int], int], threads: int, events: int) -> Callable[[], int]:
    """``action(events // threads)`` in ``threads`` threads at once, each on its own stream; a
    thread's error is raised here, not lost with its thread."""
    share = events // threads

    def work(_: int) -> list[float]:
        action(share)
        return []

    def run() -> int:
        run_threads(threads, work)
        return share * threads

    return run


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


@contextmanager
def _server(where: str) -> Iterator[str]:
    """The URI of a lenient test server running ``where``: "in process" or "own process"."""
    if where == "in process":
        with EsdbTestServer() as server:
            yield server.uri
    else:
        with EsdbServerProcess() as process:
            yield process.uri


# (server, path, events, seconds, µs per event over esdbclient's row on the same server or None)
_Row = tuple[str, str, int, float, float | None]


def _median(action: Callable[[], int], rounds: int) -> tuple[int, float]:
    results = [_timed(action) for _ in range(rounds)]
    return results[0][0], statistics.median(seconds for _, seconds in results)


def _measure(where: str, events: int, rounds: int) -> list[_Row]:
    rows: list[_Row] = []

    def pair(name: str, client_action: Callable[[], int], store_action: Callable[[], int]) -> None:
        client_runs: list[tuple[int, float]] = []
        store_runs: list[tuple[int, float]] = []
        for _ in range(rounds):  # alternate, so that both sides meet the same noise
            client_runs.append(_timed(client_action))
            store_runs.append(_timed(store_action))
        client_count, client_seconds = client_runs[0][0], statistics.median(s for _, s in client_runs)
        store_count, store_seconds = store_runs[0][0], statistics.median(s for _, s in store_runs)
        overhead = (store_seconds / store_count - client_seconds / client_count) * 1e6
        rows.append((where, f"{name}, esdbclient", client_count, client_seconds, None))
        rows.append((where, f"{name}, EsdbEventStore", store_count, store_seconds, overhead))

    with _server(where) as uri:
        client = esdbclient.EventStoreDBClient(uri)
        store = EsdbEventStore(uri)
        singles = min(events // 10, 2_000)
        pair(
            "append 1/call",
            lambda: _client_appends(client, singles, 1),
            lambda: _store_appends(store, singles, 1),
        )
        _, seconds = _median(lambda: _client_unary_appends(client, singles), rounds)
        rows.append((where, "append 1/call, esdbclient Append RPC", singles, seconds, None))
        for threads in (8, 32):
            pair(
                f"append 1/call x {threads} threads",
                _threads(lambda share: _client_appends(client, share, 1), threads, singles),
                _threads(lambda share: _store_appends(store, share, 1), threads, singles),
            )
        # The catch-ups read every event written so far: top the log up to about ``events``.
        written = 7 * rounds * singles
        if written < events:
            _client_appends(client, events - written, 100)
        pair("catch-up $all", lambda: _client_catch_up(client), lambda: _store_catch_up(store, None))
        nothing = EventFilter(prefixes=("NoSuchType",))
        scanned = len(list(store.read_all(filter=EventFilter(include_system_events=True))))
        _, seconds = _median(lambda: _store_catch_up(store, nothing), rounds)
        rows.append((where, "catch-up, filter drops all (scanned)", scanned, seconds, None))
        store.close()
        client.close()
    return rows


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000, help="events per catch-up run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each measurement (median shown)")
    args = parser.parse_args()
    quiet_logs()

    rows = [
        row for where in ("in process", "own process") for row in _measure(where, args.events, args.rounds)
    ]
    print(
        f"{'server':<12} {'path':<46} {'events':>7} {'seconds':>8} {'events/s':>9} "
        f"{'µs/event over esdbclient':>25}"
    )
    for where, name, count, seconds, overhead in rows:
        rate = count / seconds if seconds else float("inf")
        extra = "" if overhead is None else f"{overhead:+.1f}"
        print(f"{where:<12} {name:<46} {count:>7} {seconds:>8.2f} {rate:>9,.0f} {extra:>25}")


if __name__ == "__main__":
    main()
