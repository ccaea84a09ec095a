"""Appends to EventStoreDB multiplexed over one long-lived ``Streams.BatchAppend`` call.

esdbclient opens a new ``BatchAppend`` call for every append (with a thread of its own to feed
the call's one request) and returns only the commit position. Here every append of a store
goes over one call per connection, as the server's BatchAppend is meant to be used: each
request carries its own correlation id, the server answers each in-band (success or that
request's own error) as it completes, and one reader thread hands each answer to the caller
waiting on that correlation id. Concurrent writers share the call instead of queueing for
calls of their own, and an answer carries the stream's revision as well as the position, so
no further call is needed to learn it.

A server's refusal of one request (wrong expected version, a deleted stream, access denied,
too large) is that request's answer and reaches only its caller. When the call itself ends
(the node restarted, the connection dropped or was replaced by a reconnect), every append
still waiting fails with :class:`AppendCallDropped`: its outcome is unknown, and the next
append opens a new call. Retrying it is safe, as an append of the same event ids at the
same expected version is idempotent on EventStoreDB; the store adapter does that.

An append of over :data:`ALONE_ABOVE_BYTES` goes over a call of its own, so
that a request the server's gRPC limits refuse (which would end the whole call) fails alone.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final

import esdbclient
import grpc
from esdbclient.common import handle_rpc_error
from esdbclient.exceptions import DeadlineExceeded, EventStoreDBClientException, ServiceUnavailable
from esdbclient.protos.Grpc import shared_pb2, streams_pb2, streams_pb2_grpc
from esdbclient.streams import BaseStreamsService

__all__ = ["ALONE_ABOVE_BYTES", "AppendCallDropped", "MultiplexedAppends"]

#: Appends above this size (EventStoreDB's default ``MaxAppendSize``, 1 MiB) get a call of their own.
ALONE_ABOVE_BYTES: Final = 1024 * 1024


class AppendCallDropped(Exception):  # noqa: N818 - a signal to the adapter, never seen by users
    """The BatchAppend call ended while this append waited for its answer: outcome unknown.

    ``cause`` is esdbclient's exception for how the call ended; ``connection`` the esdbclient
    connection the call was on (the adapter reconnects only if it is still the current one).
    """

    def __init__(self, cause: EventStoreDBClientException, connection: object) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.connection = connection


@dataclass(slots=True)
class _Waiting:
    done: threading.Event = field(default_factory=threading.Event)
    response: streams_pb2.BatchAppendResp | None = None
    error: EventStoreDBClientException | None = None


def _correlation_key(correlation: shared_pb2.UUID) -> uuid.UUID:
    """The correlation id of a request or answer, whichever of its two encodings it uses."""
    if correlation.WhichOneof("value") == "structured":
        structured = correlation.structured
        bits = (structured.most_significant_bits % 2**64) << 64 | structured.least_significant_bits % 2**64
        return uuid.UUID(int=bits)
    return uuid.UUID(correlation.string)


class _Call:
    """One BatchAppend call on one connection, its requests fed from a queue."""

    def __init__(
        self,
        connection: object,
        channel: grpc.Channel,
        metadata: tuple[tuple[str, str], ...],
        credentials: grpc.CallCredentials | None,
    ) -> None:
        self.connection = connection
        self._requests: queue.SimpleQueue[streams_pb2.BatchAppendReq | None] = queue.SimpleQueue()
        self._waiting: dict[uuid.UUID, _Waiting] = {}
        self._lock = threading.Lock()
        self.ended = False
        stub = streams_pb2_grpc.StreamsStub(channel)  # type: ignore[no-untyped-call]
        self._responses: Iterator[streams_pb2.BatchAppendResp] = stub.BatchAppend(
            self._feed(), metadata=metadata, credentials=credentials
        )
        self._reader = threading.Thread(target=self._read, name="esdb-batch-append", daemon=True)
        self._reader.start()

    def _feed(self) -> Iterator[streams_pb2.BatchAppendReq]:
        requests = self._requests
        while (request := requests.get()) is not None:
            yield request

    def send(self, key: uuid.UUID, request: streams_pb2.BatchAppendReq) -> _Waiting | None:
        """Send ``request``; ``None`` if the call has ended (send it on a new one)."""
        waiting = _Waiting()
        with self._lock:
            if self.ended:
                return None
            self._waiting[key] = waiting
        self._requests.put(request)
        return waiting

    def forget(self, key: uuid.UUID) -> None:
        """Stop waiting for ``key``'s answer (its caller gave up: a client-side deadline)."""
        with self._lock:
            self._waiting.pop(key, None)

    def _read(self) -> None:
        error: EventStoreDBClientException
        try:
            for response in self._responses:
                with self._lock:
                    waiting = self._waiting.pop(_correlation_key(response.correlation_id), None)
                if waiting is not None:
                    waiting.response = response
                    waiting.done.set()
            error = ServiceUnavailable("EventStoreDB ended the BatchAppend call")
        except grpc.RpcError as exc:
            error = handle_rpc_error(exc)
        except ValueError as exc:  # grpcio: a call on a channel closed under it
            error = ServiceUnavailable(str(exc))
        with self._lock:
            self.ended = True
            waiting_now = list(self._waiting.values())
            self._waiting.clear()
        self._requests.put(None)  # ends the request feed, if gRPC still reads it
        for waiting in waiting_now:
            waiting.error = error
            waiting.done.set()

    def close(self) -> None:
        with self._lock:
            self.ended = True
        self._requests.put(None)
        cancel = getattr(self._responses, "cancel", None)
        if cancel is not None:
            cancel()


class MultiplexedAppends:
    """Every append of one esdbclient client over one BatchAppend call per connection."""

    def __init__(self, client: esdbclient.EventStoreDBClient) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._call: _Call | None = None
        self._closed = False
        # esdbclient's per-call metadata and credentials (the connection name; basic auth over
        # TLS): a long-lived call carries them once. Appends need the leader.
        self._metadata = (*client._call_metadata, ("requires-leader", "true"))
        self._credentials = client._call_credentials

    def append(
        self,
        stream: str,
        expected: int | esdbclient.StreamState,
        events: Sequence[esdbclient.NewEvent],
        timeout: float | None,
        size: int,
    ) -> tuple[int, int]:
        """Append ``events`` (``size`` bytes of types, data and metadata) and return the
        stream's revision and the commit position after it.

        Raises esdbclient's exception for the server's answer, :class:`AppendCallDropped` if
        the call ended before it came, and ``DeadlineExceeded`` when ``timeout`` passed first
        (the request may still be carried out, as with any call whose deadline passed).
        """
        if size > ALONE_ABOVE_BYTES:
            return self._append_alone(stream, expected, events, timeout)
        correlation = uuid.uuid4()
        request = BaseStreamsService._construct_batch_append_req(
            stream_name=stream,
            current_version=expected,
            events=events,
            correlation_id=correlation,
            timeout=timeout,
        )
        while True:
            call = self._current_call()
            waiting = call.send(correlation, request)
            if waiting is not None:
                break
        if not waiting.done.wait(timeout):
            call.forget(correlation)
            raise DeadlineExceeded(f"no answer to the append on stream {stream!r} within {timeout} s")
        if waiting.error is not None:
            raise AppendCallDropped(waiting.error, call.connection)
        assert waiting.response is not None
        return _outcome(waiting.response, stream, expected)

    def _append_alone(
        self,
        stream: str,
        expected: int | esdbclient.StreamState,
        events: Sequence[esdbclient.NewEvent],
        timeout: float | None,
    ) -> tuple[int, int]:
        client = self._client
        position = client.append_events(stream, current_version=expected, events=events, timeout=timeout)
        # esdbclient gives only the position; for so large an append, one more call is cheap.
        last = client.get_stream(stream, backwards=True, limit=1, timeout=timeout)
        return (last[0].stream_position if last else -1), position

    def _current_call(self) -> _Call:
        connection = self._client._connection  # esdbclient replaces it on reconnect
        with self._lock:
            if self._closed:
                raise ServiceUnavailable("the store is closed")
            call = self._call
            if call is None or call.ended or call.connection is not connection:
                if call is not None:
                    call.close()
                channel = connection._grpc_channel
                call = self._call = _Call(connection, channel, self._metadata, self._credentials)
            return call

    def close(self) -> None:
        """End the call; appends still waiting fail with :class:`AppendCallDropped`."""
        with self._lock:
            self._closed = True
            call, self._call = self._call, None
        if call is not None:
            call.close()


def _outcome(
    response: streams_pb2.BatchAppendResp, stream: str, expected: int | esdbclient.StreamState
) -> tuple[int, int]:
    if response.WhichOneof("result") != "success":
        # Raises esdbclient's exception for the in-band error, as its own BatchAppend does.
        BaseStreamsService._convert_batch_append_resp(response, stream, expected)
        raise AssertionError("unreachable: an error answer always raises")  # pragma: no cover
    success = response.success
    has_revision = success.WhichOneof("current_revision_option") == "current_revision"
    return (success.current_revision if has_revision else -1), success.position.commit_position
