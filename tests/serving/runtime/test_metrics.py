"""Prometheus metrics over HTTP, and structured JSON logs."""

from __future__ import annotations

import json
import logging
import socket
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mcdrop.serving.client import RpcFailed
from mcdrop.serving.server import logs
from tests.helpers import in_process_server


def test_metrics_endpoint_counts_requests_by_code(model_repository: Path) -> None:
    with in_process_server(model_repository, metrics_port=0) as (server, client):
        x = np.zeros((2, 64), np.float32)
        client.predict("digits", x, samples=20)
        client.predict("digits", x, mode="deterministic")
        with pytest.raises(RpcFailed):
            client.predict("nope", x)
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    # Server.stop() (leaving the block) closes the metrics endpoint too: its port is free again.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.metrics_port), timeout=2).close()
    with socket.socket() as sock:  # no listener left: binding works (SO_REUSEADDR only skips TIME_WAIT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", server.metrics_port))
    assert 'mcdrop_requests_total{api="mcdrop.v1",code="OK",method="Predict"} 2.0' in text
    assert 'mcdrop_requests_total{api="mcdrop.v1",code="NOT_FOUND",method="Predict"} 1.0' in text
    assert 'mcdrop_model_version_loaded{model="digits",version="1"} 1.0' in text
    assert 'mcdrop_samples_per_request_count{mode="monte_carlo",model="digits"} 1.0' in text
    assert 'mcdrop_queue_seconds_count{model="digits"} 2.0' in text
    assert 'mcdrop_compute_seconds_bucket{le="+Inf",mode="deterministic",model="digits"} 1.0' in text


def test_json_log_lines_carry_extra_fields(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("INFO", "json")
    logging.getLogger("mcdrop.test").info("model version loaded", extra={"model": "m", "version": 3})
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["msg"] == "model version loaded" and line["model"] == "m" and line["version"] == 3
    assert line["level"] == "INFO" and line["ts"].endswith("Z")
    logging.getLogger().handlers.clear()


def test_served_uncertainty_and_abstentions_are_counted(calibrated_repository: Path) -> None:
    """Every answered row's scores go into ``mcdrop_uncertainty``; a calibrated version counts its abstentions."""
    with in_process_server(calibrated_repository, metrics_port=0) as (server, client):
        x = np.concatenate([np.zeros((2, 64), np.float32), np.full((1, 64), 16.0, np.float32)])
        answer = client.predict("digits", x, samples=20, seed=1)  # version 2: calibrated
        client.predict("diabetes", np.zeros((4, 10), np.float32), samples=20, seed=1, version=1)
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    digits = 'mode="monte_carlo",model="digits",output="y",version="2"'
    assert f"mcdrop_rows_total{{{digits}}} 3.0" in text
    assert answer.abstain is not None
    abstained = int(answer.abstain.sum())
    assert f'mcdrop_abstained_rows_total{{model="digits",output="y",version="2"}} {abstained:.1f}' in text
    labels = 'mode="monte_carlo",model="digits",output="y",score="{}",version="2"'  # exposition order: sorted
    for score in ("mutual_information", "predictive_entropy", "variation_ratio"):
        assert f"mcdrop_uncertainty_count{{{labels.format(score)}}} 3.0" in text
    expected = float(np.sum(answer.mutual_information))
    found = next(line for line in text.splitlines()
                 if line.startswith(f"mcdrop_uncertainty_sum{{{labels.format('mutual_information')}}}"))  # fmt: skip
    assert float(found.split()[-1]) == pytest.approx(expected, rel=1e-6)
    diabetes = 'mode="monte_carlo",model="diabetes",output="y",version="1"'
    regression = 'mode="monte_carlo",model="diabetes",output="y",score="predictive_std",version="1"'
    assert f"mcdrop_uncertainty_count{{{regression}}} 4.0" in text
    assert f"mcdrop_rows_total{{{diabetes}}} 4.0" in text


def test_the_drift_gauge_moves_with_out_of_distribution_rows(
    calibrated_repository: Path, calibration_files: dict[str, Path]
) -> None:
    """Rows like the calibration's keep the PSI low; noise images push it past the 0.25 of a major shift."""

    def drift(server: Any) -> dict[str, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
        found = {}
        for name in ("mcdrop_drift_psi", "mcdrop_drift_share_above_p90"):
            line = next(line for line in text.splitlines()
                        if line.startswith(f'{name}{{model="digits",output="y",version="2"}}'))  # fmt: skip
            found[name] = float(line.split()[-1])
        return found

    digits = np.load(calibration_files["digits"])["x"]
    noise = np.random.default_rng(0).uniform(0, 16, (300, 64)).astype(np.float32)
    with in_process_server(calibrated_repository, metrics_port=0, drift_window_rows=300) as (server, client):
        client.predict("digits", digits[:300], samples=50, seed=3)
        calm = drift(server)
        client.predict("digits", noise, samples=50, seed=3)
        shifted = drift(server)
    assert calm["mcdrop_drift_psi"] < 0.1 and abs(calm["mcdrop_drift_share_above_p90"] - 0.1) < 0.05
    assert shifted["mcdrop_drift_psi"] > 0.25 and shifted["mcdrop_drift_share_above_p90"] > 0.5


def test_bulk_observation_matches_prometheus_own_observe() -> None:
    from prometheus_client import CollectorRegistry, Histogram

    from mcdrop.serving.runtime.metrics import UNCERTAINTY_BUCKETS, observe_many

    registry = CollectorRegistry()
    one = Histogram("one", "", buckets=UNCERTAINTY_BUCKETS, registry=registry)
    bulk = Histogram("bulk", "", buckets=UNCERTAINTY_BUCKETS, registry=registry)
    values = np.concatenate([np.random.default_rng(0).lognormal(-3, 3, 5000), UNCERTAINTY_BUCKETS, [0.0, 1e9]])
    for value in values:
        one.observe(value)
    observe_many(bulk, np.concatenate([values, [np.nan]]))  # NaN rows are left out
    samples = {s.name.replace("one", ""): (s.labels, s.value) for s in one.collect()[0].samples}
    bulk_samples = {s.name.replace("bulk", ""): (s.labels, s.value) for s in bulk.collect()[0].samples}
    ones = [(s.labels, s.value) for s in one.collect()[0].samples if s.name.endswith("_bucket")]
    bulks = [(s.labels, s.value) for s in bulk.collect()[0].samples if s.name.endswith("_bucket")]
    assert ones == bulks and ones[-1][1] == len(values)
    assert samples["_sum"][1] == pytest.approx(bulk_samples["_sum"][1]) and samples["_count"] == bulk_samples["_count"]


def test_an_unloaded_versions_drift_series_go_with_it(calibrated_repository: Path, calibration_files: dict[str, Path],
                                                      tmp_path: Path) -> None:  # fmt: skip
    import shutil
    import time

    repo = tmp_path / "repo"
    shutil.copytree(calibrated_repository, repo)
    digits = np.load(calibration_files["digits"])["x"][:200]
    with in_process_server(repo, metrics_port=0, poll_seconds=0.2) as (server, client):
        client.predict("digits", digits, samples=20, seed=1)

        def scrape() -> str:
            return urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()

        assert 'mcdrop_drift_psi{model="digits",output="y",version="2"}' in scrape()
        shutil.rmtree(repo / "digits" / "2")
        deadline = time.monotonic() + 10
        while 'mcdrop_drift_window_rows{bin="1",model="digits",output="y",version="2"}' in scrape():
            assert time.monotonic() < deadline, "the unloaded version's drift series stayed"
            time.sleep(0.1)
        assert 'mcdrop_drift_psi{model="digits",output="y",version="2"}' not in scrape()
        assert (
            'mcdrop_uncertainty_count{mode="monte_carlo",model="digits",output="y",score="mutual_information",version="2"}'
            in scrape()
        )
