"""Closed-loop load generator processes: each has its own gRPC channel and interpreter (no shared GIL).

Kept free of TensorFlow and numpy imports so a spawned worker starts fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc


def _closed_loop(call: Callable[[], object], start_at: float, duration: float) -> tuple[list[float], float]:
    """20 untimed calls to warm the connection, then ``call`` back to back from ``start_at`` (wall clock) for
    ``duration`` seconds; the latencies in ms, and the CPU seconds this client process spent meanwhile (the
    client's own cost, which a latency at concurrency 1 includes)."""
    for _ in range(20):
        call()
    time.sleep(max(0.0, start_at - time.time()))
    latencies = []
    cpu = time.process_time()
    deadline = time.perf_counter() + duration
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - started) * 1e3)
    return latencies, time.process_time() - cpu


def load_worker(
    target: str, method: str, payload: bytes, start_at: float, duration: float
) -> tuple[list[float], float]:
    """Send ``payload`` to ``method`` back to back from ``start_at`` (wall clock) for ``duration`` seconds.

    Returns the latencies in ms of the calls that succeeded and the client's CPU seconds; raises on the first failure.
    """
    with grpc.insecure_channel(target) as channel:
        rpc = channel.unary_unary(method)  # raw bytes in and out: no client-side protobuf work
        return _closed_loop(lambda: rpc(payload, timeout=30), start_at, duration)


def rest_load_worker(
    host: str, port: int, path: str, body: bytes, start_at: float, duration: float, header_length: int | None = None
) -> tuple[list[float], float]:
    """The same closed loop over HTTP/1.1 with one keep-alive connection, posting a JSON body, or with
    ``header_length`` a body in Triton's binary tensor data extension (that many bytes of JSON, then raw tensors)."""
    import http.client

    connection = http.client.HTTPConnection(host, port, timeout=30)
    headers = {"content-type": "application/json"}
    if header_length is not None:
        headers = {"content-type": "application/octet-stream", "inference-header-content-length": str(header_length)}

    def call() -> None:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        payload = response.read()
        if response.status != 200:
            raise RuntimeError(f"REST answered {response.status}: {payload[:200]!r}")

    try:
        return _closed_loop(call, start_at, duration)
    finally:
        connection.close()


def warm_up(seconds: float) -> None:
    """Keep a freshly spawned pool process busy for ``seconds``, so that a batch of these lands one per process."""
    time.sleep(seconds)
