"""Run the EventStoreDB test server from the shell until Ctrl-C or SIGTERM.

``python -m eventsourcing_cqrs.testing.esdb_server --host localhost --port 2113``
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

import structlog

from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer, PortInUseError


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, serve until a signal arrives, then stop cleanly."""
    parser = argparse.ArgumentParser(
        prog="python -m eventsourcing_cqrs.testing.esdb_server",
        description="In-memory EventStoreDB-compatible gRPC test server (a test double).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=2113, help="port (0 picks a free one)")
    args = parser.parse_args(argv)
    # Logs go to stderr so that stdout carries only the banner a script can parse.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))

    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server = EsdbTestServer(host=args.host, port=args.port)
    try:
        server.start()
    except PortInUseError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except OSError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
        return 1
    with server:
        print(f"EventStoreDB test server listening: {server.uri}", flush=True)
        while not done.wait(1.0):
            pass
    print("EventStoreDB test server stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
