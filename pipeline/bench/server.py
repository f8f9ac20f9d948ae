"""Server rows: latency and throughput from separate load-generator processes, the echo floor, RSS, start-up."""

from __future__ import annotations

import json
import multiprocessing
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.pipeline.bench.load import load_worker, rest_load_worker
from mcdrop.serving.errors import MCDropError
from mcdrop.serving.harness.measure import cpu_seconds, memory_mb, percentile, worker_pids
from mcdrop.serving.harness.process import ServerProcess, free_port

PREDICT = "/mcdrop.v1.Inference/Predict"
ECHO = "/echo.Echo/Echo"
# The server under test runs with exactly these settings; the report shows the same values.
SERVER_SETTINGS = {"pool_size": 2, "interpreter_threads": 1, "grpc_threads": 8, "poll_seconds": 0,
                   "log_level": "WARNING"}  # fmt: skip
WORKERS = (1, 2)
"""``mcdrop serve --workers`` values measured side by side (the REST rows use one worker)."""
STARTS = 3


def server_flags(settings: dict[str, Any]) -> list[str]:
    """``--pool-size 2 --interpreter-threads 1 ...`` for ``mcdrop serve``."""
    return [part for name, value in settings.items() for part in (f"--{name.replace('_', '-')}", str(value))]


def server_rows(
    repository: Path, model: str, x: np.ndarray, samples: int, duration: float, concurrency: tuple[int, ...]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows for deterministic and Monte-Carlo requests of ``model`` and the echo floor, plus memory and start-up."""
    from mcdrop.serving._proto.mcdrop.v1 import mcdrop_pb2 as pb
    from mcdrop.serving.protocols import tensors as codec

    single = repository.parent / "single-model"
    shutil.rmtree(single, ignore_errors=True)
    shutil.copytree(repository / model, single / model)
    tensor = codec.encode(x)
    payloads = {
        "server_deterministic": pb.PredictRequest(model=model, input=tensor, mode=pb.DETERMINISTIC),
        f"server_mc_T{samples}": pb.PredictRequest(model=model, input=tensor, mode=pb.MONTE_CARLO, samples=samples),
    }
    flags = server_flags(SERVER_SETTINGS)
    ready = {w: [_start_to_ready(single, [*flags, "--workers", str(w)]) for _ in range(STARTS)] for w in WORKERS}
    rows: list[dict[str, Any]] = []
    tensor_json = {"name": "x", "datatype": "FP32", "shape": list(x.shape), "data": x.reshape(-1).tolist()}
    rest_bodies = {
        "rest_deterministic": {"inputs": [tensor_json], "parameters": {"mode": "deterministic"}},
        f"rest_mc_T{samples}": {"inputs": [tensor_json], "parameters": {"mc_samples": samples}},
    }
    memory: dict[int, dict[str, float]] = {}
    for workers in WORKERS:
        http_port = free_port()
        served = ServerProcess(single, *flags, "--workers", str(workers), "--http-port", str(http_port))
        with served as server:
            pids = server_pids(server.pid, workers)
            measured = sorted({server.pid, *pids})  # CPU time: the supervisor too
            rss_loaded = max(memory_mb(pid)["rss"] for pid in pids)
            for name, request in payloads.items():
                for clients in concurrency:
                    payload = request.SerializeToString()
                    row = _measure(name, server.address, PREDICT, payload, clients, duration, measured)
                    rows.append({**row, "model": model, "batch": len(x), "samples": samples if "mc" in name else 1,
                                 "workers": workers})  # fmt: skip
            if workers == 1:  # the Open Inference Protocol over REST, same process and model
                for name, body in rest_bodies.items():
                    for clients in concurrency:
                        path = f"http://127.0.0.1:{http_port}/v2/models/{model}/infer"
                        row = _measure(name, path, "REST", json.dumps(body).encode(), clients, duration, pids)
                        rows.append({**row, "model": model, "batch": len(x), "samples": samples if "mc" in name else 1,
                                     "workers": workers})  # fmt: skip
            peak = max(memory_mb(pid)["peak"] for pid in pids)
        memory[workers] = {"rss_after_load_mb": rss_loaded, "peak_rss_mb": peak}
    echo_port = free_port()
    echo = subprocess.Popen(
        [sys.executable, "-m", "mcdrop.pipeline.bench.echo", str(echo_port)], stdout=subprocess.PIPE
    )
    try:
        if echo.stdout is not None:
            echo.stdout.readline()  # "ready"
        payload = payloads[f"server_mc_T{samples}"].SerializeToString()
        for clients in concurrency:
            row = _measure("echo_floor", f"127.0.0.1:{echo_port}", ECHO, payload, clients, duration, [echo.pid])
            rows.append({**row, "model": "echo", "batch": len(x), "samples": 0})
    finally:
        echo.send_signal(signal.SIGTERM)
        echo.wait(timeout=30)
    floor = {r["concurrency"]: r["median_ms"] for r in rows if r["name"] == "echo_floor"}
    for r in rows:
        if r["name"] != "echo_floor":
            r["ratio_to_echo_floor"] = r["median_ms"] / floor[r["concurrency"]]
    process = {
        **memory[1],
        "peak_rss_mb_per_worker": max(m["peak_rss_mb"] for m in memory.values()),
        "by_workers": {
            str(w): {**memory[w], "ready_seconds_median": percentile(ready[w], 50), "ready_seconds": ready[w]}
            for w in WORKERS
        },
        "ready_seconds_median": max(percentile(ready[w], 50) for w in WORKERS),
        "ready_seconds": ready[1],
    }
    return rows, process


def server_pids(pid: int, workers: int) -> list[int]:
    """The processes that serve requests: ``pid`` itself with one worker, else its ``workers`` worker children."""
    return [pid] if workers == 1 else worker_pids(pid, workers, timeout=10) or [pid]


def _measure(
    name: str, target: str, method: str, payload: bytes, clients: int, duration: float, pids: list[int]
) -> dict[str, Any]:
    """Latency and throughput of ``clients`` closed loops, and the CPU time the server ``pids`` spent meanwhile."""
    start_at = time.time() + 2.0 + 0.3 * clients  # after every worker has spawned and warmed up
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(clients, mp_context=context) as pool:
        if method == "REST":  # target is the URL
            url = urllib.parse.urlsplit(target)
            host, port = str(url.hostname), int(url.port or 80)
            futures = [pool.submit(rest_load_worker, host, port, url.path, payload, start_at, duration)
                       for _ in range(clients)]  # fmt: skip
        else:
            futures = [pool.submit(load_worker, target, method, payload, start_at, duration) for _ in range(clients)]
        time.sleep(max(0.0, start_at - time.time()))
        cpu_before = cpu_seconds(pids)
        results = [f.result() for f in futures]
        cpu = cpu_seconds(pids) - cpu_before
    latencies = [t for result in results for t in result]
    if not latencies:
        raise MCDropError(f"no {name} request completed")
    return {
        "name": name,
        "concurrency": clients,
        "requests": len(latencies),
        "median_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "throughput_rps": len(latencies) / duration,
        "cpu_s_per_1000": cpu / len(latencies) * 1000,
    }


def _start_to_ready(repository: Path, flags: list[str]) -> float:
    """Seconds from process start to health SERVING."""
    server = ServerProcess(repository, *flags)
    try:
        return server.wait_serving()
    finally:
        server.stop()
