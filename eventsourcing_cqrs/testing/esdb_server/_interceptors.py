"""What the test server's interceptors share: the interceptor base type and a refusing handler.

Authentication (``_security.py``) and a cluster node's role (``_test_cluster.py``) both decide
before any handler runs that a call must end with a status, as EventStoreDB's middleware does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import grpc

# grpc's stubs make ServerInterceptor generic; the runtime class is not subscriptable.
if TYPE_CHECKING:
    ServerInterceptor = grpc.ServerInterceptor[Any, Any]
else:
    ServerInterceptor = grpc.ServerInterceptor


def refusing_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    code: grpc.StatusCode,
    details: str,
    trailers: tuple[tuple[str, str], ...] = (),
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same kind as ``handler`` that ends every call with ``code``, ``details``
    and ``trailers`` (``abort`` raises before a streaming response would be iterated)."""

    def refuse(request: object, context: grpc.ServicerContext) -> Any:
        if trailers:
            context.set_trailing_metadata(trailers)
        context.abort(code, details)

    deserialize, serialize = handler.request_deserializer, handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, deserialize, serialize)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, deserialize, serialize)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, deserialize, serialize)
    return grpc.unary_unary_rpc_method_handler(refuse, deserialize, serialize)
