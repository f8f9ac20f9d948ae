"""Drive a server with KServe's own Python SDK (``kserve``: its v2 REST and gRPC inference clients) and print JSON.

Run as ``python kserve_probe.py REST_URL GRPC_ADDRESS MODEL ROWS.npy`` from a venv holding ``kserve`` (its pins
must not move the project's). It imports nothing of mcdrop or of the tests: the SDK's own protobuf ``inference``
package could not share a process with mcdrop's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from typing import Any

import httpx
import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

PARAMETERS = {"mc_samples": 50, "seed": 11}


def encoded(array: np.ndarray) -> dict[str, Any]:
    return {"dtype": array.dtype.str, "shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode()}


def request(model: str, x: np.ndarray, *, binary: bool, outputs: list[str] | None = None) -> InferRequest:
    tensor = InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    requested = [RequestedOutput(name, parameters={"binary_data": binary}) for name in outputs or []]
    return InferRequest(model, [tensor], parameters=dict(PARAMETERS), request_outputs=requested or None)


async def main(rest_url: str, grpc_address: str, model: str, rows_file: str) -> None:
    x = np.load(rows_file).astype(np.float32)
    result: dict[str, Any] = {}
    rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30, retries=0))
    try:
        result["rest_ready"] = [await rest.is_server_ready(rest_url), await rest.is_model_ready(rest_url, model)]
        for name, binary in (("rest_json", False), ("rest_binary", True)):
            outputs = ["mean", "std", "mutual_information"] if binary else None
            answer = await rest.infer(rest_url, request(model, x, binary=binary, outputs=outputs), model_name=model)
            result[name] = {o.name: encoded(o.as_numpy()) for o in answer.outputs}
        try:
            await rest.infer(rest_url, request("no-such-model", x, binary=False), model_name="no-such-model")
            result["rest_unknown"] = "answered"
        except httpx.HTTPStatusError as exc:
            result["rest_unknown"] = [exc.response.status_code, exc.response.json().get("error", "")]
    finally:
        await rest.close()
    grpc = InferenceGRPCClient(grpc_address, timeout=30, retries=0)
    try:
        result["grpc_ready"] = [await grpc.is_server_ready(), await grpc.is_model_ready(model)]
        answer = await grpc.infer(request(model, x, binary=True))
        result["grpc"] = {o.name: encoded(o.as_numpy()) for o in answer.outputs}
    finally:
        await grpc.close()
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
