"""Load-generator processes and what they send: the closed loops of ``mcdrop bench``'s server rows."""

from __future__ import annotations

import dataclasses
import multiprocessing
import time
import urllib.parse
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from mcdrop.pipeline.bench.load import load_worker, rest_load_worker, warm_up
from mcdrop.serving.common.timing import percentile
from mcdrop.serving.errors import MCDropError
from mcdrop.serving.harness.measure import cpu_seconds

__all__ = ["Load", "LoadPool"]


@dataclasses.dataclass(frozen=True)
class Load:
    """What the load generators send: a gRPC ``method`` at ``target`` (HOST:PORT), or ``method="REST"`` posting to
    the URL ``target`` (``header_length``: a binary-extension body)."""

    target: str
    method: str
    payload: bytes
    header_length: int | None = None


class LoadPool:
    """Load-generator processes, spawned once and reused by every row (a fresh pool per row spent seconds
    spawning before each measurement)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pool = ProcessPoolExecutor(size, mp_context=multiprocessing.get_context("spawn"))

    def __enter__(self) -> LoadPool:
        # Spawn every process and import the load module in each now, not inside the first measurement.
        for future in [self._pool.submit(warm_up, 0.3) for _ in range(self._size)]:
            future.result()
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown()

    def measure(self, name: str, load: Load, clients: int, duration: float, pids: list[int]) -> dict[str, Any]:
        """Latency and throughput of ``clients`` closed loops, and the CPU time the server ``pids`` spent
        meanwhile."""
        start_at = time.time() + 0.5 + 0.1 * clients  # after each loop has connected and warmed up
        if load.method == "REST":
            url = urllib.parse.urlsplit(load.target)
            host, port = str(url.hostname), int(url.port or 80)
            futures = [self._pool.submit(rest_load_worker, host, port, url.path, load.payload, start_at, duration,
                                         load.header_length) for _ in range(clients)]  # fmt: skip
        else:
            futures = [self._pool.submit(load_worker, load.target, load.method, load.payload, start_at, duration)
                       for _ in range(clients)]  # fmt: skip
        time.sleep(max(0.0, start_at - time.time()))
        cpu_before = cpu_seconds(pids)
        results = [f.result() for f in futures]
        cpu = cpu_seconds(pids) - cpu_before
        latencies = [t for result, _ in results for t in result]
        client_cpu = sum(spent for _, spent in results)
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
            "client_cpu_ms_per_request": client_cpu / len(latencies) * 1000,
        }
