"""The stacked numpy trainer behind the UCI protocol: exact gradients, unbiased masks, independent streams."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcdrop.pipeline.evaluation import stacked_mlp


def _loss(params: list[np.ndarray], x: np.ndarray, y: np.ndarray, decay: np.ndarray) -> np.ndarray:
    w1, b1, w2, b2 = params
    h = np.maximum(np.matmul(x, w1) + b1[:, None, :], 0)
    out = np.matmul(h, w2[:, :, None])[..., 0] + b2[:, None]
    return np.mean((out - y) ** 2, axis=1) + decay * ((w1**2).sum(axis=(1, 2)) + (w2**2).sum(axis=1))


def test_gradients_match_finite_differences() -> None:
    """With rate 0 every mask keeps every unit, so the hand-written backward pass must equal the loss's slope."""
    rng = np.random.default_rng(0)
    k, b, d, h = 3, 17, 4, 6
    x, y = rng.normal(size=(k, b, d)), rng.normal(size=(k, b))
    params = [rng.normal(size=(k, d, h)), rng.normal(size=(k, h)) * 0.1, rng.normal(size=(k, h)), rng.normal(size=k)]
    decay = np.array([0.0, 0.01, 0.1])
    masks = stacked_mlp._Masks([np.random.default_rng(1)], np.zeros(k, np.float32))
    grads = stacked_mlp._gradients(params, x, y, masks, 2 * decay)
    eps = 1e-6
    for p, g in zip(params, grads, strict=True):
        for index in [tuple(rng.integers(0, s) for s in p.shape) for _ in range(8)]:
            original = p[index]
            p[index] = original + eps
            up = _loss(params, x, y, decay)[index[0]]
            p[index] = original - eps
            down = _loss(params, x, y, decay)[index[0]]
            p[index] = original
            assert g[index] == pytest.approx((up - down) / (2 * eps), rel=1e-5, abs=1e-8)


def test_masks_drop_at_the_rate_and_scale_kept_units_exactly() -> None:
    rates = np.array([0.005, 0.1, 0.5], np.float32)
    masks = stacked_mlp._Masks([np.random.default_rng(2)], rates)
    drawn = masks.draw((400, 500))  # 200,000 units per network
    for m, rate in zip(drawn, rates, strict=True):
        dropped = float(np.mean(m == 0))
        assert abs(dropped - rate) < 5 * math.sqrt(rate * (1 - rate) / m.size) + 1e-5
        kept = np.unique(m[m != 0])
        assert kept.size == 1 and kept[0] == pytest.approx(1 / (1 - rate), rel=1e-4)
        assert float(m.mean()) == pytest.approx(1.0, abs=5 * math.sqrt(rate / (1 - rate) / m.size))


def _data(networks: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(networks, 300, 5)).astype(np.float32)
    y = (np.tanh(x[..., 0]) + 0.5 * x[..., 1] + 0.05 * rng.normal(size=(networks, 300))).astype(np.float32)
    return x, (y - y.mean(axis=1, keepdims=True)) / y.std(axis=1, keepdims=True)


def test_a_group_trains_the_same_alone_beside_others_and_on_more_threads() -> None:
    x, y = _data(4, 3)
    rates, decays = np.array([0.05, 0.1, 0.05, 0.1], np.float32), np.full(4, 1e-5, np.float32)
    seeds = [np.random.SeedSequence([7, k]) for k in range(2)]
    together = stacked_mlp.fit(x, y, rates, decays, hidden=8, epochs=3, seeds=seeds, jobs=1)
    threads = stacked_mlp.fit(x, y, rates, decays, hidden=8, epochs=3, seeds=seeds, jobs=2)
    alone = stacked_mlp.fit(x[2:], y[2:], rates[2:], decays[2:], hidden=8, epochs=3, seeds=seeds[1:], jobs=1)
    for a, b, c in zip(together.slice(2) + together.slice(3), threads.slice(2) + threads.slice(3),
                       alone.slice(0) + alone.slice(1), strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-6, atol=1e-7)
    other = stacked_mlp.fit(x, y, rates, decays, hidden=8, epochs=3, seeds=seeds[::-1], jobs=1)
    assert not np.array_equal(other.w1[0], together.w1[0])  # the stream, not the slot, decides


def test_training_fits_a_smooth_function_and_the_mc_log_likelihood_is_the_papers() -> None:
    x, y = _data(2, 4)
    rates, decays = np.array([0.0, 0.05], np.float32), np.full(2, 1e-6, np.float32)
    fitted = stacked_mlp.fit(x, y, rates, decays, hidden=32, epochs=800, seeds=[np.random.SeedSequence(5)] * 2)
    w1, b1, w2, b2 = fitted.slice(0)
    predicted = np.maximum(x[0] @ w1 + b1, 0) @ w2[:, 0] + b2[0]
    assert float(np.sqrt(np.mean((predicted - y[0]) ** 2))) < 0.1  # a linear fit leaves 0.25
    # Rate 0: every sample is the same network, so the mixture is one Gaussian with precision tau.
    tau, y_mean, y_std = 4.0, 10.0, 3.0
    targets = y[:, :50] * y_std + y_mean
    scores = stacked_mlp.mc_log_likelihood(
        fitted, x[:, :50], targets, rates, np.array([tau, tau]), (np.full(2, y_mean), np.full(2, y_std)),
        samples=64, seeds=[np.random.SeedSequence(6)] * 2,
    )  # fmt: skip
    residual = targets[0] - (predicted[:50] * y_std + y_mean)
    expected = np.mean(-0.5 * tau * residual**2 - 0.5 * math.log(2 * math.pi) + 0.5 * math.log(tau))
    ll = scores.log_likelihood
    assert ll[0] == pytest.approx(expected, rel=1e-4)
    assert ll[1] < ll[0] + 1.0 and np.isfinite(ll[1])
    # ... and the moments behind mcdrop's noise estimate: no spread at rate 0, the error of the one network.
    assert scores.epistemic_variance[0] == pytest.approx(0.0, abs=1e-6)
    assert scores.squared_error[0] == pytest.approx(float(np.mean(residual**2)), rel=1e-4)
    assert scores.epistemic_variance[1] > 0
