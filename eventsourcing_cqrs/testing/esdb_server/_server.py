"""``EsdbTestServer``: the grpcio server that hosts the emulated services over one ``Log``."""

from __future__ import annotations

import errno
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Final, Self

import grpc
import structlog

from eventsourcing_cqrs.testing.esdb_server._cluster import ClusterServices
from eventsourcing_cqrs.testing.esdb_server._log import Log
from eventsourcing_cqrs.testing.esdb_server._streams import DEFAULT_MAX_APPEND_SIZE, StreamsService

logger = structlog.get_logger(__name__)

_MAX_MESSAGE_BYTES: Final = 32 * 1024 * 1024
# Every open subscription holds one worker thread for its whole life (GRPC_SPEC §1.5).
_DEFAULT_MAX_WORKERS: Final = 256


class PortInUseError(OSError):
    """The port the test server was asked to listen on is taken by another socket."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"port {port} on {host} is already in use")
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return str(self.strerror)


def _port_in_use(host: str, port: int) -> bool:
    """Whether binding ``host:port`` fails with EADDRINUSE (classified by errno)."""
    if port == 0:
        return False
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return False
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # As gRPC binds: a restart must not trip over its own connections in TIME_WAIT.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return True
    return False


class EsdbTestServer:
    """An in-process, in-memory EventStoreDB-compatible gRPC server: a test double.

    It answers esdbclient 1.1.x as a single-node, insecure EventStoreDB 24.x would, for
    everything in GRPC_SPEC.md. It is never a production store: data lives in memory only.

    The data outlives ``stop()``: ``start()`` again serves the same log on the same port, which
    lets fault tests cut the connection under a live subscriber and bring the server back, as a
    real node's restart keeps its database.

    ``caught_up=False`` emulates a server before 23.10: catch-up subscriptions never send the
    ``caught_up`` message (nor a checkpoint at the end of a filtered catch-up).

    ``EsdbTestServer(port=N)`` raises :class:`OSError` saying ``port N on HOST is already in
    use`` when another process listens there.

    Example::

        with EsdbTestServer() as server:
            client = EventStoreDBClient(server.uri)
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_append_size: int = DEFAULT_MAX_APPEND_SIZE,
        max_workers: int = _DEFAULT_MAX_WORKERS,
        caught_up: bool = True,
    ) -> None:
        self._host = host
        self._port = port
        self._max_workers = max_workers
        self._log = Log()
        self._streams = StreamsService(self._log, max_append_size=max_append_size, caught_up=caught_up)
        self._cluster = ClusterServices(host, port)
        self._server: grpc.Server | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    @property
    def host(self) -> str:
        """The host the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The port the server listens on (chosen at the first ``start()`` when 0 was given)."""
        return self._port

    @property
    def uri(self) -> str:
        """An esdbclient connection string for this server, e.g. ``esdb://127.0.0.1:2113?Tls=false``."""
        return f"esdb://{self._host}:{self._port}?Tls=false"

    @property
    def latency(self) -> float:
        """Seconds every Streams call waits before doing anything (fault injection; default 0).

        A call whose deadline passes during the wait is abandoned without effect, as
        EventStoreDB drops expired requests, so a client sees ``DEADLINE_EXCEEDED``.
        """
        return self._streams.latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._streams.latency = max(0.0, float(seconds))

    def drop_subscriptions(self) -> None:
        """Abort every open subscription with ``ABORTED`` "Consumer too slow" (fault injection).

        EventStoreDB 23.10 ended a live subscription that way when its client fell behind;
        esdbclient raises ``ConsumerTooSlow`` and leaves resubscribing to the application.
        """
        self._streams.drop_subscriptions()

    @property
    def is_running(self) -> bool:
        """Whether the server is currently accepting calls."""
        return self._server is not None

    def start(self) -> Self:
        """Start serving; on a restart, bind the same port again and keep the data."""
        with self._lock:
            if self._server is not None:
                return self
            # Checked before gRPC tries, which would log a multi-line bind error of its own.
            if _port_in_use(self._host, self._port):
                raise PortInUseError(self._host, self._port)
            executor = ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="esdb-test-server"
            )
            server = grpc.server(
                executor,
                options=[
                    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                    ("grpc.so_reuseport", 0),
                ],
            )
            server.add_generic_rpc_handlers([self._streams.rpc_handler()])
            server.add_generic_rpc_handlers(self._cluster.rpc_handlers())
            try:
                port = server.add_insecure_port(f"{self._host}:{self._port}")
            except RuntimeError as exc:
                executor.shutdown(wait=False)
                if _port_in_use(self._host, self._port):
                    raise PortInUseError(self._host, self._port) from None
                raise OSError(f"Cannot listen on {self._host}:{self._port}: {exc}") from exc
            if port == 0:
                executor.shutdown(wait=False)
                if _port_in_use(self._host, self._port):
                    raise PortInUseError(self._host, self._port)
                raise OSError(f"Cannot listen on {self._host}:{self._port}.")
            self._port = port
            self._cluster.port = port
            server.start()
            self._server = server
            self._executor = executor
            logger.info("esdb_test_server.started", host=self._host, port=port)
            return self

    def stop(self, grace: float | None = None) -> None:
        """Stop serving: cancel every open call and release the port. The data is kept."""
        with self._lock:
            server, executor = self._server, self._executor
            self._server = None
            self._executor = None
            if server is None:
                return
            stopped = server.stop(grace)
            self._log.wake_all()
            stopped.wait()
            if executor is not None:
                executor.shutdown(wait=False)
            logger.info("esdb_test_server.stopped", host=self._host, port=self._port)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
