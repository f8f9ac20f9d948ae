"""The training stage's observation-noise estimate (tau) and its record."""

from __future__ import annotations

import numpy as np
import pytest

from mcdrop.pipeline.training.observation_noise import FLOOR, estimate_precision, noise_record
from mcdrop.serving.errors import InvalidArgument


def test_tau_recovers_the_noise_the_samples_spread_does_not_explain() -> None:
    rng = np.random.default_rng(0)
    rows = 20_000
    truth = rng.normal(size=(rows, 2)) * [10.0, 1.0]
    noise_sd = np.array([3.0, 0.2])
    # The model's MC mean is right on average, off by its epistemic error; the samples spread by 0.5.
    epistemic_sd = np.array([0.5, 0.05])
    offset = rng.normal(size=(rows, 2)) * epistemic_sd
    samples = truth + offset + rng.normal(size=(100, rows, 2)) * epistemic_sd
    y = truth + rng.normal(size=(rows, 2)) * noise_sd
    tau = estimate_precision(samples, y)
    np.testing.assert_allclose(1 / tau, noise_sd**2, rtol=0.05)


def test_an_over_dispersed_model_gets_the_floor_not_a_negative_variance() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(size=(500, 1))
    samples = y + rng.normal(size=(200, 500, 1)) * 2.0  # spread far wider than the error of the mean
    tau = estimate_precision(samples, y)
    assert 1 / tau[0] == pytest.approx(FLOOR * y.var(), rel=1e-9)


@pytest.mark.parametrize("values", [[0.0], [-1.0], [float("inf")], []])
def test_noise_record_refuses_non_positive_precision(values: list[float]) -> None:
    with pytest.raises(InvalidArgument, match="Noise precision must be finite and > 0"):
        noise_record(values, method="test")


def test_noise_record_holds_precision_and_variance() -> None:
    record = noise_record([4.0, 0.5], method="given")
    assert record == {"precision": [4.0, 0.5], "variance": [0.25, 2.0], "method": "given"}
