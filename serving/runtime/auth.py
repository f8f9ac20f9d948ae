"""The one bearer-token check of both transports: a valid ``Bearer <token>`` passes; a refusal is counted in
``mcdrop_auth_failures_total`` and gets a message saying what was expected. The gRPC interceptor
(``mcdrop.serving.grpc.auth``) and the REST app (``mcdrop.serving.rest.app``) only read the header and answer."""

from __future__ import annotations

from mcdrop.serving.runtime.metrics import Metrics
from mcdrop.serving.runtime.tokens import TokenStore

__all__ = ["BearerAuth"]


class BearerAuth:
    """Checks ``authorization`` values against a ``TokenStore`` and counts refusals. Thread-safe."""

    def __init__(self, store: TokenStore, metrics: Metrics) -> None:
        self._store = store
        self._metrics = metrics

    @property
    def enabled(self) -> bool:
        """Whether tokens are required at all (some are configured)."""
        return self._store.enabled

    def refusal(self, header: str, expected: str) -> str | None:
        """None if ``header`` carries a valid bearer token; else the refusal's message (and the refusal counted).

        Args:
            header: the ``authorization`` value as received ("" when absent).
            expected: how the transport's callers send a token, for the message.
        """
        scheme, _, token = header.partition(" ")
        if scheme.lower() == "bearer" and token.strip() and self._store.valid(token.strip()):
            return None
        self._metrics.auth_failures.inc()
        reason = "Missing bearer token" if not header else "Invalid bearer token"
        return f"{reason}. Expected {expected}."
