"""Observation noise of a regression model: the aleatoric part of its predictive distribution.

MC dropout's predictive variance for y is ``1/tau + Var_t[y_t]`` (Gal & Ghahramani 2016, eq. 7):
the spread of the samples says how unsure the *mean* is; ``1/tau`` is the noise of y around it.
The estimate, per output, on held-out rows the model was not fitted on:

    1/tau = mean (y - mean_t y_t)^2  -  mean Var_t[y_t]

i.e. the part of the squared error the samples' spread does not already explain, so that the
predictive variance matches the held-out squared error on average. When the spread explains
all of it (an over-dispersed model), the noise is floored at ``FLOOR x Var[y]``: tau stays finite
and the floor is negligible beside any real noise, so the intervals are then purely epistemic.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mcdrop.serving.errors import InvalidArgument

FLOOR = 1e-6
"""Smallest noise variance, relative to the targets' own variance."""


def estimate_precision(samples: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """tau per output from MC samples ``[T, N, outputs]`` and targets ``[N, outputs]`` (original units)."""
    samples = np.asarray(samples, np.float64)
    targets = np.asarray(targets, np.float64).reshape(samples.shape[1:])
    mean = samples.mean(axis=0)
    squared_error = np.mean((targets - mean) ** 2, axis=0)
    epistemic = samples.var(axis=0).mean(axis=0)
    return precision_from_moments(squared_error, epistemic, targets.var(axis=0))


def precision_from_moments(
    squared_error: np.ndarray | float, epistemic_variance: np.ndarray | float, target_variance: np.ndarray | float
) -> np.ndarray:
    """tau = 1 / max(mean squared error of the MC mean - mean MC variance, FLOOR x Var[y])."""
    floor = FLOOR * np.maximum(target_variance, np.finfo(np.float32).tiny)
    return np.asarray(1.0 / np.maximum(np.asarray(squared_error) - epistemic_variance, floor))


def noise_record(precision: list[float] | np.ndarray, *, method: str) -> dict[str, Any]:
    """The manifest's ``output.observation_noise``: precision tau and variance 1/tau, per output."""
    values = [float(p) for p in np.ravel(precision)]
    if not values or any(not np.isfinite(p) or p <= 0 for p in values):
        raise InvalidArgument(f"Noise precision must be finite and > 0, one per output. Received: {values}")
    return {"precision": values, "variance": [1.0 / p for p in values], "method": method}
