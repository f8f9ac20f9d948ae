"""Split-conformal calibration of Monte-Carlo regression intervals, with the normalised residual as the score.

For n calibration rows with Monte-Carlo mean μ and predictive std σ, the score is s = |y − μ| / σ. With
q̂ the ⌈(n + 1)(1 − α)⌉-th smallest score, the interval μ ± q̂ σ covers a fresh row's y with probability
≥ 1 − α when rows are exchangeable (Papadopoulos et al. 2002; Lei et al. 2018), and at most
1 − α + 1/(n + 1) without ties. The server applies ``ConformalScores.multiplier``; the same numbers come out
of crepes' ``ConformalRegressor`` fitted on the residuals with ``sigmas`` (checked in the tests).
"""

from __future__ import annotations

import numpy as np

from mcdrop.serving.core.uncertainty import normal_quantile
from mcdrop.serving.models.calibration import ConformalScores

__all__ = ["MAX_TARGETS", "REPORTED_LEVELS", "conformal_scores", "gaussian_coverage", "normalised_residuals"]

MAX_TARGETS = 64
"""Outputs with more values per row share one pooled list of scores (dense outputs: per-pixel lists would make the
manifest as large as the calibration data)."""
REPORTED_LEVELS = (0.8, 0.9, 0.95)
_SMALLEST_STD = 1e-12


def normalised_residuals(targets: np.ndarray, mean: np.ndarray, predictive_std: np.ndarray) -> np.ndarray:
    """``[n, values]``: |y − μ| / σ per row and output value (σ floored at 1e-12, so a zero spread gives a large,
    finite score)."""
    rows = len(targets)
    observed = np.asarray(targets, np.float64).reshape(rows, -1)
    residual = np.abs(observed - np.asarray(mean, np.float64).reshape(rows, -1))
    spread = np.maximum(np.asarray(predictive_std, np.float64).reshape(rows, -1), _SMALLEST_STD)
    return np.asarray(residual / spread)


def conformal_scores(scores: np.ndarray) -> ConformalScores:
    """The manifest record of ``[n, values]`` scores: sorted per value, or pooled beyond ``MAX_TARGETS`` values.

    Each score is stored as the float32 at or above it, so rounding can only widen an interval.
    """
    pooled = scores.shape[1] > MAX_TARGETS
    columns = [scores.reshape(-1)] if pooled else list(scores.T)
    return ConformalScores(tuple(tuple(_round_up(np.sort(column))) for column in columns), pooled)


def _round_up(values: np.ndarray) -> list[float]:
    single = values.astype(np.float32)
    low = single.astype(np.float64) < values
    single[low] = np.nextafter(single[low], np.float32(np.inf))
    return [float(v) for v in single]


def gaussian_coverage(targets: np.ndarray, mean: np.ndarray, predictive_std: np.ndarray) -> dict[str, float]:
    """Level → share of target values inside the uncalibrated μ ± z σ, for ``REPORTED_LEVELS``."""
    scores = normalised_residuals(targets, mean, predictive_std)
    return {f"{level:g}": round(float(np.mean(scores <= normal_quantile(level))), 6) for level in REPORTED_LEVELS}
