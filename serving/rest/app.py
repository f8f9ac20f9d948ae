"""The Open Inference Protocol over HTTP/REST (KServe V2 JSON), beside gRPC, on the same data plane; and TensorFlow
Serving's REST API (``/v1/models/...``, ``mcdrop.serving.rest.tfserving``).

Endpoints: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``GET /v2/models/{name}[/versions/{v}]``,
``.../ready``, ``.../config`` (Triton's model configuration) and ``POST .../infer``. Bodies are converted in
``mcdrop.serving.rest.codec``; what they say is the protocol's (``mcdrop.serving.protocols.oip``, shared with
gRPC), so a seeded request gets the same numbers over either transport. Errors are ``{"error": "..."}`` with the
HTTP status of the error's kind (``mcdrop.serving.rest.status``); an unexpected one is a 500 naming a logged
incident.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcdrop.serving.errors import Unauthenticated
from mcdrop.serving.protocols import oip as protocol
from mcdrop.serving.rest import tfserving
from mcdrop.serving.rest.codec import HEADER_LENGTH, decode_infer, dump_json, encode_infer, read_body, split_body
from mcdrop.serving.rest.status import status_of
from mcdrop.serving.runtime.auth import BearerAuth
from mcdrop.serving.runtime.dataplane import DataPlane
from mcdrop.serving.runtime.metrics import Metrics

__all__ = ["API", "make_app"]

API = "rest"


class _Json(JSONResponse):
    """JSON through ``codec.dump_json``: fast, and carrying the NaN/Infinity a model may output for extreme inputs
    (as Python's json reads them) rather than failing the answer."""

    def render(self, content: Any) -> bytes:
        return dump_json(content)


def make_app(plane: DataPlane, metrics: Metrics, auth: BearerAuth, max_body_bytes: int) -> Starlette:
    """The REST application: every route runs the data plane in a worker thread (it blocks)."""

    def route(path: str, method: str, name: str, handler: Callable[[Request], Awaitable[Any]]) -> Route:
        async def endpoint(request: Request) -> Response:
            started, status = time.perf_counter(), 200
            try:
                if auth.enabled and not path.startswith("/v2/health"):
                    _authenticate(request, auth)
                body = await handler(request)
                if isinstance(body, Response):
                    status = body.status_code
                    return body
                return _Json(body)
            except Exception as exc:  # noqa: BLE001 - the server never dies on a request
                status, message = status_of(exc, name)
                return JSONResponse({"error": message}, status_code=status)
            finally:
                metrics.rpc(API, name, str(status)).inc()
                metrics.rpc_seconds(API, name).observe(time.perf_counter() - started)

        return Route(path, endpoint, methods=[method], name=name)

    async def server_metadata(request: Request) -> Any:
        return protocol.server_metadata()

    async def live(request: Request) -> Any:
        return {"live": True}

    async def ready(request: Request) -> Any:
        is_ready = plane.server_ready()
        body: dict[str, Any] = {"ready": is_ready}
        problem = plane.repository_problem()
        if problem is not None:  # still ready (loaded versions serve), but new versions cannot arrive: say why
            body["repository"] = {"readable": False, "reason": problem}
        return JSONResponse(body, status_code=200 if is_ready else 503)

    async def model_metadata(request: Request) -> Any:
        name, version = _model(request)

        def describe() -> Any:
            found = plane.model(name, version)
            return protocol.model_metadata(found, plane.loaded_versions(found.name))

        return await anyio.to_thread.run_sync(describe)

    async def model_config(request: Request) -> Any:
        name, version = _model(request)

        def describe() -> Any:
            found = plane.model(name, version)
            return protocol.model_config(found, plane.loaded_versions(found.name), plane.limits.max_batch or 0)

        return await anyio.to_thread.run_sync(describe)

    async def model_ready(request: Request) -> Any:
        name, version = _model(request)

        def check() -> bool:
            plane.model(name, version)  # unknown model or version: 404, like metadata and infer
            return plane.model_ready(name, version)

        is_ready = await anyio.to_thread.run_sync(check)
        return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)

    async def infer(request: Request) -> Any:
        name, version = _model(request)
        raw = await read_body(request, max_body_bytes)

        def run() -> Any:
            body, binary = split_body(raw, request.headers.get(HEADER_LENGTH))
            found = plane.model(name, version)
            decoded, wanted, binary_outputs = decode_infer(body, found, binary)
            given = body.get("id") if isinstance(body, dict) else None
            request_id = given if isinstance(given, str) and given else request.headers.get("x-request-id", "")
            decoded = dataclasses.replace(decoded, request_id=request_id[:256])
            response, blobs = encode_infer(body, plane.predict(decoded), wanted, binary_outputs)
            if not blobs:
                return response
            header = _Json(response).body
            return Response(b"".join([header, *blobs]), media_type="application/octet-stream",
                            headers={"Inference-Header-Content-Length": str(len(header))})  # fmt: skip

        return await anyio.to_thread.run_sync(run)

    routes = [
        route("/v2", "GET", "ServerMetadata", server_metadata),
        route("/v2/health/live", "GET", "ServerLive", live),
        route("/v2/health/ready", "GET", "ServerReady", ready),
    ]
    for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
        routes += [
            route(prefix, "GET", "ModelMetadata", model_metadata),
            route(f"{prefix}/ready", "GET", "ModelReady", model_ready),
            route(f"{prefix}/config", "GET", "ModelConfig", model_config),
            route(f"{prefix}/infer", "POST", "ModelInfer", infer),
        ]
    routes += [route(*endpoint) for endpoint in tfserving.routes(plane, max_body_bytes)]
    return Starlette(routes=routes, exception_handlers={404: _no_route, 405: _no_route})


async def _no_route(request: Request, exc: Exception) -> JSONResponse:
    """Every answer is JSON, a path or method no route takes included (Starlette's own are plain text)."""
    status = getattr(exc, "status_code", 404)
    what = "No such endpoint" if status == 404 else "Method not allowed"
    return JSONResponse({"error": f"{what}: {request.method} {request.url.path}. Expected the Open Inference "
                                  "Protocol's /v2/… or TensorFlow Serving's /v1/models/… (see GET /v2)."},
                        status_code=status)  # fmt: skip


def _model(request: Request) -> tuple[str, int | None]:
    version = request.path_params.get("version")
    return request.path_params["name"], protocol.parse_version(version) if version is not None else None


def _authenticate(request: Request, auth: BearerAuth) -> None:
    refused = auth.refusal(request.headers.get("authorization", ""), "the header 'Authorization: Bearer <token>'")
    if refused is not None:
        raise Unauthenticated(refused)
