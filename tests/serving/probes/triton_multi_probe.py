"""Drive a model with several inputs or outputs with the real Triton clients (gRPC and HTTP), in their own process,
and print every output tensor and the errors as JSON.

Run as ``python -m tests.serving.probes.triton_multi_probe GRPC_ADDRESS HTTP_ADDRESS MODEL INPUTS.npz SAMPLES SEED
[PARAMETERS.json]`` (further request parameters, e.g. ``{"variant": "int8"}``). It imports nothing of mcdrop,
as a user's client would not.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException


def encoded(array: np.ndarray) -> dict[str, Any]:
    return {"dtype": array.dtype.str, "shape": list(array.shape), "b64": base64.b64encode(array.tobytes()).decode()}


def failure(call: Any) -> dict[str, str]:
    try:
        call()
    except InferenceServerException as exc:
        return {"status": str(exc.status()), "message": exc.message() or ""}
    return {"status": "OK", "message": ""}


def probe(module: Any, address: str, model: str, x: dict[str, np.ndarray], samples: int, seed: int,
          extra: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    client = module.InferenceServerClient(address)
    metadata = client.get_model_metadata(model, as_json=True) if module is triton_grpc else \
        client.get_model_metadata(model)  # fmt: skip
    binary = {} if module is triton_grpc else {"binary_data": False}
    names = [o["name"] for o in metadata["outputs"] if not o["name"].endswith("samples")]

    def tensor(name: str, array: np.ndarray, datatype: str = "FP32") -> Any:
        made = module.InferInput(name, list(array.shape), datatype)
        # JSON tensors over HTTP here (binary tensors, Triton's defaults, are tested in test_rest.py).
        made.set_data_from_numpy(array, **binary)
        return made

    def infer(inputs: list[Any], wanted: list[str] | None = None, **parameters: Any) -> Any:
        outputs = None if wanted is None else [module.InferRequestedOutput(name, **binary) for name in wanted]
        return client.infer(model, inputs, outputs=outputs, parameters=parameters or None)

    good = [tensor(name, array) for name, array in x.items()]
    answer = infer(good, names, mc_samples=samples, seed=seed, **(extra or {}))
    sample_names = [o["name"] for o in metadata["outputs"] if o["name"].endswith("samples")]
    sampled = infer(good, sample_names, mc_samples=4, seed=seed, return_samples=True)
    first, *rest = x
    wrong_shape = dict(x)
    wrong_shape[rest[-1] if rest else first] = x[rest[-1] if rest else first][:, :1]
    return {
        "metadata": {"inputs": metadata["inputs"], "outputs": [o["name"] for o in metadata["outputs"]]},
        "outputs": {name: encoded(answer.as_numpy(name)) for name in names},
        "parameters": _parameters(answer),
        "samples": {name: list(sampled.as_numpy(name).shape) for name in sample_names},
        "errors": {
            "missing_input": failure(lambda: infer(good[:-1])),
            "extra_input": failure(lambda: infer([*good, tensor("extra", x[first])])),
            "misnamed_input": failure(lambda: infer([tensor("no_such_input", x[first]), *good[1:]])),
            "wrong_shape": failure(lambda: infer([tensor(n, a) for n, a in wrong_shape.items()])),
            "wrong_datatype": failure(lambda: infer([tensor(first, x[first].astype(np.float64), "FP64"), *good[1:]])),
        },
        "ready_after_errors": client.is_server_ready(),
    }


def _parameters(answer: Any) -> dict[str, Any]:
    """The response's echoed parameters, as plain values, from either client."""
    response = answer.get_response()
    if isinstance(response, dict):
        return dict(response.get("parameters") or {})
    return {name: getattr(value, value.WhichOneof("parameter_choice")) for name, value in response.parameters.items()}


def main(grpc_address: str, http_address: str, model: str, inputs_file: str, samples: str, seed: str,
         parameters: str = "{}") -> None:  # fmt: skip
    with np.load(inputs_file) as archive:
        x = {name: archive[name].astype(np.float32) for name in archive.files}
    extra = json.loads(parameters)
    print(json.dumps({
        "grpc": probe(triton_grpc, grpc_address, model, x, int(samples), int(seed), extra),
        "http": probe(triton_http, http_address, model, x, int(samples), int(seed), extra),
    }))  # fmt: skip


if __name__ == "__main__":
    main(*sys.argv[1:])
