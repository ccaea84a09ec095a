"""The ``event_store.client.streams.Streams`` gRPC service of the test server.

Each handler follows GRPC_SPEC.md section by section: Read (§8 to §10), Append (§5), BatchAppend
(§6), Delete and Tombstone (§7). Errors are raised the way EventStoreDB raises them for that call
(in-band for BatchAppend, an OK-status ``wrong_expected_version`` for Append, FAILED_PRECONDITION
with trailers for Delete/Tombstone and deleted-stream reads), because esdbclient maps exceptions
from exactly those shapes.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

import grpc
from esdbclient.protos.Grpc import code_pb2, shared_pb2, status_pb2, streams_pb2
from google.protobuf import any_pb2, empty_pb2
from google.protobuf.message import Message

from eventsourcing_cqrs.testing.esdb_server._dotnet_regex import DotnetRegexError, compile_dotnet
from eventsourcing_cqrs.testing.esdb_server._interceptors import abort
from eventsourcing_cqrs.testing.esdb_server._log import (
    ANY,
    DELETED_STREAM_NUMBER,
    LINK_TYPE,
    NO_STREAM,
    STREAM_EXISTS,
    Log,
    Outcome,
    ProposedEvent,
    Record,
    StreamDeleted,
    Written,
    WrongVersion,
)
from eventsourcing_cqrs.testing.esdb_server._security import ALL_STREAM, Access, Security

SERVICE_NAME: Final = "event_store.client.streams.Streams"
DEFAULT_MAX_APPEND_SIZE: Final = 1_048_576

_ReadResp = streams_pb2.ReadResp
#: What Read's handlers yield: a message, or an event's response already serialized (cached).
_ReadOut = _ReadResp | bytes
_RecordedEvent = streams_pb2.ReadResp.ReadEvent.RecordedEvent
_UINT64_MAX: Final = 2**64 - 1
_CHUNK: Final = 256
_CATCH_UP_PAGE_MATCHES: Final = 32
_DEFAULT_WINDOW: Final = 32
_IDLE_WAIT_SECONDS: Final = 1.0
_LATENCY_STEP: Final = 0.01
_CONSUMER_TOO_SLOW: Final = (
    "Operation timed out: Consumer too slow to handle event while live. Client resubscription required."
)
_HANDLER_EXCEPTION: Final = "Exception was thrown by handler."
_INT64_LIMIT: Final = 2**63
# Strict mode texts, from EventStoreDB 24.10 RpcExceptions.cs (UnknownError, InvalidPositionException)
# and BatchAppend's Status.BadRequest(ex.Message) for WriteEvents' ArgumentOutOfRangeException.
_INVALID_POSITION: Final = "Trying to read from an invalid position."
_INVALID_STREAM_ID: Final = (
    "Specified argument was out of the range of valid values. (Parameter 'eventStreamId')"
)
_REQUIRED_METADATA: Final = ("type", "content-type")
_JSON: Final = "application/json"
_BINARY: Final = "application/octet-stream"


class _BadRequestError(ValueError):
    """A proposed event the server cannot accept (bad id, empty type, missing metadata key)."""

    def __init__(self, message: str, missing_property: str | None = None) -> None:
        super().__init__(message)
        self.missing_property = missing_property


# ---------------------------------------------------------------------------- conversions


def _abort_deleted(context: grpc.ServicerContext, stream: str) -> NoReturn:
    abort(
        context,
        grpc.StatusCode.FAILED_PRECONDITION,
        f"Event stream '{stream}' is deleted.",
        (("exception", "stream-deleted"), ("stream-name", stream)),
    )


def _stream_name(identifier: shared_pb2.StreamIdentifier) -> str:
    return identifier.stream_name.decode("utf-8")


def _uuid_from_proto(value: shared_pb2.UUID) -> str:
    kind = value.WhichOneof("value")
    if kind == "string":
        parsed = uuid.UUID(value.string)
    elif kind == "structured":
        high = value.structured.most_significant_bits.to_bytes(8, "big", signed=True)
        low = value.structured.least_significant_bits.to_bytes(8, "big", signed=True)
        parsed = uuid.UUID(bytes=high + low)
    else:
        parsed = uuid.UUID(int=0)
    if parsed.int == 0:
        raise _BadRequestError("Event id must not be empty.")
    return str(parsed)


def _uuid_to_proto(value: str, structured: bool) -> shared_pb2.UUID:
    if not structured:
        return shared_pb2.UUID(string=value)
    raw = uuid.UUID(value).bytes
    return shared_pb2.UUID(
        structured=shared_pb2.UUID.Structured(
            most_significant_bits=int.from_bytes(raw[:8], "big", signed=True),
            least_significant_bits=int.from_bytes(raw[8:], "big", signed=True),
        )
    )


def _proposed_event(
    event_id: shared_pb2.UUID, metadata: dict[str, str], custom_metadata: bytes, data: bytes
) -> ProposedEvent:
    for key in _REQUIRED_METADATA:
        if key not in metadata:
            raise _BadRequestError(f"Required Metadata Property '{key}' is missing", key)
    if not metadata["type"]:
        raise _BadRequestError("Event type must not be empty.")
    return ProposedEvent(
        event_id=_uuid_from_proto(event_id),
        type=metadata["type"],
        is_json=metadata["content-type"] == _JSON,
        data=data,
        metadata=custom_metadata,
    )


def _expected_from_oneof(message: Message, oneof: str, revision_field: str) -> int:
    kind = message.WhichOneof(oneof)
    if kind == revision_field:
        revision = getattr(message, revision_field)
        assert isinstance(revision, int)
        return revision
    if kind == "no_stream":
        return NO_STREAM
    if kind == "stream_exists":
        return STREAM_EXISTS
    return ANY


def _recorded_event(record: Record, structured: bool) -> _RecordedEvent:
    return _RecordedEvent(
        id=_uuid_to_proto(record.event_id, structured),
        stream_identifier=shared_pb2.StreamIdentifier(stream_name=record.stream.encode("utf-8")),
        stream_revision=record.number,
        prepare_position=record.position,
        commit_position=record.position,
        metadata={
            "type": record.type,
            "created": str(record.created_ticks),
            "content-type": _JSON if record.is_json else _BINARY,
        },
        custom_metadata=record.metadata,
        data=record.data,
    )


def _serialize_read(response: _ReadOut) -> bytes:
    """Read's response serializer: cached event responses are bytes already."""
    if type(response) is bytes:
        return response
    assert isinstance(response, _ReadResp)
    return response.SerializeToString()


# -------------------------------------------------------------------------------- filters

_Predicate = Callable[[Record], bool]


def _default_all_filter(record: Record) -> bool:
    stream = record.stream
    if not stream.startswith("$"):
        return True
    if stream == "$epoch-information":
        return False
    return not (
        stream.startswith("$persistentsubscription-$all::")
        and (stream.endswith("-checkpoint") or stream.endswith("-parked"))
    )


_FilterExpression = streams_pb2.ReadReq.Options.FilterOptions.Expression


def _expression_matcher(expression: _FilterExpression, strict: bool = False) -> Callable[[str], bool]:
    # .NET Regex.Match is an unanchored search; an empty regex means "use the prefixes".
    if expression.regex:
        pattern = compile_dotnet(expression.regex) if strict else re.compile(expression.regex)
        return lambda value: pattern.search(value) is not None
    prefixes = tuple(expression.prefix)
    return lambda value: value.startswith(prefixes)


def _record_filter(
    options: streams_pb2.ReadReq.Options, context: grpc.ServicerContext, strict: bool = False
) -> _Predicate:
    try:
        return _compile_record_filter(options, strict)
    except DotnetRegexError:
        # 24.10: `new Regex(...)` throws inside Streams.ConvertToEventFilter (Streams.Read.cs), outside
        # any handler, so grpc-dotnet answers with its generic text before the first message.
        abort(context, grpc.StatusCode.UNKNOWN, _HANDLER_EXCEPTION)
    except re.error as exc:
        abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"Invalid filter expression: {exc}.")


def _compile_record_filter(options: streams_pb2.ReadReq.Options, strict: bool = False) -> _Predicate:
    if options.WhichOneof("filter_option") != "filter":
        return _default_all_filter
    filter_options = options.filter
    if filter_options.WhichOneof("filter") == "stream_identifier":
        by_stream = _expression_matcher(filter_options.stream_identifier, strict)
        return lambda record: _default_all_filter(record) and by_stream(record.stream)
    by_type = _expression_matcher(filter_options.event_type, strict)
    return lambda record: _default_all_filter(record) and by_type(record.type)


# ---------------------------------------------------------------------------- the service


@dataclass
class _PendingBatch:
    correlation_id: shared_pb2.UUID
    options: streams_pb2.BatchAppendReq.Options
    messages: list[streams_pb2.BatchAppendReq.ProposedMessage] = field(default_factory=list)


@dataclass
class _AllSubscriptionState:
    cursor: int
    filtered: bool
    interval: int
    counter: int = 0
    last_checkpoint: int = 0
    last_delivered: int | None = None


class StreamsService:
    """Handlers for the Streams service, bound to one ``Log``."""

    def __init__(
        self,
        log: Log,
        max_append_size: int = DEFAULT_MAX_APPEND_SIZE,
        *,
        caught_up: bool = True,
        strict: bool = False,
    ) -> None:
        self._log = log
        self._max_append_size = max_append_size
        #: True reproduces EventStoreDB 24.10 where the lenient default is kinder (EsdbTestServer docs).
        self._strict = strict
        #: False emulates EventStoreDB before 23.10: no caught_up message, no end-of-catch-up checkpoint.
        self.caught_up = caught_up
        self.latency = 0.0
        self._drop_generation = 0
        #: Set on a secure (TLS) node: who may do what (``_security.py``); ``None`` allows every call.
        self.security: Security | None = None
        # Serialized read responses by record position, one cache per UUID format (_read_event).
        self._structured_responses: dict[int, bytes] = {}
        self._string_responses: dict[int, bytes] = {}

    def drop_subscriptions(self) -> None:
        """Abort every open subscription as EventStoreDB 23.10 aborted a slow consumer."""
        self._drop_generation += 1
        self._log.wake_all()

    def _raise_if_dropped(self, generation: int, context: grpc.ServicerContext) -> None:
        if generation != self._drop_generation:
            abort(context, grpc.StatusCode.ABORTED, _CONSUMER_TOO_SLOW)

    def _allowed(self, context: grpc.ServicerContext, stream: str, access: Access) -> bool:
        return self.security is None or self.security.allows(context, stream, access)

    def _authorize(self, context: grpc.ServicerContext, stream: str, access: Access) -> None:
        """End the call with PERMISSION_DENIED unless its caller may do ``access`` on ``stream``."""
        if self.security is not None and not self.security.allows(context, stream, access):
            self.security.deny(context)

    def _delay(self, context: grpc.ServicerContext) -> None:
        """Injected latency before any work, cut short when the caller gives up."""
        until = time.monotonic() + self.latency
        while context.is_active() and time.monotonic() < until:
            time.sleep(min(_LATENCY_STEP, max(until - time.monotonic(), 0.0)))

    def rpc_handler(self) -> grpc.GenericRpcHandler[Any, Any]:
        """The generic handler to register on a ``grpc.Server``."""
        return grpc.method_handlers_generic_handler(
            SERVICE_NAME,
            {
                "Read": grpc.unary_stream_rpc_method_handler(
                    self.read,
                    request_deserializer=streams_pb2.ReadReq.FromString,
                    response_serializer=_serialize_read,
                ),
                "Append": grpc.stream_unary_rpc_method_handler(
                    self.append,
                    request_deserializer=streams_pb2.AppendReq.FromString,
                    response_serializer=streams_pb2.AppendResp.SerializeToString,
                ),
                "BatchAppend": grpc.stream_stream_rpc_method_handler(
                    self.batch_append,
                    request_deserializer=streams_pb2.BatchAppendReq.FromString,
                    response_serializer=streams_pb2.BatchAppendResp.SerializeToString,
                ),
                "Delete": grpc.unary_unary_rpc_method_handler(
                    self.delete,
                    request_deserializer=streams_pb2.DeleteReq.FromString,
                    response_serializer=streams_pb2.DeleteResp.SerializeToString,
                ),
                "Tombstone": grpc.unary_unary_rpc_method_handler(
                    self.tombstone,
                    request_deserializer=streams_pb2.TombstoneReq.FromString,
                    response_serializer=streams_pb2.TombstoneResp.SerializeToString,
                ),
            },
        )

    # ---------------------------------------------------------------------------- Read

    def read(self, request: streams_pb2.ReadReq, context: grpc.ServicerContext) -> Iterator[_ReadOut]:
        """Streams.Read: stream or ``$all``, counted read or catch-up subscription.

        Events come as the bytes of their serialized response (see ``_read_event``), the other
        responses as messages; ``_serialize_read`` passes the bytes through.
        """
        self._delay(context)
        options = request.options
        stream_option = options.WhichOneof("stream_option")
        count_option = options.WhichOneof("count_option")
        filter_option = options.WhichOneof("filter_option")
        backwards = options.read_direction == streams_pb2.ReadReq.Options.Backwards
        valid = (
            stream_option in ("stream", "all")
            and count_option in ("count", "subscription")
            and filter_option in ("filter", "no_filter")
            and not (stream_option == "stream" and filter_option == "filter")
            and not (count_option == "subscription" and backwards)
        )
        if not valid:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"The combination of {stream_option}, {count_option}, {filter_option} "
                f"and {'Backwards' if backwards else 'Forwards'} is invalid.",
            )
        if options.uuid_option.WhichOneof("content") is None:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "The UUID option is missing.")
        target = options.stream.stream_identifier.stream_name.decode(errors="replace")
        self._authorize(context, target if stream_option == "stream" else ALL_STREAM, Access.READ)
        structured = options.uuid_option.WhichOneof("content") == "structured"
        responses = (
            self._read_stream(options, structured, context)
            if stream_option == "stream"
            else self._read_all(options, structured, context)
        )
        for response in responses:
            if not context.is_active():
                return
            yield response

    def _read_event(self, record: Record, structured: bool, resolve_links: bool) -> _ReadOut:
        """The response that carries ``record``: serialized once per record and UUID format.

        A record never changes once written, and its response (the event, its commit position)
        depends only on it and on the UUID option, so every read after the first reuses the
        bytes. A resolved link is built afresh each time: whether it carries its target depends
        on the target's visibility now (deleted, truncated, expired). The cache holds one
        response per record and UUID format read, about the record's size again: the server
        keeps everything in memory anyway.
        """
        if resolve_links and record.type == LINK_TYPE:
            target = self._resolve_link(record)
            read_event = streams_pb2.ReadResp.ReadEvent(
                link=_recorded_event(record, structured), commit_position=record.position
            )
            if target is not None:
                read_event.event.CopyFrom(_recorded_event(target, structured))
            return _ReadResp(event=read_event)
        cache = self._structured_responses if structured else self._string_responses
        response = cache.get(record.position)
        if response is None:
            # Positions are unique in the log and records immutable: the position is the key.
            # Two threads may both miss and store equal bytes; the dict stays consistent.
            response = _ReadResp(
                event=streams_pb2.ReadResp.ReadEvent(
                    event=_recorded_event(record, structured), commit_position=record.position
                )
            ).SerializeToString()
            cache[record.position] = response
        return response

    def _resolve_link(self, link: Record) -> Record | None:
        number_text, separator, stream = link.data.decode("utf-8", "replace").partition("@")
        if not separator:
            return None
        try:
            number = int(number_text)
        except ValueError:
            return None
        view = self._log.view(stream)
        if view.tombstoned or not view.exists or number < view.first_visible:
            return None
        target = self._log.stream_record(stream, number)
        if target is None:
            return None
        if view.min_created_ticks is not None and target.created_ticks < view.min_created_ticks:
            return None
        return target

    def _read_stream(
        self, options: streams_pb2.ReadReq.Options, structured: bool, context: grpc.ServicerContext
    ) -> Iterator[_ReadOut]:
        stream_options = options.stream
        name = _stream_name(stream_options.stream_identifier)
        if self._strict and not name:
            # 24.10: an empty StreamIdentifier converts to a null string, and the enumerators'
            # constructors throw ArgumentNullException (Enumerator.ReadStream*.cs, StreamSubscription.cs).
            abort(context, grpc.StatusCode.UNKNOWN, _HANDLER_EXCEPTION)
        if options.WhichOneof("count_option") == "subscription":
            yield from self._subscribe_stream(options, name, structured, context)
            return
        view = self._log.view(name)
        if view.tombstoned:
            _abort_deleted(context, name)
        if not view.exists:
            yield _ReadResp(
                stream_not_found=_ReadResp.StreamNotFound(stream_identifier=stream_options.stream_identifier)
            )
            return
        last = self._log.last_number(name)
        revision_option = stream_options.WhichOneof("revision_option")
        remaining = options.count
        if options.read_direction == streams_pb2.ReadReq.Options.Backwards:
            top = stream_options.revision if revision_option == "revision" else last
            numbers = range(min(top, last), view.first_visible - 1, -_CHUNK)
            chunks = (
                self._log.stream_records(name, max(high - _CHUNK + 1, view.first_visible), high + 1)[::-1]
                for high in numbers
            )
        else:
            low = {"revision": stream_options.revision, "start": 0}.get(revision_option or "", last + 1)
            numbers = range(max(low, view.first_visible), last + 1, _CHUNK)
            chunks = (
                self._log.stream_records(name, start, min(start + _CHUNK, last + 1)) for start in numbers
            )
        for chunk in chunks:
            for record in chunk:
                if remaining <= 0 or not context.is_active():
                    return
                if view.min_created_ticks is not None and record.created_ticks < view.min_created_ticks:
                    continue
                remaining -= 1
                yield self._read_event(record, structured, options.resolve_links)

    def _read_all(
        self, options: streams_pb2.ReadReq.Options, structured: bool, context: grpc.ServicerContext
    ) -> Iterator[_ReadOut]:
        if options.WhichOneof("count_option") == "subscription":
            yield from self._subscribe_all(options, structured, context)
            return
        matches = _record_filter(options, context, self._strict)
        all_option = options.all.WhichOneof("all_option")
        backwards = options.read_direction == streams_pb2.ReadReq.Options.Backwards
        if self._strict and all_option == "position" and not self._check_read_all_position(options, context):
            return
        if all_option == "position":
            position = options.all.position.commit_position
        elif all_option == "start":
            position = 0
        else:
            position = self._log.head + 1
        remaining = options.count
        while remaining > 0 and context.is_active():
            if backwards:
                chunk = self._log.records_before(position, _CHUNK)
            else:
                chunk = self._log.records_from(position, _CHUNK)
            if not chunk:
                return
            position = chunk[-1].position if backwards else chunk[-1].position + 1
            for record in chunk:
                if matches(record):
                    yield self._read_event(record, structured, options.resolve_links)
                    remaining -= 1
                    if remaining <= 0:
                        return

    def _check_read_all_position(
        self, options: streams_pb2.ReadReq.Options, context: grpc.ServicerContext
    ) -> bool:
        """Strict: fail as EventStoreDB 24.10 does for a position no record starts at.

        ``StorageReaderWorker.ReadAllEvents*`` answers ``InvalidPosition`` for a position that
        does not fit a signed 64-bit value (other than ``Position.End``) and when the chunk reader
        throws ``InvalidReadException`` (``TFChunkReadSide.cs``: the bytes at that offset are not a
        record's length prefix/suffix). The ``Enumerator.ReadAll*`` classes turn any result but
        ``Success``/``AccessDenied`` into ``UNKNOWN "Unexpected ReadAllResult: <result>"`` (or
        ``FilteredReadAllResult``; ``RpcExceptions.UnknownError``). Forwards, a position after the
        last record's is past ``LastIndexedPosition`` and reads nothing (``AllReader.cs``);
        backwards, one after the writer checkpoint makes ``TFChunkReader.TryReadPrev`` throw a
        plain exception: ``Error``. Uncertain: a position inside a record whose bytes happen to
        look like a valid record would not fail on a real server; here it always fails.

        Return False when the read is valid but must return nothing.
        """
        position = options.all.position
        commit, prepare = position.commit_position, position.prepare_position
        if commit == prepare == _UINT64_MAX:
            return True  # Position.End, the same as `end`
        filtered = options.WhichOneof("filter_option") == "filter"
        result = "FilteredReadAllResult" if filtered else "ReadAllResult"
        if commit >= _INT64_LIMIT or prepare >= _INT64_LIMIT:
            abort(context, grpc.StatusCode.UNKNOWN, f"Unexpected {result}: InvalidPosition")
        if options.read_direction == streams_pb2.ReadReq.Options.Backwards:
            if commit > self._log.end:
                abort(context, grpc.StatusCode.UNKNOWN, f"Unexpected {result}: Error")
        elif commit > self._log.head:
            return False
        if not self._log.is_boundary(commit):
            abort(context, grpc.StatusCode.UNKNOWN, f"Unexpected {result}: InvalidPosition")
        return True

    # ------------------------------------------------------------------- subscriptions

    def _subscribe_stream(
        self,
        options: streams_pb2.ReadReq.Options,
        name: str,
        structured: bool,
        context: grpc.ServicerContext,
    ) -> Iterator[_ReadOut]:
        if self._log.view(name).tombstoned:
            _abort_deleted(context, name)
        revision_option = options.stream.WhichOneof("revision_option")
        if revision_option == "revision":
            next_number = options.stream.revision + 1
        elif revision_option == "end":
            next_number = max(self._log.last_number(name) + 1, 0)
        else:
            next_number = 0
        context.add_callback(self._log.wake_all)
        generation = self._drop_generation
        yield _ReadResp(confirmation=_ReadResp.SubscriptionConfirmation(subscription_id=str(uuid.uuid4())))
        caught_up = False
        while context.is_active():
            self._raise_if_dropped(generation, context)
            head = self._log.head
            view = None if caught_up else self._log.view(name)
            if view is not None:
                next_number = max(next_number, view.first_visible)
            records = self._log.stream_records(name, next_number, next_number + _CHUNK)
            for record in records:
                next_number = record.number + 1
                expired = (
                    view is not None
                    and view.min_created_ticks is not None
                    and record.created_ticks < view.min_created_ticks
                )
                if not expired:
                    yield self._read_event(record, structured, options.resolve_links)
            if records:
                continue
            tombstone = self._log.tombstone_record(name)
            if tombstone is not None:
                yield self._read_event(tombstone, structured, resolve_links=False)
                _abort_deleted(context, name)
            if not caught_up:
                caught_up = True
                if self.caught_up:
                    yield _ReadResp(caught_up=_ReadResp.CaughtUp())
            self._log.wait_for_records_after(head, _IDLE_WAIT_SECONDS)

    def _subscribe_all(
        self, options: streams_pb2.ReadReq.Options, structured: bool, context: grpc.ServicerContext
    ) -> Iterator[_ReadOut]:
        filtered = options.WhichOneof("filter_option") == "filter"
        window = options.filter.max if filtered and options.filter.max > 0 else _DEFAULT_WINDOW
        multiplier = options.filter.checkpointIntervalMultiplier
        if filtered and multiplier == 0:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "checkpointIntervalMultiplier must be greater than 0.",
            )
        matches = _record_filter(options, context, self._strict)
        all_option = options.all.WhichOneof("all_option")
        if all_option == "position":
            start = options.all.position.commit_position
        elif all_option == "end":
            start = self._log.head
        else:
            start = 0
        state = _AllSubscriptionState(cursor=start, filtered=filtered, interval=multiplier * window)
        go_live = all_option == "end"
        if self._strict:
            # A real server may send a checkpoint at 0 (Enumerator.AllSubscriptionFiltered.cs).
            state.last_checkpoint = -1
        context.add_callback(self._log.wake_all)
        generation = self._drop_generation
        yield _ReadResp(confirmation=_ReadResp.SubscriptionConfirmation(subscription_id=str(uuid.uuid4())))
        if self._strict and all_option == "position":
            go_live = self._strict_subscription_start(options, state, context)
        if not go_live:
            yield from self._catch_up_all(
                generation=generation,
                state=state,
                matches=matches,
                window=window,
                options=options,
                structured=structured,
                context=context,
            )
            if not context.is_active():
                return
            if filtered and self.caught_up:
                if state.last_delivered is not None:
                    end_checkpoint: int | None = state.last_delivered
                elif all_option == "position":
                    end_checkpoint = start
                elif self._strict:
                    # 24.10 sends its `checkpoint` variable, still TFPos(-1,-1) = Position.End unless an
                    # interval checkpoint moved it (Enumerator.AllSubscriptionFiltered.cs CatchUp); its
                    # MoveNextAsync then drops every later checkpoint as not after End.
                    end_checkpoint = state.last_checkpoint if state.last_checkpoint >= 0 else _UINT64_MAX
                else:
                    # Real 24.x sends Position.End here, which exceeds the head (GRPC_SPEC §10.4).
                    end_checkpoint = state.cursor or None
                if end_checkpoint is not None:
                    yield from self._checkpoint(state, end_checkpoint)
        if self.caught_up:
            yield _ReadResp(caught_up=_ReadResp.CaughtUp())
        while context.is_active():
            self._raise_if_dropped(generation, context)
            records = self._log.records_from(state.cursor + 1, _CHUNK)
            if not records:
                self._log.wait_for_records_after(state.cursor, _IDLE_WAIT_SECONDS)
                continue
            for record in records:
                state.cursor = record.position
                if matches(record):
                    yield self._read_event(record, structured, options.resolve_links)
                if filtered:
                    state.counter += 1
                    if state.counter >= state.interval:
                        state.counter = 0
                        yield from self._checkpoint(state, record.position)

    def _strict_subscription_start(
        self,
        options: streams_pb2.ReadReq.Options,
        state: _AllSubscriptionState,
        context: grpc.ServicerContext,
    ) -> bool:
        """Strict: where a 24.10 ``$all`` subscription from a position starts; True = go live now.

        ``Enumerator.AllSubscription[Filtered].MainLoop`` sends the confirmation, then goes live
        without reading when the position is at or after ``LastIndexedPosition`` (the last
        record's position), so no end-of-catch-up checkpoint either. Otherwise its first catch-up
        read from a position inside a record fails with ``InvalidPosition``, which ``Streams.Read``
        reports as ``INVALID_ARGUMENT`` "Trying to read from an invalid position." A position
        beyond the signed 64-bit range converts to a negative ``TFPos``, which ``ReadPage`` reads
        as the start: every event is delivered.
        """
        position = options.all.position
        commit, prepare = position.commit_position, position.prepare_position
        if commit == prepare == _UINT64_MAX:
            state.cursor = self._log.head
            return True
        if commit >= _INT64_LIMIT or prepare >= _INT64_LIMIT:
            state.cursor = -1
            return False
        if commit >= self._log.head:
            return True
        if not self._log.is_boundary(commit):
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, _INVALID_POSITION)
        return False

    def _catch_up_all(
        self,
        *,
        generation: int,
        state: _AllSubscriptionState,
        matches: _Predicate,
        window: int,
        options: streams_pb2.ReadReq.Options,
        structured: bool,
        context: grpc.ServicerContext,
    ) -> Iterator[_ReadOut]:
        page_size = window if state.filtered else _CHUNK
        while context.is_active():
            self._raise_if_dropped(generation, context)
            page = self._log.records_from(state.cursor + 1, page_size)
            if not page:
                return
            considered = 0
            delivered = 0
            for record in page:
                considered += 1
                state.cursor = record.position
                if matches(record):
                    yield self._read_event(record, structured, options.resolve_links)
                    state.last_delivered = record.position
                    delivered += 1
                    if delivered >= _CATCH_UP_PAGE_MATCHES:
                        break
            if state.filtered:
                state.counter += considered
                if state.counter >= state.interval:
                    state.counter %= state.interval
                    yield from self._checkpoint(state, max(state.last_delivered or 0, page[0].position))

    @staticmethod
    def _checkpoint(state: _AllSubscriptionState, position: int) -> Iterator[_ReadOut]:
        if position <= state.last_checkpoint:
            return
        state.last_checkpoint = position
        yield _ReadResp(checkpoint=_ReadResp.Checkpoint(commit_position=position, prepare_position=position))

    # -------------------------------------------------------------------------- Append

    def append(
        self, requests: Iterator[streams_pb2.AppendReq], context: grpc.ServicerContext
    ) -> streams_pb2.AppendResp:
        """Streams.Append: one options message, then proposed messages (GRPC_SPEC §5)."""
        self._delay(context)
        first = next(requests, None)
        if first is None or first.WhichOneof("content") != "options":
            abort(context, grpc.StatusCode.UNKNOWN, _HANDLER_EXCEPTION)
        try:
            name = _stream_name(first.options.stream_identifier)
        except UnicodeDecodeError:
            abort(context, grpc.StatusCode.UNKNOWN, _HANDLER_EXCEPTION)
        self._authorize(context, name, Access.WRITE)
        expected = _expected_from_oneof(first.options, "expected_stream_revision", "revision")
        events: list[ProposedEvent] = []
        total_size = 0
        for request in requests:
            if request.WhichOneof("content") != "proposed_message":
                abort(context, grpc.StatusCode.UNKNOWN, _HANDLER_EXCEPTION)
            message = request.proposed_message
            try:
                event = _proposed_event(
                    message.id, dict(message.metadata), message.custom_metadata, message.data
                )
            except _BadRequestError as exc:
                if exc.missing_property is None:
                    abort(context, grpc.StatusCode.UNKNOWN, _HANDLER_EXCEPTION)
                abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    str(exc),
                    (
                        ("exception", "missing-required-metadata-property"),
                        ("required-metadata-properties", ",".join(_REQUIRED_METADATA)),
                    ),
                )
            except ValueError:
                abort(context, grpc.StatusCode.UNKNOWN, _HANDLER_EXCEPTION)
            total_size += event.size
            if total_size > self._max_append_size:
                abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Maximum Append Size of {self._max_append_size} Exceeded.",
                    (
                        ("exception", "maximum-append-size-exceeded"),
                        ("maximum-append-size", str(self._max_append_size)),
                    ),
                )
            events.append(event)
        if not context.is_active():
            abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        if self._strict and _is_invalid_stream(name):
            # 24.10: the ClientMessage.WriteEvents constructor throws ArgumentOutOfRangeException.
            abort(context, grpc.StatusCode.UNKNOWN, _HANDLER_EXCEPTION)
        outcome = self._log.append(name, expected, events)
        if isinstance(outcome, StreamDeleted):
            _abort_deleted(context, name)
        if isinstance(outcome, WrongVersion):
            return streams_pb2.AppendResp(
                wrong_expected_version=_append_wrong_version(outcome.current, expected)
            )
        success = streams_pb2.AppendResp.Success(
            position=streams_pb2.AppendResp.Position(
                commit_position=outcome.position, prepare_position=outcome.position
            )
        )
        if outcome.last_number < 0:
            success.no_stream.CopyFrom(shared_pb2.Empty())
        else:
            success.current_revision = outcome.last_number
        return streams_pb2.AppendResp(success=success)

    # --------------------------------------------------------------------- BatchAppend

    def batch_append(
        self, requests: Iterator[streams_pb2.BatchAppendReq], context: grpc.ServicerContext
    ) -> Iterator[streams_pb2.BatchAppendResp]:
        """Streams.BatchAppend: writes keyed by correlation id, errors in-band (GRPC_SPEC §6)."""
        pending: dict[bytes, _PendingBatch] = {}
        for request in requests:
            key = request.correlation_id.SerializeToString(deterministic=True)
            if request.HasField("options"):
                target = request.options.stream_identifier.stream_name.decode(errors="replace")
                if not self._allowed(context, target, Access.WRITE):  # in-band, as Streams.BatchAppend.cs
                    denied = _batch_error(
                        request.correlation_id,
                        None,
                        code_pb2.PERMISSION_DENIED,
                        "AccessDenied",
                        shared_pb2.AccessDenied(),
                    )
                    denied.stream_identifier.CopyFrom(request.options.stream_identifier)
                    yield denied
                    continue
                pending[key] = _PendingBatch(request.correlation_id, request.options)
            batch = pending.get(key)
            if batch is None:
                yield _batch_error(
                    request.correlation_id,
                    None,
                    code_pb2.INVALID_ARGUMENT,
                    "BadRequest",
                    shared_pb2.BadRequest(message="Options are missing for this correlation id."),
                )
                continue
            batch.messages.extend(request.proposed_messages)
            if request.is_final:
                del pending[key]
                self._delay(context)
                yield self._execute_batch(batch, context)

    def _execute_batch(
        self, batch: _PendingBatch, context: grpc.ServicerContext
    ) -> streams_pb2.BatchAppendResp:
        options = batch.options
        if options.WhichOneof("deadline_option") == "deadline":
            deadline = options.deadline
            if deadline.seconds < 0 or (deadline.seconds == 0 and deadline.nanos <= 0):
                return _batch_error(
                    batch.correlation_id, options, code_pb2.DEADLINE_EXCEEDED, "Timeout", shared_pb2.Timeout()
                )
        events: list[ProposedEvent] = []
        try:
            name = _stream_name(options.stream_identifier)
            for message in batch.messages:
                events.append(
                    _proposed_event(message.id, dict(message.metadata), message.custom_metadata, message.data)
                )
        except ValueError as exc:
            return _batch_error(
                batch.correlation_id,
                options,
                code_pb2.INVALID_ARGUMENT,
                "BadRequest",
                shared_pb2.BadRequest(message=str(exc)),
            )
        if sum(event.size for event in events) > self._max_append_size:
            return _batch_error(
                batch.correlation_id,
                options,
                code_pb2.INVALID_ARGUMENT,
                "MaximumAppendSizeExceeded",
                shared_pb2.MaximumAppendSizeExceeded(maxAppendSize=self._max_append_size),
            )
        if not context.is_active():
            return _batch_error(
                batch.correlation_id, options, code_pb2.DEADLINE_EXCEEDED, "Timeout", shared_pb2.Timeout()
            )
        if self._strict and _is_invalid_stream(name):
            # 24.10 Streams.BatchAppend.cs: the WriteEvents constructor's exception becomes an in-band
            # Status.BadRequest(ex.Message).
            return _batch_error(
                batch.correlation_id,
                options,
                code_pb2.INVALID_ARGUMENT,
                "BadRequest",
                shared_pb2.BadRequest(message=_INVALID_STREAM_ID),
            )
        expected = _expected_from_oneof(options, "expected_stream_position", "stream_position")
        outcome = self._log.append(name, expected, events)
        return _batch_outcome(batch.correlation_id, options, expected, outcome)

    # ----------------------------------------------------------------- Delete, Tombstone

    def delete(self, request: streams_pb2.DeleteReq, context: grpc.ServicerContext) -> streams_pb2.DeleteResp:
        """Streams.Delete: soft delete by a ``$tb`` metadata event (GRPC_SPEC §7)."""
        name, expected = self._delete_target(request.options, context)
        position = self._delete_outcome(self._log.delete(name, expected), name, expected, context)
        return streams_pb2.DeleteResp(
            position=streams_pb2.DeleteResp.Position(commit_position=position, prepare_position=position)
        )

    def tombstone(
        self, request: streams_pb2.TombstoneReq, context: grpc.ServicerContext
    ) -> streams_pb2.TombstoneResp:
        """Streams.Tombstone: hard delete; the stream can never be written again (GRPC_SPEC §7)."""
        name, expected = self._delete_target(request.options, context)
        position = self._delete_outcome(self._log.tombstone(name, expected), name, expected, context)
        return streams_pb2.TombstoneResp(
            position=streams_pb2.TombstoneResp.Position(commit_position=position, prepare_position=position)
        )

    def _delete_target(
        self,
        options: streams_pb2.DeleteReq.Options | streams_pb2.TombstoneReq.Options,
        context: grpc.ServicerContext,
    ) -> tuple[str, int]:
        try:
            name = _stream_name(options.stream_identifier)
        except UnicodeDecodeError:
            abort(context, grpc.StatusCode.UNKNOWN, _HANDLER_EXCEPTION)
        self._authorize(context, name, Access.DELETE)
        if self._strict and not name:
            # 24.10: ClientMessage.DeleteStream's constructor runs Ensure.NotNullOrEmpty(eventStreamId).
            abort(context, grpc.StatusCode.UNKNOWN, _HANDLER_EXCEPTION)
        self._delay(context)
        if not context.is_active():
            abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        return name, _expected_from_oneof(options, "expected_stream_revision", "revision")

    @staticmethod
    def _delete_outcome(outcome: Outcome, name: str, expected: int, context: grpc.ServicerContext) -> int:
        if isinstance(outcome, StreamDeleted):
            _abort_deleted(context, name)
        if isinstance(outcome, WrongVersion):
            abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                "Delete failed due to WrongExpectedVersion. "
                f"Stream: {name}, Expected version: {expected}, Actual version: {outcome.current}",
                (
                    ("exception", "wrong-expected-version"),
                    ("stream-name", name),
                    ("expected-version", str(expected)),
                    ("actual-version", str(outcome.current)),
                ),
            )
        return outcome.position


def _is_invalid_stream(name: str) -> bool:
    """``SystemStreams.IsInvalidStream`` (24.10 ``Services/SystemNames.cs``): empty or ``$$``."""
    return not name or name == "$$"


def _append_wrong_version(current: int, expected: int) -> streams_pb2.AppendResp.WrongExpectedVersion:
    empty = shared_pb2.Empty()
    wrong = streams_pb2.AppendResp.WrongExpectedVersion()
    if current == NO_STREAM:
        wrong.current_no_stream.CopyFrom(empty)
        wrong.no_stream_20_6_0.CopyFrom(empty)
    else:
        wrong.current_revision = current
        wrong.current_revision_20_6_0 = current
    if expected == ANY:
        wrong.expected_any.CopyFrom(empty)
        wrong.any_20_6_0.CopyFrom(empty)
    elif expected == STREAM_EXISTS:
        wrong.expected_stream_exists.CopyFrom(empty)
        wrong.stream_exists_20_6_0.CopyFrom(empty)
    elif expected == NO_STREAM:
        wrong.expected_no_stream.CopyFrom(empty)
        wrong.expected_revision_20_6_0 = _UINT64_MAX
    else:
        wrong.expected_revision = expected
        wrong.expected_revision_20_6_0 = expected
    return wrong


def _batch_response(
    correlation_id: shared_pb2.UUID, options: streams_pb2.BatchAppendReq.Options | None
) -> streams_pb2.BatchAppendResp:
    response = streams_pb2.BatchAppendResp(correlation_id=correlation_id)
    if options is None:
        return response
    response.stream_identifier.CopyFrom(options.stream_identifier)
    kind = options.WhichOneof("expected_stream_position")
    if kind == "stream_position":
        response.stream_position = options.stream_position
    elif kind == "no_stream":
        response.no_stream.CopyFrom(empty_pb2.Empty())
    elif kind == "stream_exists":
        response.stream_exists.CopyFrom(empty_pb2.Empty())
    else:
        response.any.CopyFrom(empty_pb2.Empty())
    return response


def _batch_error(
    correlation_id: shared_pb2.UUID,
    options: streams_pb2.BatchAppendReq.Options | None,
    code: int,
    message: str,
    detail: Message,
) -> streams_pb2.BatchAppendResp:
    response = _batch_response(correlation_id, options)
    details = any_pb2.Any()
    details.Pack(detail)
    response.error.CopyFrom(status_pb2.Status(code=code, message=message, details=details))  # type: ignore[arg-type]
    return response


def _batch_outcome(
    correlation_id: shared_pb2.UUID,
    options: streams_pb2.BatchAppendReq.Options,
    expected: int,
    outcome: Outcome,
) -> streams_pb2.BatchAppendResp:
    if isinstance(outcome, StreamDeleted):
        return _batch_error(
            correlation_id,
            options,
            code_pb2.NOT_FOUND,
            "StreamDeleted",
            shared_pb2.StreamDeleted(stream_identifier=options.stream_identifier),
        )
    if isinstance(outcome, WrongVersion):
        wrong = shared_pb2.WrongExpectedVersion()
        if outcome.current == NO_STREAM:
            wrong.current_no_stream.CopyFrom(empty_pb2.Empty())
        else:
            wrong.current_stream_revision = outcome.current
        if expected == ANY:
            wrong.expected_any.CopyFrom(empty_pb2.Empty())
        elif expected == STREAM_EXISTS:
            wrong.expected_stream_exists.CopyFrom(empty_pb2.Empty())
        elif expected == NO_STREAM:
            wrong.expected_no_stream.CopyFrom(empty_pb2.Empty())
        else:
            wrong.expected_stream_position = expected
        return _batch_error(correlation_id, options, code_pb2.ALREADY_EXISTS, "WrongExpectedVersion", wrong)
    return _batch_success(correlation_id, options, outcome)


def _batch_success(
    correlation_id: shared_pb2.UUID, options: streams_pb2.BatchAppendReq.Options, outcome: Written
) -> streams_pb2.BatchAppendResp:
    response = _batch_response(correlation_id, options)
    success = response.success
    if outcome.last_number < 0 or outcome.last_number == DELETED_STREAM_NUMBER:
        success.no_stream.CopyFrom(empty_pb2.Empty())
    else:
        success.current_revision = outcome.last_number
    success.position.CopyFrom(
        shared_pb2.AllStreamPosition(commit_position=outcome.position, prepare_position=outcome.position)
    )
    return response
