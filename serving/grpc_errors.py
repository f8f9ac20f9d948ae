"""The one place where mcdrop errors become gRPC status codes, for every servicer.

Expected errors carry their message to the client. Anything else is logged
with its traceback under an incident id, and the client gets a generic message
naming that id: no traceback, no internals.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc

from serving import errors
from serving.metrics import Metrics

log = logging.getLogger("mcdrop.grpc")

STATUS: list[tuple[type[errors.MCDropError], grpc.StatusCode]] = [
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.UserInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
]

F = TypeVar("F", bound=Callable[..., Any])


def status_of(exc: errors.MCDropError) -> grpc.StatusCode:
    for kind, code in STATUS:
        if isinstance(exc, kind):
            return code
    return grpc.StatusCode.INTERNAL


def deadline_of(context: grpc.ServicerContext) -> float | None:
    """The call's deadline as a ``time.monotonic()`` value, or None."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


def translated(api: str, metrics: Metrics) -> Callable[[F], F]:
    """Decorate a unary-unary servicer method: map errors, count and time the call."""

    def decorate(method: F) -> F:
        name = method.__name__

        @functools.wraps(method)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return method(self, request, context)
            except errors.MCDropError as exc:
                code = status_of(exc)
                _abort(context, code, str(exc) if code != grpc.StatusCode.INTERNAL else _incident(exc, name))
            except Exception as exc:  # noqa: BLE001 - the server never dies on a request
                code = grpc.StatusCode.INTERNAL
                _abort(context, code, _incident(exc, name))
            finally:
                metrics.rpc(api, name, code.name).inc()
                metrics.rpc_seconds(api, name).observe(time.perf_counter() - started)

        return wrapper  # type: ignore[return-value]

    return decorate


def translated_stream(api: str, metrics: Metrics) -> Callable[[F], F]:
    """Decorate a unary-stream servicer method (a generator) the same way."""

    def decorate(method: F) -> F:
        name = method.__name__

        @functools.wraps(method)
        def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                yield from method(self, request, context)
            except errors.MCDropError as exc:
                code = status_of(exc)
                _abort(context, code, str(exc) if code != grpc.StatusCode.INTERNAL else _incident(exc, name))
            except Exception as exc:  # noqa: BLE001
                code = grpc.StatusCode.INTERNAL
                _abort(context, code, _incident(exc, name))
            except GeneratorExit:
                code = grpc.StatusCode.CANCELLED
                raise
            finally:
                metrics.rpc(api, name, code.name).inc()
                metrics.rpc_seconds(api, name).observe(time.perf_counter() - started)

        return wrapper  # type: ignore[return-value]

    return decorate


def _incident(exc: BaseException, method: str) -> str:
    incident = uuid.uuid4().hex[:12]
    log.error("internal error", exc_info=exc, extra={"incident": incident, "method": method})
    return f"Internal server error (incident {incident}); the details are in the server log."


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> None:
    context.abort(code, message)
