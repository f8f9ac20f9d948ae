"""JSON bodies of the Open Inference Protocol over REST (KServe V2): infer requests in, responses out.

Tensors are JSON (``data`` flat, row-major, or evenly nested); inputs, outputs and parameters are the
protocol's (``mcdrop.serving.protocols.oip``), checked as strictly as over gRPC.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
from starlette.requests import Request

from mcdrop.serving.core.requests import Prediction, PredictionRequest
from mcdrop.serving.errors import InvalidArgument, MCDropError
from mcdrop.serving.models.repository import ModelVersion
from mcdrop.serving.protocols import oip as protocol
from mcdrop.serving.protocols.outputs import output_arrays

__all__ = ["BodyTooLarge", "decode_infer", "encode_infer", "json_body"]


class BodyTooLarge(MCDropError):
    """A request body above the server's message limit."""


def decode_infer(body: Any, version: ModelVersion) -> tuple[PredictionRequest, list[str]]:
    """The data-plane request of a JSON infer body, checked as strictly as the gRPC OIP's."""
    if not isinstance(body, dict):
        raise InvalidArgument(f"Invalid request body. Expected a JSON object. Received: {type(body).__name__}")
    inputs = body.get("inputs")
    expected = protocol.input_names(version)
    if not isinstance(inputs, list) or not all(isinstance(i, dict) for i in inputs):
        received = "no list" if not isinstance(inputs, list) else "a list with items that are not JSON objects"
        takes = f"1 input named {expected[0]!r}" if len(expected) == 1 else f"{len(expected)} inputs {expected}"
        raise InvalidArgument(
            f"Model {version.name!r} takes {takes}: a list of JSON objects under 'inputs'. Received: {received}"
        )
    # Counts and names are checked as over gRPC, so a missing, extra or repeated input is named.
    protocol.check_inputs(version, [tensor.get("name") for tensor in inputs])
    x: dict[str, np.ndarray] = {}
    for tensor in inputs:
        shape = protocol.check_input(version, tensor.get("name"), tensor.get("datatype"), tensor.get("shape"))
        x[tensor["name"]] = _tensor_data(tensor.get("data"), shape, tensor["name"])
    wanted = _wanted(body.get("outputs"))
    return protocol.infer_request(version, x, _parameters(body.get("parameters")), wanted)


def encode_infer(body: dict[str, Any], prediction: Prediction, wanted: list[str]) -> dict[str, Any]:
    arrays = output_arrays(prediction)
    outputs = []
    for name in wanted:
        array = np.asarray(arrays[name])
        outputs.append({"name": name, "datatype": protocol.datatype_of(array), "shape": list(array.shape),
                        "data": array.reshape(-1).tolist()})  # fmt: skip
    response = {"model_name": prediction.model, "model_version": str(prediction.version), "outputs": outputs,
                "parameters": protocol.response_parameters(prediction)}  # fmt: skip
    if isinstance(body.get("id"), str):
        response["id"] = body["id"]
    return response


def _tensor_data(data: Any, shape: list[int], name: str) -> np.ndarray:
    count = math.prod(shape)
    if isinstance(data, list) and len(data) == count and not any(v is True or v is False for v in data):
        try:  # the common case, a flat list of numbers: one C-level conversion
            with np.errstate(over="ignore"):
                return np.asarray(data, dtype=np.float64).astype(np.float32).reshape(shape)
        except (TypeError, ValueError, OverflowError):
            pass  # strings, nulls, nested lists or huge integers: the checks below name the problem
    if not isinstance(data, list):
        raise InvalidArgument(
            f"Invalid data for input {name!r}. Expected a list of {count} numbers. Received: {data!r:.80}"
        )
    try:
        values = np.asarray(data, dtype=object).reshape(-1)
    except ValueError:
        raise InvalidArgument(
            f"Invalid data for input {name!r}. Expected a flat (or evenly nested) list of numbers."
        ) from None
    if values.size != count:
        raise InvalidArgument(
            f"Invalid data for input {name!r}. Expected {count} values for shape {shape}. Received: {values.size}"
        )
    bad = next((v for v in values if isinstance(v, bool) or not isinstance(v, int | float)), None)
    if bad is not None or (values.size and any(isinstance(v, list) for v in values)):
        raise InvalidArgument(f"Invalid value {bad!r} in input {name!r}. Expected numbers (FP32).")
    try:
        with np.errstate(over="ignore"):
            array = values.astype(np.float64).astype(np.float32)
    except OverflowError:
        raise InvalidArgument(
            f"Invalid value in input {name!r}: an integer beyond the float range. Expected FP32."
        ) from None
    return array.reshape(shape)


def _parameters(parameters: Any) -> dict[str, Any]:
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidArgument(f"Invalid parameters. Expected a JSON object. Received: {parameters!r:.80}")
    values: dict[str, Any] = {}
    for name, raw in parameters.items():
        value = protocol.check_parameter(name, raw)
        if value is not None:
            values[name] = value
    return values


def _wanted(outputs: Any) -> list[str]:
    if outputs is None:
        return []
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InvalidArgument('Invalid outputs. Expected a list of {"name": "..."} objects.')
    return [o["name"] for o in outputs]


async def json_body(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Request body of {int(declared)} bytes. Expected at most {limit} bytes.")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise BodyTooLarge(f"Request body above {limit} bytes. Expected at most {limit} bytes.")
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"Invalid JSON body: {exc}") from None
