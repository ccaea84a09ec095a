"""Run the EventStoreDB test server from the shell until Ctrl-C or SIGTERM.

``python -m eventsourcing_cqrs.testing.esdb_server --host localhost --port 2113 [--strict]``

Shutdown is signal-safe: the signal handlers do nothing in Python; the interpreter's C-level
handler writes the signal number to a socketpair (``signal.set_wakeup_fd``) that the main thread
waits on with ``select``. Nothing is shared between a handler and the code it interrupts, so any
number of signals in quick succession cannot deadlock it (an earlier version set a
``threading.Event`` from the handler while the main thread waited on it: a second signal could
re-enter ``Event.set`` under the lock the first one held).
"""

from __future__ import annotations

import argparse
import select
import signal
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import structlog

from eventsourcing_cqrs._uri import redact_uri
from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer, EsdbUser
from eventsourcing_cqrs.testing.esdb_server._process import BANNER
from eventsourcing_cqrs.testing.esdb_server._security import DEFAULT_USERS
from eventsourcing_cqrs.testing.esdb_server._tls import TlsUnavailableError

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def build_parser() -> argparse.ArgumentParser:
    """The command line; each concern adds its options in its own block."""
    parser = argparse.ArgumentParser(
        prog="python -m eventsourcing_cqrs.testing.esdb_server",
        description="In-memory EventStoreDB-compatible gRPC test server (a test double).",
    )
    # -- where to listen
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--port", type=int, default=2113, help="port (0 picks a free one)")
    # -- behaviour
    parser.add_argument(
        "--strict",
        action="store_true",
        help="reproduce EventStoreDB 24.10 where the default is more lenient (see EsdbTestServer)",
    )
    # -- security: TLS, users
    parser.add_argument(
        "--tls",
        action="store_true",
        help="a secure node: TLS with a generated CA (its file is printed), users, 24.10's access rules",
    )
    parser.add_argument(
        "--user",
        dest="users",
        action="append",
        default=[],
        type=_user,
        metavar="NAME:PASSWORD[:GROUP,...]",
        help="add a user (with --tls; admin:changeit in $admins and ops:changeit in $ops always exist "
        "unless redefined), e.g. --user reader:s3cret or --user auditor:pw:$ops",
    )
    return parser


def _user(text: str) -> EsdbUser:
    name, _, rest = text.partition(":")
    password, _, groups = rest.partition(":")
    try:
        return EsdbUser(name, password, tuple(group for group in groups.split(",") if group))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (give NAME:PASSWORD[:GROUP,...])") from None


def _security_options(args: argparse.Namespace) -> dict[str, Any]:
    if not args.tls:
        if args.users:
            raise SystemExit("error: --user needs --tls: an insecure node has no authentication")
        return {}
    try:
        import cryptography  # noqa: F401, PLC0415 - only to say early what is missing
    except ImportError:
        raise SystemExit(f"error: {TlsUnavailableError()}") from None
    added = {user.name: user for user in args.users}
    users = [user for user in DEFAULT_USERS if user.name not in added] + list(added.values())
    return {"tls": True, "users": users}


def _banner(server: EsdbTestServer) -> str:
    """What the server prints once it listens: its URI (never a password) and, with TLS, its CA."""
    banner = f"{BANNER}{redact_uri(server.uri)}"
    if server.ca_file is not None:
        banner += f"\nCA certificate (tlsCAFile): {server.ca_file}"
    return banner


def server_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for :class:`EsdbTestServer` from the parsed command line."""
    options: dict[str, Any] = {"host": args.host, "port": args.port}
    # -- behaviour
    options["strict"] = args.strict
    # -- security: TLS, users
    options.update(_security_options(args))
    return options


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A Python-level handler that does nothing: the wakeup fd carries the signal."""


@contextmanager
def _stop_signals() -> Iterator[socket.socket]:
    """Route SIGINT/SIGTERM to a socket the caller can ``select`` on.

    The handlers stay "do nothing" afterwards: restoring the default action would let a second
    signal, sent right after the first, kill the process in the middle of its clean shutdown.
    """
    receiver, sender = socket.socketpair()
    sender.setblocking(False)  # set_wakeup_fd requires it; a full buffer just drops the byte
    receiver.setblocking(False)
    previous_fd = signal.set_wakeup_fd(sender.fileno(), warn_on_full_buffer=False)
    for signum in _STOP_SIGNALS:
        signal.signal(signum, _ignore)
    try:
        yield receiver
    finally:
        signal.set_wakeup_fd(previous_fd)
        receiver.close()
        sender.close()


def _wait_for_stop_signal(receiver: socket.socket) -> None:
    while True:
        select.select([receiver], [], [])
        try:
            received = receiver.recv(64)
        except BlockingIOError:
            continue
        if any(signum in received for signum in _STOP_SIGNALS):
            return


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, serve until SIGINT or SIGTERM arrives, then stop cleanly.

    From then on SIGINT and SIGTERM are ignored in this process (see ``_stop_signals``).
    """
    args = build_parser().parse_args(argv)
    # Logs go to stderr so that stdout carries only the banner a script can parse.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    with _stop_signals() as wakeup:
        server = EsdbTestServer(**server_options(args))
        try:
            server.start()
        except OSError as exc:  # PortInUseError among them: one line either way
            print(f"error: {' '.join(str(exc).split())}", file=sys.stderr, flush=True)
            return 1
        with server:
            print(_banner(server), flush=True)
            _wait_for_stop_signal(wakeup)
        print("EventStoreDB test server stopped.", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
