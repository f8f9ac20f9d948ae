"""The same request over every API one server speaks, and perf_analyzer's view of it.

- TensorFlow Serving's ``Predict`` against the Open Inference Protocol's ``ModelInfer`` (gRPC) and ``/v1 :predict``
  against ``/v2 .../infer`` (REST JSON): same model, rows, seed and samples, same outputs answered, concurrency 1, in
  alternating rounds; the median of the rounds' p50 ratios cancels the drift between rounds.
- With ``perf_analyzer``: its throughput beside the bench's own load generator sending the request it sends (found on
  the wire: every metadata output, raw inputs), alternately, at concurrency 1 and 8; over gRPC (deterministic and
  Monte Carlo, set by ``--request-parameter``), HTTP and ``--service-kind tfserving`` (both: the model's default
  request, as perf_analyzer can send no parameters there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.pipeline.bench.perf_analyzer import PerfAnalyzer, input_data
from mcdrop.pipeline.bench.pool import Load, LoadPool
from mcdrop.serving.common.timing import percentile
from mcdrop.serving.harness.process import ServerProcess, free_port

__all__ = ["CONCURRENCY", "ROUNDS", "TOOL_ROUNDS", "protocol_rows"]

ROUNDS = 5
"""Alternating rounds of the API comparison (each at concurrency 1)."""
TOOL_ROUNDS = 2
"""Alternating runs of perf_analyzer and the own generator (each at every concurrency)."""
CONCURRENCY = (1, 8)
SEED = 1
OUTPUTS = ("mean", "std", "predicted_class", "predictive_entropy", "expected_entropy", "mutual_information",
           "variation_ratio")  # fmt: skip
"""A single-output classifier's summary outputs: what both APIs answer by default (TF Serving names the mean ``y``)."""


def protocol_rows(
    repository: Path, model: str, x: np.ndarray, samples: int, duration: float, pool: LoadPool, flags: list[str],
    perf_analyzer: PerfAnalyzer | None = None,
) -> list[dict[str, Any]]:  # fmt: skip
    """Rows of every API's latency for the same request, and perf_analyzer's throughput beside the own generator's
    (``repository`` holds ``model`` only; one worker, the bench's server settings)."""
    from mcdrop.serving.client import wire

    http_port = free_port()
    modes: dict[str, dict[str, int | str]] = {"deterministic": {"mode": "deterministic", "seed": SEED},
             f"mc_T{samples}": {"mode": "monte_carlo", "mc_samples": samples, "seed": SEED}}  # fmt: skip
    tf_outputs = ["y", *OUTPUTS[1:]]
    rows: list[dict[str, Any]] = []
    with ServerProcess(repository, *flags, "--workers", "1", "--http-port", str(http_port)) as server:
        rest = f"http://127.0.0.1:{http_port}"
        loads: dict[str, Load] = {}
        for mode, parameters in modes.items():
            controls: dict[str, int | str] = dict(parameters)
            loads[f"oip_grpc_{mode}"] = Load(server.address, wire.OIP_INFER,
                                             wire.oip_infer_request(model, {"x": x}, parameters))  # fmt: skip
            predict = wire.tfserving_predict_request(model, {"x": x}, controls)
            loads[f"tfserving_grpc_{mode}"] = Load(server.address, wire.TFSERVING_PREDICT, predict)
            oip_body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": list(x.shape),
                                    "data": x.reshape(-1).tolist()}], "parameters": parameters}  # fmt: skip
            tf_body = {"inputs": {"x": x.tolist(), **parameters}, "output_filter": tf_outputs}
            loads[f"oip_rest_{mode}"] = Load(f"{rest}/v2/models/{model}/infer", "REST", json.dumps(oip_body).encode())
            loads[f"tfserving_rest_{mode}"] = Load(f"{rest}/v1/models/{model}:predict", "REST",
                                                   json.dumps(tf_body).encode())  # fmt: skip
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in loads}
        for _ in range(ROUNDS):
            for name, load in loads.items():
                rounds[name].append(pool.measure(name, load, 1, duration, [server.pid]))
        for name, measured in rounds.items():
            row = {**measured[0], "median_ms": percentile([m["median_ms"] for m in measured], 50),
                   "rounds_median_ms": [m["median_ms"] for m in measured], "model": model, "batch": len(x),
                   "workers": 1, "samples": samples if "_mc_" in name else 1}  # fmt: skip
            if name.startswith("tfserving_"):
                oip = rounds[name.replace("tfserving_", "oip_")]
                row["paired_ratio_to_oip"] = percentile([t["median_ms"] / o["median_ms"] for t, o in
                                                         zip(measured, oip, strict=True)], 50)  # fmt: skip
            rows.append(row)
        if perf_analyzer is not None:
            data = input_data(repository.parent / "perf-analyzer-data.json", {"x": x})
            rows += _perf_analyzer_rows(perf_analyzer, server, rest, model, x, samples, duration, pool, modes, data)
    return rows


def _perf_analyzer_rows(
    perf_analyzer: PerfAnalyzer, server: ServerProcess, rest: str, model: str, x: np.ndarray, samples: int,
    duration: float, pool: LoadPool, modes: dict[str, dict[str, int | str]], data: Path,
) -> list[dict[str, Any]]:  # fmt: skip
    """perf_analyzer and the own generator on the request perf_analyzer sends, alternately: own, tool, own, tool."""
    import urllib.request

    from mcdrop.serving.client import wire

    with urllib.request.urlopen(f"{rest}/v2/models/{model}", timeout=30) as answer:
        every_output = sorted(o["name"] for o in json.load(answer)["outputs"])
    batch = np.repeat(x[:1], len(x), axis=0)  # perf_analyzer sends -b copies of one row
    runs: list[tuple[str, Load, dict[str, Any]]] = []
    for mode, parameters in modes.items():
        runs.append((f"grpc_{mode}", Load(server.address, wire.OIP_INFER,
                                          wire.oip_infer_request(model, {"x": batch}, parameters, every_output)),
                     {"protocol": "grpc", "url": server.address, "parameters": parameters}))  # fmt: skip
    binary = [{"name": n, "parameters": {"binary_data": True}} for n in every_output]
    tensor = {"name": "x", "datatype": "FP32", "shape": list(batch.shape), "parameters": {"binary_data_size":
                                                                                           batch.nbytes}}  # fmt: skip
    header = json.dumps({"id": "", "inputs": [tensor], "outputs": binary})
    raw = header.encode() + np.ascontiguousarray(batch, "<f4").tobytes()
    http = Load(f"{rest}/v2/models/{model}/infer", "REST", raw, len(header.encode()))
    runs.append((f"http_default_T{samples}", http,
                 {"protocol": "http", "url": rest.removeprefix("http://")}))  # fmt: skip
    runs.append((f"tfserving_default_T{samples}", Load(server.address, wire.TFSERVING_PREDICT,
                                                       wire.tfserving_predict_request(model, {"x": batch}, {})),
                 {"protocol": "grpc", "url": server.address, "service_kind": "tfserving"}))  # fmt: skip
    rows: list[dict[str, Any]] = []
    interval_ms = max(1000, int(duration * 1000))
    for name, load, tool in runs:
        own: dict[int, list[dict[str, Any]]] = {c: [] for c in CONCURRENCY}
        theirs: dict[int, list[dict[str, Any]]] = {c: [] for c in CONCURRENCY}
        for _ in range(TOOL_ROUNDS):
            for clients in CONCURRENCY:
                own[clients].append(pool.measure(name, load, clients, duration, [server.pid]))
            for measured in perf_analyzer.measure(model=model, concurrency=CONCURRENCY, data=data, batch=len(x),
                                                  interval_ms=interval_ms, **tool):  # fmt: skip
                theirs[measured["concurrency"]].append(measured)
        for clients in CONCURRENCY:
            own_rps = percentile([m["throughput_rps"] for m in own[clients]], 50)
            tool_rps = percentile([m["throughput_rps"] for m in theirs[clients]], 50)
            common = {"model": model, "batch": len(x), "workers": 1, "concurrency": clients,
                      "samples": 1 if "deterministic" in name else samples}  # fmt: skip
            rows.append({**common, "name": f"own_{name}", "throughput_rps": own_rps,
                         "median_ms": percentile([m["median_ms"] for m in own[clients]], 50),
                         "client_cpu_ms_per_request": percentile([m["client_cpu_ms_per_request"] for m in
                                                                  own[clients]], 50),
                         "rounds_throughput_rps": [m["throughput_rps"] for m in own[clients]]})  # fmt: skip
            rows.append({**common, "name": f"perf_analyzer_{name}", "throughput_rps": tool_rps,
                         "median_ms": percentile([m["median_ms"] for m in theirs[clients]], 50),
                         "rounds_throughput_rps": [m["throughput_rps"] for m in theirs[clients]],
                         "ratio_to_own": tool_rps / own_rps})  # fmt: skip
    return rows
