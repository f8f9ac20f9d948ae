"""Ask for mode ``moments`` with the real Triton clients (gRPC and HTTP), in their own process; print the answers,
the metadata's modes and a refusal as JSON.

Run as ``python -m tests.serving.probes.triton_moments_probe GRPC_ADDRESS HTTP_ADDRESS MODEL X.npy SAMPLES SEED
[REFUSED_MODEL]``. It imports nothing of mcdrop, as a user's
client would not.
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


def probe(module: Any, address: str, model: str, x: np.ndarray, samples: int, seed: int, refused: str) -> Any:
    client = module.InferenceServerClient(address)
    grpc = module is triton_grpc
    metadata = client.get_model_metadata(model, as_json=True) if grpc else client.get_model_metadata(model)
    binary = {} if grpc else {"binary_data": False}
    names = [o["name"] for o in metadata["outputs"] if not o["name"].endswith("samples")]
    tensor = module.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, **binary)
    wanted = [module.InferRequestedOutput(name, **binary) for name in names]
    answer = client.infer(model, [tensor], outputs=wanted,
                          parameters={"mode": "moments", "mc_samples": samples, "seed": seed})  # fmt: skip
    parameters = answer.get_response(as_json=True)["parameters"] if grpc else answer.get_response()["parameters"]
    echoed = {k: next(iter(v.values())) if isinstance(v, dict) else v for k, v in parameters.items()}
    try:
        client.infer(refused, [tensor], outputs=wanted[:1], parameters={"mode": "moments"})
        refusal = {"status": "OK", "message": ""}
    except InferenceServerException as exc:
        refusal = {"status": str(exc.status()), "message": exc.message() or ""}
    # Triton's gRPC stubs predate the metadata's parameters (mcdrop's extension): only the HTTP client sees them.
    modes = metadata.get("parameters", {}).get("modes")
    return {
        "outputs": {name: encoded(answer.as_numpy(name)) for name in names},
        "parameters": echoed,
        "modes": modes.get("string_param") if isinstance(modes, dict) else modes,
        "refusal": refusal,
    }


def main() -> None:
    grpc_address, http_address, model, path, samples, seed, *rest = sys.argv[1:]
    x = np.load(path).astype(np.float32)
    refused = rest[0] if rest else model
    answers = {
        "grpc": probe(triton_grpc, grpc_address, model, x, int(samples), int(seed), refused),
        "http": probe(triton_http, http_address, model, x, int(samples), int(seed), refused),
    }
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
