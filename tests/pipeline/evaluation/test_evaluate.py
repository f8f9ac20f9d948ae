"""``mcdrop evaluate`` end to end: the digits suite with its targets, and the UCI protocol's plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import REPO, run_cli

UCI = REPO.parent / "shared" / "datasets" / "uci"


@pytest.mark.slow
def test_digits_suite(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    out, figures = tmp_path / "digits.json", tmp_path / "figures"
    result = run_cli("evaluate", "--suite", "digits", "--json", str(out), "--figures", str(figures), "--quiet")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    det, mc = report["calibration"]["deterministic"], report["calibration"]["mc_T100"]
    for scores in (det, mc):
        assert set(scores) == {"accuracy", "nll", "brier", "ece"} and scores["accuracy"] > 0.9
    assert mc["nll"] <= det["nll"]  # the MC predictive distribution is better calibrated in likelihood
    assert max(v for k, v in report["ood"]["auroc"].items() if "MC" in k) >= 0.75
    assert report["averaging"]["samples"] == [1, 2, 5, 10, 20, 50, 100, 200]
    assert len(report["targets"]) == 4
    for name in ("reliability.png", "mc_vs_weight_scaling.png", "ood.png"):
        assert (figures / name).read_bytes()[:4] == b"\x89PNG"
    assert "ECE (15 bins)" in result.stdout and "AUROC" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(not UCI.is_dir(), reason=f"UCI splits not found at {UCI}")
def test_uci_protocol_runs_and_prints_the_paper_beside_it(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    out = tmp_path / "uci.json"
    # Tiny epochs and T: this checks the protocol's plumbing, not the paper's numbers.
    result = run_cli(
        "evaluate",
        "--suite",
        "uci",
        "--dataset",
        "concrete",
        "--splits",
        "2",
        "--epoch-factor",
        "0.05",
        "--samples",
        "200",
        "--uci-root",
        str(UCI),
        "--json",
        str(out),
        "--quiet",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())["datasets"][0]
    assert report["dataset"] == "concrete" and report["splits"] == 2 and report["epochs"] == 2
    for split in report["per_split"]:
        assert len(split["grid"]) == 12  # 4 dropout rates x 3 taus
        assert split["best"]["rate"] in (0.005, 0.01, 0.05, 0.1) and split["best"]["tau"] in (0.025, 0.05, 0.075)
        assert split["rmse"] > 0 and 0 <= split["coverage_95"] <= 1
    assert report["summary"]["rmse"]["published"] == 4.82
    assert "4.82 ± 0.16" in result.stdout and "-2.93 ± 0.02" in result.stdout


def test_unknown_uci_dataset_is_named(tmp_path: Path) -> None:
    result = run_cli("evaluate", "--suite", "uci", "--dataset", "yacht", "--uci-root", str(UCI), "--quiet")
    assert result.returncode == 2
    assert "UCI dataset 'yacht' not found" in result.stderr
