"""Bearer tokens: the set a server accepts, from settings and a file that is re-read when it changes.

Tokens come from ``auth_tokens`` (comma-separated, e.g. ``MCDROP_AUTH_TOKENS``) and/or
``auth_token_file`` (one per line, ``#`` comments). The file is re-read when it changes
(checked at most once a second), so tokens rotate without a restart. Presented tokens are
compared with every valid one in constant time (``hmac.compare_digest``). Both transports
check tokens against one store through one check, ``mcdrop.serving.runtime.auth``.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from pathlib import Path

__all__ = ["TokenStore"]

log = logging.getLogger("mcdrop.auth")

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
