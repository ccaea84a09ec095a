"""The secure test server: EventStoreDB 24.10's authentication and default access rules.

The rules are checked on :class:`Security` directly (one log, no network), and the shapes a
client sees (status, details, trailers, BatchAppend's in-band error) over real gRPC with TLS.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import grpc
import pytest
from esdbclient import EventStoreDBClient, NewEvent, StreamState
from esdbclient.exceptions import AccessDeniedError, GrpcError
from esdbclient.protos.Grpc import gossip_pb2, persistent_pb2, shared_pb2, streams_pb2

from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer, EsdbUser
from eventsourcing_cqrs.testing.esdb_server._log import Log, ProposedEvent
from eventsourcing_cqrs.testing.esdb_server._security import (
    ALL_STREAM,
    DEFAULT_USERS,
    Access,
    Principal,
    Security,
)
from eventsourcing_cqrs.testing.esdb_server._tls import TlsUnavailableError

READER = Principal("reader", frozenset())
OPS = Principal("ops", frozenset({"$ops"}))
ADMIN = Principal("admin", frozenset({"$admins"}))
ANONYMOUS = Principal(None)


def _json_event(data: object) -> list[ProposedEvent]:
    return [ProposedEvent(str(uuid.uuid4()), "$metadata", True, json.dumps(data).encode(), b"")]


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def security(log: Log) -> Security:
    return Security(log, [*DEFAULT_USERS, EsdbUser("reader", "pw")])


# -- the rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize("access", list(Access))
def test_anonymous_callers_may_do_nothing_by_default(security: Security, access: Access) -> None:
    assert not security.may(ANONYMOUS, "orders-1", access)


def test_allowing_anonymous_stream_access_opens_user_streams_only(log: Log) -> None:
    security = Security(log, DEFAULT_USERS, allow_anonymous_stream_access=True)
    assert security.may(ANONYMOUS, "orders-1", Access.WRITE)
    assert not security.may(ANONYMOUS, ALL_STREAM, Access.READ)
    assert not security.may(ANONYMOUS, "$settings", Access.READ)


def test_any_user_may_use_user_streams_and_their_metadata_by_default(security: Security) -> None:
    for access in (Access.READ, Access.WRITE, Access.DELETE):
        assert security.may(READER, "orders-1", access)
    assert security.may(READER, "$$orders-1", Access.READ)
    assert security.may(READER, "$$orders-1", Access.WRITE)
    assert not security.may(READER, "$$orders-1", Access.DELETE), "deleting a metastream is invalid"


@pytest.mark.parametrize("principal", [READER, OPS], ids=["no group", "$ops"])
def test_only_admins_read_all_and_system_streams_by_default(security: Security, principal: Principal) -> None:
    assert not security.may(principal, ALL_STREAM, Access.READ)
    assert not security.may(principal, "$scavenges", Access.WRITE)
    assert not security.may(principal, "$$$all", Access.READ)
    assert security.may(ADMIN, ALL_STREAM, Access.READ)
    assert security.may(ADMIN, "$scavenges", Access.WRITE)
    assert security.may(Principal("admin"), ALL_STREAM, Access.READ), "the name admin is an admin"


def test_nobody_writes_or_deletes_all(security: Security) -> None:
    assert not security.may(ADMIN, ALL_STREAM, Access.WRITE)
    assert not security.may(ADMIN, ALL_STREAM, Access.DELETE)


def test_a_stream_acl_decides_and_missing_actions_fall_back_to_the_default(
    log: Log, security: Security
) -> None:
    log.append("$$orders-1", -2, _json_event({"$acl": {"$r": ["$ops", "reader"], "$w": "$admins"}}))
    assert security.may(READER, "orders-1", Access.READ), "a role may be a user name"
    assert security.may(OPS, "orders-1", Access.READ)
    assert not security.may(Principal("other"), "orders-1", Access.READ)
    assert not security.may(READER, "orders-1", Access.WRITE)
    assert security.may(READER, "orders-1", Access.DELETE), "$d falls back to $userStreamAcl's default"


def test_the_acl_of_all_lets_ops_read_it(log: Log, security: Security) -> None:
    log.append("$$$all", -2, _json_event({"$acl": {"$r": "$ops"}}))
    assert security.may(OPS, ALL_STREAM, Access.READ)
    assert not security.may(READER, ALL_STREAM, Access.READ)


def test_the_settings_stream_sets_the_user_stream_acl(log: Log, security: Security) -> None:
    log.append("$settings", -2, _json_event({"$userStreamAcl": {"$r": "$admins", "$w": "$all"}}))
    assert not security.may(READER, "orders-1", Access.READ)
    assert security.may(READER, "orders-1", Access.WRITE)


# -- authentication --------------------------------------------------------------------------------


def _basic(credentials: str) -> tuple[tuple[str, str]]:
    return (("authorization", "Basic " + base64.b64encode(credentials.encode()).decode()),)


def test_authentication_knows_users_refuses_bad_credentials_and_lets_others_in_anonymously(
    security: Security,
) -> None:
    assert security.authenticate(_basic("reader:pw")) == READER
    assert security.authenticate(_basic("ops:changeit")) == OPS
    assert security.authenticate(_basic("reader:wrong")) is None
    assert security.authenticate(_basic("nobody:pw")) is None
    assert security.authenticate(()) == ANONYMOUS
    assert security.authenticate((("authorization", "Bearer abc"),)) == ANONYMOUS
    assert security.authenticate(_basic("no-colon")) == ANONYMOUS


def test_a_user_never_shows_its_password() -> None:
    assert "s3cret" not in repr(EsdbUser("reader", "s3cret"))
    with pytest.raises(ValueError, match="without ':'"):
        EsdbUser("a:b", "pw")


# -- on the wire -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[EsdbTestServer]:
    running = EsdbTestServer(tls=True, users=[*DEFAULT_USERS, EsdbUser("reader", "pw")]).start()
    yield running
    running.close()


@pytest.fixture
def channel(server: EsdbTestServer) -> Iterator[grpc.Channel]:
    assert server.ca_file is not None
    credentials = grpc.ssl_channel_credentials(root_certificates=server.ca_file.read_bytes())
    with grpc.secure_channel(f"localhost:{server.port}", credentials) as secure:
        yield secure


def _read_all(channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]) -> list[streams_pb2.ReadResp]:
    read = channel.unary_stream(
        "/event_store.client.streams.Streams/Read",
        request_serializer=streams_pb2.ReadReq.SerializeToString,
        response_deserializer=streams_pb2.ReadResp.FromString,
    )
    options = streams_pb2.ReadReq.Options(
        all=streams_pb2.ReadReq.Options.AllOptions(start=shared_pb2.Empty()),
        count=5,
        no_filter=shared_pb2.Empty(),
        uuid_option=streams_pb2.ReadReq.Options.UUIDOption(string=shared_pb2.Empty()),
    )
    return list(read(streams_pb2.ReadReq(options=options), metadata=metadata))


def test_the_node_answers_bad_credentials_with_unauthenticated(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _read_all(channel, _basic("admin:wrong"))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert caught.value.details() == "Unauthenticated"


@pytest.mark.parametrize("metadata", [(), _basic("reader:pw")], ids=["anonymous", "no group"])
def test_the_node_denies_reading_all_with_access_denied_and_its_trailer(
    channel: grpc.Channel, metadata: tuple[tuple[str, str], ...]
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        _read_all(channel, metadata)
    error = caught.value
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error.details() == "Access Denied"
    trailers = {item.key: item.value for item in error.trailing_metadata()}
    assert trailers.get("exception") in ("access-denied", b"access-denied")  # str; the stubs say bytes
    assert _read_all(channel, _basic("admin:changeit")), "an admin reads $all"


def test_anonymous_callers_may_read_gossip_but_not_list_persistent_subscriptions(
    channel: grpc.Channel,
) -> None:
    gossip = channel.unary_unary(
        "/event_store.client.gossip.Gossip/Read",
        request_serializer=shared_pb2.Empty.SerializeToString,
        response_deserializer=gossip_pb2.ClusterInfo.FromString,
    )
    assert gossip(shared_pb2.Empty()).members
    listing = channel.unary_unary(
        "/event_store.client.persistent_subscriptions.PersistentSubscriptions/List",
        request_serializer=persistent_pb2.ListReq.SerializeToString,
        response_deserializer=persistent_pb2.ListResp.FromString,
    )
    with pytest.raises(grpc.RpcError) as caught:
        listing(persistent_pb2.ListReq())
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED


def test_esdbclient_sees_batch_append_and_append_denials_and_unauthenticated(server: EsdbTestServer) -> None:
    event = NewEvent(type="Tried", data=b"{}")
    with EventStoreDBClient(server.uri_for("reader", "pw")) as reader:
        with pytest.raises(AccessDeniedError):  # BatchAppend: in-band
            reader.append_events("$system-thing", current_version=StreamState.ANY, events=[event])
        with pytest.raises(GrpcError) as caught:  # Append: PERMISSION_DENIED
            reader.append_event("$system-thing", current_version=StreamState.ANY, event=event)
        assert caught.value.args[0].code() is grpc.StatusCode.PERMISSION_DENIED
        assert reader.append_events("orders-1", current_version=StreamState.ANY, events=[event]) > 0
    with EventStoreDBClient(server.uri_for("reader", "nope")) as refused, pytest.raises(GrpcError) as caught:
        refused.get_commit_position()
    assert caught.value.args[0].code() is grpc.StatusCode.UNAUTHENTICATED


# -- lifetime, uri, command line -------------------------------------------------------------------


def test_a_restart_keeps_the_certificate_and_port_and_close_removes_the_files() -> None:
    server = EsdbTestServer(tls=True).start()
    ca_file, port, uri = server.ca_file, server.port, server.uri
    assert ca_file is not None
    ca = ca_file.read_bytes()
    server.stop()
    server.start()
    assert (server.port, server.uri, ca_file.read_bytes()) == (port, uri, ca)
    with EventStoreDBClient(server.uri) as client:
        assert client.get_commit_position() >= 0
    server.close()
    assert not ca_file.parent.exists()
    with pytest.raises(RuntimeError, match="closed"):
        server.start()


def test_users_without_tls_are_refused() -> None:
    with pytest.raises(ValueError, match="need tls=True"):
        EsdbTestServer(users=[EsdbUser("reader", "pw")])


def test_tls_without_cryptography_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cryptography", None)
    with pytest.raises(TlsUnavailableError, match=r"pip install 'eventsourcing-cqrs\[esdb-testing\]'"):
        EsdbTestServer(tls=True)


def test_the_command_line_serves_tls_with_added_users_and_prints_its_ca_without_passwords() -> None:
    command = [
        *(sys.executable, "-m", "eventsourcing_cqrs.testing.esdb_server"),
        *("--port", "0", "--tls", "--user", "reader:s3cret-pw"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        listening = process.stdout.readline()
        ca_line = process.stdout.readline()
        port = listening.rsplit(":", 1)[1].split("?", 1)[0]
        ca_file = ca_line.split(": ", 1)[1].strip()
        with EventStoreDBClient(
            f"esdb://reader:s3cret-pw@127.0.0.1:{port}?Tls=true&tlsCAFile={ca_file}"
        ) as client:
            event = NewEvent(type="Tried", data=b"{}")
            assert client.append_events("orders-1", current_version=StreamState.ANY, events=[event]) > 0
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=10)
    assert listening.startswith("EventStoreDB test server listening: esdb://admin:***@127.0.0.1:")
    assert ca_line.startswith("CA certificate (tlsCAFile): /")
    assert "s3cret-pw" not in listening + ca_line + out + err
    assert "changeit" not in listening
