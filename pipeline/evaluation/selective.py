"""The selective suite: does deciding with uncertainty keep its promises on rows the calibration never saw?

Everything runs through what users ship: ``mcdrop train``, ``mcdrop export --calibration-data`` (or ``calibrate``
for further targets) and the server's prediction core.

* Classification — the digits MLP and CNN: trained on 50 % of the digits, calibrated on 35 %, tested on the other
  15 % (stratified, fixed seeds). Per score (and the deterministic max-softmax baseline): risk–coverage curves and
  AURC on the test rows; for three targets, the calibrated threshold's held-out selective risk (with its 95 %
  Clopper–Pearson interval) and coverage; the share of uniform-noise images abstained on.
* Regression — diabetes (20 seeded 80/20 splits) and the bundled UCI datasets (their 20 published splits): 20 % of
  each training split is the calibration data, the rest trains the model; held-out coverage and mean width of the
  conformal intervals vs the Gaussian ones at 80 / 90 / 95 %.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mcdrop.pipeline.evaluation import uci
from mcdrop.serving.calibration import selective
from mcdrop.serving.calibration.calibrate import CalibrationOptions, Predicted, calibrate, parse_target, predict_rows
from mcdrop.serving.core.scores import MONTE_CARLO_SCORES, Score, score_values
from mcdrop.serving.core.uncertainty import ClassificationSummary, RegressionSummary, normal_quantile
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.models.calibration import ClassificationCalibration, RegressionCalibration
from mcdrop.serving.models.manifest import Manifest

Step = Callable[[str], None]
ARCHITECTURES: tuple[Literal["mlp", "cnn"], ...] = ("mlp", "cnn")
TARGETS = ("risk=0.01", "risk=0.02", "risk=0.05")
EXPORT_TARGET = "risk=0.02"
"""The target the export itself calibrates for (the others are calibrated with ``calibrate`` on the same rows)."""
DELTA = 0.05
FRACTIONS = (0.50, 0.35, 0.15)
"""Digits: train, calibration, test."""
NOISE_HIGH = 16.0
LEVELS = (0.8, 0.9, 0.95)
REGRESSION_SPLITS = 20
QUICK_EPOCHS = 5
"""Training epochs of a quick run (``mcdrop evaluate --epoch-factor`` other than the protocol's)."""
CALIBRATION_SHARE = 0.2
"""Regression: the share of each training split held out as calibration data."""
HIDDEN, DROPOUT, EPOCHS = [50], [0.05], 40
"""Regression models: one hidden layer of 50 units as the UCI protocol, without its grid search (calibration is the
subject here, not the best RMSE)."""


def run_selective(
    workdir: Path,
    *,
    datasets: list[str],
    splits: int = REGRESSION_SPLITS,
    seed: int = 0,
    epochs: int | None = None,
    step: Step = lambda _: None,
) -> dict[str, Any]:
    """The whole suite; ``epochs`` shortens every training (a quick, labelled run)."""
    started = time.monotonic()
    results: dict[str, Any] = {"delta": DELTA, "targets": list(TARGETS), "classification": [], "regression": [],
                               "quick": epochs is not None}  # fmt: skip
    for architecture in ARCHITECTURES:
        step(f"digits {architecture}: train on 50 %, calibrate on 35 %, test on 15 %")
        results["classification"].append(_classification(workdir / f"digits-{architecture}", architecture, seed,
                                                         epochs))  # fmt: skip
    for name in datasets:
        step(f"{name}: {splits} split(s), conformal vs Gaussian intervals")
        results["regression"].append(_regression(workdir / name, name, splits, seed, epochs))
    results["checks"] = _checks(results)
    results["total_seconds"] = round(time.monotonic() - started, 1)
    return results


# Classification ---------------------------------------------------------------------------------


def _digits_parts(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    x_train, x_rest, y_train, y_rest = train_test_split(x, y, train_size=FRACTIONS[0], random_state=seed, stratify=y)
    share = FRACTIONS[1] / (FRACTIONS[1] + FRACTIONS[2])
    x_cal, x_test, y_cal, y_test = train_test_split(x_rest, y_rest, train_size=share, random_state=seed,
                                                    stratify=y_rest)  # fmt: skip
    return {"train": (x_train, y_train), "calibration": (x_cal, y_cal), "test": (x_test, y_test)}


def _classification(folder: Path, architecture: Literal["mlp", "cnn"], seed: int, epochs: int | None) -> dict[str, Any]:
    from mcdrop.pipeline.export.exporter import ExportOptions, export
    from mcdrop.pipeline.training.config import TrainConfig
    from mcdrop.pipeline.training.loop import train

    parts = _digits_parts(seed)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for part, (x, y) in parts.items():
        files[part] = folder / f"{part}.npz"
        np.savez(files[part], x=x, y=y)
    config = TrainConfig(out=str(folder / "model"), dataset=f"npz:{files['train']}", task="classification",
                         architecture=architecture, seed=seed, quiet=True,
                         image_shape=[8, 8, 1] if architecture == "cnn" else [])  # fmt: skip
    config = dataclasses.replace(config, epochs=epochs or config.epochs).validate()
    train(config)
    options = CalibrationOptions(files["calibration"], abstain_target=parse_target(EXPORT_TARGET, DELTA), seed=seed)
    result: dict[str, Any] = {"model": f"digits-{architecture}", "rows": {k: len(v[1]) for k, v in parts.items()}}
    model_path, repository = Path(config.out) / "model.keras", folder / "repository"
    try:
        version, manifest = export(ExportOptions(model_path=model_path, repository=repository, name="digits",
                                                 calibration=options))  # fmt: skip
    except InvalidArgument as exc:  # the export's refusal is a result; the curves are measured all the same
        result["export_error"] = str(exc)
        curves_only = dataclasses.replace(options, abstain_target=None)
        version, manifest = export(ExportOptions(model_path=model_path, repository=repository, name="digits",
                                                 calibration=curves_only))  # fmt: skip
    version_dir = folder / "repository" / "digits" / str(version)
    x_test, y_test = parts["test"]
    noise = np.random.default_rng(seed).uniform(0.0, NOISE_HIGH, x_test.shape).astype(np.float32)
    test = predict_rows(version_dir, manifest, {"x": x_test}, seed + 1)
    noisy = predict_rows(version_dir, manifest, {"x": noise}, seed + 2)
    result["test_error_rate"] = float(np.mean(_summary(test).predicted_class != y_test))
    result["scores"] = _held_out_curves(test, y_test)
    baseline = result["scores"][Score.DETERMINISTIC_LEAST_CONFIDENCE.value]["aurc"]
    best = min(MONTE_CARLO_SCORES, key=lambda s: result["scores"][s.value]["aurc"])
    result["best_mc_score"] = best.value
    result["aurc_ratio"] = result["scores"][best.value]["aurc"] / baseline if baseline > 0 else None
    result["targets"] = []
    for target in TARGETS:
        if target == EXPORT_TARGET:
            calibrated = result.get("export_error", manifest.calibration)
        else:
            calibrated = _calibrate(version_dir, manifest, options, target)
        result["targets"].append(_held_out_decision(target, calibrated, test, noisy, y_test))
    return result


def _calibrate(version_dir: Path, manifest: Manifest, options: CalibrationOptions, target: str) -> Any:
    try:
        return calibrate(
            version_dir, manifest, dataclasses.replace(options, abstain_target=parse_target(target, DELTA))
        )
    except InvalidArgument as exc:
        return str(exc)


def _summary(predicted: Predicted, monte_carlo: bool = True) -> ClassificationSummary:
    prediction = predicted.monte_carlo if monte_carlo and predicted.monte_carlo else predicted.deterministic
    summary = prediction.outputs[0].summary
    assert isinstance(summary, ClassificationSummary)
    return summary


def _held_out_curves(test: Predicted, labels: np.ndarray) -> dict[str, Any]:
    curves = {}
    for score in (*MONTE_CARLO_SCORES, Score.DETERMINISTIC_LEAST_CONFIDENCE):
        summary = _summary(test, monte_carlo=score != Score.DETERMINISTIC_LEAST_CONFIDENCE)
        curve = selective.risk_coverage(score_values(summary, score), summary.predicted_class != labels)
        coverage, risk = curve.points()
        curves[score.value] = {"aurc": curve.aurc, "coverage": list(coverage), "risk": list(risk)}
    return curves


def _held_out_decision(target: str, calibration: Any, test: Predicted, noisy: Predicted,
                       labels: np.ndarray) -> dict[str, Any]:  # fmt: skip
    if isinstance(calibration, str):
        return {"target": target, "reached": False, "reason": calibration}
    record = calibration.outputs[0]
    assert isinstance(record, ClassificationCalibration) and record.score is not None
    chosen = record.record(record.score)
    assert chosen is not None and chosen.selection is not None
    threshold = chosen.selection.threshold
    summary = _summary(test)
    accepted = score_values(summary, Score(record.score)) <= threshold
    errors = int(np.sum(summary.predicted_class[accepted] != labels[accepted]))
    count = int(accepted.sum())
    low, high = _clopper_pearson(errors, count)
    noise_scores = score_values(_summary(noisy), Score(record.score))
    return {
        "target": target,
        "reached": True,
        "score": record.score,
        "threshold": threshold,
        "calibration_coverage": chosen.selection.coverage,
        "calibration_risk": chosen.selection.risk,
        "calibration_bound": chosen.selection.bound,
        "test_coverage": count / len(labels),
        "test_risk": errors / count if count else None,
        "test_errors": errors,
        "test_accepted": count,
        "test_risk_interval": [low, high],
        "noise_abstained": float(np.mean(noise_scores > threshold)),
    }


def _clopper_pearson(errors: int, rows: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper–Pearson interval of a binomial rate (the lower end is 0 with no error)."""
    if rows == 0:
        return 0.0, 1.0
    tail = (1 - level) / 2
    high = selective.binomial_upper_bound(errors, rows, tail)
    low = 0.0 if errors == 0 else 1 - selective.binomial_upper_bound(rows - errors, rows, tail)
    return low, high


# Regression -------------------------------------------------------------------------------------


def _regression_splits(name: str, splits: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    if name == "diabetes":
        from sklearn.datasets import load_diabetes

        data = load_diabetes()
        x, y = data.data.astype(np.float32), data.target.astype(np.float32)
        cut = round(len(x) * 0.9)
        orders = [np.random.default_rng([seed, k]).permutation(len(x)) for k in range(splits)]
        return x, y, [(order[:cut], order[cut:]) for order in orders]
    data = uci.load(uci.BUNDLED, name)
    if splits > data.splits:
        raise InvalidArgument(f"Invalid --splits. {name} has {data.splits} splits. Received: {splits}")
    return data.x, data.y, [data.split(k) for k in range(splits)]


def _regression(folder: Path, name: str, splits: int, seed: int, epochs: int | None) -> dict[str, Any]:
    x, y, indices = _regression_splits(name, splits, seed)
    per_split = []
    for k, (train_rows, test_rows) in enumerate(indices):
        order = np.random.default_rng([seed, k, 1]).permutation(train_rows)
        cut = round(len(order) * (1 - CALIBRATION_SHARE))
        fit, held = order[:cut], order[cut:]
        per_split.append(_regression_split(folder / f"split-{k}", name, x, y, fit, held, test_rows, seed, epochs))
    summary: dict[str, Any] = {"dataset": name, "splits": splits, "levels": {}}
    for level in LEVELS:
        key = f"{level:g}"
        found = {kind: [s[kind][key] for s in per_split] for kind in ("conformal", "gaussian")}
        summary["levels"][key] = {
            kind: {"coverage": float(np.mean([v["coverage"] for v in values])),
                   "coverage_se": float(np.std([v["coverage"] for v in values]) / math.sqrt(len(values))),
                   "width": float(np.mean([v["width"] for v in values]))}
            for kind, values in found.items()
        }  # fmt: skip
    summary["calibration_rows"] = int(np.mean([s["calibration_rows"] for s in per_split]))
    summary["test_rows"] = int(np.mean([s["test_rows"] for s in per_split]))
    return summary


def _regression_split(folder: Path, name: str, x: np.ndarray, y: np.ndarray, fit: np.ndarray, held: np.ndarray,
                      test: np.ndarray, seed: int, epochs: int | None) -> dict[str, Any]:  # fmt: skip
    from mcdrop.pipeline.export.exporter import ExportOptions, export
    from mcdrop.pipeline.training.config import TrainConfig
    from mcdrop.pipeline.training.loop import train

    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "fit.npz", x=x[fit], y=y[fit])
    np.savez(folder / "calibration.npz", x=x[held], y=y[held])
    config = TrainConfig(out=str(folder / "model"), dataset=f"npz:{folder / 'fit.npz'}", task="regression",
                         hidden=HIDDEN, dropout=DROPOUT, epochs=epochs or EPOCHS, seed=seed,
                         quiet=True).validate()  # fmt: skip
    train(config)
    options = CalibrationOptions(folder / "calibration.npz", seed=seed)
    version, manifest = export(ExportOptions(model_path=Path(config.out) / "model.keras",
                                             repository=folder / "repository", name=name, moments=False,
                                             calibration=options))  # fmt: skip
    assert manifest.calibration is not None
    record = manifest.calibration.outputs[0]
    assert isinstance(record, RegressionCalibration)
    predicted = predict_rows(folder / "repository" / name / str(version), manifest, {"x": x[test]}, seed + 1)
    assert predicted.monte_carlo is not None
    summary = predicted.monte_carlo.outputs[0].summary
    assert isinstance(summary, RegressionSummary)
    mean = summary.mean.astype(np.float64).reshape(-1)
    spread = summary.predictive_std.astype(np.float64).reshape(-1)
    residual = np.abs(y[test].astype(np.float64) - mean)
    found: dict[str, Any] = {"calibration_rows": record.rows, "test_rows": len(test), "conformal": {}, "gaussian": {}}
    for level in LEVELS:
        multiplier = record.conformal.multiplier(level)
        assert multiplier is not None
        for kind, half in (("conformal", multiplier[0] * spread), ("gaussian", normal_quantile(level) * spread)):
            found[kind][f"{level:g}"] = {
                "coverage": float(np.mean(residual <= half)),
                "width": float(np.mean(2 * half)),
            }
    return found


# Checks against the targets ------------------------------------------------------------


def _checks(results: dict[str, Any]) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    for model in results["classification"]:
        ratio = model["aurc_ratio"]
        checks.append({"what": f"{model['model']}: best MC AURC / deterministic AURC ({model['best_mc_score']})",
                       "value": ratio, "target": "< 1 (MC helps)", "met": ratio is not None and ratio < 1})  # fmt: skip
        if model["model"] != "digits-mlp":
            continue
        decision = next(t for t in model["targets"] if t["target"] == EXPORT_TARGET)
        if not decision["reached"]:
            checks.append({"what": f"digits-mlp {EXPORT_TARGET}: a threshold", "value": None, "target": "exists",
                           "met": False, "detail": decision["reason"]})  # fmt: skip
            continue
        low = decision["test_risk_interval"][0]
        checks += [
            {"what": f"digits-mlp {EXPORT_TARGET}: held-out risk 95 % lower limit", "value": low, "target": "<= 0.02",
             "met": low <= 0.02},
            {"what": f"digits-mlp {EXPORT_TARGET}: held-out coverage", "value": decision["test_coverage"],
             "target": ">= 0.80", "met": decision["test_coverage"] >= 0.80},
            {"what": f"digits-mlp {EXPORT_TARGET}: noise rows abstained", "value": decision["noise_abstained"],
             "target": ">= 0.95", "met": decision["noise_abstained"] >= 0.95},
        ]  # fmt: skip
    for dataset in results["regression"]:
        coverage = dataset["levels"]["0.95"]["conformal"]["coverage"]
        checks.append({"what": f"{dataset['dataset']}: conformal 95 % held-out coverage (mean of "
                               f"{dataset['splits']} splits)", "value": coverage, "target": "in [0.93, 0.97]",
                       "met": 0.93 <= coverage <= 0.97})  # fmt: skip
    return checks
