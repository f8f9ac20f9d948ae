"""The one place where mcdrop errors become HTTP status codes for REST.

Expected errors carry their message to the client; anything else is a 500 naming a logged incident
(``mcdrop.serving.runtime.incidents``), never a traceback.
"""

from __future__ import annotations

import logging

from mcdrop.serving import errors
from mcdrop.serving.rest.codec import BodyTooLarge
from mcdrop.serving.runtime.incidents import incident_message

__all__ = ["HTTP_STATUS", "status_of"]

log = logging.getLogger("mcdrop.rest")

HTTP_STATUS: list[tuple[type[Exception], int]] = [
    (BodyTooLarge, 413),
    (errors.NotFound, 404),
    (errors.Unauthenticated, 401),
    (errors.Unimplemented, 501),
    (errors.UserInputError, 400),
    (errors.ResourceExhausted, 429),
    (errors.Unavailable, 503),
    (errors.DeadlineExceeded, 504),
]
"""By place in the error tree, most specific first; anything else is 500."""


def status_of(exc: Exception, method: str) -> tuple[int, str]:
    """The HTTP status and the client's message for an error raised while answering ``method``."""
    for kind, status in HTTP_STATUS:
        if isinstance(exc, kind):
            return status, errors.first_line(exc)
    return 500, incident_message(exc, method, log)
