"""The ``ServerFeatures.GetSupportedMethods`` call of EventStoreDB 24.10, answered as 24.10 answers it.

esdbclient ships no generated code for ``serverfeatures.proto``, so the message classes are built
at runtime from a ``FileDescriptorProto`` written out below with the proto's exact names and
field numbers (24.10 ``src/Protos/Grpc/serverfeatures.proto``)::

    message SupportedMethods { repeated SupportedMethod methods = 1; string event_store_server_version = 2; }
    message SupportedMethod { string method_name = 1; string service_name = 2; repeated string features = 3; }
    service ServerFeatures { rpc GetSupportedMethods (event_store.client.Empty) returns (SupportedMethods); }

The answer follows ``Services/Transport/Grpc/ServerFeatures.cs``: every mapped gRPC method whose
service name contains ``client``, names lower-cased; features ``stream``/``all`` for every
PersistentSubscriptions method, ``position``/``events`` for a Streams method whose name contains
``Read``, ``deadline_duration`` for Streams ``BatchAppend`` (and ``track_emitted_streams`` for
Projections ``Create``); ``event_store_server_version`` = the first three parts of the version.

Which methods: a strict server answers what a default 24.10.4 node maps
(``ClusterVNodeStartup.cs``: PersistentSubscriptions, Users, Streams, Operations, client Gossip,
Monitoring, ServerFeatures and Redaction; the cluster-internal ``event_store.cluster`` services
are excluded by the name rule; Projections only when the projections subsystem runs, which is off
by default, so not listed), as ``EventStore.Core.Tests/.../ServerFeaturesTest.cs`` expects. The
real order is the endpoint order, which the source does not pin down (that test compares as sets);
ours is mapping order, then proto order. A lenient server answers only the methods this test
server really implements, so a client probing for features is not told of calls that would fail
with ``UNIMPLEMENTED``.
"""

from __future__ import annotations

from typing import Any, Final

import grpc
from esdbclient.protos.Grpc import shared_pb2
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

SERVICE_NAME: Final = "event_store.client.server_features.ServerFeatures"
SERVER_VERSION: Final = "24.10.4"

_PACKAGE: Final = "event_store.client.server_features"
_STRING: Final = descriptor_pb2.FieldDescriptorProto.TYPE_STRING
_MESSAGE: Final = descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE
_OPTIONAL: Final = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
_REPEATED: Final = descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED

_STREAMS: Final = "event_store.client.streams.Streams"
_PERSISTENT: Final = "event_store.client.persistent_subscriptions.PersistentSubscriptions"
_GOSSIP: Final = "event_store.client.gossip.Gossip"

#: What a default EventStoreDB 24.10.4 node maps, in ClusterVNodeStartup order, methods in proto order.
REAL_24_10_METHODS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    (
        _PERSISTENT,
        ("Create", "Update", "Delete", "Read", "GetInfo", "ReplayParked", "List", "RestartSubsystem"),
    ),
    (
        "event_store.client.users.Users",
        ("Create", "Update", "Delete", "Disable", "Enable", "Details", "ChangePassword", "ResetPassword"),
    ),
    (_STREAMS, ("Read", "Append", "Delete", "Tombstone", "BatchAppend")),
    (
        "event_store.client.operations.Operations",
        (
            "StartScavenge",
            "StopScavenge",
            "Shutdown",
            "MergeIndexes",
            "ResignNode",
            "SetNodePriority",
            "RestartPersistentSubscriptions",
        ),
    ),
    (_GOSSIP, ("Read",)),
    ("event_store.client.monitoring.Monitoring", ("Stats",)),
    (SERVICE_NAME, ("GetSupportedMethods",)),
    ("event_store.client.redaction.Redaction", ("GetEventPositions", "SwitchChunks")),
)

#: What this test server implements (its Streams, Gossip, PersistentSubscriptions.List and this).
IMPLEMENTED_METHODS: Final[tuple[tuple[str, tuple[str, ...]], ...]] = (
    (_PERSISTENT, ("List",)),
    (_STREAMS, ("Read", "Append", "Delete", "Tombstone", "BatchAppend")),
    (_GOSSIP, ("Read",)),
    (SERVICE_NAME, ("GetSupportedMethods",)),
)


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    def field(
        name: str,
        number: int,
        label: descriptor_pb2.FieldDescriptorProto.Label.ValueType,
        kind: descriptor_pb2.FieldDescriptorProto.Type.ValueType,
        type_name: str = "",
    ) -> descriptor_pb2.FieldDescriptorProto:
        proto = descriptor_pb2.FieldDescriptorProto(
            name=name, number=number, label=label, type=kind, json_name=_camel(name)
        )
        if type_name:  # descriptor.proto is proto2: an empty type_name would still count as set
            proto.type_name = type_name
        return proto

    return descriptor_pb2.FileDescriptorProto(
        name="eventsourcing_cqrs/esdb_server/serverfeatures.proto",
        package=_PACKAGE,
        syntax="proto3",
        dependency=[shared_pb2.DESCRIPTOR.name],
        message_type=[
            descriptor_pb2.DescriptorProto(
                name="SupportedMethods",
                field=[
                    field("methods", 1, _REPEATED, _MESSAGE, f".{_PACKAGE}.SupportedMethod"),
                    field("event_store_server_version", 2, _OPTIONAL, _STRING),
                ],
            ),
            descriptor_pb2.DescriptorProto(
                name="SupportedMethod",
                field=[
                    field("method_name", 1, _OPTIONAL, _STRING),
                    field("service_name", 2, _OPTIONAL, _STRING),
                    field("features", 3, _REPEATED, _STRING),
                ],
            ),
        ],
        service=[
            descriptor_pb2.ServiceDescriptorProto(
                name="ServerFeatures",
                method=[
                    descriptor_pb2.MethodDescriptorProto(
                        name="GetSupportedMethods",
                        input_type=".event_store.client.Empty",
                        output_type=f".{_PACKAGE}.SupportedMethods",
                    )
                ],
            )
        ],
    )


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _build_classes() -> tuple[type[Message], type[Message]]:
    # A private pool: nothing is registered in the default pool, so no clash with other code.
    pool = descriptor_pool.DescriptorPool()
    # shared.proto (event_store.client.Empty) itself imports google/protobuf/empty.proto.
    for file in (*shared_pb2.DESCRIPTOR.dependencies, shared_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
    pool.Add(_file_descriptor())
    methods = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.SupportedMethods"))
    method = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.SupportedMethod"))
    return methods, method


SupportedMethods, SupportedMethod = _build_classes()
"""The runtime-built message classes (``SupportedMethods.FromString`` decodes an answer)."""


def features_of(service: str, method: str) -> list[str]:
    """The feature strings ``ServerFeatures.cs`` attaches to ``service``/``method``."""
    if "PersistentSubscriptions" in service:
        return ["stream", "all"]
    if "Streams" in service and "Read" in method:
        return ["position", "events"]
    if "Streams" in service and "BatchAppend" in method:
        return ["deadline_duration"]
    if "Projections" in service and "Create" in method:
        return ["track_emitted_streams"]
    return []


class ServerFeaturesService:
    """The ServerFeatures service: the 24.10 answer (strict) or what this server implements."""

    def __init__(self, *, strict: bool = False) -> None:
        listed = REAL_24_10_METHODS if strict else IMPLEMENTED_METHODS
        answer = SupportedMethods(event_store_server_version=SERVER_VERSION)
        for service, methods in listed:
            if "client" not in service:  # ServerFeatures.cs: .Where(ServiceName.Contains("client"))
                continue
            for method in methods:
                answer.methods.add(  # type: ignore[attr-defined]
                    method_name=method.lower(),
                    service_name=service.lower(),
                    features=features_of(service, method),
                )
        self._answer = answer.SerializeToString()

    def get_supported_methods(self, request: shared_pb2.Empty, context: grpc.ServicerContext) -> bytes:
        """ServerFeatures.GetSupportedMethods: the same precomputed answer every time."""
        return self._answer

    def rpc_handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """The generic handler to register on a ``grpc.Server``."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "GetSupportedMethods": grpc.unary_unary_rpc_method_handler(
                    self.get_supported_methods,
                    request_deserializer=shared_pb2.Empty.FromString,
                    response_serializer=bytes,
                )
            },
        )
