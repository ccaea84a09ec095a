"""What both sides of ``esdb_compare.py`` measure with, the same way: stdlib (and grpc) only.

Each side of ``esdb_compare.py`` is a child script (``_ours_esdb.py`` in ``.venv``,
``_eventsourcing_esdb.py`` in the eventsourcing 9.3 venv) that imports this module, so the
measuring is identical on both: :class:`Probe` brackets a timed section with
``time.perf_counter()``, ``time.process_time()`` (this process, every thread, gRPC's included)
and the EventStoreDB test server's utime + stime from ``/proc/<pid>/stat``; the child prints
every phase it timed as one JSON line (:func:`emit`). With ``--count-calls`` the gRPC channel
esdbclient opens is wrapped in an interceptor that counts the calls per method (a diagnostic:
never on in timed runs, it adds client CPU).

Nothing here imports eventsourcing, this project, structlog or pydantic. Not a script.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) the process ``pid`` has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()  # after "(comm)": state is field 3
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15: utime, stime


class CallCounter:
    """gRPC calls made on the wrapped channels, by method name (``/event_store.client...``)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def count(self, method: str) -> None:
        name = method.rsplit("/", 2)
        short = ".".join(name[-2:]).removeprefix("event_store.client.")
        with self._lock:
            self.calls[short] = self.calls.get(short, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.calls)


def install_call_counter() -> CallCounter:
    """Wrap every channel ``grpc.insecure_channel`` opens from now on in a counting interceptor."""
    import grpc  # noqa: PLC0415 - only the --count-calls diagnostic needs it

    counter = CallCounter()

    class Counting(
        grpc.UnaryUnaryClientInterceptor,
        grpc.UnaryStreamClientInterceptor,
        grpc.StreamUnaryClientInterceptor,
        grpc.StreamStreamClientInterceptor,
    ):
        def _counted(self, continuation: Any, details: Any, request: Any) -> Any:
            counter.count(details.method)
            return continuation(details, request)

        def _counted_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
            counter.count(details.method)

            def each() -> Iterator[Any]:  # the messages sent on the call, counted as they go
                for request in requests:
                    counter.count(details.method + " (requests)")
                    yield request

            return continuation(details, each())

        intercept_unary_unary = _counted
        intercept_unary_stream = _counted
        intercept_stream_unary = _counted_stream
        intercept_stream_stream = _counted_stream

    original = grpc.insecure_channel

    def insecure_channel(*args: Any, **kwargs: Any) -> Any:
        return grpc.intercept_channel(original(*args, **kwargs), Counting())

    grpc.insecure_channel = insecure_channel
    return counter


class Probe:
    """The phases a child timed: ``with probe.phase("deposit", count):`` around each."""

    def __init__(self, server_pid: int, counter: CallCounter | None) -> None:
        self.server_pid = server_pid
        self.counter = counter
        self.phases: dict[str, dict[str, Any]] = {}

    @contextmanager
    def phase(self, name: str, count: int, **extra: Any) -> Iterator[dict[str, Any]]:
        """Time the block; ``count`` commands or events done in it. The yielded dict takes
        more results (e.g. latencies) and ends up in the phase's JSON."""
        result: dict[str, Any] = dict(extra)
        calls_before = self.counter.snapshot() if self.counter else {}
        server_before = server_cpu(self.server_pid)
        cpu_before = time.process_time()
        started = time.perf_counter()
        yield result
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        server = server_cpu(self.server_pid) - server_before
        result.update(seconds=elapsed, count=count, client_cpu=cpu, server_cpu=server)
        if self.counter:
            after = self.counter.snapshot()
            result["calls"] = {
                k: v - calls_before.get(k, 0) for k, v in after.items() if v != calls_before.get(k, 0)
            }
        self.phases[name] = result


def parse_args(description: str) -> argparse.Namespace:
    """The command line every child takes (``esdb_compare.py`` builds it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--uri", required=True, help="esdb://host:port?Tls=false")
    parser.add_argument("--server-pid", type=int, required=True, help="the server's pid (/proc/PID/stat)")
    parser.add_argument("--workload", required=True, choices=("w1", "w1c", "w2", "w3"))
    parser.add_argument("--cache", type=int, default=0, help="W1: aggregate cache size (0 = off)")
    parser.add_argument("--accounts", type=int, default=200, help="W1: accounts")
    parser.add_argument("--deposits", type=int, default=10, help="W1: timed deposits per account")
    parser.add_argument("--threads", type=int, default=1, help="W1c: writer threads")
    parser.add_argument("--per-thread", type=int, default=60, help="W1c: deposits per thread")
    parser.add_argument("--events", type=int, default=5000, help="W2: events in the aggregate; W3: in $all")
    parser.add_argument("--loads", type=int, default=5, help="W2: timed loads")
    parser.add_argument("--directory", default="", help="W3: where the read model file goes")
    parser.add_argument("--count-calls", action="store_true", help="count gRPC calls (diagnostic)")
    return parser.parse_args()


def run_threads(threads: int, work: Callable[[int], list[float]]) -> list[float]:
    """Run ``work(n)`` in ``threads`` threads started together; every latency they return."""
    barrier = threading.Barrier(threads)
    results: list[list[float]] = [[] for _ in range(threads)]
    errors: list[BaseException] = []

    def body(n: int) -> None:
        barrier.wait()
        try:
            results[n] = work(n)
        except Exception as exc:  # noqa: BLE001 - re-raised in the caller's thread below
            errors.append(exc)

    pool = [threading.Thread(target=body, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]
    return [latency for part in results for latency in part]


def p99(latencies: list[float]) -> float:
    ordered = sorted(latencies)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def emit(probe: Probe) -> None:
    """The child's last line of output: every phase it timed."""
    print(json.dumps({"phases": probe.phases}))
