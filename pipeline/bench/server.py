"""Server rows: latency and throughput from separate load-generator processes, the echo floor, RSS, start-up."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.pipeline.bench.perf_analyzer import PerfAnalyzer
from mcdrop.pipeline.bench.pool import Load, LoadPool
from mcdrop.serving.common.timing import percentile
from mcdrop.serving.harness.measure import memory_mb, worker_pids
from mcdrop.serving.harness.process import ServerProcess, free_port

PREDICT = "/mcdrop.v1.Inference/Predict"
ECHO = "/echo.Echo/Echo"
# The server under test runs with exactly these settings; the report shows the same values.
SERVER_SETTINGS = {"pool_size": 2, "interpreter_threads": 1, "grpc_threads": 8, "poll_seconds": 0,
                   "log_level": "WARNING"}  # fmt: skip
WORKERS = (1, 2)
"""``mcdrop serve --workers`` values measured side by side (gRPC and REST rows alike)."""
STARTS = 3


def server_flags(settings: dict[str, Any]) -> list[str]:
    """``--pool-size 2 --interpreter-threads 1 ...`` for ``mcdrop serve``."""
    return [part for name, value in settings.items() for part in (f"--{name.replace('_', '-')}", str(value))]


def server_rows(
    repository: Path, model: str, x: np.ndarray, samples: int, duration: float, concurrency: tuple[int, ...],
    perf_analyzer: PerfAnalyzer | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    """Rows for deterministic and Monte-Carlo requests of ``model`` over gRPC and REST (JSON and binary tensors) at
    every worker count, and the echo floor, plus memory and start-up; the same request over every API (and
    ``perf_analyzer``'s rows, when given)."""
    from mcdrop.serving.client import serialized_request

    single = repository.parent / "single-model"
    shutil.rmtree(single, ignore_errors=True)
    shutil.copytree(repository / model, single / model)
    grpc_requests = {
        "server_deterministic": serialized_request(model, x, "deterministic", 0),
        f"server_mc_T{samples}": serialized_request(model, x, "monte_carlo", samples),
    }
    rest_bodies = rest_requests(x, samples)
    flags = server_flags(SERVER_SETTINGS)
    ready = {w: [_start_to_ready(single, [*flags, "--workers", str(w)]) for _ in range(STARTS)] for w in WORKERS}
    rows: list[dict[str, Any]] = []
    memory: dict[int, dict[str, float]] = {}
    with LoadPool(max(concurrency)) as pool:
        for workers in WORKERS:
            http_port = free_port()
            served = ServerProcess(single, *flags, "--workers", str(workers), "--http-port", str(http_port))
            with served as server:
                pids = server_pids(server.pid, workers)
                measured = sorted({server.pid, *pids})  # CPU time: the supervisor too
                rss_loaded = max(memory_mb(pid)["rss"] for pid in pids)
                url = f"http://127.0.0.1:{http_port}/v2/models/{model}/infer"
                loads = [(name, Load(server.address, PREDICT, request)) for name, request in grpc_requests.items()]
                # The Open Inference Protocol over REST: same processes, model and seeds as the gRPC rows.
                loads += [(name, Load(url, "REST", body, header_length)) for name, (body, header_length) in
                          rest_bodies.items()]  # fmt: skip
                for name, load in loads:
                    for clients in concurrency:
                        row = pool.measure(name, load, clients, duration, measured)
                        rows.append({**row, "model": model, "batch": len(x), "workers": workers,
                                     "samples": samples if "mc" in name else 1})  # fmt: skip
                peak = max(memory_mb(pid)["peak"] for pid in pids)
            memory[workers] = {"rss_after_load_mb": rss_loaded, "peak_rss_mb": peak}
        from mcdrop.pipeline.bench.protocols import protocol_rows

        rows += protocol_rows(single, model, x, samples, duration, pool, flags, perf_analyzer)
        rows += decision_rows(repository, model, x, samples, duration, pool, flags)
        rows += scrape_rows(repository.parent / "decision" / f"{model}-calibrated" / "2", flags)
        echo_port = free_port()
        echo = subprocess.Popen(
            [sys.executable, "-m", "mcdrop.pipeline.bench.echo", str(echo_port)], stdout=subprocess.PIPE
        )
        try:
            if echo.stdout is not None:
                echo.stdout.readline()  # "ready"
            payload = grpc_requests[f"server_mc_T{samples}"]
            for clients in concurrency:
                row = pool.measure("echo_floor", Load(f"127.0.0.1:{echo_port}", ECHO, payload), clients, duration,
                                   [echo.pid])  # fmt: skip
                rows.append({**row, "model": "echo", "batch": len(x), "samples": 0})
        finally:
            echo.send_signal(signal.SIGTERM)
            echo.wait(timeout=30)
    floor = {r["concurrency"]: r["median_ms"] for r in rows if r["name"] == "echo_floor"}
    for r in rows:
        if r["name"] != "echo_floor" and r.get("concurrency") in floor:
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


DECISION_ROUNDS = 5


def decision_rows(repository: Path, model: str, x: np.ndarray, samples: int, duration: float, pool: LoadPool,
                  flags: list[str]) -> list[dict[str, Any]]:  # fmt: skip
    """The serving cost of a calibrated version's decision (abstain per row): the same Monte-Carlo request to the
    model and to a calibrated copy of it, one server, concurrency 1, measured in alternating rounds."""
    from mcdrop.serving.calibration.calibrate import CalibrationOptions, parse_target
    from mcdrop.serving.calibration.publish import calibrate_version
    from mcdrop.serving.client import serialized_request

    both = repository.parent / "decision"
    shutil.rmtree(both, ignore_errors=True)
    shutil.copytree(repository / model, both / model)
    shutil.copytree(repository / model, both / f"{model}-calibrated")
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(400, *x.shape[1:])).astype(np.float32)
    labels = rng.integers(0, 10, size=400)  # the cost does not depend on how good the threshold is
    np.savez(both.parent / "decision-rows.npz", x=rows, y=labels)
    options = CalibrationOptions(both.parent / "decision-rows.npz", abstain_target=parse_target("coverage=0.9"))
    calibrate_version(both, f"{model}-calibrated", 1, options)
    shutil.rmtree(both / f"{model}-calibrated" / "1")  # only the calibrated version loaded
    requests = {"decision_off": serialized_request(model, x, "monte_carlo", samples),
                "decision_on": serialized_request(f"{model}-calibrated", x, "monte_carlo", samples)}  # fmt: skip
    found: dict[str, list[dict[str, Any]]] = {name: [] for name in requests}
    with ServerProcess(both, *flags) as server:
        for _ in range(DECISION_ROUNDS):
            for name, request in requests.items():
                found[name].append(pool.measure(name, Load(server.address, PREDICT, request), 1, duration,
                                                [server.pid]))  # fmt: skip
    rows_out = []
    for measured in found.values():
        best = dict(measured[0])
        best["median_ms"] = percentile([m["median_ms"] for m in measured], 50)
        best["rounds_median_ms"] = [m["median_ms"] for m in measured]
        rows_out.append({**best, "model": model, "batch": len(x), "workers": 1, "samples": samples})
    # Paired rounds: each round's ratio cancels the drift between rounds that a ratio of medians keeps.
    ratios = [on["median_ms"] / off["median_ms"] for off, on in zip(found["decision_off"], found["decision_on"],
                                                                    strict=True)]  # fmt: skip
    rows_out[-1]["paired_ratio"] = percentile(ratios, 50)
    rows_out[-1]["round_ratios"] = ratios
    return rows_out


SCRAPE_VERSIONS = 10
SCRAPES = 30


def scrape_rows(calibrated: Path, flags: list[str]) -> list[dict[str, Any]]:
    """How long Prometheus waits for ``/metrics`` with ``SCRAPE_VERSIONS`` calibrated versions loaded, each with
    traffic (uncertainty histograms, abstain counters, drift windows): one process, and ``--workers 2`` (the
    supervisor merges every worker's files at each scrape)."""
    from mcdrop.serving.client import Client

    root = calibrated.parent.parent.parent / "scrape"
    shutil.rmtree(root, ignore_errors=True)
    for version in range(1, SCRAPE_VERSIONS + 1):
        shutil.copytree(calibrated, root / "scraped" / str(version))
    x = np.random.default_rng(0).normal(size=(120, *_row_shape(calibrated))).astype(np.float32)
    rows = []
    for workers in WORKERS:
        metrics_port = free_port()
        served = ServerProcess(root, *flags, "--workers", str(workers), "--max-versions", str(SCRAPE_VERSIONS),
                               "--metrics-port", str(metrics_port))  # fmt: skip
        with served as server:
            for version in range(1, SCRAPE_VERSIONS + 1):
                for seed in range(2):  # own connections: both workers answer some
                    with Client(server.address, options=[("grpc.use_local_subchannel_pool", 1)]) as client:
                        client.predict("scraped", x, version=version, samples=10, seed=seed)
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            times, size = [], 0
            for _ in range(SCRAPES):
                began = time.perf_counter()
                with urllib.request.urlopen(url, timeout=30) as answer:
                    size = len(answer.read())
                times.append((time.perf_counter() - began) * 1e3)
        rows.append({"name": "metrics_scrape", "model": calibrated.parent.name, "batch": len(x), "workers": workers,
                     "versions": SCRAPE_VERSIONS, "median_ms": percentile(times, 50), "max_ms": max(times),
                     "bytes": size})  # fmt: skip
    return rows


def _row_shape(version: Path) -> tuple[int, ...]:
    from mcdrop.serving.models.manifest import Manifest

    return Manifest.load(version).inputs[0].row_shape


def rest_requests(x: np.ndarray, samples: int) -> dict[str, tuple[bytes, int | None]]:
    """REST infer bodies by row name: JSON (``data`` as numbers), and Triton's binary tensor data extension (JSON
    header + raw float32, outputs answered in binary, as ``tritonclient.http`` sends by default) with its header's
    byte count."""
    modes: dict[str, dict[str, Any]] = {
        "deterministic": {"mode": "deterministic"},
        f"mc_T{samples}": {"mc_samples": samples},
    }
    bodies: dict[str, tuple[bytes, int | None]] = {}
    for mode, parameters in modes.items():
        tensor: dict[str, Any] = {"name": "x", "datatype": "FP32", "shape": list(x.shape)}
        data = {**tensor, "data": x.reshape(-1).tolist()}
        bodies[f"rest_{mode}"] = json.dumps({"inputs": [data], "parameters": parameters}).encode(), None
        raw = np.ascontiguousarray(x, dtype="<f4").tobytes()
        binary = {**tensor, "parameters": {"binary_data_size": len(raw)}}
        header = json.dumps({"inputs": [binary], "parameters": {**parameters, "binary_data_output": True}}).encode()
        bodies[f"rest_binary_{mode}"] = header + raw, len(header)
    return bodies


def server_pids(pid: int, workers: int) -> list[int]:
    """The processes that serve requests: ``pid`` itself with one worker, else its ``workers`` worker children."""
    return [pid] if workers == 1 else worker_pids(pid, workers, timeout=10) or [pid]


def _start_to_ready(repository: Path, flags: list[str]) -> float:
    """Seconds from process start to health SERVING."""
    server = ServerProcess(repository, *flags)
    try:
        return server.wait_serving()
    finally:
        server.stop()
