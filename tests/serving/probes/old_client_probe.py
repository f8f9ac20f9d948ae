"""An old mcdrop.v1 client: requests built with the stubs generated before models had several inputs and outputs
(``tests/data/mcdrop_v1_m32_stubs``), sent to a running server; prints the answers as JSON.

Run as ``python -m tests.serving.probes.old_client_probe ADDRESS ANSWERS.json``: for every ``NAME/rows`` entry of the
recorded answers it sends the recorded requests and prints each response's bytes (timings zeroed), re-serialised by
the old stubs: a field the old client does not know would survive as an unknown field and change them. Runs in its
own process: two generated modules of one proto file cannot share a process.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np

STUBS = Path(__file__).resolve().parents[2] / "data" / "mcdrop_v1_m32_stubs" / "mcdrop_pb2.py"


def old_stubs() -> Any:
    spec = importlib.util.spec_from_file_location("mcdrop_v1_m32_pb2", STUBS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(address: str, answers_file: str) -> None:
    pb = old_stubs()
    channel = grpc.insecure_channel(address)
    predict = channel.unary_unary("/mcdrop.v1.Inference/Predict",
                                  request_serializer=pb.PredictRequest.SerializeToString,
                                  response_deserializer=pb.PredictResponse.FromString)  # fmt: skip
    metadata = channel.unary_unary("/mcdrop.v1.Inference/GetModelMetadata",
                                   request_serializer=pb.GetModelMetadataRequest.SerializeToString,
                                   response_deserializer=pb.ModelMetadata.FromString)  # fmt: skip
    recorded = json.loads(Path(answers_file).read_text())
    result: dict[str, Any] = {}
    for key, rows in recorded.items():
        if not key.endswith("/rows"):
            continue
        name = key.removesuffix("/rows")
        x = np.asarray(rows, np.float32)
        tensor = pb.Tensor(shape=list(x.shape), dtype=pb.FLOAT32, data=x.tobytes())
        for kind, extra in (("mc", {"samples": 20, "seed": 11, "return_samples": True}),
                            ("det", {"mode": pb.DETERMINISTIC})):  # fmt: skip
            response = predict(pb.PredictRequest(model=name, input=tensor, **extra), timeout=30)
            response.queue_ms = 0
            response.compute_ms = 0
            result[f"{name}/{kind}/v1"] = response.SerializeToString(deterministic=True).hex()
        meta = metadata(pb.GetModelMetadataRequest(model=name), timeout=30)
        result[f"{name}/metadata"] = {"input": meta.input.name, "input_shape": list(meta.input.shape),
                                      "output_shape": list(meta.output.shape), "task": meta.task}  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
