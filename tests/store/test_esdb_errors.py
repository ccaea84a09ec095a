"""EventStoreDB failures that must come out as one clear line naming the cause:
discovery, an append over the gRPC message size, a TLS mismatch, a secure connection string
without credentials, a busy port for the test server. None may show the password."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from eventsourcing_cqrs.errors import EventStoreError, EventStoreUnavailableError, InvalidInputError
from eventsourcing_cqrs.event_store.esdb import EsdbEventStore
from eventsourcing_cqrs.event_store.port import NewEvent, StreamState
from eventsourcing_cqrs.testing.contracts import new_events, unique_stream
from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer, PortInUseError

SECRET = "s3cret-pa55"  # noqa: S105 - a made-up password that must never be shown


@pytest.fixture(scope="module")
def server() -> Iterator[EsdbTestServer]:
    with EsdbTestServer(strict=True) as running:
        yield running


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port: int = listener.getsockname()[1]
        yield port


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _one_line_without_secret(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message, message
    assert SECRET not in message
    assert "_MultiThreadedRendezvous" not in message
    return message


def _discover_uri(port: int) -> str:
    return (
        f"esdb+discover://admin:{SECRET}@127.0.0.1:{port}"
        "?Tls=false&MaxDiscoverAttempts=2&DiscoveryInterval=10&GossipTimeout=1"
    )


def test_discovery_failing_when_connecting_is_an_outage() -> None:
    with pytest.raises(EventStoreUnavailableError) as caught:
        EsdbEventStore(_discover_uri(_free_port()))
    message = _one_line_without_secret(caught.value)
    assert "DiscoveryFailed" in message
    assert "esdb+discover://127.0.0.1:" in message


def test_an_append_over_the_grpc_message_size_says_how_big_it_is_and_writes_nothing(
    server: EsdbTestServer,
) -> None:
    stream = unique_stream("Huge")
    payload = b"x" * (40 * 1024 * 1024)
    with EsdbEventStore(server.uri) as store:
        with pytest.raises(InvalidInputError) as caught:
            store.append(stream, [NewEvent("Huge", payload, b"{}")], expected_version=StreamState.NO_STREAM)
        assert store.stream_version(stream) is None
    message = _one_line_without_secret(caught.value)
    assert f"the append is {len(payload) + 2 + 4} bytes, over the maximum gRPC message size" in message
    assert "nothing was written" in message


def test_tls_to_a_plaintext_server_is_one_line_saying_tls_mismatch_and_what_to_try(
    server: EsdbTestServer,
) -> None:
    stream = unique_stream("Tls")
    with (
        EsdbEventStore(f"esdb://admin:{SECRET}@127.0.0.1:{server.port}") as store,
        pytest.raises(EventStoreError) as caught,
    ):
        store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
    assert not isinstance(caught.value, EventStoreUnavailableError), "retrying cannot cure a TLS mismatch"
    message = _one_line_without_secret(caught.value)
    assert message.startswith(f"TLS mismatch with EventStoreDB at esdb://127.0.0.1:{server.port}")
    assert "?Tls=false" in message
    assert "tlsCAFile" in message
    with EsdbEventStore(server.uri) as store:
        assert store.stream_version(stream) is None


def test_a_secure_connection_string_without_credentials_says_how_to_give_them_or_drop_tls() -> None:
    with pytest.raises(InvalidInputError) as caught:
        EsdbEventStore("esdb://127.0.0.1:2113")
    message = _one_line_without_secret(caught.value)
    assert "a secure connection (TLS, the default) needs credentials" in message
    assert "esdb://user:password@host:2113" in message
    assert "?Tls=false" in message


def test_a_password_without_a_user_on_tls_is_refused_without_echoing_it() -> None:
    with pytest.raises(InvalidInputError) as caught:
        EsdbEventStore(f"esdb://:{SECRET}@127.0.0.1:2113?Tls=true")
    assert "needs credentials" in _one_line_without_secret(caught.value)


def test_the_test_server_on_a_busy_port_raises_a_clear_error(busy_port: int) -> None:
    with pytest.raises(PortInUseError) as caught:
        EsdbTestServer(port=busy_port).start()
    assert str(caught.value) == f"port {busy_port} on 127.0.0.1 is already in use"
    assert isinstance(caught.value, OSError)


def test_the_test_server_command_on_a_busy_port_prints_one_line_and_exits_1(busy_port: int) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "eventsourcing_cqrs.testing.esdb_server", "--port", str(busy_port)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"error: port {busy_port} on 127.0.0.1 is already in use\n"


def test_the_test_server_restarts_on_its_port_after_serving_connections() -> None:
    server = EsdbTestServer(strict=True).start()
    stream = unique_stream("Again")
    try:
        with EsdbEventStore(server.uri) as store:
            for expected in range(3):
                store.append(
                    stream,
                    new_events(1),
                    expected_version=expected - 1 if expected else StreamState.NO_STREAM,
                )
                server.stop()
                server.start()
            assert store.stream_version(stream) == 2
    finally:
        server.stop()
