"""The Open Inference Protocol over HTTP/REST (KServe V2 JSON), beside gRPC, on the same data plane.

Endpoints: ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``GET /v2/models/{name}[/versions/{v}]``,
``.../ready`` and ``POST .../infer``. Tensors are JSON (``data`` flat, row-major); the request
``parameters`` and the outputs are the gRPC OIP's (``mcdrop.serving.grpc.oip``), so a seeded request gets
the same numbers over either transport. Errors are ``{"error": "..."}`` with the HTTP status of the
error's kind; an unexpected one is a 500 naming a logged incident, never a traceback.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import anyio.to_thread
import grpc
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcdrop.serving import __version__
from mcdrop.serving.errors import InvalidArgument, MCDropError, Unauthenticated
from mcdrop.serving.grpc import oip
from mcdrop.serving.grpc.status import code_of, incident_message
from mcdrop.serving.runtime.dataplane import DataPlane, Prediction
from mcdrop.serving.runtime.metrics import Metrics
from mcdrop.serving.runtime.tokens import TokenStore

API = "rest"
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
# JSON parameter → the Python types it accepts (bool is an int in Python: refused where a number is wanted)
_PARAMETER_TYPES: dict[str, tuple[type, ...]] = {
    "mc_samples": (int,),
    "seed": (int,),
    "mode": (str,),
    "return_samples": (bool,),
    "interval": (int, float),
}


class _Json(JSONResponse):
    """JSON that can carry the NaN/Infinity a model may output for extreme inputs (as Python's json reads them),
    rather than failing the answer."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=True, separators=(",", ":")).encode("utf-8")


class _TooLarge(MCDropError):
    """A request body above the server's message limit."""


def make_app(plane: DataPlane, metrics: Metrics, tokens: TokenStore, max_body_bytes: int) -> Starlette:
    """The REST application: every route runs the data plane in a worker thread (it blocks)."""

    def route(path: str, method: str, name: str, handler: Callable[[Request], Awaitable[Any]]) -> Route:
        async def endpoint(request: Request) -> Response:
            started, status = time.perf_counter(), 200
            try:
                if tokens.enabled and not path.startswith("/v2/health"):
                    _authenticate(request, tokens)
                body = await handler(request)
                if isinstance(body, Response):
                    status = body.status_code
                    return body
                return _Json(body)
            except Exception as exc:  # noqa: BLE001 - the server never dies on a request
                status, message = _error(exc, name)
                return JSONResponse({"error": message}, status_code=status)
            finally:
                metrics.rpc(API, name, str(status)).inc()
                metrics.rpc_seconds(API, name).observe(time.perf_counter() - started)

        return Route(path, endpoint, methods=[method], name=name)

    async def server_metadata(request: Request) -> Any:
        return {"name": "mcdrop", "version": __version__, "extensions": ["mc_dropout"]}

    async def live(request: Request) -> Any:
        return {"live": True}

    async def ready(request: Request) -> Any:
        is_ready = plane.server_ready()
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    async def model_metadata(request: Request) -> Any:
        name, version = _model(request)

        def describe() -> Any:
            found = plane.model(name, version)
            return metadata_json(found, plane.loaded_versions(found.name))

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
        body = await _json_body(request, max_body_bytes)

        def run() -> Any:
            found = plane.model(name, version)
            decoded, wanted = decode_infer(body, found)
            return encode_infer(body, plane.predict(decoded), wanted)

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
            route(f"{prefix}/infer", "POST", "ModelInfer", infer),
        ]
    return Starlette(routes=routes)


def metadata_json(version: Any, loaded: list[int]) -> dict[str, Any]:
    return {
        "name": version.name,
        "versions": [str(v) for v in loaded],
        "platform": oip.PLATFORM,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": list(version.input_shape)}],
        "outputs": [{"name": n, "datatype": d, "shape": s} for n, d, s in oip.output_tensors(version)],
        "parameters": version.uncertainty_source(),
    }


def decode_infer(body: Any, version: Any) -> tuple[Any, list[str]]:
    """The data-plane request of a JSON infer body, checked as strictly as the gRPC OIP's."""
    if not isinstance(body, dict):
        raise InvalidArgument(f"Invalid request body. Expected a JSON object. Received: {type(body).__name__}")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        count = len(inputs) if isinstance(inputs, list) else "no list"
        raise InvalidArgument(f"Model {version.name!r} takes 1 input named 'x'. Received: {count}")
    tensor = inputs[0]
    if tensor.get("name") != "x":
        raise InvalidArgument(f"Unknown input {tensor.get('name')!r}. Expected inputs: 'x'.")
    datatype = tensor.get("datatype")
    if datatype != "FP32":
        raise InvalidArgument(f"Invalid datatype for input 'x'. Expected FP32. Received: {datatype!r}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidArgument(f"Invalid shape for input 'x'. Expected a list of integers. Received: {shape!r}")
    oip.check_input_shape(version, shape)
    x = _tensor_data(tensor.get("data"), shape)
    wanted = _wanted(body.get("outputs"))
    return oip.infer_request(version, x, _parameters(body.get("parameters")), wanted)


def encode_infer(body: dict[str, Any], prediction: Prediction, wanted: list[str]) -> dict[str, Any]:
    arrays = oip.output_arrays(prediction)
    outputs = []
    for name in wanted:
        array = np.asarray(arrays[name])
        outputs.append({"name": name, "datatype": oip.datatype_of(array), "shape": list(array.shape),
                        "data": array.reshape(-1).tolist()})  # fmt: skip
    parameters: dict[str, Any] = {"mc_samples": prediction.samples, "mode": prediction.mode,
                                  "model_version": str(prediction.version)}  # fmt: skip
    if prediction.seed is not None:
        parameters["seed"] = prediction.seed
    if prediction.task == "regression":
        parameters["epistemic_only"] = prediction.noise_variance is None
    response = {"model_name": prediction.model, "model_version": str(prediction.version), "outputs": outputs,
                "parameters": parameters}  # fmt: skip
    if isinstance(body.get("id"), str):
        response["id"] = body["id"]
    return response


def _tensor_data(data: Any, shape: list[int]) -> np.ndarray:
    count = math.prod(shape)
    if isinstance(data, list) and len(data) == count and not any(v is True or v is False for v in data):
        try:  # the common case, a flat list of numbers: one C-level conversion
            with np.errstate(over="ignore"):
                return np.asarray(data, dtype=np.float64).astype(np.float32).reshape(shape)
        except (TypeError, ValueError, OverflowError):
            pass  # strings, nulls, nested lists or huge integers: the checks below name the problem
    if not isinstance(data, list):
        raise InvalidArgument(f"Invalid data for input 'x'. Expected a list of {count} numbers. Received: {data!r:.80}")
    try:
        values = np.asarray(data, dtype=object).reshape(-1)
    except ValueError:
        raise InvalidArgument(
            "Invalid data for input 'x'. Expected a flat (or evenly nested) list of numbers."
        ) from None
    if values.size != count:
        raise InvalidArgument(
            f"Invalid data for input 'x'. Expected {count} values for shape {shape}. Received: {values.size}"
        )
    bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, int | float)), None)
    if bad is not None or (values.size and any(isinstance(v, list) for v in values)):
        raise InvalidArgument(f"Invalid value {bad!r} in input 'x'. Expected numbers (FP32).")
    try:
        with np.errstate(over="ignore"):
            array = values.astype(np.float64).astype(np.float32)
    except OverflowError:
        raise InvalidArgument("Invalid value in input 'x': an integer beyond the float range. Expected FP32.") from None
    return array.reshape(shape)


def _parameters(parameters: Any) -> dict[str, Any]:
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidArgument(f"Invalid parameters. Expected a JSON object. Received: {parameters!r:.80}")
    values: dict[str, Any] = {}
    for name, raw in parameters.items():
        value: Any = raw
        if name in oip.IGNORED_PARAMETERS:
            continue
        if name not in _PARAMETER_TYPES:
            raise InvalidArgument(f"Unknown parameter {name!r}. Expected any of: {', '.join(_PARAMETER_TYPES)}")
        kinds = _PARAMETER_TYPES[name]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            expected = " or ".join(k.__name__ for k in kinds)
            raise InvalidArgument(f"Invalid type for parameter {name!r}. Expected {expected}. Received: {value!r:.40}")
        if name in ("mc_samples", "seed") and not -(2**63) <= cast(int, value) < 2**63:
            raise InvalidArgument(f"Invalid parameter {name!r}. Expected an int64. Received: {value}")
        values[name] = float(cast(float, value)) if name == "interval" else value
    return values


def _wanted(outputs: Any) -> list[str]:
    if outputs is None:
        return []
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InvalidArgument('Invalid outputs. Expected a list of {"name": "..."} objects.')
    return [o["name"] for o in outputs]


def _model(request: Request) -> tuple[str, int | None]:
    version = request.path_params.get("version")
    return request.path_params["name"], oip.parse_version(version) if version is not None else None


async def _json_body(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge(f"Request body of {int(declared)} bytes. Expected at most {limit} bytes.")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise _TooLarge(f"Request body above {limit} bytes. Expected at most {limit} bytes.")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"Invalid JSON body: {exc}") from None


def _authenticate(request: Request, tokens: TokenStore) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token or not tokens.valid(token.strip()):
        raise Unauthenticated("Missing or invalid bearer token. Expected the header 'Authorization: Bearer <token>'.")


def _error(exc: Exception, name: str) -> tuple[int, str]:
    if isinstance(exc, _TooLarge):
        return 413, str(exc)
    code = code_of(exc)
    if code == grpc.StatusCode.INTERNAL:
        return 500, incident_message(exc, name)
    return HTTP_STATUS.get(code, 400), str(exc).splitlines()[0] if str(exc) else type(exc).__name__
