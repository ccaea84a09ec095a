"""The event store port over EventStoreDB, through esdbclient's gRPC client.

This module and :mod:`~eventsourcing_cqrs.event_store._esdb_appends` are the only ones that import
esdbclient. They map the port onto EventStoreDB calls:

* Expected versions map one to one (``STREAM_EXISTS`` is esdbclient's ``EXISTS``). Appends go
  over one long-lived BatchAppend call per connection, shared by every thread (see
  ``_esdb_appends``): each answer carries the stream's revision and the commit position, so an
  append is one request, whatever its expected version; an append whose call dropped is sent
  again. A tombstoned stream reports ``StreamIsDeleted`` (Append would report a bare
  ``FailedPrecondition``). A ``NO_STREAM`` append first reads whether its events are already
  there (EventStoreDB answers an idempotent append like a first one).
* Errors are translated in one place, :func:`_translate`, into one line each: wrong expected
  version (actual revision parsed from the server's message), not found, deleted, an append
  over the maximum append or gRPC message size (:class:`~eventsourcing_cqrs.errors.InvalidInputError`
  giving its size), a TLS mismatch (:class:`~eventsourcing_cqrs.errors.EventStoreTLSError` saying
  what to try), deadline exceeded (:class:`~eventsourcing_cqrs.errors.EventStoreTimeoutError`), every
  transient failure (:func:`_is_transient`: UNAVAILABLE, a call cancelled by esdbclient's
  reconnect, discovery failed, aborted, internal, by exception type and gRPC status code, never
  by message text) as :class:`~eventsourcing_cqrs.errors.EventStoreUnavailableError`, anything
  else as :class:`~eventsourcing_cqrs.errors.EventStoreError`.
* :class:`~eventsourcing_cqrs.event_store.port.EventFilter` becomes one server-side regex. EventStoreDB
  filters on event type *or* stream name, never both, so a stream-name filter that excludes
  system events drops ``$``-typed events on the client side.
* Subscriptions run esdbclient's catch-up subscription on a background thread that feeds a
  bounded queue. esdbclient does not resubscribe by itself: when the call drops for a transient
  reason (server restart, network loss, ``ConsumerTooSlow``, the channel closed by a reconnect
  that another call on the shared client triggered) the thread resubscribes after the last
  position it delivered, with backoff, so that nothing is lost or doubled. Caught-up comes from
  the server (23.10+) or, on older servers, from reaching the head read at the start.
* Positions follow EventStoreDB 24.10's rules (the strict test server reproduces them): ``$all``
  is read only from a record's position, so a position the server refuses is an
  :class:`~eventsourcing_cqrs.errors.InvalidInputError` naming ``from_position``; one past every
  log position (2**63 and up, which the server would read as the start) reads nothing forwards
  and from the end backwards; a checkpoint past the log (``Position.End``, which 24.x sends at
  the end of a filtered catch-up that delivered nothing) is dropped, never delivered.
* Clusters: a follower's NotLeader refusal makes the client reconnect to the leader it names
  when the connection string lets it follow (several hosts or ``esdb+discover://`` with
  ``NodePreference=leader``), and is an outage to retry; through a single ``esdb://`` host it
  is a lasting error naming the leader. ``read_stream`` and ``read_all``, which esdbclient
  does not reconnect, get a new channel (rediscovering the leader) after an outage. The
  channels run without grpc-core's transparent retries (see :class:`_Client`).

TLS, certificates and credentials come from the connection string
(``esdb://user:pass@host:2113?Tls=true&tlsCAFile=...``). The connection string is never logged
nor put in an exception message: only the host list is. Connecting checks that the TLS files
it names can be read (and that the CA file holds a certificate), and, for ``Tls=false``, that
the node does not speak TLS (a plaintext client would meet it as an endless outage). Refused
credentials (``UNAUTHENTICATED``) are :class:`~eventsourcing_cqrs.errors.EventStoreAuthenticationError`,
an ACL's refusal (``PERMISSION_DENIED``, BatchAppend's ``AccessDenied``)
:class:`~eventsourcing_cqrs.errors.EventStoreAccessDeniedError`, a TLS mismatch
:class:`~eventsourcing_cqrs.errors.EventStoreTLSError`: none is transient.
"""

from __future__ import annotations

import itertools
import queue
import re
import socket
import ssl
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Self, cast
from urllib.parse import parse_qs, urlsplit

import esdbclient
import grpc
import structlog
from esdbclient.common import AbstractCatchupSubscription, AbstractReadResponse, GrpcOptions
from esdbclient.connection_spec import NODE_PREFERENCE_LEADER, URI_SCHEME_ESDB
from esdbclient.exceptions import (
    AbortedByServer,
    AccessDeniedError,
    CancelledByClient,
    DeadlineExceeded,
    DiscoveryFailed,
    EventStoreDBClientException,
    GrpcError,
    InternalError,
    MaximumAppendSizeExceededError,
    NodeIsNotLeader,
    NotFound,
    ServiceUnavailable,
    SSLError,
    StreamIsDeleted,
    UnknownError,
    WrongCurrentVersion,
)
from grpc.experimental import ChannelOptions

from eventsourcing_cqrs.errors import (
    EventStoreAccessDeniedError,
    EventStoreAuthenticationError,
    EventStoreError,
    EventStoreTimeoutError,
    EventStoreTLSError,
    EventStoreUnavailableError,
    InvalidInputError,
    StreamDeletedError,
    StreamNotFoundError,
    WrongExpectedVersionError,
)
from eventsourcing_cqrs.event_store._esdb_appends import AppendCallDropped, MultiplexedAppends
from eventsourcing_cqrs.event_store.port import (
    AppendResult,
    CaughtUp,
    Checkpoint,
    EventFilter,
    ExpectedVersion,
    NewEvent,
    RecordedEvent,
    StreamName,
    StreamState,
    SubscriptionItem,
    checked_append,
    checked_delete,
    checked_read_all,
    checked_read_stream,
    checked_subscribe,
    validate_seconds,
)

__all__ = ["EsdbEventStore", "EsdbSubscription"]

logger = structlog.get_logger(__name__)

_MAX_WINDOW: Final = 32
_MIN_EXACT_WINDOW: Final = 8
_FIRST_RETRY_DELAY: Final = 0.1
_MAX_RETRY_DELAY: Final = 2.0
_QUEUE_FULL_WAIT: Final = 0.5
#: How long a subscription that delivered everything up to the head read when it started waits
#: for the server's caught-up (EventStoreDB 23.10+, sent after its end-of-catch-up checkpoint)
#: before reporting caught-up itself (a server before 23.10 never sends one).
_CAUGHT_UP_GRACE: Final = 0.5
#: Most items a subscription's reader thread hands over at once (see EsdbSubscription).
_MAX_HANDOVER: Final = 64
#: gRPC status codes that say nothing about the request itself: the connection or the node.
_TRANSIENT_CODES: Final = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
    }
)
#: esdbclient's exceptions for a lost connection or node (SSLError, a ServiceUnavailable, is not:
#: see _is_transient). CancelledByClient arrives when esdbclient reconnected after another
#: call met UNAVAILABLE and closed the channel the call was on.
_TRANSIENT_ERRORS: Final = (
    ServiceUnavailable,
    AbortedByServer,
    InternalError,
    CancelledByClient,
    DeadlineExceeded,
    DiscoveryFailed,
)
#: How many times an append whose call dropped is sent in all, and the pause between two sends.
_APPEND_ATTEMPTS: Final = 3
_APPEND_RETRY_SECONDS: Final = 0.1
_TLS_HINT: Final = (
    "connect with ?Tls=false if the server runs insecure, or give tlsCAFile=... if its "
    "certificate is not signed by a CA this machine trusts"
)
#: esdbclient's file options (upper-cased as it reads them): their spelling, and what they hold.
_TLS_FILE_OPTIONS: Final = {
    "TLSCAFILE": ("tlsCAFile", "the CA certificate (PEM) that signed the server's certificate"),
    "USERCERTFILE": ("UserCertFile", "the user's certificate (PEM)"),
    "USERKEYFILE": ("UserKeyFile", "the user's private key (PEM)"),
}
#: How long a TLS probe (see _answers_tls) waits for each host.
_TLS_PROBE_SECONDS: Final = 0.5
_CREDENTIALS_HINT: Final = (
    "a secure connection (TLS, the default) needs credentials: esdb://user:password@host:2113; "
    "add ?Tls=false to connect without TLS"
)
_INVALID_POSITION: Final = "InvalidPosition"
#: EventStoreDB's log positions are signed 64-bit offsets; a checkpoint above is ``Position.End``
#: (2**64 - 1, which a 24.x server sends at the end of a catch-up that delivered nothing).
_LAST_LOG_POSITION: Final = 2**63 - 1
_LAST_REVISION = re.compile(r"Stream position of last event is (\d+)")
_ACTUAL_VERSION = re.compile(r"Actual version: (-?\d+)")
_EPOCH: Final = datetime.fromtimestamp(0, UTC)


def _esdb_version(expected: ExpectedVersion) -> int | esdbclient.StreamState:
    if expected is StreamState.ANY:
        return esdbclient.StreamState.ANY
    if expected is StreamState.NO_STREAM:
        return esdbclient.StreamState.NO_STREAM
    if expected is StreamState.STREAM_EXISTS:
        return esdbclient.StreamState.EXISTS
    assert isinstance(expected, int)
    return expected


def _actual_revision(message: str) -> int | None:
    """The stream's last revision as the server's wrong-expected-version message gives it."""
    found = _LAST_REVISION.search(message) or _ACTUAL_VERSION.search(message)
    if found is None:
        return None
    revision = int(found.group(1))
    return revision if revision >= 0 else None


def _recorded(event: esdbclient.RecordedEvent) -> RecordedEvent:
    assert event.commit_position is not None, "EventStoreDB 22.10+ always sends positions"
    # Positional arguments, in RecordedEvent's field order: a frozen dataclass's __init__ takes
    # them about a third faster than keywords, and this runs once per event a subscription reads.
    return RecordedEvent(
        event.id,
        event.type,
        event.data,
        event.metadata,
        event.stream_name,
        event.stream_position,
        event.commit_position,
        # esdbclient leaves it unset only when the server omits "created"; 24.x never does.
        event.recorded_at or _EPOCH,
        event.content_type,
    )


def _redacted_targets(uri: str) -> str:
    """``scheme://host:port,...`` without credentials or options, safe to log.

    The hosts are what follows the *last* ``@`` of the whole URI, so that a password holding an
    unencoded ``/``, ``?`` or ``#`` is never taken for a host (an ``@`` in the options gives
    wrong hosts in the message, never a password).
    """
    scheme, _, rest = uri.partition("://")
    hosts = rest.rpartition("@")[2]
    for end in "/?#":
        hosts = hosts.split(end, 1)[0]
    return f"{scheme}://{hosts}"


class _Client(esdbclient.EventStoreDBClient):
    """esdbclient's client on gRPC channels without grpc-core's transparent retries, reading
    server streams on the thread that consumes them.

    grpcio 1.71 can lose the receive completions of a call it retries transparently when the
    new attempt cannot connect (a node that sent GOAWAY on shutdown and now refuses
    connections, as a restart or a leader's failover does): the call ends UNAVAILABLE, but its
    reader waits for a message for ever, which neither ``cancel()`` nor a deadline ends, and
    closing the channel then hangs too. Without transparent retries the call fails with
    UNAVAILABLE, which esdbclient's own retries and this adapter's handle.

    EventStoreDB sends every event of a read or a subscription as a message of its own.
    grpcio's default unary-stream call hands each message from a thread of its own to the
    consumer through a condition variable; with ``SingleThreadedUnaryStream`` the consumer's
    thread takes it off the completion queue itself, which cuts the client's CPU per event of a
    catch-up from about 160 to about 60 µs (``benchmarks/esdb_server_throughput.py``).
    """

    def _construct_grpc_channel(self, grpc_target: str, grpc_options: GrpcOptions = ()) -> grpc.Channel:
        options = (*grpc_options, ("grpc.enable_retries", 0), (ChannelOptions.SingleThreadedUnaryStream, 1))
        return super()._construct_grpc_channel(grpc_target, options)


def _doing(operation: str, stream: str | None) -> str:
    """``operation``, and the stream it was on, for an error message."""
    return operation if stream is None else f"{operation} on stream {stream!r}"


def _translate(
    exc: EventStoreDBClientException,
    *,
    targets: str,
    operation: str,
    stream: str | None = None,
    expected: ExpectedVersion | None = None,
    timeout: float | None = None,
    closed: bool = False,
    append_size: int | None = None,
    user: str | None = None,
    serves_tls: Callable[[], bool] | None = None,
) -> EventStoreError | InvalidInputError:
    """The port's error for an esdbclient exception: one line, naming the operation, never
    the connection string (only ``targets``, which carries no credentials).

    ``user`` (never the password) names who was refused or denied. ``serves_tls``, given for a
    ``Tls=false`` connection, tells whether the node answers a TLS handshake: a plaintext client
    meets a TLS node as a bare ``ServiceUnavailable`` ("Socket closed"), which neither the status
    code nor the exception type tells apart from a node that is down, so the node is asked.
    """
    doing = _doing(operation, stream)
    code = _grpc_code(exc)
    if isinstance(exc, AccessDeniedError) or code is grpc.StatusCode.PERMISSION_DENIED:
        # The port's only stream-less calls read $all (read_all, head_position, subscribe).
        return EventStoreAccessDeniedError(targets, user, doing, stream if stream is not None else "$all")
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return EventStoreAuthenticationError(targets, user, doing)
    if (
        serves_tls is not None
        and isinstance(exc, ServiceUnavailable | DiscoveryFailed)
        and not isinstance(exc, SSLError)
        and serves_tls()
    ):
        return EventStoreTLSError(_plaintext_to_tls_message(targets, doing))
    if isinstance(exc, WrongCurrentVersion):
        return WrongExpectedVersionError(stream or "", expected, _actual_revision(str(exc)))
    if isinstance(exc, NotFound):
        return StreamNotFoundError(stream or "")
    if isinstance(exc, StreamIsDeleted):
        return StreamDeletedError(stream or "")
    if isinstance(exc, MaximumAppendSizeExceededError):
        return InvalidInputError(
            "events", stream, f"the append exceeds EventStoreDB's maximum append size ({_one_line(exc)})"
        )
    if append_size is not None and _grpc_code(exc) is grpc.StatusCode.RESOURCE_EXHAUSTED:
        return InvalidInputError(
            "events",
            stream,
            f"the append is {append_size} bytes, over the maximum gRPC message size of EventStoreDB "
            f"at {targets}; nothing was written (split it into smaller appends)",
        )
    if isinstance(exc, SSLError):
        return EventStoreTLSError(
            f"TLS mismatch with EventStoreDB at {targets} ({doing}): the TLS handshake failed; {_TLS_HINT}."
        )
    if isinstance(exc, DeadlineExceeded):
        limit = f"the {timeout} s deadline" if timeout is not None else "its deadline"
        return EventStoreTimeoutError(f"EventStoreDB at {targets} did not complete {doing} within {limit}.")
    if isinstance(exc, CancelledByClient) and closed:
        return EventStoreError(f"The connection to EventStoreDB at {targets} was closed during {doing}.")
    if isinstance(exc, DiscoveryFailed):
        return EventStoreUnavailableError(
            f"EventStoreDB at {targets} is unavailable ({doing}): {type(exc).__name__}, no cluster node "
            "answered gossip as the node preference requires."
        )
    if isinstance(exc, NodeIsNotLeader):
        return EventStoreError(_not_leader_message(exc, targets, doing))
    if _is_transient(exc):
        return EventStoreUnavailableError(
            f"EventStoreDB at {targets} is unavailable ({doing}): {type(exc).__name__} {_one_line(exc)}"
        )
    return EventStoreError(f"EventStoreDB at {targets} failed {doing}: {type(exc).__name__} {_one_line(exc)}")


def _dotnet_regex(pattern: str) -> str:
    """A Python regex (the port's dialect) in .NET's, which EventStoreDB's filters speak.

    The two agree on everything a stream-name or event-type filter needs except named groups,
    which .NET spells ``(?<name>...)`` and ``\\k<name>`` and Python ``(?P<name>...)`` and
    ``(?P=name)``; .NET refuses the Python spelling. Escapes and character classes are copied
    as they are, so a literal ``(?P<`` inside ``[...]`` or after a backslash stays literal.
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        char = pattern[i]
        if char == "\\":
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            # A "]" right after "[" or "[^" is a literal member, not the end of the class.
            start = i + 2 if pattern.startswith("[^", i) else i + 1
            if start < n and pattern[start] == "]":
                out.append(pattern[i : start + 1])
                i = start + 1
                continue
        elif pattern.startswith("(?P<", i):
            out.append("(?<")
            i += 4
            continue
        elif pattern.startswith("(?P=", i):
            end = pattern.index(")", i)
            out.append(f"\\k<{pattern[i + 4 : end]}>")
            i = end + 1
            continue
        out.append(char)
        i += 1
    return "".join(out)


@dataclass(frozen=True, slots=True)
class _ServerFilter:
    """An EventFilter as esdbclient's filter arguments, plus what must be dropped client-side."""

    include: tuple[str, ...]
    by_stream_name: bool
    drop_system_events: bool

    @classmethod
    def of(cls, event_filter: EventFilter) -> _ServerFilter:
        # esdbclient wraps the include patterns as "^" + "|".join(patterns) + "$": give exactly
        # one pattern so that the wrapping anchors all of it.
        if event_filter.regex is not None:
            pattern = f".*?(?:{_dotnet_regex(event_filter.regex)}).*"
        elif event_filter.prefixes:
            pattern = "(?:" + "|".join(re.escape(p) for p in event_filter.prefixes) + ").*"
        else:
            pattern = ".*"
        by_stream_name = event_filter.by == "stream_name"
        exclude_system = not event_filter.include_system_events
        if exclude_system and not by_stream_name:
            pattern = r"(?!\$)" + pattern
        return cls((pattern,), by_stream_name, exclude_system and by_stream_name)

    def passes(self, event: esdbclient.RecordedEvent) -> bool:
        return not (self.drop_system_events and event.type.startswith("$"))


def _filtered_head(client: esdbclient.EventStoreDBClient, server_filter: _ServerFilter) -> int:
    """Commit position of the last event in ``$all`` that passes ``server_filter`` (0 if none)."""
    response = client.read_all(
        backwards=True,
        filter_exclude=(),
        filter_include=server_filter.include,
        filter_by_stream_name=server_filter.by_stream_name,
        limit=sys.maxsize if server_filter.drop_system_events else 1,
    )
    try:
        for event in response:
            if server_filter.passes(event):
                return event.commit_position or 0
    finally:
        response.stop()
    return 0


def _window(checkpoint_interval: int) -> tuple[int, int]:
    """EventStoreDB's (window size, multiplier) whose product is at most ``checkpoint_interval``."""
    interval = max(1, checkpoint_interval)
    for window in range(min(interval, _MAX_WINDOW), _MIN_EXACT_WINDOW - 1, -1):
        if interval % window == 0:
            return window, interval // window
    window = min(interval, _MAX_WINDOW)
    return window, interval // window


def _grpc_call(exc: BaseException) -> grpc.Call | None:
    """The failed gRPC call an esdbclient exception wraps, if any."""
    for arg in exc.args:
        if isinstance(arg, grpc.Call):
            return arg
    return None


def _grpc_code(exc: BaseException) -> grpc.StatusCode | None:
    call = _grpc_call(exc)
    return None if call is None else call.code()


def _one_line(exc: BaseException) -> str:
    """An esdbclient exception in one line: ``CODE: details`` for a wrapped gRPC call (whose
    ``str`` is a multi-line dump), else its message with the whitespace collapsed."""
    call = _grpc_call(exc)
    if call is not None:
        return f"{call.code().name}: {' '.join(str(call.details() or '').split())}"
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an outage (the connection or node), which a retry may cure.

    Classified by esdbclient's exception types and gRPC status codes, never by message text.

    ``NodeIsNotLeader`` is not, by itself: see :func:`_followed_leader`, which makes it a
    transient failure when the client can follow the leader.
    """
    if isinstance(exc, SSLError):
        return False  # a TLS set-up that does not match the server's: retrying cannot help
    if isinstance(exc, _TRANSIENT_ERRORS):
        return True
    return isinstance(exc, GrpcError) and _grpc_code(exc) in _TRANSIENT_CODES


def _is_invalid_position(exc: BaseException) -> bool:
    """Whether the server refused a ``$all`` position that is not an event's.

    EventStoreDB 24.10 answers a read with ``UNKNOWN "Unexpected (Filtered)ReadAllResult:
    InvalidPosition"`` and a subscription with ``INVALID_ARGUMENT "Trying to read from an
    invalid position."`` (``Streams.Read.cs``, ``RpcExceptions.cs``). Both status codes are
    generic, so the reason in the details is the only thing to go by.
    """
    if isinstance(exc, UnknownError):
        return _INVALID_POSITION in _one_line(exc)
    return _grpc_code(exc) is grpc.StatusCode.INVALID_ARGUMENT and "invalid position" in _one_line(exc)


def _invalid_position(position: int) -> InvalidInputError:
    return InvalidInputError(
        "from_position",
        position,
        "EventStoreDB reads $all only from the commit position of an event (or 0, the start): "
        "give one that an event, a checkpoint or an append reported",
    )


def _followed_leader(client: esdbclient.EventStoreDBClient, exc: BaseException) -> bool:
    """After a follower refused a call that needs the leader: reconnect ``client`` to the leader
    it named and return True, if the connection string lets the client follow the leader.

    esdbclient follows the leader itself only in the calls it wraps in ``autoreconnect``;
    ``read_stream`` and ``read_all`` are not, so a client whose leader became a follower (the
    old leader restarted on the same address) is refused there until some other call
    reconnects. Following it here makes that refusal an outage that a retry gets past. A single
    ``esdb://`` host, or ``NodePreference`` other than leader, cannot follow: the refusal is then
    the lasting error :func:`_translate` gives, naming the leader (every retry would meet it).
    """
    if not isinstance(exc, NodeIsNotLeader):
        return False
    spec = client.connection_spec
    if spec.options.NodePreference != NODE_PREFERENCE_LEADER or (
        spec.scheme == URI_SCHEME_ESDB and len(spec.targets) == 1
    ):
        return False
    leader = _named_leader(exc)  # None: rediscover through gossip
    logger.info("event_store.following_leader", leader=leader)
    try:
        client.reconnect(leader)
    except EventStoreDBClientException:
        return True  # discovery failed for now: still an outage, the next retry rediscovers
    return True


def _named_leader(exc: NodeIsNotLeader) -> str | None:
    """The leader's ``host:port`` a follower's refusal names, ``None`` if its trailers do not."""
    try:
        return str(exc.leader_grpc_target)
    except KeyError:
        return None


def _not_leader_message(exc: NodeIsNotLeader, targets: str, doing: str) -> str:
    """What to do about a follower's refusal of a call that needs the leader, naming the leader."""
    leader = _named_leader(exc)
    where = f"the leader is at {leader}" if leader else "the leader's endpoint was not given"
    return (
        f"EventStoreDB at {targets} refused {doing}: the node is not the cluster's leader ({where}). "
        "Writes (and reads with NodePreference=leader) need the leader: connect to it, or give every "
        "node (esdb://host1:2113,host2:2113,...) or esdb+discover:// with NodePreference=leader "
        "(the default) so that the client follows the leader."
    )


def _append_size(events: Sequence[esdbclient.NewEvent]) -> int:
    return sum(len(event.data) + len(event.metadata) + len(event.type) for event in events)


def _uri_options(uri: str) -> dict[str, str]:
    """The connection string's query options as esdbclient reads them: upper-cased keys, the
    first value of a repeated key."""
    return {key.upper(): values[0] for key, values in parse_qs(urlsplit(uri).query).items()}


def _check_credentials(uri: str, targets: str) -> None:
    """Refuse a TLS connection string without credentials, saying what to write instead
    (esdbclient says only "Username and password are required")."""
    parts = urlsplit(uri)
    if parts.scheme not in ("esdb", "esdb+discover"):
        return
    if _uri_options(uri).get("TLS", "true").lower() != "true":
        return
    if not parts.username or not parts.password:
        raise InvalidInputError("event store URI", targets, _CREDENTIALS_HINT)


def _check_tls_files(uri: str, targets: str) -> None:
    """Refuse a ``tlsCAFile``, ``UserCertFile`` or ``UserKeyFile`` that cannot be read, and a CA
    file without a certificate, naming the option, the file and the servers: esdbclient raises a
    bare ``OSError`` when it opens one, and a CA file that holds no certificate makes every later
    call fail as a TLS error that does not name it. (esdbclient reads them even with Tls=false.)"""
    options = _uri_options(uri)
    for key, (option, what) in _TLS_FILE_OPTIONS.items():
        path = options.get(key)
        if not path:
            continue
        try:
            with open(path, "rb"):
                pass
            if key == "TLSCAFILE":
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
        except ssl.SSLError:
            problem = "it holds no PEM certificate"
        except OSError as exc:
            problem = f"it cannot be read ({exc.strerror or type(exc).__name__})"
        else:
            continue
        raise InvalidInputError(
            f"{option} option",
            path,
            f"{problem}, so there is no TLS connection to EventStoreDB at {targets}; give the path of {what}",
        )


def _answers_tls(target: str, timeout: float = _TLS_PROBE_SECONDS) -> bool:
    """Whether ``host:port`` completes a TLS handshake (its certificate unchecked: only whether it
    speaks TLS). A plaintext gRPC server drops the ClientHello; a closed port refuses."""
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # nothing is sent: the probe only looks for a handshake
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, int(port)), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            return True
    except (OSError, ValueError):
        return False


def _tls_probe(uri: str) -> Callable[[], bool] | None:
    """For a ``Tls=false`` connection string: a check of whether any of its hosts speaks TLS."""
    spec = esdbclient.connection_spec.ConnectionSpec(uri)
    if spec.options.Tls is True:
        return None
    targets = tuple(spec.targets)
    return lambda: any(_answers_tls(target) for target in targets)


def _plaintext_to_tls_message(targets: str, doing: str) -> str:
    return (
        f"TLS mismatch with EventStoreDB at {targets} ({doing}): the server speaks TLS but the "
        "connection string says Tls=false; drop Tls=false, give user:password@ and, unless a CA "
        "this machine trusts signed the server's certificate, tlsCAFile=..."
    )


class EsdbEventStore:
    """The event store port on EventStoreDB (single node or cluster), via esdbclient.

    ``uri`` is an esdbclient connection string, e.g. ``esdb://localhost:2113?Tls=false`` or
    ``esdb+discover://admin:changeit@cluster.local:2113?tlsCAFile=ca.crt``. ``timeout`` is the
    deadline in seconds for each write and each point read (``stream_version``,
    ``head_position``, the first page of ``read_stream``); streaming reads and subscriptions
    have none. Without it, writes use the URI's ``DefaultDeadline``, if any. An append that
    gets no answer within ``timeout`` raises
    :class:`~eventsourcing_cqrs.errors.EventStoreTimeoutError` then (it may still be carried
    out: send it again, which is safe, as appends are idempotent); esdbclient retries the other
    calls that time out (up to four attempts, 0.1 s apart), so their error arrives after about
    ``4 * timeout + 0.3`` seconds.

    It is thread-safe: one gRPC channel serves every thread and subscription.
    """

    def __init__(
        self,
        uri: str,
        *,
        timeout: float | None = None,
        subscription_buffer: int = 256,
    ) -> None:
        if not isinstance(uri, str) or not uri:
            raise InvalidInputError("event store URI", uri, "give an esdb:// connection string")
        if timeout is not None:
            validate_seconds(timeout, "timeout")
        if (
            isinstance(subscription_buffer, bool)
            or not isinstance(subscription_buffer, int)
            or subscription_buffer < 1
        ):
            raise InvalidInputError(
                "subscription_buffer", subscription_buffer, "give a positive number of items"
            )
        self._targets = _redacted_targets(uri)
        _check_credentials(uri, self._targets)
        _check_tls_files(uri, self._targets)
        self._user: str | None = None
        self._serves_tls: Callable[[], bool] | None = None
        try:
            self._user = urlsplit(uri).username
            self._serves_tls = _tls_probe(uri)
            self._client = _Client(uri)
        except ValueError as exc:
            # esdbclient quotes the whole URI, credentials included: keep its message out.
            reason = str(exc).replace(uri, self._targets)
            raise InvalidInputError("event store URI", self._targets, reason) from None
        except EventStoreDBClientException as exc:
            # esdb+discover:// reads the cluster's gossip here: DiscoveryFailed and friends.
            raise _translate(
                exc, targets=self._targets, operation="connect", user=self._user, serves_tls=self._serves_tls
            ) from None
        # A plaintext client would meet a TLS node as an outage, retried for ever: ask it now.
        probe = self._serves_tls if self._client.connection_spec.scheme == URI_SCHEME_ESDB else None
        if probe is not None and probe():
            self._client.close()
            raise EventStoreTLSError(_plaintext_to_tls_message(self._targets, "connect"))
        self._timeout = timeout
        self._appends = MultiplexedAppends(self._client)
        self._append_timeout = (
            timeout if timeout is not None else self._client.connection_spec.options.DefaultDeadline
        )
        # Its call (and the server's worker serving it) would outlive a store dropped unclosed.
        weakref.finalize(self, self._appends.close)
        self._subscription_buffer = subscription_buffer
        self._subscriptions: weakref.WeakSet[EsdbSubscription] = weakref.WeakSet()
        self._closed = False
        logger.info("event_store.connected", store="esdb", targets=self._targets)

    def __repr__(self) -> str:
        return f"EsdbEventStore({self._targets!r})"

    # -- errors ---------------------------------------------------------------------------

    @contextmanager
    def _translated(
        self,
        operation: str,
        stream: str | None = None,
        expected: ExpectedVersion | None = None,
        *,
        append_size: int | None = None,
        position: int | None = None,
        reconnect: bool = False,
    ) -> Iterator[None]:
        """Turn esdbclient's exceptions into the port's, naming what was being done.

        ``reconnect`` is for the calls esdbclient does not wrap in its own reconnect
        (``read_stream``, ``read_all``): after an outage they would stay on a channel whose
        node is gone (or in gRPC's connect backoff, up to two minutes), so the client gets a
        new one, rediscovering the cluster's leader when it knows several nodes.
        """
        try:
            yield
        except EventStoreDBClientException as exc:
            if position is not None and _is_invalid_position(exc):
                raise _invalid_position(position) from None
            if reconnect and isinstance(exc, ServiceUnavailable) and not self._closed:
                with suppress(EventStoreDBClientException):  # still down: the next retry tries again
                    self._client.reconnect()
            if _followed_leader(self._client, exc):
                raise EventStoreUnavailableError(
                    f"EventStoreDB at {self._targets} did not complete {_doing(operation, stream)}: "
                    "the node was no longer the leader; the client has reconnected to the leader it "
                    "named, so a retry goes there."
                ) from exc
            raise _translate(
                exc,
                targets=self._targets,
                operation=operation,
                stream=stream,
                expected=expected,
                timeout=self._timeout,
                closed=self._closed,
                append_size=append_size,
                user=self._user,
                serves_tls=self._serves_tls,
            ) from exc
        except ValueError as exc:
            # grpcio raises a bare ValueError for a call on a channel that esdbclient's reconnect
            # (from another thread's call) has just closed. The port checked every argument
            # before the call, so that is the only ValueError a call can raise: an outage, which
            # a retry (on the new channel) gets past.
            if self._closed:
                raise EventStoreError(f"EventStoreDB at {self._targets}: the store is closed.") from exc
            raise EventStoreUnavailableError(
                f"EventStoreDB at {self._targets} did not complete {_doing(operation, stream)}: "
                "its connection was being re-established."
            ) from exc

    # -- writing --------------------------------------------------------------------------

    def append(
        self,
        stream: str,
        events: Sequence[NewEvent],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        """Append ``events`` atomically if ``stream`` is at ``expected_version`` (see the port)."""
        name, expected, new = checked_append(stream, events, expected_version)
        # EventStoreDB answers an idempotent append like a first one: for a creation, whether
        # its events are already there is read first (see AppendResult.already_written).
        rewrite = expected is StreamState.NO_STREAM and bool(new) and self._first_event_id(name) == new[0].id
        esdb_events = [
            esdbclient.NewEvent(
                type=event.type,
                data=event.data,
                metadata=event.metadata,
                content_type=cast("esdbclient.ContentType", event.content_type),
                id=event.id,
            )
            for event in new
        ]
        size = _append_size(esdb_events)
        with self._translated("append", name, expected, append_size=size):
            revision, position = self._appended(name, _esdb_version(expected), esdb_events, size)
        logger.debug(
            "event_store.appended",
            stream=name,
            revision=revision,
            commit_position=position,
            count=len(new),
            already_written=rewrite,
        )
        return AppendResult(name, revision, position, already_written=rewrite)

    def _first_event_id(self, stream: str) -> uuid.UUID | None:
        """The id of ``stream``'s first event, ``None`` if it has none."""
        try:
            with self._translated("append", stream):
                first = self._client.get_stream(stream, limit=1, timeout=self._timeout)
        except StreamNotFoundError:
            return None
        return first[0].id if first else None

    def _appended(
        self,
        stream: str,
        expected: int | esdbclient.StreamState,
        events: list[esdbclient.NewEvent],
        size: int,
    ) -> tuple[int, int]:
        """The stream's revision and the commit position after appending ``events``.

        The append goes over the store's multiplexed BatchAppend call. One whose call dropped
        before its answer came (a restart, a lost connection, a failover) is sent again, up to
        :data:`_APPEND_ATTEMPTS` times in all: the same event ids at the same expected version
        are written at most once, so a retry either writes them or finds them written.
        """
        for attempt in range(1, _APPEND_ATTEMPTS + 1):
            if self._closed:
                raise EventStoreError(f"EventStoreDB at {self._targets}: the store is closed.")
            try:
                return self._appends.append(stream, expected, events, self._append_timeout, size)
            except AppendCallDropped as dropped:
                cause = dropped.cause
                if attempt == _APPEND_ATTEMPTS or self._closed:
                    raise cause from None
                if _followed_leader(self._client, cause):
                    continue
                if not _is_transient(cause):
                    raise cause from None
                if isinstance(cause, ServiceUnavailable) and self._client._connection is dropped.connection:
                    # A new channel (rediscovering the leader of a cluster), unless another
                    # thread's retry has already made one.
                    with suppress(EventStoreDBClientException):
                        self._client.reconnect()
                logger.info(
                    "event_store.append_retried", stream=stream, attempt=attempt, reason=_one_line(cause)
                )
                time.sleep(_APPEND_RETRY_SECONDS)
        raise AssertionError("unreachable")  # pragma: no cover

    def delete_stream(self, stream: str, *, expected_version: ExpectedVersion) -> None:
        """Soft-delete ``stream``: it reads as not found and may be written again."""
        name, expected = checked_delete(stream, expected_version)
        with self._translated("delete", name, expected):
            self._client.delete_stream(name, current_version=_esdb_version(expected), timeout=self._timeout)
        logger.info("event_store.stream_deleted", stream=name)

    def tombstone_stream(self, stream: str, *, expected_version: ExpectedVersion) -> None:
        """Tombstone ``stream``: it can never be read or written again."""
        name, expected = checked_delete(stream, expected_version)
        try:
            with self._translated("tombstone", name, expected):
                self._client.tombstone_stream(
                    name, current_version=_esdb_version(expected), timeout=self._timeout
                )
        except StreamNotFoundError as exc:
            # esdbclient reports "actual version -1" as NotFound; for a tombstone it is a
            # wrong expected version (STREAM_EXISTS or a revision on a stream with no events).
            raise WrongExpectedVersionError(name, expected, None) from exc
        logger.info("event_store.stream_tombstoned", stream=name)

    # -- reading --------------------------------------------------------------------------

    def read_stream(
        self,
        stream: str,
        *,
        from_revision: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
    ) -> Iterator[RecordedEvent]:
        """Events of one stream; raises :class:`StreamNotFoundError` / :class:`StreamDeletedError`
        when called. Later pages are fetched as the iterator is consumed.
        """
        name, from_revision, backwards, limit = checked_read_stream(stream, from_revision, backwards, limit)
        with self._translated("read_stream", name, reconnect=True):
            response = self._client.read_stream(
                name,
                stream_position=from_revision,
                backwards=backwards,
                limit=sys.maxsize if limit is None else limit,
                timeout=None,
            )
            events = iter(response)
            first = self._first_event(response, events, f"read_stream on stream {name!r}")
        if first is None:
            response.stop()
            return iter(())
        return self._stream_rest(name, first, events, response)

    def _first_event(
        self, response: AbstractReadResponse, events: Iterator[esdbclient.RecordedEvent], doing: str
    ) -> esdbclient.RecordedEvent | None:
        """The first event of a read, ``None`` at its end, waiting at most ``timeout`` for it.

        Without a timeout the wait is unbounded and costs nothing. With one, a timer cancels the
        call if no first answer came in time; :class:`EventStoreTimeoutError` is raised then.
        """
        if self._timeout is None:
            return next(events, None)
        lock = threading.Lock()
        answered = expired = False

        def expire() -> None:
            nonlocal expired
            with lock:
                if answered:
                    return
                expired = True
            response.stop()  # esdbclient ends a cancelled read as an empty one

        timer = threading.Timer(self._timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            first = next(events, None)
        except (EventStoreDBClientException, ValueError):
            if not expired:
                raise
            first = None
        finally:
            with lock:
                answered = True
            timer.cancel()
        if expired:
            raise EventStoreTimeoutError(
                f"EventStoreDB at {self._targets} did not answer {doing} within the "
                f"{self._timeout} s deadline."
            )
        return first

    def _stream_rest(
        self,
        stream: str,
        first: esdbclient.RecordedEvent,
        events: Iterator[esdbclient.RecordedEvent],
        response: AbstractReadResponse,
    ) -> Iterator[RecordedEvent]:
        try:
            yield _recorded(first)
            with self._translated("read_stream", stream, reconnect=True):
                for event in events:
                    yield _recorded(event)
        finally:
            response.stop()

    def read_all(
        self,
        *,
        from_position: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        filter: EventFilter | None = None,
    ) -> Iterator[RecordedEvent]:
        """Events of ``$all`` in commit order, filtered on the server (see the port)."""
        from_position, backwards, limit, predicate = checked_read_all(from_position, backwards, limit, filter)
        server_filter = _ServerFilter.of(predicate)
        return self._read_all(from_position, backwards, limit, server_filter)

    def _read_all(
        self,
        from_position: int | None,
        backwards: bool,
        limit: int | None,
        server_filter: _ServerFilter,
    ) -> Iterator[RecordedEvent]:
        if limit == 0 or (backwards and from_position == 0):
            return
        position = from_position or None  # 0 is the start of $all: ask for the start itself
        if position is not None and position > _LAST_LOG_POSITION:
            # Past every log position (EventStoreDB would refuse it as InvalidPosition):
            # forwards there is nothing, backwards that is from the end.
            if not backwards:
                return
            position = None
        server_limit = sys.maxsize if limit is None or server_filter.drop_system_events else limit
        with self._translated("read_all", position=position, reconnect=True):
            response = self._client.read_all(
                commit_position=position,
                backwards=backwards,
                filter_exclude=(),
                filter_include=server_filter.include,
                filter_by_stream_name=server_filter.by_stream_name,
                limit=server_limit,
            )
        try:
            count = 0
            with self._translated("read_all", position=position, reconnect=True):
                events = iter(response)
                first = self._first_event(response, events, "read_all")
                for event in itertools.chain(() if first is None else (first,), events):
                    if not server_filter.passes(event):
                        continue
                    yield _recorded(event)
                    count += 1
                    if limit is not None and count >= limit:
                        return
        finally:
            response.stop()

    def stream_version(self, stream: str) -> int | None:
        """The stream's last revision, ``None`` if it has none or was soft-deleted."""
        name = StreamName(stream)
        try:
            with self._translated("stream_version", name):
                last = self._client.get_stream(name, backwards=True, limit=1, timeout=self._timeout)
        except StreamNotFoundError:
            return None
        # An undeleted stream whose events are all truncated reads as empty.
        return last[0].stream_position if last else None

    def head_position(self, filter: EventFilter | None = None) -> int:
        """Commit position of the last event passing ``filter`` (0 if none)."""
        last = next(self.read_all(backwards=True, limit=1, filter=filter), None)
        return 0 if last is None else last.position

    def subscribe(
        self,
        *,
        from_position: int | None = None,
        filter: EventFilter | None = None,
        checkpoint_interval: int = 150,
    ) -> EsdbSubscription:
        """A catch-up subscription to ``$all`` after ``from_position`` (exclusive)."""
        from_position, predicate, checkpoint_interval = checked_subscribe(
            from_position, filter, checkpoint_interval
        )
        subscription = EsdbSubscription(
            self._client,
            from_position=from_position,
            server_filter=_ServerFilter.of(predicate),
            window=_window(checkpoint_interval),
            buffer_size=self._subscription_buffer,
            targets=self._targets,
        )
        self._subscriptions.add(subscription)
        return subscription

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every subscription and close the channel; idempotent."""
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.stop()
        self._appends.close()
        self._client.close()
        logger.info("event_store.closed", store="esdb", targets=self._targets)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class _Failure:
    error: Exception


class _Stop:
    pass


_STOP: Final = _Stop()

_QueueItem = list[SubscriptionItem] | _Failure | _Stop


class EsdbSubscription:
    """A :class:`~eventsourcing_cqrs.event_store.port.Subscription` over esdbclient's catch-up
    subscription, resubscribing after the last delivered position when the call drops.

    A background thread reads the gRPC stream into a bounded queue (so a slow consumer applies
    back-pressure instead of growing memory). Positions only move forward: an event or
    checkpoint at or before the last delivered position is never delivered again, and only the
    first caught-up is reported.

    The reader hands items over in lists, so that the consumer is woken once per list rather
    than once per event: while catching up it fills a list of up to ``buffer_size // 4`` items
    (at most 64), and hands it over when it is full, on caught-up, once it has reached the head
    read at the start, or when the call drops or fails; once caught up, every item is handed
    over as it arrives (a live event is never held back). The queue holds at most
    ``buffer_size`` items in such lists; with the list being filled and the one being consumed,
    at most one and a half times ``buffer_size`` items are buffered.

    Every transient failure (see :func:`_is_transient`: the node unavailable or restarting, the
    call cancelled by esdbclient's reconnect after another call met UNAVAILABLE, discovery
    failed, a deadline, an abort) makes it resubscribe after the last delivered position, with
    backoff, for as long as it takes; any other failure is raised, translated, by ``poll``.

    Caught-up is reported when the server says so (EventStoreDB 23.10+), or else once the
    consumer has received everything up to the last event that passed the filter when the
    subscription started (read just before subscribing) and the server stayed silent about it
    for ``_CAUGHT_UP_GRACE`` seconds: servers before 23.10 never send caught-up, and without it
    ``run(until_caught_up=True)`` would never end. Such a caught-up carries the position the
    consumer last received, so nothing after it is skipped.
    """

    def __init__(
        self,
        client: esdbclient.EventStoreDBClient,
        *,
        from_position: int | None,
        server_filter: _ServerFilter,
        window: tuple[int, int],
        buffer_size: int,
        targets: str,
    ) -> None:
        self._client = client
        self._position = from_position or 0
        self._filter = server_filter
        self._window_size, self._multiplier = window
        # A C-level SimpleQueue wakes the consumer far more cheaply than queue.Queue; the
        # reader thread bounds it itself (see _put) so that memory stays flat. It carries lists
        # of items: one wake-up of the consumer per list, not per event.
        self._queue: queue.SimpleQueue[_QueueItem] = queue.SimpleQueue()
        capacity = max(1, buffer_size)
        self._handover_size = max(1, min(_MAX_HANDOVER, capacity // 4))
        self._capacity = max(1, capacity // self._handover_size)  # lists in the queue
        # Reader thread only: the items not yet handed over.
        self._pending: list[SubscriptionItem] = []
        # Consumer side only: the list being consumed, reversed (pop() takes the next item).
        self._received_items: list[SubscriptionItem] = []
        self._space = threading.Event()
        self._stopped = threading.Event()
        self._caught_up = False
        # Written by the reader thread once (before subscribing), read by the consumer.
        self._head: int | None = None
        # Reader thread only: a position known to be in $all (see _resumable).
        self._known_in_log = self._position
        # Consumer side: the last position poll() returned, when it reached the head.
        self._consumed = self._position
        self._head_reached_at: float | None = None
        self._targets = targets
        self._current: AbstractCatchupSubscription | None = None
        self._lock = threading.Lock()
        self._log = logger.bind(targets=targets, from_position=from_position)
        self._thread = threading.Thread(target=self._run, name="esdb-subscription", daemon=True)
        self._thread.start()

    # -- the reader thread ----------------------------------------------------------------

    def _run(self) -> None:
        delay = _FIRST_RETRY_DELAY
        attempt = 0
        while not self._stopped.is_set():
            items = self._subscribe(attempt)
            try:
                for item in items:
                    if not self._deliver(item):
                        return
                    delay = _FIRST_RETRY_DELAY
            except EventStoreDBClientException as exc:
                if self._stopped.is_set():
                    return
                if not _is_transient(exc) and not _followed_leader(self._client, exc):
                    self._fail(exc)
                    return
                if not self._dropped(exc, delay):
                    return
            except ValueError as exc:
                # grpcio raises a bare ValueError for a call on a channel that esdbclient's
                # reconnect (from another thread's call) has just closed. Once a subscription
                # with these same arguments was accepted, that is the only ValueError left.
                if self._stopped.is_set():
                    return
                if not attempt:
                    self._fail(exc)
                    return
                if not self._dropped(exc, delay):
                    return
            except Exception as exc:  # noqa: BLE001 - the consumer must see every failure
                self._fail(exc)
                return
            finally:
                items.close()
            attempt += 1
            if self._stopped.wait(delay):
                return
            delay = min(delay * 2, _MAX_RETRY_DELAY)

    def _dropped(self, exc: Exception, delay: float) -> bool:
        """Log a transient drop and hand over what was read before it; False once stopped."""
        self._log.warning(
            "event_store.subscription_dropped",
            commit_position=self._position,
            error=type(exc).__name__,
            retry_in=delay,
        )
        return self._hand_over()

    def _subscribe(self, attempt: int) -> Generator[esdbclient.RecordedEvent, None, None]:
        if not self._caught_up and self._head is None:
            self._head = _filtered_head(self._client, self._filter)
        # Past every log position a 24.10 server would start again at the *first* event
        # (the position wraps to a negative one): subscribe from the end instead. As on the
        # embedded stores nothing is ever delivered: _deliver drops every position before it.
        beyond_log = self._position > _LAST_LOG_POSITION
        subscription = self._client.subscribe_to_all(
            commit_position=None if beyond_log else self._position or None,
            from_end=beyond_log,
            filter_exclude=(),
            filter_include=self._filter.include,
            filter_by_stream_name=self._filter.by_stream_name,
            include_checkpoints=True,
            include_caught_up=True,
            window_size=self._window_size,
            checkpoint_interval_multiplier=self._multiplier,
        )
        with self._lock:
            self._current = subscription
        if self._stopped.is_set():
            subscription.stop()
            return
        if attempt:
            self._log.info("event_store.subscription_resumed", commit_position=self._position)
        try:
            yield from subscription
        finally:
            subscription.stop()
        if not self._stopped.is_set():
            raise ServiceUnavailable("The subscription ended without being stopped.")

    def _deliver(self, item: esdbclient.RecordedEvent) -> bool:
        """Pass on what the consumer must see (see the class for when); False once stopped."""
        position = item.commit_position
        # The common case first, with the checks inlined: this runs once per event.
        if type(item) is esdbclient.RecordedEvent:
            if position is None or position <= self._position:
                return True
            if not (self._filter.drop_system_events and item.type.startswith("$")):
                self._pending.append(_recorded(item))
        elif isinstance(item, esdbclient.CaughtUp):
            with self._lock:
                if self._caught_up:
                    return True
                self._caught_up = True
            self._pending.append(CaughtUp(self._position or None))
            return self._hand_over()
        elif position is None or position <= self._position:
            return True
        elif isinstance(item, esdbclient.Checkpoint):
            if not self._resumable(position):
                return True
            self._pending.append(Checkpoint(position))
        elif self._filter.passes(item):
            self._pending.append(_recorded(item))
        self._position = position
        self._known_in_log = max(self._known_in_log, position)
        if (
            self._caught_up
            or len(self._pending) >= self._handover_size
            or (self._head is not None and position >= self._head)
        ):
            return self._hand_over()
        return True

    def _hand_over(self) -> bool:
        """Queue the pending items, if any, as one list; False once stopped."""
        if not self._pending:
            return not self._stopped.is_set()
        items, self._pending = self._pending, []
        return self._put(items)

    def _resumable(self, checkpoint: int) -> bool:
        """Whether a checkpoint is a position of $all that a subscription may resume after.

        A 24.x server ends a filtered catch-up that delivered nothing with ``Position.End``, and
        servers before 22.10 sent checkpoints past the last event: resuming after either would
        skip every later event. Such a checkpoint is dropped (the previous one stands); one
        above every position seen so far costs one read of the head, then no more until the
        log grows past it.
        """
        if checkpoint <= self._known_in_log:
            return True
        if checkpoint <= _LAST_LOG_POSITION:
            head = self._client.get_commit_position(filter_exclude=())
            self._known_in_log = max(self._known_in_log, head)
            if checkpoint <= head:
                return True
        self._log.warning("event_store.checkpoint_dropped", checkpoint=checkpoint, head=self._known_in_log)
        return False

    def _put(self, item: _QueueItem) -> bool:
        while self._queue.qsize() >= self._capacity and not self._stopped.is_set():
            self._space.clear()
            if self._queue.qsize() >= self._capacity:
                self._space.wait(_QUEUE_FULL_WAIT)
        if self._stopped.is_set():
            return False
        self._queue.put(item)
        return True

    def _fail(self, exc: Exception) -> None:
        self._log.error(
            "event_store.subscription_failed",
            commit_position=self._position,
            error=type(exc).__name__,
        )
        if _is_invalid_position(exc):
            error: Exception = _invalid_position(self._position)
        elif isinstance(exc, EventStoreDBClientException):
            error = _translate(
                exc,
                targets=self._targets,
                operation=f"the subscription to $all after position {self._position}",
            )
        else:
            error = EventStoreError(
                f"The subscription to $all failed after position {self._position}: "
                f"{type(exc).__name__} {_one_line(exc)}"
            )
        error.__cause__ = exc
        # What was read before the failure comes first, as it would have without batching.
        if self._hand_over():
            self._put(_Failure(error))

    # -- the consumer side ----------------------------------------------------------------

    def __iter__(self) -> Iterator[SubscriptionItem]:
        return self

    def __next__(self) -> SubscriptionItem:
        while True:
            item = self.poll(3600.0)
            if item is not None:
                return item
            if self._stopped.is_set():
                raise StopIteration

    def poll(self, timeout: float) -> SubscriptionItem | None:
        """The next item, or ``None`` if none arrives within ``timeout`` seconds (or if stopped).

        Raises the translated error if the subscription failed for a reason that resubscribing
        cannot cure (e.g. an invalid filter).
        """
        if self._stopped.is_set():
            return None
        if not self._caught_up:
            return self._poll_catching_up(timeout)
        if self._received_items:
            return self._received_items.pop()
        try:
            item = self._queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None
        return self._received(item)

    def _received(self, item: _QueueItem) -> SubscriptionItem | None:
        """The first item of what came from the queue; the rest wait in ``_received_items``."""
        self._space.set()
        if self._stopped.is_set() or isinstance(item, _Stop):
            return None
        if isinstance(item, _Failure):
            self._stopped.set()
            raise item.error
        item.reverse()
        first = item.pop()
        self._received_items = item
        return first

    def _poll_catching_up(self, timeout: float) -> SubscriptionItem | None:
        """``poll`` before caught-up: also watches for the head read at the start."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            wait = deadline - time.monotonic()
            due = self._own_caught_up_due()
            if due is not None and due <= 0:
                with self._lock:
                    if not self._caught_up:
                        self._caught_up = True
                        return CaughtUp(self._consumed or None)
            elif due is not None:
                wait = min(wait, due)
            if self._received_items:
                received: SubscriptionItem | None = self._received_items.pop()
            else:
                try:
                    item = self._queue.get(timeout=max(wait, 0.0))
                except queue.Empty:
                    if time.monotonic() >= deadline:
                        return None
                    continue
                received = self._received(item)
            if isinstance(received, RecordedEvent | Checkpoint):
                self._consumed = received.position
            return received

    def _own_caught_up_due(self) -> float | None:
        """Seconds until this side reports caught-up (see the class), ``None`` if not yet known."""
        head = self._head
        if head is None or self._consumed < head:
            return None
        now = time.monotonic()
        if self._head_reached_at is None:
            self._head_reached_at = now
        return self._head_reached_at + _CAUGHT_UP_GRACE - now

    def stop(self) -> None:
        """End the subscription; a blocked iteration returns promptly."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self._space.set()
        with self._lock:
            current = self._current
        if current is not None:
            current.stop()
        with suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        self._queue.put(_STOP)

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called or the subscription failed."""
        return self._stopped.is_set()

    @property
    def position(self) -> int:
        """The last position the reader passed on (events and checkpoints), queued or about
        to be."""
        return self._position

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
