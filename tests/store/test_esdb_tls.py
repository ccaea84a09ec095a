"""The EventStoreDB adapter over TLS with credentials, against the secure test server.

Real gRPC over TLS through esdbclient and the adapter. Each failure is one error of the port's
tree, naming the hosts and what to fix, never transient (a subscription fails instead of
retrying), and no message, ``repr``, log line or ``escqrs`` output shows a password.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from eventsourcing_cqrs.errors import (
    EventStoreAccessDeniedError,
    EventStoreAuthenticationError,
    EventStoreError,
    EventStoreTLSError,
    EventStoreUnavailableError,
    InvalidInputError,
)
from eventsourcing_cqrs.event_store import RecordedEvent, StreamState, connect
from eventsourcing_cqrs.event_store.esdb import EsdbEventStore
from eventsourcing_cqrs.testing.contracts import new_events, unique_stream
from eventsourcing_cqrs.testing.esdb_fixtures import EsdbEndpoint, esdb_secure_server
from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer, EsdbUser

__all__ = ["esdb_secure_server"]

#: The passwords: none may ever be shown.
ADMIN_SECRET = "adm1n-s3cret-f00d"  # noqa: S105 - made up, must never be shown
READER_SECRET = "r3ader-s3cret-beef"  # noqa: S105
WRONG_SECRET = "wr0ng-s3cret-cafe"  # noqa: S105
SECRETS = (ADMIN_SECRET, READER_SECRET, WRONG_SECRET)
_SCRIPT = Path(sys.executable).with_name("escqrs")
ESCQRS = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "escqrs.cli"]


def hidden(*texts: object) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in str(text), f"a password is shown in:\n{text}"


def one_line(error: BaseException) -> str:
    message = str(error)
    assert "\n" not in message, message
    assert "_MultiThreadedRendezvous" not in message
    hidden(message, repr(error))
    return message


@pytest.fixture(scope="module")
def server() -> Iterator[EsdbTestServer]:
    """A TLS server whose admin has a secret password, and ``reader``, a user in no group."""
    users = [EsdbUser("admin", ADMIN_SECRET, ("$admins",)), EsdbUser("reader", READER_SECRET)]
    running = EsdbTestServer(tls=True, users=users).start()
    yield running
    running.close()


@pytest.fixture(scope="module")
def targets(server: EsdbTestServer) -> str:
    return f"esdb://{server.host}:{server.port}"


def esdb(uri: str) -> EsdbEventStore:
    """``connect(uri)``, the entry point users call, typed as the adapter it returns."""
    store = connect(uri)
    assert isinstance(store, EsdbEventStore)
    return store


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# -- what works ------------------------------------------------------------------------------------


def test_the_secure_fixture_gives_an_admin_uri_with_tls_and_its_ca(esdb_secure_server: EsdbEndpoint) -> None:
    assert esdb_secure_server.ca_file is not None
    assert esdb_secure_server.ca_file.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert esdb_secure_server.uri.startswith("esdb://admin:changeit@127.0.0.1:")
    assert esdb_secure_server.uri.endswith(f"?Tls=true&tlsCAFile={esdb_secure_server.ca_file}")


def test_admin_appends_reads_and_subscribes_over_tls(esdb_secure_server: EsdbEndpoint) -> None:
    stream = unique_stream("Tls")
    with esdb(esdb_secure_server.uri) as store:
        start = store.head_position()
        written = store.append(stream, new_events(2), expected_version=StreamState.NO_STREAM)
        assert written.revision == 1
        assert [event.revision for event in store.read_stream(stream)] == [0, 1]
        assert [event.stream for event in store.read_all(from_position=start)] == [stream, stream]
        with store.subscribe(from_position=start) as subscription:
            seen = [
                item for item in (subscription.poll(5.0) for _ in range(3)) if isinstance(item, RecordedEvent)
            ]
        assert [event.position for event in seen][-1] == written.position


def test_ops_may_not_read_all_by_default_as_on_24_10(esdb_secure_server: EsdbEndpoint) -> None:
    assert esdb_secure_server.server is not None
    with (
        esdb(esdb_secure_server.server.uri_for("ops", "changeit")) as store,
        pytest.raises(EventStoreAccessDeniedError, match=r"needs a user in \$admins"),
    ):
        store.head_position()


def test_a_user_in_no_group_may_write_and_read_a_user_stream(server: EsdbTestServer) -> None:
    stream = unique_stream("Reader")
    with esdb(server.uri_for("reader", READER_SECRET)) as store:
        created = store.append(stream, new_events(2), expected_version=StreamState.NO_STREAM)
        more = store.append(stream, new_events(1), expected_version=StreamState.ANY)
        assert (created.revision, more.revision) == (1, 2)
        assert [event.revision for event in store.read_stream(stream)] == [0, 1, 2]
        assert store.stream_version(stream) == 2


# -- one clear error each --------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["admin", "nobody"])
def test_a_wrong_password_or_unknown_user_is_one_authentication_error(
    server: EsdbTestServer, targets: str, user: str
) -> None:
    with esdb(server.uri_for(user, WRONG_SECRET)) as store:
        with pytest.raises(EventStoreAuthenticationError) as caught:
            store.append(unique_stream("Auth"), new_events(1), expected_version=StreamState.ANY)
        with pytest.raises(EventStoreAuthenticationError):
            store.head_position()
    assert not isinstance(caught.value, EventStoreUnavailableError), "retrying cannot cure bad credentials"
    message = one_line(caught.value)
    assert message.startswith(f"EventStoreDB at {targets} refused the credentials of user {user!r}")
    assert "fix user:password in the connection string" in message
    assert caught.value.user == user


def test_a_user_in_no_group_reading_all_is_one_access_denied_error(
    server: EsdbTestServer, targets: str
) -> None:
    with esdb(server.uri_for("reader", READER_SECRET)) as store:
        with pytest.raises(EventStoreAccessDeniedError) as caught:
            list(store.read_all())
        with pytest.raises(EventStoreAccessDeniedError, match="system stream"):
            store.append("$secret-things", new_events(1), expected_version=StreamState.ANY)
    assert isinstance(caught.value, PermissionError)
    message = one_line(caught.value)
    assert message == (
        f"EventStoreDB at {targets} denied read_all to user 'reader': reading $all (and subscribing "
        "to it) needs a user in $admins."
    )


def test_the_subscription_of_a_user_in_no_group_fails_with_access_denied_without_retrying(
    server: EsdbTestServer,
) -> None:
    with capture_logs() as logs, esdb(server.uri_for("reader", READER_SECRET)) as store:
        subscription = store.subscribe()
        started = time.monotonic()
        with pytest.raises(EventStoreAccessDeniedError) as caught:
            subscription.poll(10.0)
        assert time.monotonic() - started < 5.0
        assert subscription.stopped
    assert "needs a user in $admins" in one_line(caught.value)
    events = [entry["event"] for entry in logs]
    assert "event_store.subscription_dropped" not in events
    assert events.count("event_store.subscription_failed") == 1
    hidden(logs)


def test_a_missing_ca_file_is_one_error_naming_the_option_and_the_hosts(
    server: EsdbTestServer, targets: str, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "ca.crt"
    uri = server.uri_for("admin", ADMIN_SECRET).replace(str(server.ca_file), str(missing))
    with pytest.raises(InvalidInputError) as caught:
        connect(uri)
    message = one_line(caught.value)
    assert message.startswith(f"Invalid tlsCAFile option '{missing}': it cannot be read (No such file")
    assert f"EventStoreDB at {targets}" in message
    assert "give the path of the CA certificate (PEM)" in message


def test_a_ca_file_without_a_certificate_is_one_error(server: EsdbTestServer, tmp_path: Path) -> None:
    garbage = tmp_path / "ca.crt"
    garbage.write_text("not a certificate\n")
    uri = server.uri_for("admin", ADMIN_SECRET).replace(str(server.ca_file), str(garbage))
    with pytest.raises(InvalidInputError, match="it holds no PEM certificate") as caught:
        connect(uri)
    one_line(caught.value)


def test_a_ca_that_did_not_sign_the_server_certificate_is_one_tls_error(
    server: EsdbTestServer, targets: str
) -> None:
    stranger = EsdbTestServer(tls=True)  # never started: only its CA is used
    try:
        uri = server.uri_for("admin", ADMIN_SECRET).replace(str(server.ca_file), str(stranger.ca_file))
        with esdb(uri) as store, pytest.raises(EventStoreTLSError) as caught:
            store.head_position()
    finally:
        stranger.close()
    assert not isinstance(caught.value, EventStoreUnavailableError)
    assert one_line(caught.value).startswith(f"TLS mismatch with EventStoreDB at {targets}")


def test_a_plaintext_client_against_a_tls_node_is_one_tls_error_when_connecting(
    server: EsdbTestServer, targets: str
) -> None:
    with pytest.raises(EventStoreTLSError) as caught:
        connect(f"esdb://{server.host}:{server.port}?Tls=false")
    message = one_line(caught.value)
    assert message.startswith(f"TLS mismatch with EventStoreDB at {targets} (connect): the server speaks TLS")
    assert "drop Tls=false" in message


def test_a_plaintext_client_whose_node_starts_later_with_tls_gets_the_tls_error_on_its_call() -> None:
    port = _free_port()
    with EsdbEventStore(f"esdb://127.0.0.1:{port}?Tls=false") as store:  # nothing listens yet
        node = EsdbTestServer(port=port, tls=True).start()
        try:
            with pytest.raises(EventStoreTLSError, match="the server speaks TLS"):
                store.stream_version(unique_stream("Late"))
        finally:
            node.close()


def test_a_plaintext_client_against_an_insecure_node_is_not_mistaken_for_tls() -> None:
    with EsdbTestServer() as node, EsdbEventStore(node.uri) as store:
        assert store.head_position() >= 0


# -- no password anywhere --------------------------------------------------------------------------


def test_no_error_repr_or_log_shows_a_password(server: EsdbTestServer) -> None:
    failures: list[BaseException] = []
    with capture_logs() as logs:
        for uri in (server.uri_for("admin", WRONG_SECRET), server.uri_for("reader", READER_SECRET)):
            store = connect(uri)
            hidden(repr(store))
            try:
                store.head_position()
            except EventStoreError as exc:
                failures.append(exc)
            store.close()
    assert [type(failure) for failure in failures] == [
        EventStoreAuthenticationError,
        EventStoreAccessDeniedError,
    ]
    hidden(*failures, *(repr(failure) for failure in failures), logs)


def _escqrs(*args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ESCQRS_")}
    env.update({"NO_COLOR": "1", "COLUMNS": "220"})
    return subprocess.run([*ESCQRS, *args], capture_output=True, text=True, timeout=60, check=False, env=env)


def test_the_command_shows_streams_and_errors_without_a_password(
    server: EsdbTestServer, targets: str
) -> None:
    stream = unique_stream("Cli")
    with esdb(server.uri_for("admin", ADMIN_SECRET)) as store:
        store.append(stream, new_events(1), expected_version=StreamState.NO_STREAM)
    listed = _escqrs("streams", "list", "--store", server.uri_for("admin", ADMIN_SECRET))
    denied = _escqrs("streams", "list", "--store", server.uri_for("reader", READER_SECRET))
    refused = _escqrs("streams", "list", "--store", server.uri_for("admin", WRONG_SECRET))
    hidden(listed.stdout, listed.stderr, denied.stdout, denied.stderr, refused.stdout, refused.stderr)
    assert listed.returncode == 0, listed.stderr
    assert stream in listed.stdout
    assert denied.returncode != 0
    assert f"error: EventStoreDB at {targets} denied" in denied.stderr
    assert refused.returncode != 0
    assert f"error: EventStoreDB at {targets} refused the credentials of user 'admin'" in refused.stderr
