"""``mcdrop evaluate`` end to end: the digits suite with its targets, and the UCI protocol's plumbing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import REPO, run_cli


def write_uci_dataset(root: Path, name: str, rows: int = 60, splits: int = 2) -> Path:
    """A small dataset in the UCI protocol's layout (data, feature/target indices, splits, grids).

    Targets lie in [-0.5, 0.5], far inside the observation noise of the grid's precisions
    (1/sqrt(tau) >= 3.6), so every 95% predictive interval covers its target.
    """
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(rows, 8))
    y = 0.3 * np.tanh(x[:, :3].sum(axis=1)) + rng.uniform(-0.1, 0.1, rows)
    folder = root / name
    folder.mkdir(parents=True)
    np.savetxt(folder / "data.txt", np.column_stack([x, y]))
    np.savetxt(folder / "index_features.txt", np.arange(8), fmt="%d")
    np.savetxt(folder / "index_target.txt", [8], fmt="%d")
    for k in range(splits):
        order = np.random.default_rng(k).permutation(rows)
        np.savetxt(folder / f"index_train_{k}.txt", order[: rows * 4 // 5], fmt="%d")
        np.savetxt(folder / f"index_test_{k}.txt", order[rows * 4 // 5 :], fmt="%d")
    for file, values in {"dropout_rates": [0.005, 0.01, 0.05, 0.1], "tau_values": [0.025, 0.05, 0.075],
                         "n_hidden": [50], "n_epochs": [40]}.items():  # fmt: skip
        np.savetxt(folder / f"{file}.txt", values, fmt="%g")
    return root


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
def test_uci_protocol_runs_and_prints_the_paper_beside_it(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    uci = write_uci_dataset(tmp_path / "uci", "concrete")
    out = tmp_path / "uci.json"
    # Tiny epochs and T: this checks the protocol's plumbing, not the paper's numbers.
    result = run_cli(
        "evaluate", "--suite", "uci", "--dataset", "concrete", "--splits", "2", "--epoch-factor", "0.05",
        "--samples", "200", "--validation-samples", "50", "--uci-root", str(uci), "--json", str(out), "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())["datasets"][0]
    assert report["dataset"] == "concrete" and report["splits"] == 2 and report["epochs"] == 2
    assert report["protocol"] is False and "NON-PROTOCOL RUN" in result.stdout
    for split in report["per_split"]:
        assert len(split["grid"]) == 12  # 4 dropout rates x 3 taus
        assert split["best"]["rate"] in (0.005, 0.01, 0.05, 0.1) and split["best"]["tau"] in (0.025, 0.05, 0.075)
        assert 0 < split["rmse"] < 1  # targets in [-0.5, 0.5]
        # Observation noise 1/tau dominates the predictive variance: every predictive interval covers its target,
        # and the log-likelihood is close to a Gaussian's at that noise, -0.5 log(2 pi / tau), tau in [0.025, 0.075].
        covered = {level: c["grid_tau"] for level, c in split["coverage"].items()}
        assert covered == {"0.5": 1.0, "0.9": 1.0, "0.95": 1.0}
        best = next(g for g in split["grid"] if (g["rate"], g["tau"]) == (split["best"]["rate"], split["best"]["tau"]))
        assert split["best"]["served_tau"] == best["estimated_tau"] > 0
        assert -0.5 * np.log(2 * np.pi / 0.025) - 0.05 < split["ll"] < -0.5 * np.log(2 * np.pi / 0.075)
        assert "paper_rmse" not in split  # this folder has no published results
    assert report["summary"]["rmse"]["published"] == 4.82
    assert isinstance(report["summary"]["rmse"]["within_2se_or_better"], bool)
    assert "4.82 ± 0.16" in result.stdout and "-2.93 ± 0.02" in result.stdout


def test_bundled_uci_data_runs_from_any_directory_and_compares_split_by_split(tmp_path: Path) -> None:
    """No --uci-root: the repository's own copy of the data and of the paper's per-split results (CI's UCI smoke)."""
    pytest.importorskip("keras")
    out, work = tmp_path / "uci.json", tmp_path / "work"
    result = run_cli(
        "evaluate", "--suite", "uci", "--dataset", "concrete", "--splits", "1", "--epoch-factor", "0.025",
        "--samples", "100", "--validation-samples", "20", "--json", str(out), "--workdir", str(work), "--quiet",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())["datasets"][0]
    split = report["per_split"][0]
    # One split has no standard error: no verdict against the 20-split table, a split-by-split comparison instead.
    assert report["summary"]["rmse"]["within_2se_or_better"] is None and "n/a (1 split)" in result.stdout
    published = (REPO / "pipeline/evaluation/uci_data/concrete/paper-results").glob("test_MC_rmse_*.txt")
    assert split["paper_rmse"] == float(next(published).read_text().split()[0])  # 5.4387…
    assert "concrete: split by split against the published values" in result.stdout
    manifest = json.loads(next(work.glob("concrete/split-0/repository/uci/1/manifest.json")).read_text())
    # The exported model serves mcdrop's own noise estimate from the grid's validation rows.
    assert manifest["output"]["observation_noise"]["precision"] == [split["best"]["served_tau"]]
    assert manifest["output"]["observation_noise"]["method"].startswith("validation rows of the UCI grid search")


def test_the_paper_repositorys_layout_is_read_too(tmp_path: Path) -> None:
    from mcdrop.pipeline.evaluation import uci

    root = write_uci_dataset(tmp_path / "flat", "yacht")
    paper = tmp_path / "UCI_Datasets" / "yacht"
    (root / "yacht").rename(tmp_path / "data")
    paper.mkdir(parents=True)
    (tmp_path / "data").rename(paper / "data")
    (paper / "results").mkdir()
    for metric, file in uci.PAPER_FILES.items():
        np.savetxt(paper / "results" / file, np.arange(2) + {"rmse": 1.0, "ll": -2.0, "tau": 0.5}[metric])
    data = uci.load(tmp_path / "UCI_Datasets", "yacht")
    assert data.splits == 2 and data.x.shape == (60, 8)
    assert data.paper["rmse"].tolist() == [1.0, 2.0] and data.paper["tau"].tolist() == [0.5, 1.5]
    assert uci.available_datasets(tmp_path / "UCI_Datasets") == ["yacht"]
    assert uci.PUBLISHED["yacht"] == {"rmse": (0.67, 0.05), "ll": (-1.25, 0.01)}


def test_unknown_uci_dataset_is_named(tmp_path: Path) -> None:
    uci = write_uci_dataset(tmp_path / "uci", "concrete")
    result = run_cli("evaluate", "--suite", "uci", "--dataset", "yacht", "--uci-root", str(uci), "--quiet")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"mcdrop evaluate: error: UCI dataset 'yacht' not found in {uci}. Available: concrete"
    ]


def test_missing_uci_root_is_named(tmp_path: Path) -> None:
    result = run_cli("evaluate", "--suite", "uci", "--uci-root", str(tmp_path / "nowhere"), "--quiet")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"mcdrop evaluate: error: UCI data directory not found: {tmp_path / 'nowhere'}. "
        "Expected DIR/<dataset>/data.txt."
    ]


@pytest.mark.slow
def test_regression_suite_measures_held_out_coverage_of_served_intervals(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    out = tmp_path / "regression.json"
    result = run_cli(
        "evaluate", "--suite", "regression", "--dataset", "diabetes", "--samples", "300", "--json", str(out), "--quiet"
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    diabetes = json.loads(out.read_text())["datasets"][0]
    assert diabetes["test_rows"] == 88 and diabetes["tau"][0] > 0
    coverage = diabetes["coverage"]
    # 88 held-out rows: 95 % +- 2 binomial standard errors (0.023) and a little for the estimate of tau.
    assert 0.88 <= coverage["0.95"]["predictive"] <= 1.0
    assert 0.35 <= coverage["0.5"]["predictive"] <= 0.65
    # The samples' own spread covers far less: it is the uncertainty of the mean, not of y.
    assert coverage["0.95"]["epistemic"] < 0.75
    assert "held-out coverage of served regression intervals" in result.stdout


def test_moments_suite_compares_with_monte_carlo_and_reports_its_targets(tmp_path: Path) -> None:
    """The suite's plumbing at a quick, non-protocol setting (its figures are in docs/uncertainty-quality.md)."""
    out, figures = tmp_path / "moments.json", tmp_path / "figures"
    result = run_cli("evaluate", "--suite", "moments", "--dataset", "concrete", "--splits", "1", "--epoch-factor",
                     "0.05", "--json", str(out), "--figures", str(figures), "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "one-pass moments vs Monte Carlo" in result.stdout and "NON-PROTOCOL" in result.stdout
    results = json.loads(out.read_text())
    models = {found["model"]: found for found in results["classification"]}
    assert set(models) == {"digits-mlp", "digits-cnn"}
    for found in models.values():  # measured even where the export's check refused to publish the graph
        assert found["available"] and 0.0 <= found["spearman_mutual_information"]["test"] <= 1.0
        assert set(found["scores"]) == {"mc_T1000", "moments_S1000", "moments_mean_field"}
        assert found["scores"]["moments_S1000"]["accuracy"] > 0.8
    (concrete,) = results["regression"]
    assert concrete["dataset"] == "concrete" and concrete["available_splits"] == 1
    split = concrete["per_split"][0]
    assert split["rmse"]["mc"] > 0 and split["rmse"]["moments"] > 0 and len(split["rows"]["mc_std"]) > 50
    ratios = [t for t in results["targets"] if "latency" in t["target"]]
    assert len(ratios) == 4 and all(t["value"] > 0 for t in ratios)  # MLP and CNN at B = 1 and 32
    assert (figures / "moments-vs-mc.png").stat().st_size > 10_000


@pytest.mark.slow
def test_selective_suite_checks_thresholds_on_held_out_rows(tmp_path: Path) -> None:
    """The suite's plumbing at a quick setting (its measured tables are on the Decide page): the thresholds the export
    calibrated, applied to rows it never saw, and conformal intervals beside Gaussian ones."""
    out, figures = tmp_path / "selective.json", tmp_path / "figures"
    result = run_cli("evaluate", "--suite", "selective", "--dataset", "diabetes", "--splits", "2", "--epoch-factor",
                     "0.05", "--json", str(out), "--figures", str(figures), "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "QUICK RUN" in result.stdout and "the issue's targets" in result.stdout
    results = json.loads(out.read_text())
    assert results["quick"] and results["delta"] == 0.05
    for model in results["classification"]:
        assert model["rows"] == {"train": 898, "calibration": 629, "test": 270}
        baseline = model["scores"]["deterministic_least_confidence"]["aurc"]
        assert model["aurc_ratio"] == pytest.approx(model["scores"][model["best_mc_score"]]["aurc"] / baseline)
        for target in model["targets"]:
            if target["reached"]:  # the held-out numbers come from the test rows, not copied from the calibration
                low, high = target["test_risk_interval"]
                assert low <= target["test_risk"] <= high
                assert target["test_accepted"] == round(target["test_coverage"] * 270)
                assert 0.0 <= target["noise_abstained"] <= 1.0
            else:
                assert "Nothing was published" in target["reason"]
    (diabetes,) = results["regression"]
    assert diabetes["splits"] == 2
    for level, found in diabetes["levels"].items():
        assert 0.5 < found["conformal"]["coverage"] <= 1.0 and found["conformal"]["width"] > 0, level
    assert {c["what"].split(":")[0] for c in results["checks"]} >= {"digits-mlp", "digits-cnn", "diabetes"}
    assert (figures / "selective.png").stat().st_size > 10_000
