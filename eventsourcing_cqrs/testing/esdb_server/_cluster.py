"""The two non-stream services esdbclient may call: Gossip.Read and PersistentSubscriptions.List.

A single node is always the leader: its gossip names itself alone. A node of an
:class:`~eventsourcing_cqrs.testing.esdb_server.EsdbTestCluster` answers with the members the
cluster gives it (a :data:`GossipSource`). Persistent subscriptions are not emulated, so the list
is always empty (esdbclient's own test suite lists them in every ``tearDown``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import grpc
from esdbclient.protos.Grpc import gossip_pb2, persistent_pb2, shared_pb2

from eventsourcing_cqrs.testing.esdb_server._log import now_ticks

GOSSIP_SERVICE = "event_store.client.gossip.Gossip"
PERSISTENT_SERVICE = "event_store.client.persistent_subscriptions.PersistentSubscriptions"

#: What Gossip.Read answers with: the members as the answering node sees them, asked anew per call.
GossipSource: TypeAlias = Callable[[], Sequence[gossip_pb2.MemberInfo]]


class ClusterServices:
    """Gossip and (empty) persistent-subscription listing for one advertised endpoint."""

    def __init__(self, host: str, port: int, *, gossip: GossipSource | None = None) -> None:
        self._instance_id = str(uuid.uuid4())
        self.host = host
        self.port = port
        self._gossip = gossip

    def rpc_handlers(self) -> list[grpc.GenericRpcHandler[Any, Any]]:
        """The generic handlers to register on a ``grpc.Server``."""
        return [
            grpc.method_handlers_generic_handler(
                GOSSIP_SERVICE,
                {
                    "Read": grpc.unary_unary_rpc_method_handler(
                        self.read_gossip,
                        request_deserializer=shared_pb2.Empty.FromString,
                        response_serializer=gossip_pb2.ClusterInfo.SerializeToString,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                PERSISTENT_SERVICE,
                {
                    "List": grpc.unary_unary_rpc_method_handler(
                        self.list_persistent_subscriptions,
                        request_deserializer=persistent_pb2.ListReq.FromString,
                        response_serializer=persistent_pb2.ListResp.SerializeToString,
                    )
                },
            ),
        ]

    def read_gossip(self, request: shared_pb2.Empty, context: grpc.ServicerContext) -> gossip_pb2.ClusterInfo:
        """Gossip.Read: the cluster's members, or else one alive leader at the advertised endpoint."""
        if self._gossip is not None:
            return gossip_pb2.ClusterInfo(members=self._gossip())
        return gossip_pb2.ClusterInfo(
            members=[
                gossip_pb2.MemberInfo(
                    instance_id=shared_pb2.UUID(string=self._instance_id),
                    time_stamp=now_ticks(),
                    state=gossip_pb2.MemberInfo.Leader,
                    is_alive=True,
                    http_end_point=gossip_pb2.EndPoint(address=self.host, port=self.port),
                )
            ]
        )

    def list_persistent_subscriptions(
        self, request: persistent_pb2.ListReq, context: grpc.ServicerContext
    ) -> persistent_pb2.ListResp:
        """PersistentSubscriptions.List: always empty."""
        return persistent_pb2.ListResp()
