"""Unexpected errors: logged with their traceback under an incident id; the client learns only the id."""

from __future__ import annotations

import logging
import uuid

__all__ = ["incident_message"]


def incident_message(exc: BaseException, method: str, log: logging.Logger) -> str:
    """Log ``exc`` under a fresh incident id on ``log`` (each transport has its own logger); return the client's
    message, which names only the id."""
    incident = uuid.uuid4().hex[:12]
    log.error("internal error", exc_info=exc, extra={"incident": incident, "method": method})
    return f"Internal server error (incident {incident}); the details are in the server log."
