"""``EsdbTestServer``: the grpcio server that hosts the emulated services over one ``Log``."""

from __future__ import annotations

import errno
import socket
import threading
import weakref
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote

import grpc
import structlog

from eventsourcing_cqrs.testing.esdb_server._cluster import ClusterServices, GossipSource
from eventsourcing_cqrs.testing.esdb_server._features import ServerFeaturesService
from eventsourcing_cqrs.testing.esdb_server._idempotency import (
    COMMITTED_EVENTS_MEM_CACHE_LIMIT,
    CommittedEventsCache,
)
from eventsourcing_cqrs.testing.esdb_server._log import Log
from eventsourcing_cqrs.testing.esdb_server._security import DEFAULT_USERS, EsdbUser, Security
from eventsourcing_cqrs.testing.esdb_server._streams import DEFAULT_MAX_APPEND_SIZE, StreamsService
from eventsourcing_cqrs.testing.esdb_server._tls import NodeCertificates, generate_certificates

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

    ``strict=True`` reproduces EventStoreDB 24.10 where the lenient default is kinder (each
    point cites the 24.10 source where it is implemented): reading ``$all`` from a position no
    record starts at fails (``UNKNOWN "Unexpected ReadAllResult: InvalidPosition"``, or
    ``FilteredReadAllResult``), and a catch-up subscription from one fails after its
    confirmation (``INVALID_ARGUMENT``), or goes live at once from at or after the last record;
    a filtered catch-up from the start that delivers nothing ends with a checkpoint at
    ``Position.End`` (2^64-1); ``ANY``/``STREAM_EXISTS`` idempotency relies only on a bounded cache
    of recent event ids, ``idempotency_cache_bytes`` big (default 8 MiB, the real
    ``CommitedEventsMemCacheLimit``), emptied by ``stop()``, so a re-append after a restart or an
    eviction is written again; filter regexes are .NET syntax (``_dotnet_regex.py``) and an
    invalid one fails with ``UNKNOWN "Exception was thrown by handler."``; an empty stream name
    fails each call as 24.10 does; ServerFeatures lists what 24.10 lists, not just what this
    server implements. With a shared ``log`` the log's own cache (or none) decides idempotency.

    ``log``, ``gossip`` and ``interceptors`` are how :class:`EsdbTestCluster` makes a node of
    one: a log shared with the other nodes, the cluster's membership for Gossip.Read, and the
    interceptor that refuses ``requires-leader`` calls on a follower. Without them the server is
    a single node, always the leader.

    ``tls=True`` makes it a secure node, as EventStoreDB runs without ``--insecure``: TLS with a
    certificate made at construction (a fresh CA, :attr:`ca_file`, and a node certificate it
    signed naming the host, ``localhost``, ``127.0.0.1`` and ``::1``), basic-auth ``users``
    (default ``admin:changeit`` in ``$admins`` and ``ops:changeit`` in ``$ops``) and 24.10's
    default access rules, including each stream's ``$acl`` and the ``$settings`` ACLs (see
    ``_security.py`` for what is emulated and what is not: no user management, no user
    certificates, no OAuth). Its :attr:`uri` then carries the admin's credentials and
    ``tlsCAFile``; :meth:`uri_for` gives another user's. The certificate files live in a temp
    directory for the server's whole life, restarts included (same certificate, same port);
    :meth:`close` removes it, as does garbage collection or the end of the process. TLS needs
    the ``cryptography`` package (``pip install 'eventsourcing-cqrs[esdb-testing]'``).

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
        log: Log | None = None,
        gossip: GossipSource | None = None,
        interceptors: Sequence[grpc.ServerInterceptor[Any, Any]] = (),
        tls: bool = False,
        users: Iterable[EsdbUser] | None = None,
        allow_anonymous_stream_access: bool = False,
        strict: bool = False,
        idempotency_cache_bytes: int = COMMITTED_EVENTS_MEM_CACHE_LIMIT,
    ) -> None:
        self._host = host
        self._port = port
        self._max_workers = max_workers
        self._strict = strict
        # Only a server's own log is "its database": a cluster's shared log outlives one node's restart.
        self._owns_log = log is None
        if log is None:
            log = Log(committed_events=CommittedEventsCache(idempotency_cache_bytes) if strict else None)
        self._log = log
        self._streams = StreamsService(
            self._log, max_append_size=max_append_size, caught_up=caught_up, strict=strict
        )
        self._features = ServerFeaturesService(strict=strict)
        self._cluster = ClusterServices(host, port, gossip=gossip)
        self._interceptors = tuple(interceptors)
        # -- a secure node: TLS, users, access rules (an insecure node has no authentication).
        if not tls and (users is not None or allow_anonymous_stream_access):
            raise ValueError(
                "users and anonymous access need tls=True: an insecure node has no authentication"
            )
        self._security: Security | None = None
        self._certificates: NodeCertificates | None = None
        if tls:
            self._security = Security(
                self._log,
                DEFAULT_USERS if users is None else users,
                allow_anonymous_stream_access=allow_anonymous_stream_access,
            )
            self._certificates = generate_certificates(host)
            weakref.finalize(self, self._certificates.remove)
            self._streams.security = self._security
            self._interceptors = (self._security.interceptor(), *self._interceptors)
        self._closed = False
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
        """An esdbclient connection string for this server, e.g. ``esdb://127.0.0.1:2113?Tls=false``.

        On a TLS server: ``esdb://admin:changeit@host:port?Tls=true&tlsCAFile=...`` with the
        credentials of the user named ``admin`` (else the first user).
        """
        if self._security is None:
            return f"esdb://{self._host}:{self._port}?Tls=false"
        users = self._security.users
        if not users:
            return self._uri_with("")
        admin = self._security.user("admin") or users[0]
        return self.uri_for(admin.name, admin.password)

    def uri_for(self, username: str, password: str) -> str:
        """The connection string of :attr:`uri` for another user (known or not: to test refusals).

        esdbclient sends the user info as written, so neither may hold ``@ / ? #`` or ``%``.
        """
        unsafe = set("@/?#%[] ")
        if not username or not password or ":" in username or unsafe & set(username + password):
            raise ValueError(
                "a user name or password in a connection string must be non-empty, without "
                "'@', '/', '?', '#', '%', '[', ']', spaces (and ':' in the user name)"
            )
        return self._uri_with(f"{username}:{password}@")

    def _uri_with(self, userinfo: str) -> str:
        if self._certificates is None:
            return f"esdb://{userinfo}{self._host}:{self._port}?Tls=false"
        ca_file = quote(str(self._certificates.ca_file), safe="/")
        return f"esdb://{userinfo}{self._host}:{self._port}?Tls=true&tlsCAFile={ca_file}"

    @property
    def tls(self) -> bool:
        """Whether this is a secure node (TLS, authentication, access rules)."""
        return self._certificates is not None

    @property
    def ca_file(self) -> Path | None:
        """The CA certificate (PEM) that signed the node's certificate; ``None`` when insecure."""
        return None if self._certificates is None else self._certificates.ca_file

    @property
    def users(self) -> tuple[EsdbUser, ...]:
        """The users of a secure node (none on an insecure one)."""
        return () if self._security is None else self._security.users

    def _add_port(self, server: grpc.Server, address: str) -> int:
        if self._certificates is None:
            return server.add_insecure_port(address)
        credentials = grpc.ssl_server_credentials(
            [(self._certificates.key_pem, self._certificates.certificate_pem)]
        )
        return server.add_secure_port(address, credentials)

    def close(self) -> None:
        """Stop for good: :meth:`stop`, then remove the certificate files. It cannot start again."""
        self.stop()
        self._closed = True
        if self._certificates is not None:
            self._certificates.remove()

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
    def strict(self) -> bool:
        """Whether the server reproduces EventStoreDB 24.10's stricter behaviours (see the class docs)."""
        return self._strict

    @property
    def is_running(self) -> bool:
        """Whether the server is currently accepting calls."""
        return self._server is not None

    def start(self) -> Self:
        """Start serving; on a restart, bind the same port again and keep the data."""
        with self._lock:
            if self._server is not None:
                return self
            if self._closed:
                raise RuntimeError("this EsdbTestServer was closed: make a new one")
            # Checked before gRPC tries, which would log a multi-line bind error of its own.
            if _port_in_use(self._host, self._port):
                raise PortInUseError(self._host, self._port)
            executor = ThreadPoolExecutor(
                max_workers=self._max_workers, thread_name_prefix="esdb-test-server"
            )
            server = grpc.server(
                executor,
                interceptors=list(self._interceptors),
                options=[
                    ("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES),
                    ("grpc.so_reuseport", 0),
                ],
            )
            server.add_generic_rpc_handlers([self._streams.rpc_handler()])
            server.add_generic_rpc_handlers(self._cluster.rpc_handlers())
            server.add_generic_rpc_handlers([self._features.rpc_handler()])
            try:
                port = self._add_port(server, f"{self._host}:{self._port}")
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
            # A real node's restart keeps its database but not IndexWriter's committed-events cache.
            if self._owns_log:
                self._log.clear_idempotency_cache()
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
