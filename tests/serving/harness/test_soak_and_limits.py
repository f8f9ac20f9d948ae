"""Resource limits at their edges, and the soak command on a short, bounded run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mcdrop.serving.client import RpcFailed
from tests.helpers import in_process_server, run_cli


def test_limits_at_the_edge(model_repository: Path) -> None:
    limits = {"max_samples": 100, "max_batch": 8, "max_sample_rows": 400, "max_message_bytes": 16 * 1024}
    with in_process_server(model_repository, **limits) as (_, client):
        x8 = np.zeros((8, 64), np.float32)
        assert client.predict("digits", x8[:4], samples=100).samples == 100  # T and T x batch at their maxima
        assert client.predict("digits", x8, samples=50).samples == 50  # batch and T x batch at their maxima
        for x, samples, message in (
            (x8[:4], 101, "Expected 1 <= T <= 100. Received: 101"),
            (np.zeros((9, 64), np.float32), 1, "Expected 1 <= B <= 8. Received: 9"),
            (x8, 51, "T x batch = 51 x 8 = 408. Expected at most 400"),
        ):
            with pytest.raises(RpcFailed) as info:
                client.predict("digits", x, samples=samples)
            assert info.value.code == "INVALID_ARGUMENT" and message in info.value.message
        # Messages are capped at 16 KiB both ways: 70 rows of 64 float32 (17,920 bytes) do not get in...
        with pytest.raises(RpcFailed) as info:
            client.predict("digits", np.zeros((70, 64), np.float32), mode="deterministic")
        assert info.value.code == "RESOURCE_EXHAUSTED"
        # ...and 4 x 100 x 10 returned samples (16,000 bytes + framing) do not get out, while 3 x 100 x 10 do.
        assert client.predict("digits", x8[:3], samples=100, return_samples=True).sample_outputs is not None
        with pytest.raises(RpcFailed) as info:
            client.predict("digits", x8[:4], samples=100, return_samples=True)
        assert info.value.code == "RESOURCE_EXHAUSTED"
        assert client.health() == "SERVING"


def test_request_compute_limit(model_repository: Path) -> None:
    with in_process_server(model_repository, max_request_gflops=0.01, max_sample_rows=10**6) as (_, client):
        manifest = client.metadata("digits")
        per_sample = manifest["cost"]["per_sample"]
        allowed = int(0.01e9 // per_sample) - 1  # T that fits one row, rounded down
        assert client.predict("digits", np.zeros((1, 64), np.float32), samples=allowed).samples == allowed
        with pytest.raises(RpcFailed, match="Request too costly"):
            client.predict("digits", np.zeros((1, 64), np.float32), samples=allowed + 2)


def test_soak_command_short_run(model_repository: Path, tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    result = run_cli(
        "soak",
        "--repository",
        str(model_repository),
        "--clients",
        "2",
        "--minutes",
        "0.1",
        "--max-requests",
        "400",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["errors"] == 0 and 0 < report["requests"] <= 400
    assert report["rss_mb"]["start"] > 0 and report["rss_mb"]["end"] > 0
    assert set(report["requests_by_kind"]) <= {"mc_seeded", "mc", "deterministic", "stream", "batch"}
    assert report["passed"] and report["server_exit_code"] == 0


def test_soak_refuses_bad_arguments(tmp_path: Path) -> None:
    result = run_cli("soak", "--repository", str(tmp_path), "--clients", "0")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mcdrop soak: error: argument --clients: expected an integer >= 1, received 0 (see mcdrop soak --help)"
    ]
