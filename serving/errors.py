"""The one error tree of mcdrop.

Domain code raises these; exactly one place per transport translates them
(the CLI into exit code 2, the gRPC layer into a status code). Nothing here
imports ``grpc``.

    MCDropError                 base class; never raised directly
    ├── UserInputError          the caller gave us something we cannot use
    │   ├── InvalidArgument     wrong value, shape, dtype, range, format
    │   └── NotFound            a file, model, version or column is missing
    ├── ResourceExhausted       a bounded resource (queue, limit) is full
    ├── Unavailable             a component is not ready (loading, draining)
    ├── DeadlineExceeded        the caller's deadline passed before completion
    └── ExportError             an export failed verification or could not run
"""

from __future__ import annotations


class MCDropError(Exception):
    """Base class of every error mcdrop raises on purpose."""


class UserInputError(MCDropError):
    """The caller's input cannot be used; the message says what was expected."""


class InvalidArgument(UserInputError):
    """A value has the wrong type, shape, range or format."""


class NotFound(UserInputError):
    """A named file, model, version or column does not exist."""


class ResourceExhausted(MCDropError):
    """A bounded resource is full; retrying later may succeed."""


class Unavailable(MCDropError):
    """The component is not ready to serve the request."""


class DeadlineExceeded(MCDropError):
    """The request's deadline passed before its work finished."""


class ExportError(MCDropError):
    """An export could not be produced or failed its own verification."""
