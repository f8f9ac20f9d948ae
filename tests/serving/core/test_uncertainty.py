"""The uncertainty measures, on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcdrop.serving.core import uncertainty


def random_probabilities(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    logits = rng.normal(scale=3.0, size=shape)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_identical_samples_have_zero_mutual_information() -> None:
    p = random_probabilities(np.random.default_rng(0), (1, 5, 7))
    summary = uncertainty.classification(np.repeat(p, 30, axis=0))
    np.testing.assert_allclose(summary.mutual_information, 0.0, atol=1e-12)
    np.testing.assert_allclose(summary.std, 0.0, atol=1e-7)
    np.testing.assert_array_equal(summary.variation_ratio, 0.0)


def test_uniform_prediction_has_entropy_log_c() -> None:
    for classes in (2, 3, 10):
        summary = uncertainty.classification(np.full((4, 2, classes), 1.0 / classes))
        np.testing.assert_allclose(summary.predictive_entropy, math.log(classes), rtol=1e-12)


def test_entropy_decomposes_and_mutual_information_is_non_negative() -> None:
    rng = np.random.default_rng(1)
    for _ in range(20):
        samples = random_probabilities(rng, (int(rng.integers(1, 50)), 6, int(rng.integers(2, 12))))
        s = uncertainty.classification(samples)
        np.testing.assert_allclose(s.predictive_entropy, s.expected_entropy + s.mutual_information, atol=1e-10)
        assert (s.mutual_information >= 0).all()


def test_disagreeing_confident_samples_are_epistemic() -> None:
    one_hot = np.eye(2)[[0, 1, 0, 1]][:, np.newaxis, :]  # four confident samples, split 2:2
    s = uncertainty.classification(one_hot)
    assert s.expected_entropy[0] == pytest.approx(0.0)
    assert s.mutual_information[0] == pytest.approx(math.log(2))
    assert s.variation_ratio[0] == pytest.approx(0.5)


def test_variation_ratio_bounds() -> None:
    rng = np.random.default_rng(2)
    for classes in (2, 5, 10):
        samples = random_probabilities(rng, (200, 50, classes))
        vr = uncertainty.classification(samples).variation_ratio
        assert (vr >= 0).all() and (vr <= 1 - 1 / classes + 1e-12).all()


def test_regression_interval_and_standard_error() -> None:
    samples = np.random.default_rng(3).normal(5.0, 2.0, size=(20000, 3, 1)).astype(np.float32)
    r = uncertainty.regression(samples, 0.9)
    np.testing.assert_allclose(r.mean, 5.0, atol=0.05)
    np.testing.assert_allclose(r.std, 2.0, atol=0.05)
    np.testing.assert_allclose(r.lower, 5.0 - 1.6449 * 2.0, atol=0.1)
    np.testing.assert_allclose(r.upper, 5.0 + 1.6449 * 2.0, atol=0.1)
    assert uncertainty.max_standard_error(samples) == pytest.approx(2.0 / math.sqrt(20000), rel=0.05)
    assert uncertainty.max_standard_error(samples[:1]) == math.inf
    with pytest.raises(ValueError, match="Interval level"):
        uncertainty.regression(samples, 1.5)


def test_nll_brier_and_ece_on_known_cases() -> None:
    labels = np.array([0, 1, 1, 0])
    perfect = np.eye(2)[labels]
    assert uncertainty.nll(perfect, labels) == pytest.approx(0.0, abs=1e-9)
    assert uncertainty.brier(perfect, labels) == pytest.approx(0.0)
    assert uncertainty.reliability(perfect, labels).ece == pytest.approx(0.0)
    half = np.full((4, 2), 0.5)
    assert uncertainty.nll(half, labels) == pytest.approx(math.log(2))
    assert uncertainty.brier(half, labels) == pytest.approx(0.5)
    # Confidence 0.9 but only half right: ECE is the gap, 0.4.
    overconfident = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.1, 0.9]])
    result = uncertainty.reliability(overconfident, np.array([0, 1, 1, 0]), bins=15)
    assert result.ece == pytest.approx(0.4)
    assert result.counts.sum() == 4


def test_auroc_matches_pairwise_counting() -> None:
    rng = np.random.default_rng(4)
    inside, outside = rng.normal(size=60).round(1), rng.normal(0.7, size=40).round(1)  # rounding makes ties
    pairs = [(o > i) + 0.5 * (o == i) for i in inside for o in outside]
    assert uncertainty.auroc(inside, outside) == pytest.approx(np.mean(pairs))
    assert uncertainty.auroc(np.zeros(5), np.ones(5)) == 1.0
    assert uncertainty.auroc(np.ones(5), np.ones(5)) == 0.5


def test_gaussian_mixture_log_likelihood_matches_direct_formula() -> None:
    rng = np.random.default_rng(5)
    samples, y, tau = rng.normal(size=(50, 7)), rng.normal(size=7), 2.5
    direct = np.log(np.mean(np.sqrt(tau / (2 * np.pi)) * np.exp(-0.5 * tau * (y - samples) ** 2), axis=0))
    np.testing.assert_allclose(uncertainty.gaussian_mixture_log_likelihood(samples, y, tau), direct, rtol=1e-10)
    far = uncertainty.gaussian_mixture_log_likelihood(np.zeros((3, 1)), np.array([100.0]), 1.0)
    assert np.isfinite(far).all()  # logsumexp: no underflow to -inf


def test_predictive_interval_adds_the_observation_noise_to_the_samples_spread() -> None:
    rng = np.random.default_rng(0)
    samples = rng.normal(3.0, 0.5, size=(4000, 2, 1)).astype(np.float32)
    r = uncertainty.regression(samples, 0.9, noise_variance=np.array([4.0]))
    np.testing.assert_allclose(r.predictive_std, np.sqrt(samples.astype(np.float64).var(axis=0) + 4.0), rtol=1e-6)
    np.testing.assert_allclose(r.upper - r.mean, 1.6448536 * r.predictive_std, rtol=1e-5)
    np.testing.assert_allclose(r.mean - r.lower, 1.6448536 * r.predictive_std, rtol=1e-5)
    np.testing.assert_allclose(r.mean_lower, np.quantile(samples, 0.05, axis=0), rtol=1e-6)
    np.testing.assert_allclose(r.mean_upper, np.quantile(samples, 0.95, axis=0), rtol=1e-6)
    assert (r.predictive_std > 2 * r.std).all()  # noise sd 2 vs sample sd 0.5


def test_without_a_noise_estimate_the_predictive_spread_is_the_samples_spread() -> None:
    samples = np.random.default_rng(1).normal(size=(500, 3, 2)).astype(np.float32)
    r = uncertainty.regression(samples, 0.95)
    np.testing.assert_array_equal(r.predictive_std, r.std)
    np.testing.assert_allclose(r.upper, r.mean + 1.959964 * r.std, rtol=1e-5)


def test_predictive_interval_covers_draws_from_the_mc_predictive_distribution() -> None:
    """y drawn from the mixture of N(y_t, 1/tau): the predictive interval covers it at its level,
    the interval of the mean (the samples' own quantiles) far less often."""
    rng = np.random.default_rng(2)
    rows, samples_t, tau = 20_000, 200, 2.0
    centre = rng.normal(size=rows)
    samples = (centre + 0.3 * rng.normal(size=(samples_t, rows))).astype(np.float32)
    y = samples[rng.integers(0, samples_t, rows), np.arange(rows)] + rng.normal(0, tau**-0.5, rows)
    for level in (0.5, 0.9, 0.95):
        r = uncertainty.regression(samples, level, noise_variance=1 / tau)
        predictive, epistemic = uncertainty.coverage(r, y)
        tolerance = 4 * np.sqrt(level * (1 - level) / rows) + 0.01  # moment-matched normal vs the mixture
        assert abs(predictive - level) < tolerance, (level, predictive)
        assert epistemic < level - 0.2, (level, epistemic)


@pytest.mark.parametrize("noise", [-1.0, float("nan"), float("inf")])
def test_invalid_noise_variance_is_refused(noise: float) -> None:
    with pytest.raises(ValueError, match="Noise variance must be finite and >= 0"):
        uncertainty.regression(np.zeros((4, 2, 1), np.float32), 0.9, noise_variance=noise)
