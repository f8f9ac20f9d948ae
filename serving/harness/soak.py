"""``mcdrop soak``: N client processes against one server for M minutes (bounded in time and count).

Each client process loops over a mix of requests (seeded and unseeded Monte Carlo, deterministic,
streamed) until the time or request budget runs out. The run passes if there were zero errors,
the server's RSS grew by at most ``--max-rss-growth-mb`` after warm-up, and the median latency of
the last quarter stayed within ``--max-latency-drift`` of the first quarter's. With ``--kill-worker-every``, a
random worker is SIGKILLed on a schedule and the server must also recover after every kill
(``mcdrop.serving.harness.restarts``).
"""

from __future__ import annotations

import multiprocessing
import random
import shutil
import tempfile
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.serving.client import Client
from mcdrop.serving.common.timing import percentile
from mcdrop.serving.errors import InvalidArgument, MCDropError
from mcdrop.serving.harness.measure import memory_mb
from mcdrop.serving.harness.process import ServerProcess, free_port
from mcdrop.serving.harness.restarts import MIN_KILL_INTERVAL, WorkerKiller, balance, recovery

__all__ = ["soak"]

RSS_SAMPLE_SECONDS = 1.0


def soak(
    *,
    repository: Path | None,
    server: str | None,
    model: str,
    clients: int,
    minutes: float,
    max_requests: int,
    max_rss_growth_mb: float = 20.0,
    max_latency_drift: float = 0.5,
    workers: int | None = None,
    capture_when: str | None = None,
    kill_worker_every: float | None = None,
) -> dict[str, Any]:
    """Soak ``server`` (or a server started on ``repository``, with ``workers`` processes and, with
    ``capture_when``, capturing into a temporary directory whose rows are then counted; with
    ``kill_worker_every``, SIGKILLing a random worker every so many seconds); return the report."""
    if (repository is None) == (server is None):
        raise InvalidArgument("Expected exactly one of --repository (start a server) or --server HOST:PORT.")
    if clients < 1 or minutes <= 0 or max_requests < 1:
        raise InvalidArgument(
            f"Expected clients >= 1, minutes > 0, max requests >= 1. Received: {clients}, {minutes}, {max_requests}"
        )
    if capture_when is not None and repository is None:
        raise InvalidArgument("--capture-when needs --repository: soak counts the rows of the server it starts.")
    if kill_worker_every is not None:
        if repository is None:
            raise InvalidArgument("--kill-worker-every needs --repository: soak kills workers of the server it starts.")
        workers = 2 if workers is None else workers
        if workers < 2:
            raise InvalidArgument(f"--kill-worker-every needs --workers 2 or more. Received: --workers {workers}")
        if kill_worker_every < MIN_KILL_INTERVAL:
            raise InvalidArgument(
                f"Expected --kill-worker-every >= {MIN_KILL_INTERVAL:g} s (10 s before and 30 s after each kill are "
                f"measured). Received: {kill_worker_every:g}"
            )
    process = None
    capture = Path(tempfile.mkdtemp(prefix="mcdrop-soak-capture-")) if capture_when is not None else None
    metrics_port = free_port()
    if repository is not None:
        flags = [
            "--log-level",
            "WARNING",
            "--max-queue",
            str(max(64, 4 * clients)),
            "--metrics-port",
            str(metrics_port),
        ]
        if workers is not None:
            flags += ["--workers", str(workers)]
        if capture is not None:
            flags += ["--capture-dir", str(capture), "--capture-when", str(capture_when)]
        process = ServerProcess(repository, *flags)
        server = process.address
    if server is None:  # unreachable: exactly one of the two was given
        raise InvalidArgument("No server to soak.")
    exit_code = None
    try:
        if process is not None:
            process.wait_serving()
        shape = _input_shape(server, model)
        _warm_up(server, model, shape)
        rss_start = memory_mb(process.pid)["rss"] if process else None
        started = time.time() + 1.0 + 0.3 * clients
        duration = minutes * 60
        per_client = -(-max_requests // clients)
        context = multiprocessing.get_context("spawn")
        rss_samples: list[float] = []
        killer = None
        if process is not None and kill_worker_every is not None and workers is not None:
            killer = WorkerKiller(process.pid, workers, kill_worker_every, started)
        with ProcessPoolExecutor(clients, mp_context=context) as pool:
            futures = [
                pool.submit(_client, server, model, shape, started, duration, per_client, i) for i in range(clients)
            ]
            while not all(f.done() for f in futures):
                if process is not None:
                    rss_samples.append(memory_mb(process.pid)["rss"])
                if killer is not None:
                    killer.tick()
                time.sleep(RSS_SAMPLE_SECONDS)
            results = [f.result() for f in futures]
        rss_end = memory_mb(process.pid)["rss"] if process else None
        served = _served_rows(metrics_port) if process is not None else None
    finally:
        if process is not None:
            exit_code = process.stop()
    report = _report(
        results,
        duration,
        rss_start,
        rss_end,
        rss_samples,
        exit_code,
        clients,
        max_rss_growth_mb,
        max_latency_drift,
    )
    if killer is not None:
        report["restarts"] = recovery(killer, sorted(t for r in results for t, _ in r["latencies"]))
        report["balance"] = balance(killer)
        observed = [kill["recovered"] for kill in report["restarts"] if kill["recovered"] is not None]
        report["checks"]["recovered_after_every_kill"] = bool(observed) and all(observed)
        report["passed"] = all(report["checks"].values())
    if capture is not None and served is not None:
        report["capture"] = _captured(capture, served)
        report["checks"]["capture_accounted"] = report["capture"]["unaccounted_rows"] == 0
        report["passed"] = all(report["checks"].values())
        shutil.rmtree(capture, ignore_errors=True)
    return report


def _served_rows(port: int) -> dict[str, float]:
    """Rows answered and capture drops, from the server's /metrics once every client is done."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    sums = {"rows": 0.0, "dropped": 0.0}
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in ("mcdrop_rows_total", "mcdrop_capture_dropped_rows_total"):
            sums["rows" if name == "mcdrop_rows_total" else "dropped"] += float(line.rsplit(" ", 1)[1])
    return sums


def _captured(directory: Path, served: dict[str, float]) -> dict[str, Any]:
    """The capture after the server stopped: every served row is in a file or counted as dropped."""
    import pyarrow.parquet as pq

    files = sorted(directory.glob("*/*.parquet"))
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return {"served_rows": int(served["rows"]), "captured_rows": rows, "dropped_rows": int(served["dropped"]),
            "files": len(files), "megabytes": sum(f.stat().st_size for f in files) / 2**20,
            "unaccounted_rows": int(served["rows"] - served["dropped"]) - rows}  # fmt: skip


def _client(
    server: str, model: str, shape: list[int], start_at: float, duration: float, budget: int, index: int
) -> dict[str, Any]:
    rng = random.Random(index)
    x = np.random.default_rng(index).normal(size=(1, *shape)).astype(np.float32)
    latencies: list[tuple[float, float]] = []
    errors: list[str] = []
    kinds: dict[str, int] = {}
    with Client(server, timeout=30) as client:
        time.sleep(max(0.0, start_at - time.time()))
        deadline = time.monotonic() + duration
        while time.monotonic() < deadline and len(latencies) + len(errors) < budget:
            kind = rng.choice(["mc_seeded", "mc", "deterministic", "stream", "batch"])
            began = time.perf_counter()
            try:
                if kind == "mc_seeded":
                    client.predict(model, x, samples=100, seed=rng.randrange(2**32))
                elif kind == "mc":
                    client.predict(model, x, samples=100)
                elif kind == "deterministic":
                    client.predict(model, x, mode="deterministic")
                elif kind == "stream":
                    list(client.predict_stream(model, x, samples=50, chunk=10))
                else:
                    client.predict(model, np.repeat(x, 16, axis=0), samples=50)
                latencies.append((time.time(), (time.perf_counter() - began) * 1e3))
            except MCDropError as exc:
                errors.append(f"{kind}: {str(exc)[:200]}")
            kinds[kind] = kinds.get(kind, 0) + 1
    return {"latencies": latencies, "errors": errors, "kinds": kinds}


def _report(
    results: list[dict[str, Any]],
    duration: float,
    rss_start: float | None,
    rss_end: float | None,
    rss_samples: list[float],
    exit_code: int | None,
    clients: int,
    max_growth: float,
    max_drift: float,
) -> dict[str, Any]:
    timed = sorted(t for r in results for t in r["latencies"])
    errors = [e for r in results for e in r["errors"]]
    kinds: dict[str, int] = {}
    for r in results:
        for k, v in r["kinds"].items():
            kinds[k] = kinds.get(k, 0) + v
    quarter = max(1, len(timed) // 4)
    first = percentile((t for _, t in timed[:quarter]), 50)
    last = percentile((t for _, t in timed[-quarter:]), 50)
    growth = (rss_end - rss_start) if rss_start is not None and rss_end is not None else None
    drift = (last - first) / first if timed else float("nan")
    checks = {
        "zero_errors": not errors,
        "rss_growth_within_bound": growth is None or growth <= max_growth,
        "latency_stable": bool(timed) and drift <= max_drift,
        "server_exit_0": exit_code in (None, 0),
    }
    return {
        "clients": clients,
        "seconds": duration,
        "requests": len(timed) + len(errors),
        "errors": len(errors),
        "error_examples": errors[:5],
        "requests_by_kind": kinds,
        "throughput_rps": len(timed) / duration if duration else 0.0,
        "latency_ms": {
            "p50": percentile((t for _, t in timed), 50),
            "p99": percentile((t for _, t in timed), 99),
            "first_quarter_p50": first,
            "last_quarter_p50": last,
            "drift": drift,
        },
        "rss_mb": {"start": rss_start, "end": rss_end, "growth": growth, "max": max(rss_samples, default=None)},
        "server_exit_code": exit_code,
        "checks": checks,
        "passed": all(checks.values()),
    }


def _input_shape(server: str, model: str) -> list[int]:
    with Client(server, timeout=10) as client:
        return list(client.manifest(model).input.row_shape)


def _warm_up(server: str, model: str, shape: list[int]) -> None:
    x = np.zeros((1, *shape), np.float32)
    with Client(server, timeout=30) as client:
        for i in range(200):
            client.predict(model, np.repeat(x, 1 + i % 16, axis=0), samples=100, seed=i)
