"""Server rows: latency and throughput from separate load-generator processes, the echo floor, RSS, start-up."""

from __future__ import annotations

import multiprocessing
import shutil
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.bench.load import load_worker
from serving.errors import MCDropError
from serving.process import free_port, serve_command, wait_serving

PREDICT = "/mcdrop.v1.Inference/Predict"
ECHO = "/echo.Echo/Echo"


def server_rows(
    repository: Path, model: str, x: np.ndarray, samples: int, duration: float, concurrency: tuple[int, ...]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows for deterministic and Monte-Carlo requests and the echo floor, plus memory and start-up figures."""
    from serving import codec
    from serving._proto.mcdrop.v1 import mcdrop_pb2 as pb

    single = repository.parent / "single-model"
    shutil.rmtree(single, ignore_errors=True)
    shutil.copytree(repository / model, single / model)
    tensor = codec.encode(x)
    payloads = {
        "server_deterministic": pb.PredictRequest(model=model, input=tensor, mode=pb.DETERMINISTIC),
        f"server_mc_T{samples}": pb.PredictRequest(model=model, input=tensor, mode=pb.MONTE_CARLO, samples=samples),
    }
    ready = [_start_stop(single) for _ in range(3)]
    rows: list[dict[str, Any]] = []
    port = free_port()
    command = serve_command(single, port, "--poll-seconds", "0", "--log-level", "WARNING")
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(f"127.0.0.1:{port}", server)
        rss_loaded = _rss_kb(server.pid)
        for name, request in payloads.items():
            for clients in concurrency:
                rows.append(
                    _measure(
                        name,
                        f"127.0.0.1:{port}",
                        PREDICT,
                        request.SerializeToString(),
                        clients,
                        duration,
                        len(x),
                        samples if "mc" in name else 1,
                    )
                )
        memory = {"rss_after_load_mb": rss_loaded / 1024, "peak_rss_mb": _peak_rss_kb(server.pid) / 1024}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    echo_port = free_port()
    echo = subprocess.Popen([sys.executable, "-m", "pipeline.bench.echo", str(echo_port)], stdout=subprocess.PIPE)
    try:
        assert echo.stdout is not None
        echo.stdout.readline()  # "ready"
        payload = payloads[f"server_mc_T{samples}"].SerializeToString()
        for clients in concurrency:
            rows.append(_measure("echo_floor", f"127.0.0.1:{echo_port}", ECHO, payload, clients, duration, len(x), 0))
    finally:
        echo.send_signal(signal.SIGTERM)
        echo.wait(timeout=30)
    floor = {r["concurrency"]: r["median_ms"] for r in rows if r["name"] == "echo_floor"}
    for r in rows:
        if r["name"] != "echo_floor":
            r["ratio_to_echo_floor"] = r["median_ms"] / floor[r["concurrency"]]
    process = {**memory, "ready_seconds_median": statistics.median(ready), "ready_seconds": ready}
    return rows, process


def _measure(
    name: str, target: str, method: str, payload: bytes, clients: int, duration: float, batch: int, samples: int
) -> dict[str, Any]:
    start_at = time.time() + 2.0 + 0.3 * clients  # after every worker has spawned and warmed up
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(clients, mp_context=context) as pool:
        futures = [pool.submit(load_worker, target, method, payload, start_at, duration) for _ in range(clients)]
        latencies = sorted(t for f in futures for t in f.result())
    if not latencies:
        raise MCDropError(f"no {name} request completed")
    return {
        "name": name,
        "model": "mlp",
        "batch": batch,
        "samples": samples,
        "concurrency": clients,
        "requests": len(latencies),
        "median_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "throughput_rps": len(latencies) / duration,
    }


def _start_stop(repository: Path) -> float:
    """Seconds from process start to health SERVING."""
    port = free_port()
    started = time.monotonic()
    command = serve_command(repository, port, "--log-level", "WARNING")
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_serving(f"127.0.0.1:{port}", process)
        return time.monotonic() - started
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmRSS")


def _peak_rss_kb(pid: int) -> int:
    return _status_kb(pid, "VmHWM")


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise MCDropError(f"{field} not found for process {pid}")
