"""Uncertainty measures from Monte-Carlo samples. numpy only; used by the server and the evaluation.

Classification, for samples ``p[t, b, c]`` (T samples, B rows, C classes); all entropies in nats:

* predictive entropy  H[E_t p]            total uncertainty
* expected entropy    E_t H[p_t]          aleatoric part (the data's own noise)
* mutual information  H[E_t p] - E_t H[p_t] ≥ 0   epistemic part (BALD): what more data would resolve
* variation ratio     1 - (votes for the modal class) / T, in [0, 1 - 1/C]

Regression, for samples ``y[t, b, ...]`` and an observation-noise variance ``1/tau`` per output:

* mean                E_t y                    the prediction
* std                 sd_t y                   epistemic: the spread of the MC samples (uncertainty of the mean)
* predictive_std      sqrt(std^2 + 1/tau)      the predictive distribution's spread (epistemic + aleatoric)
* lower, upper        mean -/+ z predictive_std   central predictive interval for y: the moment-matched
                      normal of the MC predictive distribution (the mixture of N(y_t, 1/tau) over t has
                      exactly this mean and variance; Gal & Ghahramani 2016, eq. 7-8)
* mean_lower, mean_upper   empirical quantiles of the samples: the interval of the mean (epistemic only)

Without a noise estimate (a model exported as "epistemic only") predictive_std = std.
"""

from __future__ import annotations

import dataclasses
import statistics

import numpy as np

__all__ = [
    "ClassificationSummary",
    "RegressionSummary",
    "Reliability",
    "auroc",
    "brier",
    "classification",
    "coverage",
    "gaussian_mixture_log_likelihood",
    "max_standard_error",
    "max_standard_error_from_std",
    "nll",
    "normal_quantile",
    "regression",
    "reliability",
]


@dataclasses.dataclass(frozen=True)
class ClassificationSummary:
    mean: np.ndarray
    """[B, C] mean probabilities."""
    std: np.ndarray
    """[B, C] standard deviation of the probabilities over samples."""
    predicted_class: np.ndarray
    """[B] argmax of the mean."""
    predictive_entropy: np.ndarray
    expected_entropy: np.ndarray
    mutual_information: np.ndarray
    variation_ratio: np.ndarray


@dataclasses.dataclass(frozen=True)
class RegressionSummary:
    mean: np.ndarray
    std: np.ndarray
    """Epistemic: the spread of the MC samples."""
    lower: np.ndarray
    """Central predictive interval for y at ``level``: ``mean -/+ z * predictive_std``."""
    upper: np.ndarray
    level: float
    predictive_std: np.ndarray
    """sqrt(std^2 + observation-noise variance); equals ``std`` when the noise is unknown."""
    mean_lower: np.ndarray
    """Central ``level`` interval of the samples (empirical quantiles): the uncertainty of the mean."""
    mean_upper: np.ndarray


# Clamping p at a tiny positive value before the log makes p * log(p) exactly 0 at p = 0 (0 x finite)
# without a branch: one pass instead of two masked ones, which matters on the serving hot path.
_TINY = np.finfo(np.float64).tiny


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats along ``axis``, with 0 log 0 = 0."""
    p = np.asarray(p, dtype=np.float64)
    return np.asarray(-np.add.reduce(p * np.log(np.maximum(p, _TINY)), axis=axis))


def classification(samples: np.ndarray) -> ClassificationSummary:
    """Summarise ``[T, B, C]`` class-probability samples.

    Written for the serving hot path (a few dozen microseconds at T=100): one pass per
    quantity, population moments from sums, votes counted without a loop over classes.
    """
    samples = _check_samples(samples, min_rank=3)
    p = samples.astype(np.float64, copy=False)
    count, classes = p.shape[0], p.shape[-1]
    mean = np.add.reduce(p, axis=0) / count
    variance = np.maximum(np.add.reduce(p * p, axis=0) / count - mean * mean, 0.0)
    predictive = entropy(mean)
    expected = -np.add.reduce(p * np.log(np.maximum(p, _TINY)), axis=(0, -1)) / count
    # Mathematically >= 0 (Jensen); float rounding can leave a -1e-16 that would confuse users.
    mutual_information = np.maximum(predictive - expected, 0.0)
    votes = p.argmax(axis=-1)  # [T, B]
    counts = np.add.reduce(votes[..., np.newaxis] == np.arange(classes), axis=0)  # [B, C]
    return ClassificationSummary(
        mean=mean.astype(np.float32),
        std=np.sqrt(variance).astype(np.float32),
        predicted_class=mean.argmax(axis=-1),
        predictive_entropy=predictive,
        expected_entropy=expected,
        mutual_information=mutual_information,
        variation_ratio=1.0 - counts.max(axis=-1) / count,
    )


def regression(
    samples: np.ndarray,
    level: float = 0.95,
    noise_variance: np.ndarray | float | None = None,
    multiplier: np.ndarray | None = None,
) -> RegressionSummary:
    """Summarise ``[T, B, ...]`` regression samples (see the module docstring for each field).

    ``noise_variance`` is the observation noise 1/tau, a scalar or one value per output
    (broadcast over the trailing axes); ``None`` means unknown (epistemic only). ``multiplier``: the
    interval's half-width in predictive stds (a conformal q̂, broadcast like the noise) instead of the
    normal quantile of ``level``.
    """
    samples = _check_samples(samples, min_rank=2)
    if not 0 < level < 1:
        raise ValueError(f"Interval level must be in (0, 1). Received: {level}")
    mean = samples.mean(axis=0, dtype=np.float64)
    variance = samples.var(axis=0, dtype=np.float64)
    noise = np.zeros(()) if noise_variance is None else np.asarray(noise_variance, np.float64)
    if np.any(~np.isfinite(noise)) or np.any(noise < 0):
        raise ValueError(f"Noise variance must be finite and >= 0. Received: {noise_variance}")
    predictive_std = np.sqrt(variance + noise)
    half_width = (normal_quantile(level) if multiplier is None else multiplier) * predictive_std
    mean_lower, mean_upper = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return RegressionSummary(
        mean=mean.astype(np.float32),
        std=np.sqrt(variance).astype(np.float32),
        lower=(mean - half_width).astype(np.float32),
        upper=(mean + half_width).astype(np.float32),
        level=level,
        predictive_std=predictive_std.astype(np.float32),
        mean_lower=mean_lower.astype(np.float32),
        mean_upper=mean_upper.astype(np.float32),
    )


def normal_quantile(level: float) -> float:
    """z such that a normal's central interval mean -/+ z sd holds ``level`` of its mass."""
    return statistics.NormalDist().inv_cdf(0.5 + level / 2)


def coverage(summary: RegressionSummary, targets: np.ndarray) -> tuple[float, float]:
    """Fraction of ``targets`` inside the predictive interval, and inside the interval of the mean."""
    predictive = (targets >= summary.lower) & (targets <= summary.upper)
    epistemic = (targets >= summary.mean_lower) & (targets <= summary.mean_upper)
    return float(predictive.mean()), float(epistemic.mean())


def max_standard_error(samples: np.ndarray) -> float:
    """Largest standard error of the MC mean over all outputs; ``inf`` with fewer than 2 samples."""
    count = samples.shape[0]
    if count < 2:
        return float("inf")
    return float(np.sqrt(samples.var(axis=0, ddof=1, dtype=np.float64).max() / count))


def max_standard_error_from_std(std: np.ndarray, count: int) -> float:
    """The same from population standard deviations already computed: sqrt(max var / (T - 1))."""
    if count < 2:
        return float("inf")
    largest = float(np.max(std)) if std.size else 0.0
    return float(np.sqrt(largest * largest / (count - 1)))


def _check_samples(samples: np.ndarray, *, min_rank: int) -> np.ndarray:
    samples = np.asarray(samples)
    if samples.ndim < min_rank or samples.shape[0] < 1:
        raise ValueError(f"Expected samples shaped [T, B, ...] with rank >= {min_rank}. Received: {samples.shape}")
    return samples


# Calibration and evaluation -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Reliability:
    """Per-bin statistics of a reliability diagram (equal-width confidence bins)."""

    edges: np.ndarray
    counts: np.ndarray
    confidence: np.ndarray
    """Mean top-class probability per bin (NaN where empty)."""
    accuracy: np.ndarray
    """Fraction correct per bin (NaN where empty)."""
    ece: float


def nll(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true class, in nats."""
    p = np.asarray(probabilities, np.float64)[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.maximum(p, 1e-12))))


def brier(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean over rows of the squared distance between the probabilities and the one-hot label."""
    p = np.asarray(probabilities, np.float64)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(labels)), labels] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=-1)))


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> Reliability:
    """Reliability diagram statistics and the expected calibration error (ECE) over ``bins`` bins."""
    p = np.asarray(probabilities, np.float64)
    confidence, correct = p.max(axis=-1), (p.argmax(axis=-1) == labels).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    counts = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(index, weights=confidence, minlength=bins) / counts
        accuracy = np.bincount(index, weights=correct, minlength=bins) / counts
    gaps = np.where(counts > 0, np.abs(accuracy - mean_confidence), 0.0)
    ece = float(np.sum(counts / len(labels) * gaps))
    return Reliability(edges, counts, mean_confidence, accuracy, ece)


def auroc(in_distribution: np.ndarray, out_of_distribution: np.ndarray) -> float:
    """Area under the ROC curve for telling OOD (positive, higher score) from in-distribution scores.

    Equals the probability that a random OOD score exceeds a random in-distribution one (ties count 1/2).
    """
    scores = np.concatenate([in_distribution, out_of_distribution]).astype(np.float64)
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = sums[inverse] / counts[inverse]  # average ranks for ties
    n_in, n_out = len(in_distribution), len(out_of_distribution)
    return float((ranks[n_in:].sum() - n_out * (n_out + 1) / 2) / (n_in * n_out))


def gaussian_mixture_log_likelihood(samples: np.ndarray, targets: np.ndarray, precision: float) -> np.ndarray:
    """Per-row log-likelihood of ``targets`` under the mixture of N(samples[t], 1/precision) over t.

    ``samples`` is ``[T, N]``; the result is ``[N]``:
    logsumexp_t(-precision/2 (y - yhat_t)^2) - log T - log(2 pi)/2 + log(precision)/2.
    """
    exponent = -0.5 * precision * (targets[np.newaxis] - samples.astype(np.float64)) ** 2
    peak = exponent.max(axis=0)
    log_sum = peak + np.log(np.exp(exponent - peak).sum(axis=0))
    return np.asarray(log_sum - np.log(samples.shape[0]) - 0.5 * np.log(2 * np.pi) + 0.5 * np.log(precision))
