"""The one place where mcdrop errors become gRPC status codes, for every gRPC servicer (REST: ``rest.status``).

Expected errors carry their message to the client. Anything else is logged
with its traceback under an incident id, and the client gets a generic message
naming that id: no traceback, no internals.
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from mcdrop.serving import errors
from mcdrop.serving.runtime.incidents import incident_message
from mcdrop.serving.runtime.metrics import Metrics

__all__ = ["deadline_of", "request_id_of", "translated"]

log = logging.getLogger("mcdrop.grpc")

STATUS: list[tuple[type[errors.MCDropError], grpc.StatusCode]] = [
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
    (errors.UserInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
]

F = TypeVar("F", bound=Callable[..., Any])


def code_of(exc: BaseException) -> grpc.StatusCode:
    """The status code of an error: by its place in the error tree; INTERNAL for anything unexpected."""
    for kind, code in STATUS:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


NO_DEADLINE_SECONDS = 86400.0 * 365
"""A deadline further away than this is none: clients with "no timeout" (perf_analyzer) send one centuries away,
which no wait can take (``threading`` refuses timeouts past ``TIMEOUT_MAX``)."""


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """The call's deadline as a ``time.monotonic()`` value, or None."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > NO_DEADLINE_SECONDS else time.monotonic() + remaining


def request_id_of(context: grpc.ServicerContext) -> str:
    """The call's ``x-request-id`` metadata, or ``""``."""
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            return str(value)[:256]
    return ""


def translated(api: str, metrics: Metrics) -> Callable[[F], F]:
    """Decorate a servicer method, unary (returns a message) or streaming (a generator of messages):
    map mcdrop errors to status codes, hide unexpected ones behind an incident id, count and time the call."""

    def decorate(method: F) -> F:
        name = method.__name__

        def finish(code: grpc.StatusCode, started: float) -> None:
            metrics.rpc(api, name, code.name).inc()
            metrics.rpc_seconds(api, name).observe(time.perf_counter() - started)

        if inspect.isgeneratorfunction(method):

            @functools.wraps(method)
            def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                started, code = time.perf_counter(), grpc.StatusCode.OK
                try:
                    yield from method(self, request, context)
                except GeneratorExit:  # the client cancelled; the generator is being closed
                    code = grpc.StatusCode.CANCELLED
                    raise
                except Exception as exc:  # noqa: BLE001 - the server never dies on a request
                    code = code_of(exc)
                    context.abort(code, _message(exc, code, name))
                finally:
                    finish(code, started)

            return stream  # type: ignore[return-value]

        @functools.wraps(method)
        def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            started, code = time.perf_counter(), grpc.StatusCode.OK
            try:
                return method(self, request, context)
            except Exception as exc:  # noqa: BLE001 - the server never dies on a request
                code = code_of(exc)
                context.abort(code, _message(exc, code, name))
            finally:
                finish(code, started)

        return unary  # type: ignore[return-value]

    return decorate


def _message(exc: Exception, code: grpc.StatusCode, method: str) -> str:
    """The client's message: the error's own, or for unexpected errors a generic one naming a logged incident."""
    return str(exc) if code != grpc.StatusCode.INTERNAL else incident_message(exc, method, log)
