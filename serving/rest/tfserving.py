"""TensorFlow Serving's REST API, beside the Open Inference Protocol on the same port and data plane.

Endpoints (``VERSION`` = ``/versions/N`` or ``/labels/LABEL``, optional)::

    GET  /v1/models/NAME[VERSION]             model_version_status
    GET  /v1/models/NAME[VERSION]/metadata    the signature_def metadata
    POST /v1/models/NAME[VERSION]:predict     row ("instances") or columnar ("inputs") format
    POST /v1/models/NAME[VERSION]:classify    refused (501): mcdrop's models take no tf.Example
    POST /v1/models/NAME[VERSION]:regress     refused (501)

Bodies follow TensorFlow Serving's REST API: ``{"signature_name": …, "instances": […]}`` answers
``{"predictions": […]}``, ``{"inputs": …}`` answers ``{"outputs": …}``; one output is answered without its name (a
list of values per instance), several as objects; errors are ``{"error": "…"}``. What the answers hold is
``mcdrop.serving.protocols.tfserving``'s, shared with gRPC. Two additions, both optional: the controls
(``mc_samples``, ``seed``, ``mode``, …) as named inputs (scalars; in the row format the same in every instance), and
``"output_filter": [names]`` as in gRPC's Predict. Without it a REST answer holds the model's outputs (the
Monte-Carlo means), so a TensorFlow Serving caller parses it unchanged.
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import numpy as np
from starlette.requests import Request

from mcdrop.serving.errors import InvalidArgument, NotFound
from mcdrop.serving.models.repository import ModelVersion
from mcdrop.serving.protocols import oip
from mcdrop.serving.protocols import tfserving as protocol
from mcdrop.serving.protocols.outputs import SAMPLES
from mcdrop.serving.rest.codec import read_body, split_body
from mcdrop.serving.runtime.dataplane import DataPlane

__all__ = ["routes"]

Handler = Callable[[Request], Awaitable[Any]]
_BODY_KEYS = ("signature_name", "instances", "inputs", "output_filter")


def routes(plane: DataPlane, max_body_bytes: int) -> list[tuple[str, str, str, Handler]]:
    """``(path, method, name, handler)`` of every endpoint; the app adds authentication, metrics and errors."""

    def version_of(request: Request) -> ModelVersion:
        name, params = request.path_params["name"], request.path_params
        if ":" in name:  # e.g. GET /v1/models/NAME:predict
            raise NotFound(f"Malformed request: {request.method} {request.url.path}. Expected POST for :predict, "
                           "GET for the status and /metadata.")  # fmt: skip
        if "label" in params:
            return plane.labelled(name, params["label"])
        return plane.model(name, oip.parse_version(params["version"]) if "version" in params else None)

    async def status(request: Request) -> Any:
        def run() -> Any:
            name, params = request.path_params["name"], request.path_params
            if ":" in name:
                version_of(request)  # the malformed-request error
            found = plane.model_status(name)
            version = None
            if "label" in params:
                version = plane.version_labels.version(name, params["label"])
            elif "version" in params:
                version = oip.parse_version(params["version"])
            return {"model_version_status": protocol.version_status(found.versions, found.failed, version)}

        return await anyio.to_thread.run_sync(run)

    async def metadata(request: Request) -> Any:
        def run() -> Any:
            found = version_of(request)
            signatures = protocol.signature_def_map(found, plane.default_variant)
            return {"model_spec": protocol.model_spec(found.name, found.version, ""),
                    "metadata": {protocol.SIGNATURE_DEF: signatures}}  # fmt: skip

        return await anyio.to_thread.run_sync(run)

    async def predict(request: Request) -> Any:
        raw = await read_body(request, max_body_bytes)

        def run() -> Any:
            body, _ = split_body(raw, None)
            found = version_of(request)
            decoded, selection, row_format = decode_predict(body, found)
            decoded = dataclasses.replace(decoded, request_id=request.headers.get("x-request-id", "")[:256])
            prediction = plane.predict(decoded)
            return encode_predict(protocol.answer(found, prediction, selection), row_format)

        return await anyio.to_thread.run_sync(run)

    def refused(method: str) -> Handler:
        async def refuse(request: Request) -> Any:
            raise protocol.unimplemented(method)

        return refuse

    async def unknown_verb(request: Request) -> Any:
        raise NotFound(f"Malformed request: POST {request.url.path}. Expected :predict (or :classify, :regress).")

    found: list[tuple[str, str, str, Handler]] = []
    for prefix in ("/v1/models/{name}", "/v1/models/{name}/versions/{version}", "/v1/models/{name}/labels/{label}"):
        found += [
            (prefix, "GET", "GetModelStatus", status),
            (f"{prefix}/metadata", "GET", "GetModelMetadata", metadata),
            (f"{prefix}:predict", "POST", "Predict", predict),
            (f"{prefix}:classify", "POST", "Classify", refused("Classify")),
            (f"{prefix}:regress", "POST", "Regress", refused("Regress")),
            (prefix + ":{verb}", "POST", "Unknown", unknown_verb),
        ]
    return found


def decode_predict(body: Any, version: ModelVersion) -> tuple[Any, protocol.Selection, bool]:
    """The data-plane request of a predict body, the outputs to answer, and whether it is in the row format."""
    if not isinstance(body, dict):
        raise InvalidArgument(f"Invalid request body. Expected a JSON object. Received: {type(body).__name__}")
    unknown = [key for key in body if key not in _BODY_KEYS]
    if unknown:
        raise InvalidArgument(f"Unknown key(s) {unknown} in the request body. Expected any of: {', '.join(_BODY_KEYS)}")
    if ("instances" in body) == ("inputs" in body):
        raise InvalidArgument('Invalid request body. Expected exactly one of "instances" (row format) or "inputs" '
                              "(columnar format).")  # fmt: skip
    signature = body.get("signature_name", "")
    if not isinstance(signature, str):
        raise InvalidArgument(f"Invalid signature_name. Expected a string. Received: {signature!r:.40}")
    output_filter = body.get("output_filter", [])
    if not isinstance(output_filter, list) or not all(isinstance(name, str) for name in output_filter):
        raise InvalidArgument(f"Invalid output_filter. Expected a list of output names. "
                              f"Received: {output_filter!r:.80}")  # fmt: skip
    row_format = "instances" in body
    inputs = _rows(body["instances"], version) if row_format else _columns(body["inputs"], version)
    decoded, selection = protocol.predict_request(version, signature, inputs, output_filter, default="model")
    if row_format and any(oip_name.rpartition("/")[2] == SAMPLES for _, oip_name in selection.outputs):
        raise InvalidArgument("Output samples is [T, B, ...], not one value per instance: ask for it in the columnar "
                              'format ("inputs").')  # fmt: skip
    if row_format and decoded.return_samples and not selection.outputs:
        raise InvalidArgument("return_samples answers samples ([T, B, ...], not one value per instance): use the "
                              'columnar format ("inputs").')  # fmt: skip
    return decoded, selection, row_format


def _rows(instances: Any, version: ModelVersion) -> dict[str, Any]:
    """Row format: a list of instances, each a value (a single-input model) or an object of named inputs."""
    if not isinstance(instances, list) or not instances:
        raise InvalidArgument(f'Invalid "instances". Expected a non-empty list, one item per row. '
                              f"Received: {instances!r:.80}")  # fmt: skip
    names = [spec.name for spec in version.inputs]
    if not isinstance(instances[0], dict):
        if len(names) != 1:
            raise InvalidArgument(f"Model {version.name!r} takes inputs {names}: each instance must be an object of "
                                  "named inputs.")  # fmt: skip
        return {names[0]: _numbers(instances, names[0])}
    if not all(isinstance(instance, dict) for instance in instances):
        raise InvalidArgument('Invalid "instances": every instance must be an object when the first one is.')
    keys = list(instances[0])
    for index, instance in enumerate(instances):
        if set(instance) != set(keys):
            raise InvalidArgument(f"Instance {index} has inputs {sorted(instance)}. Expected the same as instance 0: "
                                  f"{sorted(keys)}.")  # fmt: skip
    inputs: dict[str, Any] = {}
    for key in keys:
        values = [instance[key] for instance in instances]
        if key in protocol.CONTROLS:
            first = values[0]
            if any(value != first for value in values[1:]):
                raise InvalidArgument(f"Control {key!r} differs between instances. Expected one value for the whole "
                                      "request (the same in every instance), or the columnar format.")  # fmt: skip
            inputs[key] = _control(first, key)
        else:
            inputs[key] = _numbers(values, key)
    return inputs


def _columns(columns: Any, version: ModelVersion) -> dict[str, Any]:
    """Columnar format: an object of named inputs (each batch-first), or the value of a single-input model's input."""
    names = [spec.name for spec in version.inputs]
    if not isinstance(columns, dict):
        if len(names) != 1:
            raise InvalidArgument(f"Model {version.name!r} takes inputs {names}: \"inputs\" must be an object of "
                                  "named inputs.")  # fmt: skip
        return {names[0]: _numbers(columns, names[0])}
    return {key: _control(value, key) if key in protocol.CONTROLS else _numbers(value, key)
            for key, value in columns.items()}  # fmt: skip


def _numbers(value: Any, name: str) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):
            array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgument(f"Invalid values of input {name!r}. Expected numbers, evenly nested (one list per row)."
                              ) from None  # fmt: skip
    if array.dtype == object or _has_bool(value):
        raise InvalidArgument(f"Invalid values of input {name!r}. Expected numbers. Received booleans.")
    return array


def _has_bool(value: Any) -> bool:
    """JSON true/false convert to numbers silently in numpy: refuse them (only the first item at each depth is looked
    at, enough for evenly nested lists; a mixed list is caught by numpy or the core's checks)."""
    while isinstance(value, list) and value:
        value = value[0]
    return isinstance(value, bool)


def _control(value: Any, name: str) -> Any:
    """A control's JSON value; a string may come as TensorFlow Serving's binary form ``{"b64": "…"}``."""
    if isinstance(value, dict):
        if set(value) != {"b64"} or not isinstance(value["b64"], str):
            raise InvalidArgument(f'Invalid control {name!r}. Expected a scalar or {{"b64": "..."}}.')
        try:
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:
            raise InvalidArgument(f"Invalid base64 in control {name!r}.") from None
    if isinstance(value, list):
        if len(value) != 1:
            raise InvalidArgument(f"Invalid control {name!r}. Expected a scalar. Received a list of {len(value)}.")
        value = value[0]
    return value


def encode_predict(arrays: dict[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """``{"predictions": …}`` (row format: per instance, a value for one output, else an object) or
    ``{"outputs": …}`` (columnar: the value for one output, else an object of them)."""
    if not row_format:
        values = {name: array.tolist() for name, array in arrays.items()}
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    if len(arrays) == 1:
        return {"predictions": next(iter(arrays.values())).tolist()}
    columns = {name: array.tolist() for name, array in arrays.items()}
    rows = len(next(iter(columns.values())))
    return {"predictions": [{name: column[row] for name, column in columns.items()} for row in range(rows)]}
