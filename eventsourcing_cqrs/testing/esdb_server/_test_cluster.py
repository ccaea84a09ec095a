"""``EsdbTestCluster``: three EventStoreDB-compatible test nodes over one log, with leader failover.

What EventStoreDB 24.10 does, and what is reproduced here (sources in the server's tree):

* Gossip (``Services/Transport/Grpc/Gossip.Read.cs``, ``Services/Gossip/GossipServiceBase.cs``):
  every node answers with every member it knows, alive or not, with its state, ``is_alive``,
  instance id, HTTP endpoint and the time of its last update. A stopped node stays in the list as
  dead (``is_alive=false``, its last state kept) until ``DeadMemberRemovalPeriod`` (30 minutes), so
  it is reported dead here, never dropped. When an election is done every member but the new
  leader is set to ``Unknown`` (``Handle(ElectionsDone)``); the live ones then report themselves
  (``Follower``), the dead one stays ``Unknown``. Between the leader's loss and the end of the
  election the live nodes are ``Unknown`` and the dead leader is still listed as ``Leader``:
  esdbclient, which ignores ``is_alive``, may pick it then and meet UNAVAILABLE, as against a
  real cluster. A restarted node comes back with a fresh instance id (``ClusterVNode.cs``) and
  joins as a follower when there is a leader.
* Refusals (``Services/VNode/ClusterVNodeController.cs`` ``HandleAsNonLeader``,
  ``DenyRequestBecauseNotLeader``; ``Services/Transport/Grpc/RpcExceptions.cs`` ``LeaderInfo``):
  a follower answers a call whose ``requires-leader`` header parses as true with NOT_FOUND
  "Leader info available" and the trailers ``exception: not-leader``, ``leader-endpoint-host``,
  ``leader-endpoint-port``; a node that knows no leader (during an election) refuses it with
  UNAVAILABLE "Server Is Not Ready". Calls without the header (reads and subscriptions with
  ``NodePreference=follower``) are served from the node's own copy of the log. Gossip.Read never
  looks at the header. esdbclient sends ``requires-leader: true`` on every write.
* Elections need a quorum (a majority of the nodes alive) and take about a second on a real
  cluster (``LeaderElectionTimeoutMs`` = 1000, gossip every 2 s); here the election happens
  ``election_delay`` seconds after the leader stops, and the lost leader is seen dead at once.

A real cluster acknowledges a write once a quorum has it, and a new leader is elected among the
nodes that have everything acknowledged: an acknowledged write survives a leader change, an
unacknowledged one may or may not. Here all nodes share one in-memory log, so every node always
has every write, and no acknowledged write is ever lost (nor does a follower ever lag behind).
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self

import grpc
import structlog
from esdbclient.protos.Grpc import gossip_pb2, shared_pb2

from eventsourcing_cqrs.testing.esdb_server._cluster import GOSSIP_SERVICE
from eventsourcing_cqrs.testing.esdb_server._interceptors import ServerInterceptor, refusing_handler
from eventsourcing_cqrs.testing.esdb_server._log import Log, now_ticks
from eventsourcing_cqrs.testing.esdb_server._server import EsdbTestServer

__all__ = ["EsdbTestCluster"]

logger = structlog.get_logger(__name__)

_State = gossip_pb2.MemberInfo.VNodeState
_LEADER: Final = gossip_pb2.MemberInfo.Leader
_FOLLOWER: Final = gossip_pb2.MemberInfo.Follower
_UNKNOWN: Final = gossip_pb2.MemberInfo.Unknown
_NOT_LEADER_DETAILS: Final = "Leader info available"
_NOT_READY_DETAILS: Final = "Server Is Not Ready"
#: The URI options that keep esdbclient's discovery quick in tests (its defaults: 10 attempts,
#: 100 ms apart, a 5 s gossip timeout): up to 2 s of rediscovery covers an election.
_DISCOVERY_OPTIONS: Final = "MaxDiscoverAttempts=20&DiscoveryInterval=100&GossipTimeout=1"


@dataclass
class _Member:
    """One node as the cluster's gossip describes it."""

    server: EsdbTestServer
    instance_id: str
    state: _State.ValueType
    alive: bool
    #: When its description last changed (ticks); an alive member's is "now" at every gossip.
    updated: int


def _requires_leader(metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
    """The ``requires-leader`` header as the server reads it (.NET ``bool.TryParse``: false unless "true")."""
    for key, value in metadata or ():
        if key == "requires-leader":
            text = value.decode() if isinstance(value, bytes) else value
            return text.strip().lower() == "true"
    return False


class _RoleInterceptor(ServerInterceptor):
    """Installed on one node: counts the calls it serves and refuses ``requires-leader`` calls
    while the node is not the leader, as ``ClusterVNodeController.HandleAsNonLeader`` does."""

    def __init__(self, cluster: EsdbTestCluster, index: int) -> None:
        self._cluster = cluster
        self._index = index

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(f"/{GOSSIP_SERVICE}/"):
            return handler
        if _requires_leader(handler_call_details.invocation_metadata):
            refusal = self._cluster._refusal(self._index)
            if refusal is not None:
                self._cluster._count(self._index, method, refused=True)
                return refusing_handler(handler, *refusal)
        self._cluster._count(self._index, method, refused=False)
        return handler


class EsdbTestCluster:
    """Three (or ``nodes``) in-process EventStoreDB test nodes over one shared in-memory log.

    Each node is an :class:`EsdbTestServer` on its own port. One is the leader; the others are
    followers that refuse every call carrying ``requires-leader: true`` (all writes, and reads
    with esdbclient's default ``NodePreference=leader``) with NotLeader naming the leader, which
    esdbclient turns into ``NodeIsNotLeader`` and, for a multi-host or ``esdb+discover://`` URI,
    follows. Followers serve reads and subscriptions sent with ``NodePreference=follower``.
    Gossip.Read on every node (and on the discovery seed, see :attr:`uri_discover`) lists all
    members with their state, liveness, endpoint and instance id, as EventStoreDB 24.10 does.

    :meth:`stop_leader` (or :meth:`stop` of the leader) stops its gRPC server; ``election_delay``
    seconds later another live node becomes leader if a majority of the nodes is alive.
    :meth:`start` brings a node back, on the same port, as a follower (or, when there is no
    leader, as a candidate in the next election).

    Every node always has every acknowledged write (one shared log): unlike a real cluster, which
    keeps only what a quorum had acknowledged, this one never loses an acknowledged write on a
    leader change, and its followers never lag.

    Example::

        with EsdbTestCluster() as cluster:
            store = EsdbEventStore(cluster.uri_discover)
            ...
            cluster.stop_leader()
            cluster.wait_for_leader()
    """

    def __init__(
        self,
        nodes: int = 3,
        host: str = "127.0.0.1",
        *,
        election_delay: float = 0.3,
        caught_up: bool = True,
    ) -> None:
        if isinstance(nodes, bool) or not isinstance(nodes, int) or nodes < 1:
            raise ValueError(f"nodes must be a positive number, not {nodes!r}")
        if election_delay < 0:
            raise ValueError(f"election_delay must be 0 or more seconds, not {election_delay!r}")
        self._host = host
        self._election_delay = float(election_delay)
        self._log = Log()
        self._lock = threading.RLock()
        self._leader_changed = threading.Condition(self._lock)
        self._counts: list[Counter[str]] = [Counter() for _ in range(nodes)]
        self._members: list[_Member] = []
        for index in range(nodes):
            server = EsdbTestServer(
                host,
                log=self._log,
                caught_up=caught_up,
                gossip=self._gossip,
                interceptors=[_RoleInterceptor(self, index)],
            )
            self._members.append(
                _Member(server, str(uuid.uuid4()), _UNKNOWN, alive=False, updated=now_ticks())
            )
        # The discovery seed stands for the cluster's DNS name: it answers gossip for the cluster.
        self._seed = EsdbTestServer(host, gossip=self._gossip, interceptors=[_SeedInterceptor(self)])
        self._leader: int | None = None
        self._last_leader = -1
        self._election: threading.Timer | None = None
        self._started = False

    # -- accessors ------------------------------------------------------------------------

    @property
    def nodes(self) -> tuple[EsdbTestServer, ...]:
        """The nodes, in a fixed order (their index is their position here)."""
        return tuple(member.server for member in self._members)

    @property
    def leader(self) -> EsdbTestServer | None:
        """The current leader, ``None`` during an election or without a quorum."""
        with self._lock:
            return None if self._leader is None else self._members[self._leader].server

    @property
    def followers(self) -> tuple[EsdbTestServer, ...]:
        """The live nodes that follow the current leader."""
        with self._lock:
            return tuple(m.server for m in self._members if m.alive and m.state == _FOLLOWER)

    @property
    def uri_hosts(self) -> str:
        """``esdb://h1:p1,h2:p2,h3:p3?Tls=false&...``: every node as a gossip seed."""
        hosts = ",".join(f"{self._host}:{member.server.port}" for member in self._members)
        return f"esdb://{hosts}?Tls=false&{_DISCOVERY_OPTIONS}"

    @property
    def uri_discover(self) -> str:
        """``esdb+discover://host:port?Tls=false&...`` naming the cluster's discovery seed.

        esdbclient accepts one target only for ``esdb+discover://`` (a DNS name that a real
        deployment resolves to every node). The seed stands for that name: it answers Gossip.Read
        as a live node would and nothing else, so stopping any node never breaks discovery.
        """
        return f"esdb+discover://{self._host}:{self._seed.port}?Tls=false&{_DISCOVERY_OPTIONS}"

    def uri(self, node: EsdbTestServer | int, **options: str) -> str:
        """A single-target ``esdb://`` URI for one node, with extra options (``NodePreference=...``)."""
        server = self._member(node).server
        extra = "".join(f"&{key}={value}" for key, value in options.items())
        return f"{server.uri}{extra}"

    def index(self, node: EsdbTestServer | str) -> int:
        """The index of a node, given as the server or its ``host:port``."""
        for index, member in enumerate(self._members):
            if node is member.server or node == f"{self._host}:{member.server.port}":
                return index
        raise ValueError(f"{node!r} is not a node of this cluster")

    def served(self, node: EsdbTestServer | int | str) -> Counter[str]:
        """How many calls of each method (``"Streams/Read"``) the node served (a snapshot)."""
        with self._lock:
            counts = self._counts[self._index_of(node)]
            return Counter({key: n for key, n in counts.items() if not key.startswith("!")})

    def refused(self, node: EsdbTestServer | int | str) -> Counter[str]:
        """How many calls of each method the node refused as not the leader (a snapshot)."""
        with self._lock:
            counts = self._counts[self._index_of(node)]
            return Counter({key[1:]: n for key, n in counts.items() if key.startswith("!")})

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, node: EsdbTestServer | int | None = None) -> Self:
        """Start every node (the first becomes the leader at once), or restart one stopped node."""
        if node is not None:
            self._start_node(self._index_of(node))
            return self
        with self._lock:
            if self._started:
                return self
            self._started = True
        self._seed.start()
        for member in self._members:
            member.server.start()
        with self._lock:
            for member in self._members:
                member.alive = True
                member.updated = now_ticks()
            # A fresh cluster has its first leader at once: tests need not wait for it.
            self._elect_now()
        return self

    def stop(self, node: EsdbTestServer | int | None = None) -> None:
        """Stop one node (its data stays in the shared log), or the whole cluster."""
        if node is not None:
            self._stop_node(self._index_of(node))
            return
        with self._lock:
            self._started = False
            if self._election is not None:
                self._election.cancel()
                self._election = None
        for index in range(len(self._members)):
            self._stop_node(index)
        self._seed.stop()

    def stop_leader(self) -> EsdbTestServer:
        """Stop the current leader and return it; a new one is elected after ``election_delay``."""
        with self._lock:
            if self._leader is None:
                raise RuntimeError("the cluster has no leader to stop (an election is under way)")
            index = self._leader
        self._stop_node(index)
        return self._members[index].server

    def wait_for_leader(self, timeout: float = 5.0) -> EsdbTestServer:
        """The leader, once there is one; raises :class:`TimeoutError` after ``timeout`` seconds."""
        with self._leader_changed:
            if not self._leader_changed.wait_for(lambda: self._leader is not None, timeout):
                raise TimeoutError(f"no leader was elected within {timeout} s")
            assert self._leader is not None
            return self._members[self._leader].server

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- membership -----------------------------------------------------------------------

    def _index_of(self, node: EsdbTestServer | int | str) -> int:
        if isinstance(node, int):
            if not 0 <= node < len(self._members):
                raise ValueError(f"node {node} does not exist; the cluster has {len(self._members)}")
            return node
        return self.index(node)

    def _member(self, node: EsdbTestServer | int) -> _Member:
        return self._members[self._index_of(node)]

    def _start_node(self, index: int) -> None:
        member = self._members[index]
        member.server.start()
        with self._lock:
            if member.alive:
                return
            # A restarted EventStoreDB process has a new instance id (ClusterVNode.cs).
            member.instance_id = str(uuid.uuid4())
            member.alive = True
            member.updated = now_ticks()
            if self._leader is not None:
                member.state = _FOLLOWER
            else:
                member.state = _UNKNOWN
                self._schedule_election()
        logger.info("esdb_test_cluster.node_started", node=index, port=member.server.port)

    def _stop_node(self, index: int) -> None:
        member = self._members[index]
        with self._lock:
            was_alive, member.alive = member.alive, False
            if was_alive:
                member.updated = now_ticks()
            if self._leader == index:
                # The live nodes lose their leader: they go Unknown and elect another one. The
                # lost leader stays listed as Leader (dead) until the election is done.
                self._leader = None
                for other in self._members:
                    if other.alive:
                        other.state = _UNKNOWN
                        other.updated = now_ticks()
                self._leader_changed.notify_all()
                self._schedule_election()
        member.server.stop()
        if was_alive:
            logger.info("esdb_test_cluster.node_stopped", node=index, port=member.server.port)

    def _has_quorum(self) -> bool:
        return sum(m.alive for m in self._members) * 2 > len(self._members)

    def _schedule_election(self) -> None:
        """Hold an election ``election_delay`` seconds from now (once; lock held)."""
        if self._election is not None or not self._started:
            return
        timer = threading.Timer(self._election_delay, self._election_due)
        timer.daemon = True
        self._election = timer
        timer.start()

    def _election_due(self) -> None:
        with self._lock:
            if self._election is not threading.current_thread():
                return
            self._election = None
            if self._leader is None and self._started:
                self._elect_now()

    def _elect_now(self) -> None:
        """Make the next live node after the last leader the leader, given a quorum (lock held)."""
        if not self._has_quorum():
            logger.info("esdb_test_cluster.no_quorum", alive=sum(m.alive for m in self._members))
            return
        count = len(self._members)
        order = [(self._last_leader + step) % count for step in range(1, count + 1)]
        elected = next(index for index in order if self._members[index].alive)
        now = now_ticks()
        for index, member in enumerate(self._members):
            # ElectionsDone: the leader is Leader, everyone else Unknown; the live ones then
            # report themselves as followers, the dead ones stay Unknown.
            if index == elected:
                member.state = _LEADER
            else:
                member.state = _FOLLOWER if member.alive else _UNKNOWN
            member.updated = now
        self._leader = self._last_leader = elected
        self._leader_changed.notify_all()
        logger.info("esdb_test_cluster.leader_elected", node=elected, port=self._members[elected].server.port)

    # -- what the nodes answer ------------------------------------------------------------

    def _gossip(self) -> list[gossip_pb2.MemberInfo]:
        now = now_ticks()
        with self._lock:
            return [
                gossip_pb2.MemberInfo(
                    instance_id=shared_pb2.UUID(string=member.instance_id),
                    time_stamp=now if member.alive else member.updated,
                    state=member.state,
                    is_alive=member.alive,
                    http_end_point=gossip_pb2.EndPoint(address=self._host, port=member.server.port),
                )
                for member in self._members
            ]

    def _any_alive(self) -> bool:
        with self._lock:
            return any(member.alive for member in self._members)

    def _refusal(self, index: int) -> tuple[grpc.StatusCode, str, tuple[tuple[str, str], ...]] | None:
        """How node ``index`` refuses a ``requires-leader`` call, ``None`` if it is the leader."""
        with self._lock:
            if self._leader == index:
                return None
            if self._leader is None:
                return grpc.StatusCode.UNAVAILABLE, _NOT_READY_DETAILS, ()
            leader = self._members[self._leader].server
            trailers = (
                ("exception", "not-leader"),
                ("leader-endpoint-host", self._host),
                ("leader-endpoint-port", str(leader.port)),
            )
            return grpc.StatusCode.NOT_FOUND, _NOT_LEADER_DETAILS, trailers

    def _count(self, index: int, method: str, *, refused: bool) -> None:
        name = method.rsplit(".", 1)[-1]
        with self._lock:
            self._counts[index][f"!{name}" if refused else name] += 1


class _SeedInterceptor(ServerInterceptor):
    """On the discovery seed: Gossip.Read only, and UNAVAILABLE while every node is down (the
    cluster's DNS name then resolves to nodes that all refuse connections)."""

    def __init__(self, cluster: EsdbTestCluster) -> None:
        self._cluster = cluster

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if not handler_call_details.method.startswith(f"/{GOSSIP_SERVICE}/"):
            details = "the test cluster's discovery seed answers Gossip.Read only: connect to a node"
            return refusing_handler(handler, grpc.StatusCode.UNIMPLEMENTED, details, ())
        if not self._cluster._any_alive():
            return refusing_handler(handler, grpc.StatusCode.UNAVAILABLE, "no cluster node is alive", ())
        return handler
