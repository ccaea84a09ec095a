"""The test server itself: restart on the same port, cluster calls, and the shell command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest
from esdbclient import EventStoreDBClient, NewEvent, StreamState
from esdbclient.exceptions import ConsumerTooSlow, ExceptionThrownByHandler, GrpcError

from eventsourcing_cqrs.testing.esdb_fixtures import EsdbEndpoint
from eventsourcing_cqrs.testing.esdb_server import EsdbTestServer


def test_server_restarted_on_the_same_port_keeps_its_data() -> None:
    stream = f"Test-{uuid.uuid4()}"
    with EsdbTestServer(strict=True) as server:
        port = server.port
        with EventStoreDBClient(server.uri) as client:
            client.append_events(
                stream,
                current_version=StreamState.NO_STREAM,
                events=[NewEvent(type="Before", data=b"{}")],
            )
            subscription = client.subscribe_to_stream(stream, timeout=10)
            items = iter(subscription)
            assert next(items).type == "Before"

            server.stop()
            with pytest.raises(GrpcError):
                next(items)
            server.start()

            assert server.port == port
            client.append_events(stream, current_version=0, events=[NewEvent(type="After", data=b"{}")])
            with client.subscribe_to_stream(stream, stream_position=0, timeout=10) as resumed:
                assert next(iter(resumed)).type == "After"
            assert [e.type for e in client.get_stream(stream)] == ["Before", "After"]


def test_dropped_subscriptions_raise_consumer_too_slow() -> None:
    with EsdbTestServer(strict=True) as server, EventStoreDBClient(server.uri) as client:
        subscription = client.subscribe_to_all(from_end=True, include_caught_up=True, timeout=10)
        items = iter(subscription)
        next(items)

        server.drop_subscriptions()

        with pytest.raises(ConsumerTooSlow):
            next(items)


def test_gossip_reports_one_alive_leader(esdb_server: EsdbEndpoint) -> None:
    with EventStoreDBClient(esdb_server.uri) as client:
        members = client.read_gossip()

    assert [member.state for member in members] == ["NODE_STATE_LEADER"]


def test_persistent_subscriptions_list_is_empty(esdb_server: EsdbEndpoint) -> None:
    if not esdb_server.is_test_server:
        pytest.skip("A real EventStoreDB may hold persistent subscriptions.")
    with EventStoreDBClient(esdb_server.uri) as client:
        assert client.list_subscriptions() == []


def test_module_runs_as_a_command_until_sigterm() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "eventsourcing_cqrs.testing.esdb_server", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    ) as process:
        try:
            assert process.stdout is not None
            banner = process.stdout.readline()
            assert banner.startswith("EventStoreDB test server listening: esdb://")
            uri = banner.rsplit(" ", 1)[-1].strip()
            with EventStoreDBClient(uri) as client:
                client.append_events(
                    "Cli-1", current_version=StreamState.NO_STREAM, events=[NewEvent("E", b"{}")]
                )
                assert client.get_current_version("Cli-1") == 0
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=10) == 0
        finally:
            if process.poll() is None:
                process.kill()


def _start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "eventsourcing_cqrs.testing.esdb_server", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    return process, process.stdout.readline()


def test_module_exits_cleanly_on_two_sigterms_back_to_back() -> None:
    # Ten processes at once, so the race between the two signals is exercised ten times.
    started = [_start_cli() for _ in range(10)]
    try:
        for process, banner in started:
            assert banner.startswith("EventStoreDB test server listening: esdb://"), banner
            process.send_signal(signal.SIGTERM)
            process.send_signal(signal.SIGTERM)
        assert [process.wait(timeout=10) for process, _ in started] == [0] * 10
    finally:
        for process, _ in started:
            if process.poll() is None:
                process.kill()
            process.wait()
            assert process.stdout is not None
            process.stdout.close()


def test_module_strict_flag_serves_a_strict_server() -> None:
    process, banner = _start_cli("--strict")
    try:
        uri = banner.rsplit(" ", 1)[-1].strip()
        with EventStoreDBClient(uri) as client, pytest.raises(ExceptionThrownByHandler):
            client.get_stream("")
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()
