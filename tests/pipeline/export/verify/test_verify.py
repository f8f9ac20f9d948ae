"""The export's guards can fail: each known trap is caught, not published."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from mcdrop.pipeline.export.convert.functions import graph_functions  # noqa: E402
from mcdrop.pipeline.export.convert.tflite import to_tflite  # noqa: E402
from mcdrop.pipeline.export.errors import ExportError  # noqa: E402
from mcdrop.pipeline.export.graphs import forward as passes  # noqa: E402
from mcdrop.pipeline.export.model.sites import DropoutSite, describe  # noqa: E402
from mcdrop.pipeline.export.verify import common, parity, randomness  # noqa: E402
from mcdrop.pipeline.export.verify.budget import STAT_SAMPLES  # noqa: E402
from mcdrop.serving.models.litert import Graph  # noqa: E402
from tests.pipeline.export import models  # noqa: E402

CHUNKS = randomness.Chunks(tflite=300, keras=700)
"""Chunk sizes that do not divide 2,000: the statistics add up uneven chunks."""


def test_converter_silently_drops_training_true_dropout_and_the_op_check_catches_it(tmp_path: Path) -> None:
    model = keras.saving.load_model(models.functional_cnn(tmp_path / "cnn.keras"))
    sites = describe(model)
    naive = tf.lite.TFLiteConverter.from_keras_model(model).convert()  # what tutorials do
    ops = Graph(naive).ops()
    assert not any(op.startswith("RANDOM") for op in ops)  # the trap is real
    result = parity.op_check("mc", ops, sites)
    assert not result["passed"] and "dropout was removed" in result["problems"][0]


def test_fixed_seed_random_op_is_caught_by_fresh_randomness() -> None:
    def fixed_seed(x: tf.Tensor, samples: tf.Tensor) -> tf.Tensor:
        shape = tf.stack([samples * tf.shape(x)[0], 3])
        return tf.raw_ops.RandomUniform(shape=shape, dtype=tf.float32, seed=1, seed2=2)

    specs = [tf.TensorSpec([None, 3], tf.float32, name="x"), tf.TensorSpec([], tf.int32, name="samples")]
    function = tf.function(fixed_seed, input_signature=specs).get_concrete_function()
    graph = Graph(to_tflite(function, tf.Module()))
    result = randomness.fresh_randomness(graph, {"x": np.ones((2, 3), np.float32)})
    assert not result["passed"]
    assert "identical samples after re-allocation" in result["problems"]


def _mlp_with_dropout(rate: float) -> keras.Model:
    keras.utils.set_random_seed(5)
    return keras.Sequential([keras.Input((20,)), keras.layers.Dense(32, activation="relu"), keras.layers.Dropout(rate),
                             keras.layers.Dense(16, activation="relu"), keras.layers.Dropout(0.5),
                             keras.layers.Dense(4, activation="softmax")])  # fmt: skip


def test_wrong_drop_rate_fails_the_drop_fraction_check() -> None:
    model = _mlp_with_dropout(0.2)
    sites = describe(model)
    blob = to_tflite(graph_functions(model, sites)["mc"], model)
    claimed = [dataclasses.replace(sites[0], rate=0.25), sites[1]]  # the graph drops 0.2, the manifest says 0.25
    x = {"x": np.random.default_rng(0).normal(size=(4, 20)).astype(np.float32)}
    drop = randomness.mc_statistics(model, blob, claimed, x, STAT_SAMPLES, CHUNKS)[0]
    assert not drop["passed"] and drop["attempts"] == randomness.STATISTICAL_ATTEMPTS
    wrong, right = drop["sites"]
    assert not wrong["passed"] and abs(wrong["observed"] - 0.2) < 0.005  # what the graph really drops
    assert right["passed"]  # the correct layer's bound holds (false alarm 1e-9)


def test_silently_removed_dropout_layer_fails_the_drop_fraction_check() -> None:
    model = _mlp_with_dropout(0.2)
    sites = describe(model)

    class FirstSiteRemoved(passes.InGraphRandom):
        def draw(self, site: DropoutSite, call: int, rows: tf.Tensor) -> tf.Tensor:
            if site.name == sites[0].name:
                return tf.fill(tf.stack([rows, *site.call_shape]), 1.0 - site.rate)  # the identity, no mask
            return super().draw(site, call, rows)

    def mc(x: tf.Tensor, samples: tf.Tensor) -> tf.Tensor:
        return passes.forward(model, sites, x, FirstSiteRemoved(), samples)

    specs = [tf.TensorSpec([None, 20], tf.float32, name="x"), tf.TensorSpec([], tf.int32, name="samples")]
    blob = to_tflite(tf.function(mc, input_signature=specs, autograph=False).get_concrete_function(), model)
    assert parity.op_check("mc", Graph(blob).ops(), sites)["passed"]  # random ops remain: the op check is fooled
    x = {"x": np.random.default_rng(0).normal(size=(4, 20)).astype(np.float32)}
    drop = randomness.mc_statistics(model, blob, sites, x, STAT_SAMPLES, CHUNKS)[0]
    assert not drop["passed"]
    assert any(sites[0].tensor_name in problem and "not found" in problem for problem in drop["problems"])


def test_correct_graph_passes_with_bounded_false_alarms() -> None:
    """The bounds hold with a wide margin on a correct graph: the observed rates sit well inside them."""
    model = _mlp_with_dropout(0.2)
    sites = describe(model)
    blob = to_tflite(graph_functions(model, sites)["mc"], model)
    x = {"x": np.random.default_rng(1).normal(size=(4, 20)).astype(np.float32)}
    drop, _, mean, _ = randomness.mc_statistics(model, blob, sites, x, STAT_SAMPLES, CHUNKS)
    assert drop["passed"] and mean["passed"] and drop["attempts"] == 1
    for layer in drop["sites"]:
        low, high = layer["bound"]
        assert high - low < 0.02 and low < layer["observed"] < high
    assert mean["tolerance_se"] > 5.5 and mean["false_alarm"] == randomness.MEAN_FALSE_ALARM


def test_masked_parity_fails_against_another_model(tmp_path: Path) -> None:
    model = keras.saving.load_model(models.sequential_mlp(tmp_path / "a.keras"))
    sites = describe(model)
    graph = Graph(to_tflite(graph_functions(model, sites)["mc_masked"], model))
    other = keras.models.clone_model(model)  # same architecture, fresh weights
    x = {"x": np.ones((2, 20), np.float32)}
    assert parity.masked_parity(model, graph, sites, x, samples=3, seed=0, chunk=2)["passed"]
    assert not parity.masked_parity(other, graph, sites, x, samples=3, seed=0, chunk=2)["passed"]


def test_moments_added_in_chunks_equal_moments_of_all_samples() -> None:
    samples = np.random.default_rng(1).normal(3.0, 2.0, size=(1001, 4, 5)).astype(np.float32)
    moments = randomness.Moments()
    for start in range(0, 1001, 300):
        moments.add(samples[start : start + 300])
    assert moments.count == 1001
    np.testing.assert_allclose(moments.mean, samples.mean(axis=0, dtype=np.float64), rtol=1e-12)
    np.testing.assert_allclose(moments.variance, samples.astype(np.float64).var(axis=0, ddof=1), rtol=1e-10)


def test_with_outputs_hands_back_the_mask_tensors_of_the_shipped_ops() -> None:
    model = _mlp_with_dropout(0.2)
    sites = describe(model)
    blob = to_tflite(graph_functions(model, sites)["mc"], model)
    probe = Graph(common.with_outputs(blob, [site.tensor_name for site in sites]))
    assert probe.ops() == Graph(blob).ops()
    outputs = probe.run({"x": np.ones((3, 20), np.float32), "samples": np.array(5, np.int32)})
    assert [o.shape for o in outputs[1:]] == [(15, *site.noise_shape) for site in sites]
    assert all(set(np.unique(o)) <= {0.0, 1.0} for o in outputs[1:])
    with pytest.raises(ExportError, match="not found"):
        common.with_outputs(blob, ["mcdrop_keep_nothing"])


def test_a_parity_failure_names_the_sensitivity_and_points_at_onednn_only_when_it_was_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference = np.zeros((2, 3))
    off_by = np.full((2, 3), 1e-3, np.float32)
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    on = parity._parity("deterministic_parity", off_by, reference, 1e-7)
    assert not on["passed"] and on["reference_onednn"] is True
    assert "rounding sensitivity 1e-07" in on["problems"][0] and "TF_ENABLE_ONEDNN_OPTS=0" in on["problems"][0]
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    off = parity._parity("deterministic_parity", off_by, reference, 1e-7)
    assert not off["passed"] and off["reference_onednn"] is False and "ONEDNN" not in off["problems"][0]
    assert parity._parity("deterministic_parity", off_by * 1e-3, reference, 1e-7)["passed"]
