"""The one error tree of mcdrop.

Domain code raises these; exactly one place per transport translates them
(the CLI into exit codes, ``mcdrop.serving.grpc.status`` into gRPC status codes, ``mcdrop.serving.rest.status``
into HTTP status codes). The export adds ``mcdrop.pipeline.export.errors.ExportError`` under ``MCDropError``.
The client and the command line raise only these too. Nothing here imports ``grpc``.

    MCDropError                 base class; never raised directly
    ├── UserInputError          the caller gave us something we cannot use (CLI exit 2)
    │   ├── InvalidArgument     wrong value, shape, dtype, range, format, setting
    │   ├── NotFound            a file, model, version or column is missing
    │   └── MissingExtra        a command needs an optional install extra (e.g. ``train``)
    ├── ResourceExhausted       a bounded resource (queue, limit) is full
    │   └── InferenceFailed     LiteRT failed to run a graph (names model, graph, rows, what to change)
    ├── Unavailable             a component is not ready (loading, draining, port taken)
    ├── DeadlineExceeded        the caller's deadline passed before completion
    ├── Unauthenticated         no valid bearer token where the server requires one
    ├── Unimplemented           a call of an API mcdrop speaks that it does not serve (e.g. TF Serving's Classify)
    └── RpcFailed               a call to a server failed (client side; carries the status code)
"""

from __future__ import annotations

import errno
import os

__all__ = [
    "DeadlineExceeded",
    "InferenceFailed",
    "InvalidArgument",
    "MCDropError",
    "MissingExtra",
    "NotFound",
    "ResourceExhausted",
    "RpcFailed",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "UserInputError",
    "WriteFailed",
    "describe_os_error",
    "errno_name",
    "first_line",
]


class MCDropError(Exception):
    """Base class of every error mcdrop raises on purpose."""


class UserInputError(MCDropError):
    """The caller's input cannot be used; the message says what was expected."""


class InvalidArgument(UserInputError):
    """A value has the wrong type, shape, range or format."""


class NotFound(UserInputError):
    """A named file, model, version or column does not exist."""


class Unauthenticated(MCDropError):
    """A call without a valid bearer token (where the server requires one)."""


class Unimplemented(MCDropError):
    """A method of an API mcdrop speaks that it does not serve; the message says what to call instead."""


class MissingExtra(UserInputError):
    """A command needs an optional dependency group that is not installed."""


class ResourceExhausted(MCDropError):
    """A bounded resource is full; retrying later may succeed."""


class InferenceFailed(ResourceExhausted):
    """LiteRT could not run a graph on a request's rows (most often: memory); a smaller request may succeed."""


class Unavailable(MCDropError):
    """The component is not ready to serve the request."""


class DeadlineExceeded(MCDropError):
    """The request's deadline passed before its work finished."""


class WriteFailed(MCDropError):
    """A file could not be written (a full disk, a read-only folder); nothing half-written was left behind."""


class RpcFailed(MCDropError):
    """A call to a server failed; ``code`` is the gRPC status name (e.g. ``INVALID_ARGUMENT``)."""

    USER_CODES = frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "OUT_OF_RANGE", "UNAUTHENTICATED", "PERMISSION_DENIED"})

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    @property
    def is_user_error(self) -> bool:
        """The request was at fault (not the server or the network)."""
        return self.code in self.USER_CODES


def first_line(exc: BaseException, fallback: str | None = None) -> str:
    """The first non-empty line of ``exc``'s message, for a one-line report.

    Args:
        exc: any exception; its message may be empty or span many lines (a TensorFlow or LiteRT dump).
        fallback: said when the message is empty (default: the exception's type name).
    """
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return fallback if fallback is not None else type(exc).__name__


def errno_name(exc: OSError) -> str:
    """``ENOSPC``, ``EROFS``, …: from the errno, or from the message of an error that has none (Arrow, LiteRT)."""
    if exc.errno:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    text = str(exc)
    for code in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.ENOENT, errno.EDQUOT, errno.EIO):
        if os.strerror(code) in text:
            return errno.errorcode[code]
    return type(exc).__name__


def describe_os_error(exc: OSError) -> str:
    """One line for a failed file operation: what the system said, the file, and the errno's name, e.g.
    ``No space left on device (ENOSPC) writing /repo/digits/.staging-1-ab/mc.tflite``."""
    said = exc.strerror or first_line(exc)
    where = f" at {exc.filename}" if exc.filename else ""
    return f"{said} ({errno_name(exc)}){where}"
