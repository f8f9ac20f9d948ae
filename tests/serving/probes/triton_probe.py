"""Drive a server with the real Triton client, in its own process, and print the results as JSON.

Run as ``python -m tests.serving.probes.triton_probe ADDRESS``. It imports nothing of mcdrop,
as a user's client would not.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException


def encoded(array: np.ndarray) -> dict[str, Any]:
    return {"dtype": array.dtype.str, "shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode()}


def failure(call: Any) -> dict[str, str]:
    try:
        call()
    except InferenceServerException as exc:
        return {"status": str(exc.status()), "message": exc.message() or ""}
    return {"status": "OK", "message": ""}


def main(address: str, model: str, rows_file: str) -> None:
    client = triton.InferenceServerClient(address)
    x = np.load(rows_file).astype(np.float32)
    result: dict[str, Any] = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "unknown_model_ready": client.is_model_ready("no-such-model"),
        "server_metadata": client.get_server_metadata(as_json=True),
        "metadata": client.get_model_metadata(model, as_json=True),
    }

    def infer(inputs: list[Any], **parameters: Any) -> Any:
        return client.infer(model, inputs, parameters=parameters or None)

    good = triton.InferInput("x", list(x.shape), "FP32")
    good.set_data_from_numpy(x)
    answer = infer([good], mc_samples=100, seed=1234)
    result["infer"] = {
        name: encoded(answer.as_numpy(name))
        for name in ("mean", "std", "predicted_class", "mutual_information", "predictive_entropy")
    }
    result["infer_parameters"] = answer.get_response(as_json=True)["parameters"]
    samples = infer([good], mc_samples=20, seed=5, return_samples=True)
    result["samples_shape"] = list(samples.as_numpy("samples").shape)
    deterministic = infer([good], mode="deterministic")
    result["deterministic_mean"] = encoded(deterministic.as_numpy("mean"))

    wrong_type = triton.InferInput("x", list(x.shape), "FP64")
    wrong_type.set_data_from_numpy(x.astype(np.float64))
    wrong_shape = triton.InferInput("x", [x.shape[0], x.shape[1] - 1], "FP32")
    wrong_shape.set_data_from_numpy(np.ascontiguousarray(x[:, :-1]))
    short = triton.InferInput("x", [x.shape[0], x.shape[1] - 1], "FP32")
    short.set_data_from_numpy(np.ascontiguousarray(x[:, :-1]))
    short.set_shape(list(x.shape))  # claims more values than the raw buffer holds
    wrong_name = triton.InferInput("pixels", list(x.shape), "FP32")
    wrong_name.set_data_from_numpy(x)
    result["errors"] = {
        "wrong_datatype": failure(lambda: infer([wrong_type])),
        "wrong_shape": failure(lambda: infer([wrong_shape])),
        "short_raw_buffer": failure(lambda: infer([short])),
        "wrong_input_name": failure(lambda: infer([wrong_name])),
        "negative_samples": failure(lambda: infer([good], mc_samples=-3)),
        "string_samples": failure(lambda: infer([good], mc_samples="many")),
        "unknown_model": failure(lambda: client.infer("no-such-model", [good])),
    }
    result["ready_after_errors"] = client.is_server_ready()
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:4])
