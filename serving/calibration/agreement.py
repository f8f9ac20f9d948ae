"""How far a quantised variant's served answers are from float32's: predicted through the prediction core, on the
export's real rows and on uniform noise in their range, with the same seed (so the same masks) for every variant.

Agreement of the mean is not agreement of the uncertainty, so both are measured:

* classification, per output: top-1 agreement of the MC mean (and of the deterministic pass), the largest and mean
  absolute probability difference, the Spearman correlation of mutual information with float32's, the agreement
  of the abstain decisions where the version is calibrated, and for each variant the AUROC of mutual information
  separating the rows from noise (out-of-distribution detection); with labels, the accuracy of each;
* regression, per output: the RMSE between the variant's and float32's MC means, the Spearman correlation of the
  epistemic std, its out-of-distribution AUROC; with labels, the RMSE of each against them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.serving.calibration.calibrate import join_predictions
from mcdrop.serving.core import PredictionRequest, Sampler
from mcdrop.serving.core.requests import Mode, Prediction
from mcdrop.serving.core.uncertainty import ClassificationSummary, RegressionSummary
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.models.manifest import FLOAT32, Manifest
from mcdrop.serving.models.repository import ModelRepository

__all__ = ["MAX_GFLOP", "MAX_ROWS", "MIN_ROWS", "agreement", "auroc", "noise_like", "rows_for", "spearman"]

MAX_ROWS = 512
MIN_ROWS = 32
MAX_GFLOP = 3000.0
"""Compute the rows of one variant may take (Monte Carlo at the default T): bounds the export's time for a large
model sampled at every layer; at least ``MIN_ROWS`` rows are used whatever it costs."""
BATCH_ROWS = 64
SEED = 20261207


def rows_for(manifest: Manifest, available: int) -> int:
    """How many rows the agreement uses: all up to ``MAX_ROWS``, fewer where Monte Carlo would cost too much."""
    cost = manifest.cost
    per_row = cost.flops(1, manifest.default_samples) if cost is not None and manifest.stochastic else 0.0
    affordable = MAX_ROWS if per_row <= 0 else int(MAX_GFLOP * 1e9 // per_row)
    return max(1, min(available, max(MIN_ROWS, min(MAX_ROWS, affordable))))


def agreement(
    version_dir: Path,
    manifest: Manifest,
    inputs: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray] | None = None,
) -> dict[str, dict[str, Any]]:
    """Variant name → its agreement record (one per output under ``outputs``), for every variant of the version.

    ``inputs`` are the rows by input name (all of them are used: see ``rows_for``); ``labels`` by output name, as
    ``calibration.data`` reads them (class indices or targets), add accuracy or RMSE.
    """
    if not manifest.variants:
        return {}
    names = [FLOAT32, *manifest.variants]
    noise = noise_like(inputs, manifest)
    repository = ModelRepository(version_dir, pool_size=1, model_name=manifest.name or "model", max_versions=1)
    repository.scan()
    if repository.last_scan_error:
        raise InvalidArgument(f"Cannot load {version_dir} to compare its variants: {repository.last_scan_error}")
    try:
        sampler = Sampler(repository)
        mode = Mode.MONTE_CARLO if manifest.stochastic else Mode.DETERMINISTIC
        answers = {name: _predict(sampler, manifest, inputs, name, mode) for name in names}
        on_noise = {name: _predict(sampler, manifest, noise, name, mode) for name in names}
        deterministic = {name: _predict(sampler, manifest, inputs, name, Mode.DETERMINISTIC) for name in names}
    finally:
        repository.stop()
    rows = len(next(iter(inputs.values())))
    found = {}
    for name in names[1:]:
        outputs = {}
        for spec in manifest.outputs:
            reference, other = answers[FLOAT32].output(spec.name), answers[name].output(spec.name)
            record: dict[str, Any]
            if isinstance(reference.summary, ClassificationSummary):
                assert isinstance(other.summary, ClassificationSummary)
                record = _classification(reference.summary, other.summary)
                record["deterministic_top1_agreement"] = _rate(
                    deterministic[FLOAT32].output(spec.name).summary.mean.argmax(-1)
                    == deterministic[name].output(spec.name).summary.mean.argmax(-1)
                )
                if reference.decision is not None and other.decision is not None:
                    record["abstain_agreement"] = _rate(reference.decision.abstain == other.decision.abstain)
                    record["abstain_score"] = reference.decision.score
                score = "mutual_information" if manifest.stochastic else "predictive_entropy"
                record["ood_score"] = score
                record["ood_auroc"] = {
                    variant: _round(auroc(_field(answers[variant], spec.name, score),
                                          _field(on_noise[variant], spec.name, score)))
                    for variant in (FLOAT32, name)
                }  # fmt: skip
                if labels is not None and spec.name in labels:
                    truth = np.asarray(labels[spec.name]).reshape(-1)
                    record["accuracy"] = {
                        variant: _rate(_field(answers[variant], spec.name, "predicted_class").reshape(-1) == truth)
                        for variant in (FLOAT32, name)
                    }
            else:
                assert isinstance(reference.summary, RegressionSummary)
                assert isinstance(other.summary, RegressionSummary)
                record = _regression(reference.summary, other.summary)
                record["ood_score"] = "std"
                record["ood_auroc"] = {
                    variant: _round(auroc(_field(answers[variant], spec.name, "std"),
                                          _field(on_noise[variant], spec.name, "std")))
                    for variant in (FLOAT32, name)
                }  # fmt: skip
                if labels is not None and spec.name in labels:
                    truth = np.asarray(labels[spec.name], np.float64)
                    record["rmse"] = {
                        variant: _round(_rmse(answers[variant].output(spec.name).summary.mean, truth))
                        for variant in (FLOAT32, name)
                    }
            outputs[spec.name] = record
        found[name] = {"rows": rows, "noise_rows": rows, "mode": mode.value, "samples": answers[FLOAT32].samples,
                       "seed": SEED, "outputs": outputs}  # fmt: skip
    return found


def _predict(sampler: Sampler, manifest: Manifest, inputs: Mapping[str, np.ndarray], variant: str,
             mode: Mode) -> Prediction:  # fmt: skip
    """Every row's answer, in blocks, joined (``calibrate._join``'s way: summaries concatenated field by field)."""
    name = manifest.name or "model"
    count = len(next(iter(inputs.values())))
    parts = []
    for start in range(0, count, BATCH_ROWS):
        block = {key: value[start : start + BATCH_ROWS] for key, value in inputs.items()}
        request = PredictionRequest(model=name, inputs=block, mode=mode.value, seed=SEED, first_row=start,
                                    variant=variant)  # fmt: skip
        parts.append(sampler.run(sampler.plan(request)))
    return join_predictions(parts)


def _classification(reference: ClassificationSummary, other: ClassificationSummary) -> dict[str, Any]:
    diff = np.abs(other.mean.astype(np.float64) - reference.mean)
    return {
        "top1_agreement": _rate(reference.predicted_class == other.predicted_class),
        "max_abs_diff": _round(float(diff.max())),
        "mean_abs_diff": _round(float(diff.mean())),
        "mutual_information_spearman": _round(spearman(reference.mutual_information, other.mutual_information)),
        "predictive_entropy_spearman": _round(spearman(reference.predictive_entropy, other.predictive_entropy)),
    }


def _regression(reference: RegressionSummary, other: RegressionSummary) -> dict[str, Any]:
    return {
        "rmse_vs_float32": _round(_rmse(other.mean, np.asarray(reference.mean, np.float64))),
        "std_spearman": _round(spearman(reference.std, other.std)),
    }


def _field(prediction: Prediction, output: str, name: str) -> np.ndarray:
    return np.asarray(getattr(prediction.output(output).summary, name), np.float64)


def noise_like(inputs: Mapping[str, np.ndarray], manifest: Manifest, seed: int = SEED) -> dict[str, np.ndarray]:
    """As many rows of uniform noise in the rows' range (per input element; whole numbers in the id range of a
    token-id input): inputs the model has never seen, for the out-of-distribution AUROC."""
    rng = np.random.default_rng(seed)
    found = {}
    for spec in manifest.inputs:
        rows = np.asarray(inputs[spec.name], np.float32)
        if spec.integer_range is not None:
            low, high = spec.integer_range
            found[spec.name] = rng.integers(low, high + 1, size=rows.shape).astype(np.float32)
        else:
            found[spec.name] = rng.uniform(rows.min(axis=0), rows.max(axis=0), size=rows.shape).astype(np.float32)
    return found


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (ties get their average rank); NaN when either side is constant."""
    ranks_a, ranks_b = _ranks(np.asarray(a, np.float64).reshape(-1)), _ranks(np.asarray(b, np.float64).reshape(-1))
    if ranks_a.std() == 0 or ranks_b.std() == 0:
        return math.nan
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """The probability that a positive (out-of-distribution) row scores above a negative one, ties counting half
    (the Mann-Whitney U statistic over n_pos x n_neg)."""
    neg, pos = np.asarray(negatives, np.float64).reshape(-1), np.asarray(positives, np.float64).reshape(-1)
    ranks = _ranks(np.concatenate([neg, pos]))
    n_neg, n_pos = len(neg), len(pos)
    return float((ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks, ties averaged."""
    order = np.argsort(values, kind="mergesort")
    ordered = values[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(values)]
    average = (starts + ends + 1) / 2.0  # mean of the 1-based positions start+1 … end
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(np.asarray(a, np.float64) - b))))


def _rate(flags: np.ndarray) -> float | None:
    return _round(float(np.mean(flags)))


def _round(value: float) -> float | None:
    """Six decimals; None for NaN (JSON has no NaN: a constant score has no rank correlation)."""
    return None if math.isnan(value) else round(value, 6)
