"""Bearer-token authentication for every RPC except the health service (probes stay open).

Tokens come from ``auth_tokens`` (comma-separated, e.g. ``MCDROP_AUTH_TOKENS``) and/or
``auth_token_file`` (one per line, ``#`` comments). The file is re-read when it changes
(checked at most once a second), so tokens rotate without a restart. Presented tokens are
compared with every valid one in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from mcdrop.serving.metrics import Metrics

log = logging.getLogger("mcdrop.auth")

OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
RELOAD_SECONDS = 1.0


class TokenStore:
    """The set of valid tokens, reloaded from its file when the file changes. Thread-safe."""

    def __init__(self, tokens: str = "", token_file: str = "") -> None:
        self._static = [t.strip() for t in tokens.split(",") if t.strip()]
        self._file = Path(token_file) if token_file else None
        self._from_file: list[bytes] = []
        self._signature: tuple[int, int] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()
        if self._file is not None:
            self._reload(force=True)

    @property
    def enabled(self) -> bool:
        return bool(self._static) or self._file is not None

    def valid(self, presented: str) -> bool:
        """Whether ``presented`` is one of the tokens; every comparison runs, in constant time."""
        self._reload()
        candidate = presented.encode()
        matches = [hmac.compare_digest(candidate, token) for token in self._tokens()]
        return any(matches)

    def _tokens(self) -> list[bytes]:
        return [t.encode() for t in self._static] + self._from_file

    def _reload(self, force: bool = False) -> None:
        if self._file is None:
            return
        now = time.monotonic()
        if not force and now - self._checked < RELOAD_SECONDS:
            return
        with self._lock:
            self._checked = now
            try:
                stat = self._file.stat()
                signature = (stat.st_mtime_ns, stat.st_size)
                if signature == self._signature:
                    return
                lines = self._file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                # Keep the last good set: an unreadable file must not lock everyone out or let everyone in.
                log.error("cannot read the token file; keeping the previous tokens", extra={"detail": str(exc)})
                return
            self._from_file = [line.strip().encode() for line in lines if line.strip() and not line.startswith("#")]
            self._signature = signature
            log.info("tokens loaded", extra={"count": len(self._from_file), "file": str(self._file)})


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
