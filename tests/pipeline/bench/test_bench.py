"""``mcdrop bench`` runs end to end and writes what it promises (figures are for people, not asserted)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import copy_repository, run_cli


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
    for model in ("lstm", "transformer"):  # dropout inside layers: mcdrop vs Keras batched, T=100
        for batch in (1, 32):
            for name in ("keras_batched", "tflite_mc_graph_rng", "mcdrop", "deterministic", "limit"):
                assert (name, model, batch) in names
        ours = next(r for r in report["rows"] if (r["name"], r["model"], r["batch"]) == ("mcdrop", model, 1))
        assert ours["ratio_to_keras_batched"] > 0
    for row in report["rows"]:
        assert row["median_ms"] > 0
    served = {(r["name"], r["concurrency"], r.get("workers")) for r in report["rows"] if "concurrency" in r}
    expected = {(n, c, w) for n in ("server_deterministic", "server_mc_T100") for c in (1, 8) for w in (1, 2)}
    rest = ("rest_deterministic", "rest_mc_T100", "rest_binary_deterministic", "rest_binary_mc_T100")
    expected |= {(n, c, w) for n in rest for c in (1, 8) for w in (1, 2)}  # REST JSON and binary at every count
    expected |= {("echo_floor", c, None) for c in (1, 8)}
    expected |= {("decision_off", 1, 1), ("decision_on", 1, 1)}  # a calibrated copy beside the model, one server
    apis = {f"{api}_{transport}_{mode}" for api in ("oip", "tfserving") for transport in ("grpc", "rest")
            for mode in ("deterministic", "mc_T100")}  # fmt: skip
    expected |= {(name, 1, 1) for name in apis}  # the same request over every API, one server
    assert served == expected
    for row in report["rows"]:
        if "concurrency" in row:  # CPU time per 1,000 requests, from /proc, for the server and the echo floor
            assert row["cpu_s_per_1000"] > 0, row
    mcdrop = next(r for r in report["rows"] if r["name"] == "mcdrop" and r["model"] == "mlp" and r["batch"] == 1)
    assert {"ratio_to_keras_batched", "ratio_to_tflite_sequential", "ratio_to_limit"} <= set(mcdrop)
    assert len(report["targets"]) == 25 and all(isinstance(t["met"], bool) for t in report["targets"])
    for row in (r for r in report["rows"] if r["name"].startswith("tfserving_")):  # p50 ratio of paired rounds
        oip = next(r for r in report["rows"] if r["name"] == row["name"].replace("tfserving_", "oip_"))
        paired = [t / o for t, o in zip(row["rounds_median_ms"], oip["rounds_median_ms"], strict=True)]
        target = next(t for t in report["targets"] if t["target"].startswith("TF Serving p50 / OIP p50 (" +
                      row["name"].removeprefix("tfserving_").replace("_", " ", 1)))  # fmt: skip
        assert target["value"] == pytest.approx(float(np.median(paired))) and len(paired) == 5
        assert row["client_cpu_ms_per_request"] > 0
    scrapes = {r["workers"]: r for r in report["rows"] if r["name"] == "metrics_scrape"}
    assert set(scrapes) == {1, 2} and all(r["versions"] == 10 and r["bytes"] > 10_000 for r in scrapes.values())
    for workers, row in scrapes.items():  # /metrics with 10 calibrated versions loaded: one target per worker count
        target = next(t for t in report["targets"] if t["target"].startswith("/metrics scrape")
                      and f"{workers} worker(s)" in t["target"])  # fmt: skip
        assert target["value"] == row["median_ms"] and target["met"] == (row["median_ms"] <= 50.0)
    decision = next(t for t in report["targets"] if t["target"].startswith("calibrated / uncalibrated MC p50"))
    on = next(r for r in report["rows"] if r["name"] == "decision_on")
    off = next(r for r in report["rows"] if r["name"] == "decision_off")
    ratios = [b / a for a, b in zip(off["rounds_median_ms"], on["rounds_median_ms"], strict=True)]
    assert decision["value"] == pytest.approx(float(np.median(ratios)))  # the median of paired rounds
    assert decision["met"] == (decision["value"] <= 1.02)
    names = {t["target"] for t in report["targets"]}
    assert {"mcdrop / limit (CNN, B=32)", "mcdrop / keras_batched (MLP, B=1)"} <= names
    # REST vs gRPC, computed from the rows of this run (not copied from anywhere else).
    by = {(r["name"], r["concurrency"], r.get("workers")): r for r in report["rows"] if "concurrency" in r}
    for w in (1, 2):
        throughput = next(t for t in report["targets"] if t["target"].startswith("REST JSON MC throughput")
                          and f"{w} worker(s)" in t["target"])  # fmt: skip
        assert throughput["value"] == pytest.approx(
            by["rest_mc_T100", 8, w]["throughput_rps"] / by["server_mc_T100", 8, w]["throughput_rps"]
        )
        assert throughput["met"] == (throughput["value"] >= 0.8)
        p50 = next(t for t in report["targets"] if t["target"] == f"REST JSON MC p50 / gRPC's (concurrency 1, {w} "
                   "worker(s))")  # fmt: skip
        assert p50["value"] == pytest.approx(
            by["rest_mc_T100", 1, w]["median_ms"] / by["server_mc_T100", 1, w]["median_ms"]
        )
    assert report["settings"]["server"]["pool_size"] == 2 and report["settings"]["server"]["interpreter_threads"] == 1
    assert report["process"]["peak_rss_mb"] > 0 and report["process"]["ready_seconds_median"] > 0
    assert set(report["process"]["by_workers"]) == {"1", "2"} and report["process"]["peak_rss_mb_per_worker"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "targets" in result.stdout


@pytest.mark.slow
def test_server_rows_name_the_served_model_and_the_settings_it_ran_with(
    model_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mcdrop.pipeline.bench import server as bench_server
    from mcdrop.serving.harness.process import ServerProcess

    started: list[tuple[str, ...]] = []

    class Recording(ServerProcess):
        def __init__(self, repository: Path, *flags: str, **kwargs: Any) -> None:
            started.append(flags)
            super().__init__(repository, *flags, **kwargs)

    from mcdrop.pipeline.bench import protocols

    monkeypatch.setattr(bench_server, "ServerProcess", Recording)
    monkeypatch.setattr(protocols, "ServerProcess", Recording)
    monkeypatch.setattr(protocols, "ROUNDS", 1)
    repository = copy_repository(model_repository, tmp_path / "repo")
    rows, process = bench_server.server_rows(repository, "digits", np.zeros((1, 64), np.float32), 10, 0.2, (1,))
    assert {r["model"] for r in rows if r["name"].startswith("server_")} == {"digits"}
    assert {r["model"] for r in rows if r["name"] == "echo_floor"} == {"echo"}
    expected = bench_server.server_flags(bench_server.SERVER_SETTINGS)
    assert "--pool-size" in expected and "--interpreter-threads" in expected
    # Start-up (STARTS per worker count), one measured server per worker count, the API comparison's, the decision's
    # server, then one server per worker count for the /metrics scrape.
    runs = len(bench_server.WORKERS)
    assert len(started) == (bench_server.STARTS + 1) * runs + 2 + runs and all(
        flags[: len(expected)] == tuple(expected) for flags in started
    )
    measured = started[bench_server.STARTS * runs : bench_server.STARTS * runs + runs]
    assert all("--http-port" in flags for flags in measured)  # measured ones: REST too
    assert {r["model"] for r in rows if r["name"].startswith("decision_")} == {"digits"}
    rest = [r for r in rows if r["name"].startswith("rest_")]
    assert {r["model"] for r in rest} == {"digits"} and {r["workers"] for r in rest} == set(bench_server.WORKERS)
    assert {r["name"] for r in rest} == {"rest_deterministic", "rest_mc_T10", "rest_binary_deterministic",
                                         "rest_binary_mc_T10"}  # fmt: skip
    assert process["peak_rss_mb"] > 0
    assert {(r["workers"], r["versions"]) for r in rows if r["name"] == "metrics_scrape"} == {(1, 10), (2, 10)}


@pytest.mark.slow
def test_perf_analyzer_rows_stand_beside_the_own_generator_for_the_same_request(
    model_repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``mcdrop bench --perf-analyzer``'s rows: perf_analyzer and the own generator on the request perf_analyzer
    sends, per API and concurrency, and the targets computed from them."""
    from mcdrop.pipeline.bench import protocols
    from mcdrop.pipeline.bench.perf_analyzer import PerfAnalyzer
    from mcdrop.pipeline.bench.pool import LoadPool
    from mcdrop.pipeline.bench.run import protocol_checks
    from mcdrop.pipeline.bench.server import SERVER_SETTINGS, server_flags
    from mcdrop.serving.errors import InvalidArgument
    from tests.tool_venvs import PERF_ANALYZER

    try:
        tool = PerfAnalyzer.find(str(PERF_ANALYZER.bin() / "perf_analyzer"))
    except InvalidArgument as exc:
        if __import__("os").environ.get("MCDROP_REQUIRE_PERF_ANALYZER"):
            raise
        pytest.skip(str(exc))
    monkeypatch.setattr(protocols, "ROUNDS", 1)
    monkeypatch.setattr(protocols, "TOOL_ROUNDS", 1)
    repository = tmp_path / "single"
    copy_repository(model_repository / "digits", repository / "digits")
    with LoadPool(max(protocols.CONCURRENCY)) as pool:
        rows = protocols.protocol_rows(repository, "digits", np.zeros((1, 64), np.float32), 10, 0.3, pool,
                                       server_flags(SERVER_SETTINGS), tool)  # fmt: skip
    tool_rows = {(r["name"], r["concurrency"]): r for r in rows if r["name"].startswith("perf_analyzer_")}
    own_rows = {(r["name"], r["concurrency"]): r for r in rows if r["name"].startswith("own_")}
    runs = ("grpc_deterministic", "grpc_mc_T10", "http_default_T10", "tfserving_default_T10")
    assert set(tool_rows) == {(f"perf_analyzer_{run}", c) for run in runs for c in protocols.CONCURRENCY}
    for (name, clients), row in tool_rows.items():
        own = own_rows[(name.replace("perf_analyzer_", "own_"), clients)]
        assert row["throughput_rps"] > 0 and own["throughput_rps"] > 0 and own["client_cpu_ms_per_request"] > 0
        assert row["ratio_to_own"] == pytest.approx(row["throughput_rps"] / own["throughput_rps"])
    checks = [c for c in protocol_checks(rows) if c[0].startswith("perf_analyzer")]
    assert len(checks) == 4 and all(kind == "within" and bound == (0.85, 1.15) for _, _, kind, bound in checks)
