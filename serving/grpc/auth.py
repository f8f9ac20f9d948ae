"""Bearer-token authentication of gRPC calls: every RPC except the health service (probes stay open).

The tokens are a ``mcdrop.serving.runtime.tokens.TokenStore``; REST checks the same store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from mcdrop.serving.runtime.metrics import Metrics
from mcdrop.serving.runtime.tokens import TokenStore

__all__ = ["AuthInterceptor"]

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)


class AuthInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Refuses RPCs without a valid ``authorization: Bearer <token>`` header with UNAUTHENTICATED."""

    def __init__(self, store: TokenStore, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        if details.method.startswith(OPEN_PREFIXES):
            return continuation(details)
        header = dict(details.invocation_metadata or ()).get("authorization", "")
        scheme, _, token = str(header).partition(" ")
        if scheme.lower() == "bearer" and token and self._store.valid(token.strip()):
            return continuation(details)
        self._metrics.auth_failures.inc()
        reason = "Missing bearer token" if not header else "Invalid bearer token"
        return _refusal(continuation(details), f"{reason}. Expected metadata 'authorization: Bearer <token>'.")


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
