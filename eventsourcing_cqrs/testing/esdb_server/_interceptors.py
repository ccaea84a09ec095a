"""How the test server ends a call with a status: :func:`abort` (for handlers) and
:func:`refusing_handler` (for interceptors), plus the interceptor base type.

Authentication (``_security.py``) and a cluster node's role (``_test_cluster.py``) decide before
any handler runs that a call must end with a status, as EventStoreDB's middleware does; the
Streams handlers (``_streams.py``) end calls with statuses and trailers of their own.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, NoReturn

import grpc

# grpc's stubs make ServerInterceptor generic; the runtime class is not subscriptable.
if TYPE_CHECKING:
    ServerInterceptor = grpc.ServerInterceptor[Any, Any]
else:
    ServerInterceptor = grpc.ServerInterceptor


def _trailer(value: str) -> str:
    # gRPC ASCII metadata cannot carry arbitrary stream names; quote anything unusual.
    return value if value.isascii() and value.isprintable() else urllib.parse.quote(value)


def abort(
    context: grpc.ServicerContext,
    code: grpc.StatusCode,
    details: str,
    trailers: Iterable[tuple[str, str]] = (),
) -> NoReturn:
    """End the call with ``code``, ``details`` and ``trailers`` (values quoted if not ASCII)."""
    context.set_trailing_metadata(tuple((key, _trailer(value)) for key, value in trailers))
    context.abort(code, details)


def refusing_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    code: grpc.StatusCode,
    details: str,
    trailers: tuple[tuple[str, str], ...] = (),
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind as ``handler`` that ends every call with ``code``, ``details``
    and ``trailers`` (``abort`` raises before a streaming response would be iterated)."""

    def refuse(request: object, context: grpc.ServicerContext) -> Any:
        abort(context, code, details, trailers)

    deserialize, serialize = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, deserialize, serialize)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, deserialize, serialize)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, deserialize, serialize)
    return grpc.unary_unary_rpc_method_handler(refuse, deserialize, serialize)
