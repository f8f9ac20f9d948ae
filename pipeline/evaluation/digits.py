"""The digits suite: calibration, out-of-distribution detection, MC averaging vs weight scaling.

Models are trained with mcdrop's own training stage, exported, and evaluated only
through the exported LiteRT graphs (``deterministic.tflite`` for weight scaling,
``mc_masked.tflite`` with seeded host masks for Monte Carlo).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.pipeline.evaluation.graphs import Exported
from mcdrop.serving.core import uncertainty

SAMPLES = 100
SAMPLE_COUNTS = (1, 2, 5, 10, 20, 50, 100, 200)
REPEATS = 10
ID_CLASSES = 5


def run_digits(workdir: Path, *, seed: int = 0, quiet: bool = True, step: Any = lambda _: None) -> dict[str, Any]:
    """All digits experiments; returns the results (figures are drawn by ``pipeline.evaluation.figures``)."""
    from mcdrop.pipeline.export.exporter import ExportOptions, export
    from mcdrop.pipeline.training.config import TrainConfig
    from mcdrop.pipeline.training.loop import train

    repository = workdir / "repository"
    step("training the digits classifier")
    config = TrainConfig(out=str(workdir / "digits"), dataset="digits", seed=seed, quiet=quiet).validate()
    train(config)
    step("exporting it")
    version, _ = export(
        ExportOptions(model_path=Path(config.out) / "model.keras", repository=repository, name="digits")
    )
    model = Exported(repository / "digits" / str(version))
    x_test, y_test = held_out(config)

    step("calibration: weight scaling vs Monte Carlo")
    deterministic = model.predict(x_test)
    mc_samples = model.sample(x_test, SAMPLES, seed=seed)
    mc = mc_samples.mean(axis=0)
    calibration = {"deterministic": _scores(deterministic, y_test), f"mc_T{SAMPLES}": _scores(mc, y_test)}
    reliability = {
        "deterministic": uncertainty.reliability(deterministic, y_test),
        f"mc_T{SAMPLES}": uncertainty.reliability(mc, y_test),
    }

    step("Monte-Carlo averaging vs weight scaling")
    averaging = _averaging_curve(model, x_test, y_test, deterministic, seed)

    step("out-of-distribution: train on 0-4, score 5-9")
    ood = _ood(workdir, seed, quiet)

    results: dict[str, Any] = {
        "test_rows": len(x_test),
        "samples": SAMPLES,
        "calibration": calibration,
        "reliability": {k: _reliability_json(v) for k, v in reliability.items()},
        "averaging": averaging,
        "ood": ood,
    }
    results["targets"] = _targets(results)
    return results


def held_out(config: Any) -> tuple[np.ndarray, np.ndarray]:
    """The split the training stage held out (never used to fit or select anything)."""
    from mcdrop.pipeline.training.data import load_dataset

    data = load_dataset(config.dataset, task="auto", target=[], val_fraction=config.val_fraction, seed=config.seed)
    return data.x_val, data.y_val


def _scores(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(np.mean(probabilities.argmax(-1) == labels)),
        "nll": uncertainty.nll(probabilities, labels),
        "brier": uncertainty.brier(probabilities, labels),
        "ece": uncertainty.reliability(probabilities, labels).ece,
    }


def _averaging_curve(
    model: Exported, x: np.ndarray, y: np.ndarray, deterministic: np.ndarray, seed: int
) -> dict[str, Any]:
    """Test error vs T (mean ± std over repeats) against the weight-scaling error."""
    largest = max(SAMPLE_COUNTS)
    errors = np.empty((REPEATS, len(SAMPLE_COUNTS)))
    for r in range(REPEATS):
        samples = model.sample(x, largest, seed=seed + 1000 + r)
        cumulative = np.cumsum(samples, axis=0)
        for j, count in enumerate(SAMPLE_COUNTS):
            errors[r, j] = np.mean(cumulative[count - 1].argmax(-1) != y)
    return {
        "samples": list(SAMPLE_COUNTS),
        "repeats": REPEATS,
        "mc_error_mean": errors.mean(axis=0).tolist(),
        "mc_error_std": errors.std(axis=0, ddof=1).tolist(),
        "weight_scaling_error": float(np.mean(deterministic.argmax(-1) != y)),
    }


def _ood(workdir: Path, seed: int, quiet: bool) -> dict[str, Any]:
    from sklearn.datasets import load_digits

    from mcdrop.pipeline.export.exporter import ExportOptions, export
    from mcdrop.pipeline.training.config import TrainConfig
    from mcdrop.pipeline.training.loop import train

    digits = load_digits()
    inside = digits.target < ID_CLASSES
    data = workdir / "digits-0-4.npz"
    np.savez(data, x=digits.data[inside].astype(np.float32), y=digits.target[inside])
    config = TrainConfig(
        out=str(workdir / "digits-0-4"), dataset=f"npz:{data}", task="classification", seed=seed, quiet=quiet
    ).validate()
    train(config)
    version, _ = export(
        ExportOptions(model_path=Path(config.out) / "model.keras", repository=workdir / "repository", name="digits-0-4")
    )
    model = Exported(workdir / "repository" / "digits-0-4" / str(version))
    x_in, _ = held_out(config)
    x_out = digits.data[~inside].astype(np.float32)
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    p_in, p_out = model.predict(x_in), model.predict(x_out)
    scores["max_softmax (deterministic)"] = (1.0 - p_in.max(-1), 1.0 - p_out.max(-1))
    s_in = uncertainty.classification(model.sample(x_in, SAMPLES, seed=seed))
    s_out = uncertainty.classification(model.sample(x_out, SAMPLES, seed=seed + 1))
    scores[f"predictive_entropy (MC T={SAMPLES})"] = (s_in.predictive_entropy, s_out.predictive_entropy)
    scores[f"mutual_information (MC T={SAMPLES})"] = (s_in.mutual_information, s_out.mutual_information)
    return {
        "in_distribution_rows": len(x_in),
        "out_of_distribution_rows": len(x_out),
        "auroc": {name: uncertainty.auroc(a, b) for name, (a, b) in scores.items()},
        "scores": {name: {"in": a.tolist(), "out": b.tolist()} for name, (a, b) in scores.items()},
    }


def _reliability_json(r: uncertainty.Reliability) -> dict[str, Any]:
    def clean(values: np.ndarray) -> list[float | None]:
        return [None if np.isnan(v) else float(v) for v in values]

    return {
        **{k: v for k, v in dataclasses.asdict(r).items() if k == "ece"},
        "edges": r.edges.tolist(),
        "counts": r.counts.tolist(),
        "confidence": clean(r.confidence),
        "accuracy": clean(r.accuracy),
    }


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    det, mc = results["calibration"]["deterministic"], results["calibration"][f"mc_T{SAMPLES}"]
    best_mc = max(v for k, v in results["ood"]["auroc"].items() if "MC" in k)
    averaging = results["averaging"]
    at50 = averaging["samples"].index(50)
    gap = abs(averaging["mc_error_mean"][at50] - averaging["weight_scaling_error"])
    return [
        {
            "target": "MC NLL <= deterministic NLL",
            "value": mc["nll"],
            "bound": det["nll"],
            "met": mc["nll"] <= det["nll"],
        },
        {
            "target": "MC ECE <= deterministic ECE + 0.005",
            "value": mc["ece"],
            "bound": det["ece"] + 0.005,
            "met": mc["ece"] <= det["ece"] + 0.005,
        },
        {"target": "best MC OOD AUROC >= 0.75", "value": best_mc, "bound": 0.75, "met": best_mc >= 0.75},
        {
            "target": "|MC error at T=50 - weight-scaling error| <= its std",
            "value": gap,
            "bound": averaging["mc_error_std"][at50],
            "met": gap <= averaging["mc_error_std"][at50],
        },
    ]
