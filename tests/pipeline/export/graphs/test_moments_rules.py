"""The moment propagation rules against Monte Carlo: each rule alone on Gaussian inputs, and stacked behind dropout.

Each rule is fed a Gaussian (random per-unit means and variances); the layer itself is run on N draws of it and the
sample mean and variance of its output are compared with the rule's. Rules that are exact for independent Gaussian
inputs (linear layers, ReLU, dropout, merging) must agree within 5 standard errors of the sample moments; the
approximate ones (quadrature, pairwise max pooling) within stated relative bounds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from mcdrop.pipeline.export.convert.functions import moments_function  # noqa: E402
from mcdrop.pipeline.export.graphs import forward as passes  # noqa: E402
from mcdrop.pipeline.export.graphs import moments  # noqa: E402
from mcdrop.pipeline.export.graphs.moments import Gaussian, Logits, NoMomentRule  # noqa: E402
from mcdrop.pipeline.export.model.sites import describe, draw_feeds  # noqa: E402

DRAWS = 40_000
Z = 5.0


def gaussian(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mean = rng.normal(0.0, 1.0, shape).astype(np.float32)
    std = rng.uniform(0.2, 1.5, shape).astype(np.float32)
    return mean, std


def sampled_moments(layer: Any, inputs: list[tuple[np.ndarray, np.ndarray]], seed: int) -> tuple[np.ndarray, ...]:
    """Mean, variance and the standard errors of both, of ``layer`` applied to DRAWS draws of each input."""
    rng = np.random.default_rng(seed + 1)
    draws = [m + s * rng.standard_normal((DRAWS, *m.shape[1:]), dtype=np.float32) for m, s in inputs]
    args = [tf.constant(d) for d in draws]
    y = np.asarray(layer(args if len(args) > 1 else args[0], training=False), np.float64)
    mean = y.mean(axis=0)
    centred = y - mean
    variance = np.mean(centred**2, axis=0)
    return mean, variance, y.std(axis=0) / np.sqrt(DRAWS), np.std(centred**2, axis=0) / np.sqrt(DRAWS)


def rule_moments(layer: Any, inputs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    found = moments.propagate(layer, *[Gaussian(tf.constant(m), tf.constant(s**2)) for m, s in inputs])
    assert isinstance(found, Gaussian)
    return np.asarray(found.mean, np.float64)[0], np.asarray(found.var, np.float64)[0]


def built(layer: Any, *shapes: tuple[int, ...]) -> Any:
    layer.build(shapes[0] if len(shapes) == 1 else list(shapes))
    rng = np.random.default_rng(7)
    weights = [rng.normal(0.0, 0.4, w.shape).astype(np.float32) for w in layer.get_weights()]
    if isinstance(layer, keras.layers.BatchNormalization):  # gamma, beta, moving mean, moving variance (> 0)
        weights[3] = np.abs(weights[3]) + 0.5
    layer.set_weights(weights)
    return layer


EXACT = [
    ("dense_linear", lambda: built(keras.layers.Dense(5), (None, 7)), [(1, 7)]),
    ("dense_relu", lambda: built(keras.layers.Dense(5, activation="relu"), (None, 7)), [(1, 7)]),
    ("conv2d", lambda: built(keras.layers.Conv2D(3, 3, padding="same"), (None, 6, 6, 2)), [(1, 6, 6, 2)]),
    ("conv1d_strided", lambda: built(keras.layers.Conv1D(3, 3, strides=2), (None, 9, 2)), [(1, 9, 2)]),
    ("depthwise", lambda: built(keras.layers.DepthwiseConv2D(3), (None, 6, 6, 2)), [(1, 6, 6, 2)]),
    ("separable", lambda: built(keras.layers.SeparableConv2D(4, 3), (None, 6, 6, 2)), [(1, 6, 6, 2)]),
    ("batch_norm", lambda: built(keras.layers.BatchNormalization(), (None, 6)), [(1, 6)]),
    ("rescaling", lambda: keras.layers.Rescaling(2.5, offset=-1.0), [(1, 6)]),
    ("average_pool", lambda: keras.layers.AveragePooling2D(2), [(1, 4, 4, 2)]),
    ("global_average", lambda: keras.layers.GlobalAveragePooling2D(), [(1, 4, 4, 2)]),
    ("relu_layer", lambda: keras.layers.ReLU(), [(1, 8)]),
    ("flatten", lambda: keras.layers.Flatten(), [(1, 3, 2)]),
    ("add", lambda: keras.layers.Add(), [(1, 5), (1, 5)]),
    ("subtract", lambda: keras.layers.Subtract(), [(1, 5), (1, 5)]),
    ("average", lambda: keras.layers.Average(), [(1, 5), (1, 5)]),
    ("concatenate", lambda: keras.layers.Concatenate(), [(1, 5), (1, 3)]),
    ("multiply", lambda: keras.layers.Multiply(), [(1, 5), (1, 5)]),
]
APPROXIMATE = [  # (name, layer, input shapes, relative bound on the mean error (of the spread) and on the variance)
    ("sigmoid_quadrature", lambda: keras.layers.Activation("sigmoid"), [(1, 8)], 0.01, 0.02),
    ("tanh_quadrature", lambda: keras.layers.Activation("tanh"), [(1, 8)], 0.01, 0.02),
    ("gelu_quadrature", lambda: keras.layers.Activation("gelu"), [(1, 8)], 0.01, 0.02),
    ("elu_layer_quadrature", lambda: keras.layers.ELU(), [(1, 8)], 0.02, 0.04),
    ("leaky_relu_quadrature", lambda: keras.layers.LeakyReLU(0.1), [(1, 8)], 0.02, 0.04),
    ("max_pool_pairwise", lambda: keras.layers.MaxPooling2D(2), [(1, 4, 4, 2)], 0.05, 0.25),
    ("max_pool_1d_overlapping", lambda: keras.layers.MaxPooling1D(3, strides=2), [(1, 9, 2)], 0.05, 0.25),
]


@pytest.mark.parametrize(("name", "make", "shapes"), EXACT, ids=[e[0] for e in EXACT])
def test_exact_rules_match_sampled_moments(name: str, make: Any, shapes: list[tuple[int, ...]]) -> None:
    layer = make()
    inputs = [gaussian(shape, seed) for seed, shape in enumerate(shapes)]
    rule_mean, rule_var = rule_moments(layer, inputs)
    mean, variance, mean_error, variance_error = sampled_moments(layer, inputs, seed=len(name))
    assert np.all(np.abs(rule_mean - mean) <= Z * mean_error + 1e-4), (name, rule_mean, mean)
    assert np.all(np.abs(rule_var - variance) <= Z * variance_error + 1e-4), (name, rule_var, variance)


@pytest.mark.parametrize(("name", "make", "shapes", "mean_bound", "var_bound"), APPROXIMATE,
                         ids=[a[0] for a in APPROXIMATE])  # fmt: skip
def test_approximate_rules_within_their_bounds(
    name: str, make: Any, shapes: list[tuple[int, ...]], mean_bound: float, var_bound: float
) -> None:
    layer = make()
    inputs = [gaussian(shape, seed) for seed, shape in enumerate(shapes)]
    rule_mean, rule_var = rule_moments(layer, inputs)
    mean, variance, mean_error, _ = sampled_moments(layer, inputs, seed=len(name))
    spread = np.sqrt(variance)
    assert np.max(np.abs(rule_mean - mean) / spread) <= mean_bound + Z * np.max(mean_error / spread), name
    assert np.max(np.abs(rule_var / variance - 1.0)) <= var_bound, (name, rule_var, variance)


def test_a_wrong_rule_is_caught_by_the_same_comparison() -> None:
    """The comparison can fail: ReLU's variance taken as the input's (no rectification) is far outside 5 SE."""
    layer = keras.layers.ReLU()
    inputs = [gaussian((1, 8), 0)]
    _, rule_var = rule_moments(layer, inputs)
    _, variance, _, variance_error = sampled_moments(layer, inputs, seed=3)
    assert np.all(np.abs(rule_var - variance) <= Z * variance_error + 1e-4)
    wrong = inputs[0][1][0] ** 2
    assert np.any(np.abs(wrong - variance) > Z * variance_error + 1e-4)


def monte_carlo(model: Any, x: np.ndarray, samples: int) -> np.ndarray:
    """``[T, B, ...]`` MC samples with host-drawn masks (seeded: no TF random op, which a test that enabled op
    determinism earlier in the session would refuse unseeded)."""
    sites = describe(model)
    feeds = draw_feeds(sites, samples, len(x), np.random.default_rng(samples))
    policy = passes.FedMasks(feeds)
    y = passes.forward(model, sites, tf.constant(x), policy, tf.constant(samples, tf.int32))
    return np.asarray(y, np.float64)


def one_pass(model: Any, x: np.ndarray) -> moments.OutputMoments:
    return moments.forward(model, describe(model), tf.constant(x))[0]


def test_dropout_rule_is_exact() -> None:
    """Inverted dropout on a constant input: mean x, variance x² p / (1 - p) — for Bernoulli and Gaussian dropout."""
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    for layer in (keras.layers.Dropout(0.3), keras.layers.GaussianDropout(0.3), keras.layers.SpatialDropout1D(0.3)):
        shape = (6,) if not isinstance(layer, keras.layers.SpatialDropout1D) else (3, 2)
        inputs = keras.Input(shape)
        model = keras.Model(inputs, layer(inputs))
        rows = x.reshape(3, *shape)
        found = one_pass(model, rows)
        np.testing.assert_allclose(found.mean, rows, rtol=1e-6)
        np.testing.assert_allclose(found.variance, rows**2 * 0.3 / 0.7, rtol=1e-5)
        samples = monte_carlo(model, rows, 20_000)
        np.testing.assert_allclose(samples.var(axis=0), rows**2 * 0.3 / 0.7, rtol=0.05, atol=1e-4)


def stacked_models() -> dict[str, Any]:
    keras.utils.set_random_seed(3)
    inputs = keras.Input((12,))
    h = keras.layers.Dropout(0.2)(inputs)
    h = keras.layers.Dense(32, activation="relu")(h)
    h = keras.layers.Dropout(0.5)(h)
    h = keras.layers.Dense(16, activation="tanh")(h)
    h = keras.layers.Dropout(0.3)(h)
    mlp = keras.Model(inputs, keras.layers.Dense(3)(h))
    images = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(images)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Dropout(0.2)(h)
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dropout(0.5)(h)
    cnn = keras.Model(images, keras.layers.Dense(4)(h))
    return {"mlp": (mlp, (5, 12)), "cnn": (cnn, (5, 8, 8, 1))}


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_stacked_rules_track_monte_carlo(name: str) -> None:
    """Whole models (rules stacked behind several dropout layers) vs 20,000 MC samples: the means within 0.25 MC
    std per unit, the std within 25 % (median) — the independence assumption's cost, stated in docs/one-pass.md."""
    model, shape = stacked_models()[name]
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    found = one_pass(model, x)
    samples = monte_carlo(model, x, 20_000)
    mc_mean, mc_std = samples.mean(axis=0), samples.std(axis=0)
    assert np.max(np.abs(np.asarray(found.mean) - mc_mean) / mc_std) <= 0.25
    ratio = np.sqrt(np.asarray(found.variance)) / mc_std
    assert 0.75 <= float(np.median(ratio)) <= 1.25, ratio


def test_softmax_output_returns_logit_moments() -> None:
    inputs = keras.Input((6,))
    h = keras.layers.Dropout(0.3)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(h))
    found = one_pass(model, np.ones((2, 6), np.float32))
    assert found.link == "softmax"
    logits = np.ones((2, 6)) @ model.layers[-1].kernel.numpy() + model.layers[-1].bias.numpy()
    np.testing.assert_allclose(found.mean, logits, rtol=1e-5, atol=1e-5)
    assert isinstance(moments.propagate(model.layers[-1], Gaussian.of(tf.ones((1, 6))), output=True), Logits)


@pytest.mark.parametrize(
    ("layer", "named"),
    [
        (lambda: keras.layers.LSTM(4, name="the_lstm"), "the_lstm"),
        (lambda: keras.layers.LayerNormalization(name="the_norm"), "the_norm"),
        (lambda: keras.layers.Activation("softmax", name="inner_softmax"), "inner_softmax"),
    ],
    ids=["lstm", "layer_norm", "softmax_inside"],
)
def test_layers_without_a_rule_are_named(layer: Any, named: str) -> None:
    inputs = keras.Input((5, 3))
    h = keras.layers.Dropout(0.2)(inputs)
    h = layer()(h)
    h = keras.layers.Flatten()(h) if len(h.shape) > 2 else h
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    with pytest.raises(NoMomentRule, match=named) as refused:
        moments_function(model, describe(model))  # what the export runs
    assert "no moment" in str(refused.value)
    with pytest.raises(NoMomentRule, match=named):
        one_pass(model, np.zeros((1, 5, 3), np.float32))


def test_layers_before_the_first_dropout_need_no_rule() -> None:
    """An LSTM before dropout is deterministic prefix: it runs once, as in inference."""
    inputs = keras.Input((5, 3))
    h = keras.layers.LSTM(4)(inputs)
    h = keras.layers.Dropout(0.2)(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(h))
    _, links, _ = moments_function(model, describe(model))  # the export's moments graph builds
    assert links == [None]


@pytest.mark.parametrize("head", ["conv", "flatten_dense"])
def test_spatial_dropout_covariance_is_summed_per_channel(head: str) -> None:
    """Spatial dropout shares one mask per channel: the layer after it must add the channel's covariance. Exact
    for a linear layer; the independence rule alone would be off by about the number of positions."""
    keras.utils.set_random_seed(8)
    inputs = keras.Input((6, 6, 3))
    h = keras.layers.SpatialDropout2D(0.3)(inputs)
    if head == "conv":
        out = keras.layers.Conv2D(4, 3, strides=2, padding="same")(h)
    else:
        out = keras.layers.Dense(4)(keras.layers.Flatten()(h))
    model = keras.Model(inputs, out)
    x = np.abs(np.random.default_rng(2).normal(size=(2, 6, 6, 3))).astype(np.float32) + 0.5
    found = one_pass(model, x)
    samples = monte_carlo(model, x, 20_000)
    np.testing.assert_allclose(np.asarray(found.mean), samples.mean(axis=0), atol=0.05 * float(samples.std()))
    np.testing.assert_allclose(np.asarray(found.variance), samples.var(axis=0), rtol=0.06)


def test_dropout_left_out_of_sampling_is_the_identity() -> None:
    """--mc-layers: an unsampled dropout layer runs as in inference; only the sampled one adds variance."""
    inputs = keras.Input((6,))
    h = keras.layers.Dropout(0.3, name="sampled")(inputs)
    h = keras.layers.Dense(5, name="dense")(h)
    out = keras.layers.Dropout(0.4, name="unsampled")(h)
    model = keras.Model(inputs, out)
    sites = describe(model)
    sampled = [s for s in sites if s.name == "sampled"]
    unsampled = [s for s in sites if s.name == "unsampled"]
    x = np.ones((2, 6), np.float32)
    found = moments.forward(model, sampled, tf.constant(x), unsampled)[0]
    kernel = model.get_layer("dense").kernel.numpy()
    np.testing.assert_allclose(found.variance, np.ones((2, 6)) * (0.3 / 0.7) @ kernel**2, rtol=1e-5)
    both = moments.forward(model, sites, tf.constant(x))[0]
    assert np.all(np.asarray(both.variance) > np.asarray(found.variance))
