"""Answers from the one-pass moments graph (``moments.tflite``): the same fields as Monte Carlo, from a mean and a
variance per unit instead of T samples.

* Regression: the graph's mean and variance are the answer's ``mean`` and ``std``² (Gaussian): ``predictive_std``
  adds the observation noise, ``lower``/``upper`` are mean -/+ z predictive_std, ``mean_lower``/``mean_upper`` the
  Gaussian quantiles of the mean (mean -/+ z std).
* Classification: the graph returns the moments of the **logits** (their covariance across classes too, where the
  model makes one); S logit vectors are drawn from N(mean, covariance) (else N(mean, diag(variance))) with the
  request's seed (only the last layer's width: cheap), each goes through the
  softmax, and the S probability vectors are summarised exactly as T Monte-Carlo samples are (mean, std, entropies,
  mutual information, variation ratio). The same seed gives the same answer on every transport.

Every answer is an approximation of what Monte Carlo would give (independent units, Gaussian pre-activations): the
export measures how close it is on the model's own verification rows (``manifest.moments.check``).
"""

from __future__ import annotations

import numpy as np

from mcdrop.serving.core import uncertainty

__all__ = ["classification", "logit_samples", "mean_field_probabilities", "regression", "softmax"]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the maximum (no overflow)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return np.asarray(exp / exp.sum(axis=-1, keepdims=True))


def logit_samples(
    mean: np.ndarray,
    variance: np.ndarray,
    samples: int,
    seed: int,
    first_row: int = 0,
    covariance: np.ndarray | None = None,
) -> np.ndarray:
    """``[S, B, ...]`` draws from N(mean, diag(variance)), or N(mean, covariance) with a ``[B, C, C]`` covariance,
    float32. Row b's draws come from its own stream, keyed by ``seed`` and its position ``first_row + b``: any split
    of the rows into requests gives the same numbers."""
    rows = []
    for row in range(mean.shape[0]):
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, first_row + row])))
        rows.append(rng.standard_normal((samples, *mean.shape[1:]), dtype=np.float32))
    noise = np.stack(rows, axis=1) if rows else np.zeros((samples, *mean.shape), np.float32)
    if covariance is None or mean.ndim != 2:
        return np.asarray(mean + np.sqrt(np.maximum(variance, 0.0)).astype(np.float32) * noise, np.float32)
    factor = cholesky_factors(np.asarray(covariance, np.float64))
    return np.asarray(mean + np.einsum("sbc,bdc->sbd", noise, factor.astype(np.float32)), np.float32)


def cholesky_factors(covariance: np.ndarray) -> np.ndarray:
    """L with L L^T = covariance per row; a (numerically) singular row gets a jitter of 1e-6 of its mean variance
    (a rank-deficient covariance is normal: fewer inputs than classes, or a class no dropout reaches)."""
    size = covariance.shape[-1]
    scale = np.maximum(np.trace(covariance, axis1=-2, axis2=-1) / size, 1e-30)
    jitter = 1e-6
    while True:
        try:
            return np.asarray(np.linalg.cholesky(covariance + (jitter * scale)[:, None, None] * np.eye(size)))
        except np.linalg.LinAlgError:
            jitter *= 10.0
            if jitter > 1.0:
                raise


def classification(
    logit_mean: np.ndarray,
    logit_variance: np.ndarray,
    samples: int,
    seed: int,
    first_row: int = 0,
    covariance: np.ndarray | None = None,
) -> tuple[uncertainty.ClassificationSummary, np.ndarray]:
    """The Monte-Carlo fields from ``samples`` logit draws; also returns their ``[S, B, C]`` probabilities."""
    draws = logit_samples(logit_mean, logit_variance, samples, seed, first_row, covariance)
    probabilities = softmax(draws)
    return uncertainty.classification(probabilities), probabilities


def mean_field_probabilities(logit_mean: np.ndarray, logit_variance: np.ndarray) -> np.ndarray:
    """Closed-form alternative to sampling: softmax(mean / sqrt(1 + pi/8 variance)) (the probit approximation
    extended to the softmax; Lu, Ie & Sha, 2020). Mean probabilities only: no mutual information."""
    return softmax(logit_mean / np.sqrt(1.0 + np.pi / 8.0 * np.maximum(logit_variance, 0.0)))


def regression(
    mean: np.ndarray, variance: np.ndarray, level: float, noise_variance: np.ndarray | float | None
) -> uncertainty.RegressionSummary:
    """The regression fields of a Gaussian with per-unit ``mean`` and ``variance``."""
    if not 0 < level < 1:
        raise ValueError(f"Interval level must be in (0, 1). Received: {level}")
    mean64 = np.asarray(mean, np.float64)
    variance64 = np.maximum(np.asarray(variance, np.float64), 0.0)
    noise = np.zeros(()) if noise_variance is None else np.asarray(noise_variance, np.float64)
    std = np.sqrt(variance64)
    predictive_std = np.sqrt(variance64 + noise)
    z = uncertainty.normal_quantile(level)
    return uncertainty.RegressionSummary(
        mean=mean64.astype(np.float32),
        std=std.astype(np.float32),
        lower=(mean64 - z * predictive_std).astype(np.float32),
        upper=(mean64 + z * predictive_std).astype(np.float32),
        level=level,
        predictive_std=predictive_std.astype(np.float32),
        mean_lower=(mean64 - z * std).astype(np.float32),
        mean_upper=(mean64 + z * std).astype(np.float32),
    )
