"""Bodies of the Open Inference Protocol over REST (KServe V2): infer requests in, responses out.

Tensors are JSON (``data`` flat, row-major, or evenly nested) or, with Triton's **binary tensor data extension**,
raw little-endian bytes after the JSON header: the request's ``Inference-Header-Content-Length`` header says how
many bytes are JSON, each binary input says its byte count in ``parameters.binary_data_size`` (in input order),
and an output asked for with ``parameters.binary_data: true`` (or every output, with the request parameter
``binary_data_output: true``, as ``tritonclient.http`` sends by default) comes back the same way. Inputs, outputs
and parameters are the protocol's (``mcdrop.serving.protocols.oip``), checked as strictly as over gRPC.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request

from mcdrop.serving.core.requests import Prediction, PredictionRequest
from mcdrop.serving.errors import InvalidArgument, MCDropError
from mcdrop.serving.models.repository import ModelVersion
from mcdrop.serving.protocols import oip as protocol

__all__ = ["HEADER_LENGTH", "BodyTooLarge", "decode_infer", "dump_json", "encode_infer", "read_body", "split_body"]

HEADER_LENGTH = "inference-header-content-length"
"""The request/response header that says how many leading bytes of a body are JSON (binary extension)."""
BINARY_OUTPUT = "binary_data_output"


class BodyTooLarge(MCDropError):
    """A request body above the server's message limit."""


EVERY_OUTPUT = "*"
"""In the binary outputs: every output answered is binary (``binary_data_output`` without named outputs)."""


def decode_infer(
    body: Any, version: ModelVersion, binary: bytes = b""
) -> tuple[PredictionRequest, list[str], set[str]]:
    """The data-plane request of an infer body (its JSON and the binary bytes after it), checked as strictly as the
    gRPC OIP's; the outputs asked for, and which of them to answer in binary."""
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
    offset = 0
    for tensor in inputs:
        shape = protocol.check_input(version, tensor.get("name"), tensor.get("datatype"), tensor.get("shape"))
        size = _binary_size(tensor)
        if size is None:
            x[tensor["name"]] = _tensor_data(tensor.get("data"), shape, tensor["name"])
        else:
            x[tensor["name"]] = _binary_tensor(binary, offset, size, tensor, shape)
            offset += size
    if offset != len(binary):
        raise InvalidArgument(
            f"Invalid binary data: the inputs' binary_data_size add up to {offset} bytes. Received: {len(binary)} "
            "bytes after the JSON header (Inference-Header-Content-Length)."
        )
    parameters = _parameters(body.get("parameters"))
    all_binary = bool(parameters.pop(BINARY_OUTPUT, False))
    wanted, binary_outputs = _wanted(body.get("outputs"))
    decoded = protocol.infer_request(version, x, parameters, wanted)
    if all_binary and not wanted:
        binary_outputs = {EVERY_OUTPUT}
    return decoded[0], decoded[1], binary_outputs


def encode_infer(
    body: dict[str, Any],
    prediction: Prediction,
    wanted: list[str],
    binary: set[str] = frozenset(),  # type: ignore[assignment]
) -> tuple[dict[str, Any], list[bytes]]:
    """The JSON response, and the raw bytes of the outputs answered in binary (in output order)."""
    outputs = []
    blobs: list[bytes] = []
    for name, selected in protocol.selected_outputs(prediction, wanted).items():
        array = np.asarray(selected)
        tensor: dict[str, Any] = {"name": name, "datatype": protocol.datatype_of(array), "shape": list(array.shape)}
        if name in binary or EVERY_OUTPUT in binary:
            raw = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
            tensor["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            tensor["data"] = array.reshape(-1).tolist()
        outputs.append(tensor)
    response = {"model_name": prediction.model, "model_version": str(prediction.version), "outputs": outputs,
                "parameters": protocol.response_parameters(prediction)}  # fmt: skip
    if isinstance(body.get("id"), str):
        response["id"] = body["id"]
    return response, blobs


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
    except (ValueError, RecursionError):
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


def _binary_size(tensor: dict[str, Any]) -> int | None:
    """An input's ``binary_data_size`` (bytes after the JSON header), or None for JSON ``data``."""
    parameters = tensor.get("parameters")
    if parameters is None:
        return None
    if not isinstance(parameters, dict):
        raise InvalidArgument(f"Invalid parameters of input {tensor['name']!r}. Expected a JSON object.")
    unknown = set(parameters) - {"binary_data_size"}
    if unknown:
        raise InvalidArgument(f"Unknown parameter(s) {sorted(unknown)} of input {tensor['name']!r}. "
                              "Expected only binary_data_size.")  # fmt: skip
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise InvalidArgument(f"Invalid binary_data_size of input {tensor['name']!r}. Expected an integer >= 0. "
                              f"Received: {size!r:.40}")  # fmt: skip
    if "data" in tensor:
        raise InvalidArgument(f"Input {tensor['name']!r} has both data and binary_data_size. Expected one of them.")
    return size


def _binary_tensor(binary: bytes, offset: int, size: int, tensor: dict[str, Any], shape: list[int]) -> np.ndarray:
    name, datatype = tensor["name"], tensor["datatype"]
    dtype = protocol.DATATYPES[datatype][0]
    expected = math.prod(shape) * dtype.itemsize
    if size != expected:
        raise InvalidArgument(
            f"Invalid binary_data_size of input {name!r}: shape {shape} of {datatype} is {expected} bytes. "
            f"Received: {size}"
        )
    if offset + size > len(binary):
        raise InvalidArgument(
            f"Invalid binary data: input {name!r} needs bytes {offset}..{offset + size} after the JSON header. "
            f"Received: {len(binary)} bytes"
        )
    values = np.frombuffer(binary, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(np.float32)


def _parameters(parameters: Any) -> dict[str, Any]:
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidArgument(f"Invalid parameters. Expected a JSON object. Received: {parameters!r:.80}")
    values: dict[str, Any] = {}
    for name, raw in parameters.items():
        if name == BINARY_OUTPUT:  # the binary extension's, read by this codec
            if not isinstance(raw, bool):
                raise InvalidArgument(f"Invalid type for parameter {name!r}. Expected bool. Received: {raw!r:.40}")
            values[name] = raw
            continue
        value = protocol.check_parameter(name, raw)
        if value is not None:
            values[name] = value
    return values


def _wanted(outputs: Any) -> tuple[list[str], set[str]]:
    """The outputs asked for by name, and those to answer in binary (``parameters.binary_data``)."""
    if outputs is None:
        return [], set()
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise InvalidArgument('Invalid outputs. Expected a list of {"name": "..."} objects.')
    binary = set()
    for output in outputs:
        parameters = output.get("parameters") or {}
        if not isinstance(parameters, dict) or set(parameters) - {"binary_data"}:
            raise InvalidArgument(f"Invalid parameters of output {output['name']!r}. Expected only binary_data "
                                  f"(bool). Received: {parameters!r:.80}")  # fmt: skip
        flag = parameters.get("binary_data", False)
        if not isinstance(flag, bool):
            raise InvalidArgument(f"Invalid binary_data of output {output['name']!r}. Expected true or false.")
        if flag:
            binary.add(output["name"])
    return [o["name"] for o in outputs], binary


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with ``BodyTooLarge`` past ``limit`` bytes (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"Request body of {int(declared)} bytes. Expected at most {limit} bytes.")
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"Request body above {limit} bytes. Expected at most {limit} bytes.")
    return b"".join(chunks)


def split_body(raw: bytes, header_length: str | None) -> tuple[Any, bytes]:
    """The JSON of a body and the binary bytes after it (``Inference-Header-Content-Length``; none without)."""
    if header_length is None:
        return _json(raw), b""
    text = header_length.strip()
    if not text.isdigit() or int(text) > len(raw):
        raise InvalidArgument(
            f"Invalid Inference-Header-Content-Length {header_length!r:.40}. Expected the byte count of the JSON "
            f"header, 0..{len(raw)} (the body's size)."
        )
    return _json(raw[: int(text)]), raw[int(text) :]


def _json(raw: bytes) -> Any:
    # orjson: a 784-number body parses in a tenth of the time of the standard library's json (the largest cost of
    # a small REST request, measured). It takes strict JSON only (no NaN literals) and nests at most 1024 deep.
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        problem, _, where = str(exc).partition(": line ")
        if problem.startswith("depth limit exceeded"):
            raise InvalidArgument(
                "Invalid JSON body: nested too deeply for the parser (more than 1024 levels). Expected an infer "
                "request (objects and lists a few levels deep)."
            ) from None
        if problem.startswith("number is infinity"):
            raise InvalidArgument(
                f"Invalid JSON body: a number beyond the float range at line {where}. Expected finite numbers."
            ) from None
        raise InvalidArgument(f"Invalid JSON body: {exc}") from None


def dump_json(content: Any) -> bytes:
    """Compact UTF-8 JSON of an answer. NaN and Infinity a model may output for extreme inputs are written as
    Python's json writes them (``NaN``, ``Infinity``), not as ``null`` (orjson's choice), so no number is lost."""
    try:
        fast = orjson.dumps(content)
        if b"null" not in fast:  # orjson writes NaN and Infinity as null: let the standard library write those
            return fast
    except orjson.JSONEncodeError:
        pass  # a type orjson does not take: the standard library's rules decide
    return json.dumps(content, ensure_ascii=False, allow_nan=True, separators=(",", ":")).encode("utf-8")
