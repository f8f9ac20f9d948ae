"""``mcdrop bench`` runs end to end and writes what it promises (figures are for people, not asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import run_cli


@pytest.mark.slow
def test_bench_writes_every_row_targets_and_a_plot(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    result = run_cli("bench", "--json", str(out), "--plot", str(png), "--duration", "0.3", "--repeats", "3", "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    names = {(r["name"], r["model"], r["batch"]) for r in report["rows"]}
    for model in ("mlp", "cnn"):
        for batch in (1, 32):
            for name in ("keras_eager_loop", "keras_batched", "tflite_sequential", "mcdrop", "deterministic", "limit"):
                assert (name, model, batch) in names
    for row in report["rows"]:
        assert row["median_ms"] > 0
    served = {(r["name"], r["concurrency"]) for r in report["rows"] if "concurrency" in r}
    assert served == {(n, c) for n in ("server_deterministic", "server_mc_T100", "echo_floor") for c in (1, 8)}
    mcdrop = next(r for r in report["rows"] if r["name"] == "mcdrop" and r["model"] == "mlp" and r["batch"] == 1)
    assert {"ratio_to_keras_batched", "ratio_to_tflite_sequential", "ratio_to_limit"} <= set(mcdrop)
    assert len(report["targets"]) == 6 and all(isinstance(t["met"], bool) for t in report["targets"])
    assert report["process"]["peak_rss_mb"] > 0 and report["process"]["ready_seconds_median"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "targets" in result.stdout
