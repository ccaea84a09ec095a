"""The EventStoreDB adapter on a three-node test cluster, over real gRPC: gossip, followers that
refuse what needs the leader, follower reads, and the write side going on across leader changes.

Every test runs through esdbclient's own discovery (``esdb+discover://`` or a multi-host
``esdb://`` URI), as an application pointed at a real cluster would.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal

import esdbclient
import grpc
import pytest
from esdbclient.exceptions import NodeIsNotLeader
from esdbclient.protos.Grpc import gossip_pb2, gossip_pb2_grpc, shared_pb2

from escqrs.examples.bank import handlers
from escqrs.examples.bank.commands import Deposit, OpenAccount
from eventsourcing_cqrs.bus import CommandBus
from eventsourcing_cqrs.errors import EventStoreError, EventStoreTimeoutError, EventStoreUnavailableError
from eventsourcing_cqrs.event_store.esdb import EsdbEventStore
from eventsourcing_cqrs.event_store.port import NewEvent, StreamState
from eventsourcing_cqrs.messages import COMMAND_ID_KEY
from eventsourcing_cqrs.testing.esdb_server import EsdbTestCluster, EsdbTestServer

ELECTION_DELAY = 0.2


@pytest.fixture
def cluster() -> Iterator[EsdbTestCluster]:
    with EsdbTestCluster(election_delay=ELECTION_DELAY) as started:
        yield started


def _raw_gossip(server: EsdbTestServer) -> list[gossip_pb2.MemberInfo]:
    """Gossip.Read as the wire carries it (esdbclient keeps only state and endpoint)."""
    with grpc.insecure_channel(f"{server.host}:{server.port}") as channel:
        stub = gossip_pb2_grpc.GossipStub(channel)  # type: ignore[no-untyped-call]
        info: gossip_pb2.ClusterInfo = stub.Read(shared_pb2.Empty(), timeout=5)
    return list(info.members)


def _state_by_port(members: list[gossip_pb2.MemberInfo]) -> dict[int, tuple[str, bool]]:
    return {
        m.http_end_point.port: (gossip_pb2.MemberInfo.VNodeState.Name(m.state), m.is_alive) for m in members
    }


@pytest.mark.parametrize("via", ["discover", "hosts"])
def test_gossip_lists_every_member_with_its_state_on_every_node(cluster: EsdbTestCluster, via: str) -> None:
    client = esdbclient.EventStoreDBClient(cluster.uri_discover if via == "discover" else cluster.uri_hosts)
    try:
        members = client.read_gossip()
    finally:
        client.close()
    leader = cluster.leader
    assert leader is not None
    assert sorted((m.address, m.port, m.state) for m in members) == sorted(
        (node.host, node.port, "NODE_STATE_LEADER" if node is leader else "NODE_STATE_FOLLOWER")
        for node in cluster.nodes
    )
    assert client.connection_target == f"{leader.host}:{leader.port}"
    for node in cluster.nodes:
        raw = _raw_gossip(node)
        assert len({m.instance_id.string for m in raw}) == 3
        assert all(m.is_alive and m.time_stamp > 0 for m in raw)
        assert _state_by_port(raw) == _state_by_port(_raw_gossip(cluster.nodes[0]))


def test_a_stopped_leader_is_gossiped_dead_and_rejoins_as_a_follower_with_a_new_instance_id(
    cluster: EsdbTestCluster,
) -> None:
    old = cluster.stop_leader()
    survivor = next(node for node in cluster.nodes if node is not old)
    during = _state_by_port(_raw_gossip(survivor))
    # Until the election is done the lost leader is still listed as the leader, dead.
    assert during[old.port] == ("Leader", False)
    assert sorted(state for port, state in during.items() if port != old.port) == [("Unknown", True)] * 2
    before = {m.http_end_point.port: m.instance_id.string for m in _raw_gossip(survivor)}

    new = cluster.wait_for_leader(timeout=5)
    after = _state_by_port(_raw_gossip(survivor))
    assert new is not old
    assert after[old.port] == ("Unknown", False)
    assert after[new.port] == ("Leader", True)

    cluster.start(old)
    rejoined = {m.http_end_point.port: m for m in _raw_gossip(old)}
    assert (rejoined[old.port].state, rejoined[old.port].is_alive) == (gossip_pb2.MemberInfo.Follower, True)
    assert rejoined[old.port].instance_id.string != before[old.port]
    assert cluster.leader is new
    assert set(cluster.followers) == set(cluster.nodes) - {new}


def test_a_follower_refuses_a_write_with_not_leader_naming_the_leader(cluster: EsdbTestCluster) -> None:
    leader, follower = cluster.leader, cluster.followers[0]
    assert leader is not None
    client = esdbclient.EventStoreDBClient(cluster.uri(follower))
    try:
        with pytest.raises(NodeIsNotLeader) as refused:
            client.append_events(
                f"refused-{uuid.uuid4().hex}",
                current_version=esdbclient.StreamState.ANY,
                events=[esdbclient.NewEvent(type="T", data=b"{}")],
            )
    finally:
        client.close()
    assert refused.value.leader_grpc_target == f"{leader.host}:{leader.port}"
    call = refused.value.args[0]
    assert (call.code(), call.details()) == (grpc.StatusCode.NOT_FOUND, "Leader info available")
    assert ("exception", "not-leader") in [(m.key, m.value) for m in call.trailing_metadata()]
    assert cluster.refused(follower)["Streams/BatchAppend"] == 1


def test_the_adapter_on_a_single_follower_host_says_where_the_leader_is(cluster: EsdbTestCluster) -> None:
    leader, follower = cluster.leader, cluster.followers[0]
    assert leader is not None
    stream = f"refused-{uuid.uuid4().hex}"
    with EsdbEventStore(cluster.uri(follower)) as store, pytest.raises(EventStoreError) as refused:
        store.append(stream, [NewEvent("T", b"{}")], expected_version=StreamState.NO_STREAM)
    # Not an outage: every retry would meet the same follower.
    assert not isinstance(refused.value, EventStoreUnavailableError)
    assert f"the leader is at {leader.host}:{leader.port}" in str(refused.value)
    # A creation reads the stream first (with requires-leader, the default preference): refused too.
    assert sum(cluster.refused(follower).values()) >= 1


def test_a_write_through_a_follower_seed_reaches_the_leader(cluster: EsdbTestCluster) -> None:
    follower = cluster.followers[0]
    hosts = ",".join(f"{node.host}:{node.port}" for node in [follower, *cluster.nodes] if node)
    stream = f"followed-{uuid.uuid4().hex}"
    with EsdbEventStore(f"esdb://{hosts}?Tls=false") as store:
        store.append(stream, [NewEvent("T", b"{}")], expected_version=StreamState.NO_STREAM)
        assert store.stream_version(stream) == 0
    leader = cluster.leader
    assert leader is not None
    assert cluster.served(leader)["Streams/BatchAppend"] >= 1
    assert cluster.served(follower)["Streams/BatchAppend"] == 0


def test_reads_with_node_preference_follower_are_served_by_a_follower(cluster: EsdbTestCluster) -> None:
    stream = f"read-{uuid.uuid4().hex}"
    with EsdbEventStore(cluster.uri_discover) as writer:
        writer.append(stream, [NewEvent("T", b"{}")] * 1, expected_version=StreamState.NO_STREAM)
    leader = cluster.leader
    assert leader is not None
    reads_on_leader = cluster.served(leader)["Streams/Read"]
    with EsdbEventStore(cluster.uri_discover + "&NodePreference=follower") as reader:
        assert [event.stream for event in reader.read_stream(stream)] == [stream]
        assert any(event.stream == stream for event in reader.read_all())
    assert cluster.served(leader)["Streams/Read"] == reads_on_leader
    assert sum(cluster.served(node)["Streams/Read"] for node in cluster.followers) >= 2


def test_without_a_quorum_there_is_no_leader_and_a_node_is_not_ready(cluster: EsdbTestCluster) -> None:
    cluster.stop_leader()
    second = cluster.wait_for_leader(timeout=5)
    cluster.stop(second)
    time.sleep(ELECTION_DELAY * 2)
    assert cluster.leader is None
    alone = next(node for node in cluster.nodes if node.is_running)
    with (
        EsdbEventStore(cluster.uri(alone)) as store,
        pytest.raises(EventStoreUnavailableError, match="Server Is Not Ready"),
    ):
        store.append(f"nq-{uuid.uuid4().hex}", [NewEvent("T", b"{}")], expected_version=StreamState.ANY)
    cluster.start(second)
    assert cluster.wait_for_leader(timeout=5) in (alone, second)


class Depositor(threading.Thread):
    """Dispatches deposits round-robin over some accounts, retrying each command (the same
    command, so the same id) on an outage until it is acknowledged."""

    def __init__(self, bus: CommandBus, accounts: list[str]) -> None:
        super().__init__(name="depositor", daemon=True)
        self._bus = bus
        self._accounts = accounts
        self.acknowledged: list[uuid.UUID] = []
        self.failed_attempts = 0
        self.error: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            turn = 0
            while not self.done.is_set():
                command = Deposit(account_id=self._accounts[turn % len(self._accounts)], amount=Decimal(1))
                turn += 1
                while True:
                    try:
                        self._bus.dispatch(command)
                        break
                    except (EventStoreUnavailableError, EventStoreTimeoutError):
                        self.failed_attempts += 1
                        time.sleep(0.02)
                self.acknowledged.append(command.command_id)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


@pytest.mark.parametrize("via", ["discover", "hosts"])
def test_commands_go_on_across_leader_changes_with_nothing_lost_or_doubled(
    cluster: EsdbTestCluster, via: str
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    uri = cluster.uri_discover if via == "discover" else cluster.uri_hosts
    with EsdbEventStore(uri, timeout=2.0) as store:
        accounts_repo = handlers.account_repository(store, snapshot_every=5)
        bus = CommandBus()
        handlers.register(bus, accounts_repo)
        accounts = [uuid.uuid4().hex for _ in range(4)]
        for account in accounts:
            bus.dispatch(OpenAccount(account_id=account, owner="Ann"))
        depositor = Depositor(bus, accounts)
        depositor.start()
        leaders = []
        try:
            for _ in range(3):
                time.sleep(rng.uniform(0.05, 0.3))
                before = len(depositor.acknowledged)
                stopped = cluster.stop_leader()
                leaders.append(cluster.wait_for_leader(timeout=5))
                time.sleep(rng.uniform(0.0, 0.2))
                cluster.start(stopped)
                deadline = time.monotonic() + 10
                while len(depositor.acknowledged) <= before + 2 and depositor.error is None:
                    assert time.monotonic() < deadline, f"seed={seed}: no command went through after failover"
                    time.sleep(0.01)
        finally:
            depositor.done.set()
            depositor.join(15)
        assert depositor.error is None, f"seed={seed}: {depositor.error!r}"
        assert len(set(leaders)) >= 2

        written: Counter[str] = Counter()
        for account in accounts:
            for event in store.read_stream(f"Account-{account}"):
                if event.type.endswith("Deposited"):
                    written[json.loads(event.metadata)[COMMAND_ID_KEY]] += 1
        acknowledged = {str(command_id) for command_id in depositor.acknowledged}
        assert len(acknowledged) == len(depositor.acknowledged)
        doubled = {command: n for command, n in written.items() if n > 1}
        assert not doubled, f"seed={seed}: commands written twice: {doubled}"
        assert set(written) == acknowledged, f"seed={seed}: lost {acknowledged - set(written)}"
        balance = sum(accounts_repo.load(account).balance for account in accounts)
        assert balance == Decimal(len(acknowledged))
