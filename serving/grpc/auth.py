"""Bearer-token authentication of gRPC calls: every RPC except the health service (probes stay open).

The check itself is ``mcdrop.serving.runtime.auth.BearerAuth``, shared with REST.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from mcdrop.serving.runtime.auth import BearerAuth

__all__ = ["AuthInterceptor"]

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuses RPCs without a valid ``authorization: Bearer <token>`` header with UNAUTHENTICATED."""

    def __init__(self, auth: BearerAuth) -> None:
        self._auth = auth

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        if details.method.startswith(OPEN_PREFIXES):
            return continuation(details)
        header = str(dict(details.invocation_metadata or ()).get("authorization", ""))
        refused = self._auth.refusal(header, "metadata 'authorization: Bearer <token>'")
        return continuation(details) if refused is None else _refusal(continuation(details), refused)


def _refusal(handler: Any, message: str) -> Any:
    """A handler of the same kind as ``handler`` that answers UNAUTHENTICATED."""

    def deny(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler is None:
        return None
    kwargs = {"request_deserializer": handler.request_deserializer, "response_serializer": handler.response_serializer}
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(deny, **kwargs)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(deny, **kwargs)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(deny, **kwargs)
    return grpc.unary_unary_rpc_method_handler(deny, **kwargs)
