"""Triton's perf_analyzer measures mcdrop as it measures Triton: over gRPC with mcdrop's request parameters, over
HTTP, and as a TensorFlow Serving client, with no errors (the server counts none either)."""

from __future__ import annotations

import os
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mcdrop.pipeline.bench.perf_analyzer import PerfAnalyzer, input_data
from mcdrop.serving.errors import InvalidArgument, NotFound
from mcdrop.serving.harness.process import ServerProcess, free_port
from tests.helpers import server_process
from tests.tool_venvs import PERF_ANALYZER

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def perf_analyzer() -> PerfAnalyzer:
    """The binary of tritonclient==2.40.0's wheel, in its own venv; CI (MCDROP_REQUIRE_PERF_ANALYZER) installs
    Debian's libb64-0d it needs, elsewhere its absence skips."""
    binary = PERF_ANALYZER.bin() / "perf_analyzer"
    try:
        return PerfAnalyzer.find(str(binary))
    except InvalidArgument as exc:
        if os.environ.get("MCDROP_REQUIRE_PERF_ANALYZER"):
            raise
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def server(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, int, int]]:
    folder = tmp_path_factory.mktemp("perf-analyzer")
    http_port, metrics_port = free_port(), free_port()
    with server_process(model_repository, folder / "server.log", "--http-port", str(http_port), "--metrics-port",
                        str(metrics_port), "--workers", "1") as served:  # fmt: skip
        yield served, http_port, metrics_port


def test_perf_analyzer_reports_throughput_over_every_api_with_no_errors(
    perf_analyzer: PerfAnalyzer, server: tuple[ServerProcess, int, int], digits_rows: np.ndarray, tmp_path: Path
) -> None:
    served, http_port, metrics_port = server
    data = input_data(tmp_path / "data.json", {"x": digits_rows[:1]})
    runs = {
        "grpc, Monte Carlo T=100 seeded": {"protocol": "grpc", "url": served.address,
                                          "parameters": {"mc_samples": 100, "seed": 1, "mode": "monte_carlo"}},
        "grpc, deterministic": {"protocol": "grpc", "url": served.address, "parameters": {"mode": "deterministic"}},
        "http, default request": {"protocol": "http", "url": f"127.0.0.1:{http_port}"},
        "tfserving": {"protocol": "grpc", "url": served.address, "service_kind": "tfserving"},
    }  # fmt: skip
    for name, run in runs.items():
        rows = perf_analyzer.measure(model="digits", concurrency=(1, 4), data=data, interval_ms=1000, **run)  # type: ignore[arg-type]
        assert [r["concurrency"] for r in rows] == [1, 4], name
        assert all(r["throughput_rps"] > 20 and 0 < r["median_ms"] < 200 for r in rows), (name, rows)
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as answer:
        metrics = answer.read().decode()
    counted = re.findall(r'mcdrop_requests_total\{api="(\w+)",code="(\w+)",method="(\w+)"\} (\S+)', metrics)
    by_api = {(api, method): float(n) for api, code, method, n in counted if code in ("OK", "200")}
    assert by_api[("inference", "ModelInfer")] > 100 and by_api[("rest", "ModelInfer")] > 50
    assert by_api[("tfserving", "Predict")] > 50 and by_api[("inference", "ModelConfig")] >= 2
    failed = [(api, code, method) for api, code, method, n in counted if code not in ("OK", "200") and float(n) > 0]
    assert not failed, failed


def test_a_missing_binary_is_named_with_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"tritonclient==2\.40\.0"):
        PerfAnalyzer.find(str(tmp_path / "perf_analyzer"))
    fake = tmp_path / "bin" / "perf_analyzer"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'error while loading shared libraries: libb64.so.0d' >&2\nexit 127\n")
    fake.chmod(0o755)
    with pytest.raises(InvalidArgument, match=r"does not start: .*libb64\.so\.0d.*apt-get install libb64-0d"):
        PerfAnalyzer.find(str(fake))
