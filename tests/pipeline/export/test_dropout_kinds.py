"""Every kind of Keras dropout exports with verified MC graphs, or is refused in one line; none silently vanishes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from mcdrop.pipeline.export.errors import ExportError  # noqa: E402
from mcdrop.pipeline.export.exporter import ExportOptions, export  # noqa: E402
from mcdrop.serving.models.litert import Graph  # noqa: E402
from tests.helpers import run_cli  # noqa: E402
from tests.pipeline.export import custom_layers, models  # noqa: E402

ALL_CHECKS = {"ops", "deterministic_parity", "training_mode_parity", "masked_parity", "drop_fraction", "prefix_cached",
              "mc_mean", "fresh_randomness", "summary_arithmetic", "summary_consistency",
              "summary_statistics"}  # fmt: skip


def exported(model: Path, repo: Path, name: str) -> dict[str, Any]:
    """Export and assert what every kind must show: MC graphs, every check run and passed, masks as described."""
    manifest = export(ExportOptions(model_path=model, repository=repo, name=name))[1].to_json()
    assert manifest["stochastic"] is True and set(manifest["graphs"]) == {"deterministic", "mc", "mc_masked"}
    checks = manifest["verification"]["checks"]
    assert {c["check"] for c in checks} == ALL_CHECKS and all(c["passed"] for c in checks)
    mc_mean = next(c for c in checks if c["check"] == "mc_mean")
    assert mc_mean["samples"] >= 2000  # against Keras's own training-mode draws
    moments = manifest["moments"]  # every kind: a checked one-pass graph, or the reason it has none
    assert (
        moments["check"]["passed"] if moments["available"] else moments["reason"].startswith(("no moments", "moments"))
    )
    masked = manifest["graphs"]["mc_masked"]["inputs"]
    for site in manifest["dropout_layers"]:  # each mask input is described and present with its shape
        spec = next(i for i in masked if i["name"] == site["masked_input"])
        assert spec["shape"][2:] == site["noise_shape"]
        assert site["masked_input_shape"] == ["T", "B", *site["noise_shape"]]
    return manifest


def sites(manifest: dict[str, Any]) -> list[tuple[str, str, str, list[int]]]:
    return [(d["name"], d["class"], d["mask_kind"], d["noise_shape"]) for d in manifest["dropout_layers"]]


def test_lstm_input_and_recurrent_dropout_draw_one_mask_per_sequence(tmp_path: Path) -> None:
    lstm = keras.layers.LSTM(16, dropout=0.2, recurrent_dropout=0.2, name="lstm")
    manifest = exported(models.sequence_model(tmp_path / "m.keras", lstm), tmp_path / "repo", "lstm")
    # With recurrent dropout Keras's LSTM masks each of its 4 gates separately: 4 masks per sequence, never per step.
    assert sites(manifest) == [
        ("lstm/input", "LSTM", "input", [4, 4]),
        ("lstm/recurrent", "LSTM", "recurrent", [4, 16]),
    ]
    assert [d["rate"] for d in manifest["dropout_layers"]] == [pytest.approx(0.2), pytest.approx(0.2)]
    assert not manifest["moments"]["available"] and "'lstm' (LSTM)" in manifest["moments"]["reason"]


def test_gru_input_dropout(tmp_path: Path) -> None:
    gru = keras.layers.GRU(8, dropout=0.25, name="gru")
    manifest = exported(models.sequence_model(tmp_path / "m.keras", gru, outputs=1), tmp_path / "repo", "gru")
    assert sites(manifest) == [("gru/input", "GRU", "input", [4])]


def test_bidirectional_lstm_has_masks_for_both_directions(tmp_path: Path) -> None:
    layer = keras.layers.Bidirectional(keras.layers.LSTM(5, dropout=0.2, recurrent_dropout=0.3, name="lstm"), name="bi")
    manifest = exported(models.sequence_model(tmp_path / "m.keras", layer), tmp_path / "repo", "bi")
    assert [(d["name"], d["mask_kind"], d["rate"]) for d in manifest["dropout_layers"]] == [
        ("bi/forward_lstm/input", "input", pytest.approx(0.2)),
        ("bi/forward_lstm/recurrent", "recurrent", pytest.approx(0.3)),
        ("bi/backward_lstm/input", "input", pytest.approx(0.2)),
        ("bi/backward_lstm/recurrent", "recurrent", pytest.approx(0.3)),
    ]


def test_simple_rnn_masks_match_an_independent_numpy_rnn_with_one_mask_per_sequence(tmp_path: Path) -> None:
    """The fed mask [T, B, features] multiplies the input at every step: checked against numpy, not our own pass."""
    rnn = keras.layers.SimpleRNN(6, dropout=0.3, name="rnn")
    model_path = models.sequence_model(tmp_path / "m.keras", rnn, outputs=1)
    manifest = exported(model_path, tmp_path / "repo", "rnn")
    assert sites(manifest) == [("rnn/input", "SimpleRNN", "input", [4])]
    model = keras.saving.load_model(model_path)
    kernel, recurrent, bias = (np.asarray(w) for w in model.get_layer("rnn").weights)
    head_w, head_b = (np.asarray(w) for w in model.layers[-1].weights)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 6, 4)).astype(np.float32)
    masks = (rng.random((5, 3, 4)) >= 0.3).astype(np.uint8)
    graph = Graph(tmp_path / "repo" / "rnn" / "1" / "mc_masked.tflite")
    actual = graph.run({"x": x, "mask_rnn__input": masks})[0]
    expected = np.empty((5, 3, 1))
    for t in range(5):
        h = np.zeros((3, 6))
        scaled = masks[t] / 0.7  # the same mask at every step of the sequence
        for step in range(6):
            h = np.tanh((x[:, step] * scaled) @ kernel + bias + h @ recurrent)
        expected[t] = h @ head_w + head_b
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5)


def test_multi_head_attention_dropout_on_the_attention_probabilities(tmp_path: Path) -> None:
    manifest = exported(models.attention_model(tmp_path / "m.keras"), tmp_path / "repo", "mha")
    assert sites(manifest) == [("attention/attention", "MultiHeadAttention", "attention", [2, 6, 6])]


def test_time_distributed_dropout_draws_a_mask_per_step(tmp_path: Path) -> None:
    manifest = exported(models.time_distributed_dropout(tmp_path / "m.keras"), tmp_path / "repo", "td")
    name = manifest["dropout_layers"][0]["name"]
    assert name.startswith("per_step/") and manifest["dropout_layers"][0]["calls"] == 6
    assert sites(manifest) == [(name, "Dropout", "plain", [6, 5])]


def test_alpha_dropout(tmp_path: Path) -> None:
    manifest = exported(models.alpha_dropout(tmp_path / "m.keras"), tmp_path / "repo", "alpha")
    assert sites(manifest) == [("alpha", "AlphaDropout", "plain", [8])]


def test_transformer_block_in_a_nested_model_on_integer_tokens(tmp_path: Path) -> None:
    manifest = exported(models.transformer_classifier(tmp_path / "m.keras"), tmp_path / "repo", "transformer")
    assert sites(manifest) == [
        ("encoder/self_attention/attention", "MultiHeadAttention", "attention", [2, 12, 12]),
        ("encoder/ff_dropout", "Dropout", "plain", [12, 16]),
    ]
    assert manifest["input"]["integer_range"] == [0, 49] and manifest["input"]["model_dtype"] == "int32"
    prefix = next(c for c in manifest["verification"]["checks"] if c["check"] == "prefix_cached")
    assert "GATHER" in prefix["prefix_ops"]  # the embedding lookup runs once per input, before the samples


def test_conv1d_with_spatial_dropout(tmp_path: Path) -> None:
    manifest = exported(models.conv1d_spatial(tmp_path / "m.keras"), tmp_path / "repo", "conv1d")
    assert sites(manifest) == [("spatial", "SpatialDropout1D", "plain", [1, 8])]


def test_custom_layer_needs_import_and_then_exports_its_dropout_with_batchnorm_on_moving_statistics(
    tmp_path: Path,
) -> None:
    model = custom_layers.model_with(custom_layers.DropoutBlock(4, 0.3, name="block"), tmp_path / "m.keras")
    repo = tmp_path / "repo"
    refused = run_cli("export", str(model), "--repository", str(repo), "--name", "custom")
    assert refused.returncode == 1  # the export failed (2 is for a wrong command line)
    assert refused.stderr.count("\n") == 1 and "--import MODULE_OR_FILE" in refused.stderr
    assert not (repo / "custom").exists()
    layers_file = Path(custom_layers.__file__)
    done = run_cli("export", str(model), "--repository", str(repo), "--name", "custom", "--import", str(layers_file))
    assert done.returncode == 0, done.stderr
    assert "mask_block__dropout" in done.stdout  # the summary table names the mask
    manifest = exported(model, repo, "custom")  # version 2, in process: every check, BatchNorm frozen in training mode
    assert sites(manifest)[0][1:] == ("Dropout", "plain", [4])


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (custom_layers.TensorFlowNoise(name="tf_noise"), r"TensorFlow op .*tf_noise.*replace tf\.random"),
        (custom_layers.NoisyDropout(name="noisy"), r"'noisy'.*not dropout \(keras\.random\.normal\) inside 'noisy'"),
        (keras.layers.GaussianNoise(0.1, name="noise"), r"'noise' \(GaussianNoise\).*not supported"),
        # Stochastic depth mcdrop cannot verify: no 1/keep scale (not inverted dropout), or inside a custom layer.
        (custom_layers.UnscaledDropPath(0.2, name="unscaled"),
         r"'unscaled' \(UnscaledDropPath\) draws random numbers that are not dropout \(keras\.random\.uniform\)"),
        (custom_layers.ResidualBlock(name="block"), r"Stochastic depth 'block/drop_path' sits inside 'block'"),
    ],
)  # fmt: skip
def test_randomness_that_is_not_dropout_is_refused_by_name_in_one_line(
    tmp_path: Path, layer: keras.layers.Layer, message: str
) -> None:
    model = custom_layers.model_with(layer, tmp_path / "m.keras")
    with pytest.raises(ExportError, match=message) as refused:
        export(ExportOptions(model_path=model, repository=tmp_path / "repo", name="m"))
    assert "\n" not in str(refused.value) and "in user code" not in str(refused.value)
    assert not (tmp_path / "repo" / "m").exists()


def test_a_layer_that_changes_more_than_dropout_in_training_mode_fails_verification(tmp_path: Path) -> None:
    model = custom_layers.model_with(custom_layers.TrainingBranch(name="branch"), tmp_path / "m.keras")
    with pytest.raises(ExportError, match=r"training_mode_parity.*\['branch'\] change more than dropout"):
        export(ExportOptions(model_path=model, repository=tmp_path / "repo", name="m"))
    assert not (tmp_path / "repo" / "m" / "1").exists()


def test_an_op_without_a_builtin_kernel_is_named_with_its_layer(tmp_path: Path) -> None:
    import tensorflow as tf

    from mcdrop.pipeline.export.convert.functions import graph_functions
    from mcdrop.pipeline.export.convert.tflite import to_tflite

    class Inverse(keras.layers.Layer):
        def call(self, x: Any) -> Any:
            return tf.reshape(tf.linalg.inv(tf.reshape(x, (-1, 2, 2))), (-1, 4))

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(Inverse(name="inverse")(inputs)))
    function = graph_functions(model, [])["deterministic"]
    with pytest.raises(ExportError, match=r"MatrixInverse in layer 'inverse' has no builtin LiteRT kernel") as refused:
        to_tflite(function, model)
    assert "\n" not in str(refused.value)


def test_an_lstm_without_dropout_exports_its_deterministic_graph(tmp_path: Path) -> None:
    """Keras runs RNNs in a while loop the builtin-only converter cannot lower; the export unrolls them."""
    model = models.sequence_model(tmp_path / "m.keras", keras.layers.LSTM(5))
    manifest = export(ExportOptions(model_path=model, repository=tmp_path / "repo", name="plain"))[1].to_json()
    assert manifest["stochastic"] is False and all(c["passed"] for c in manifest["verification"]["checks"])
    assert "WHILE" not in manifest["graphs"]["deterministic"]["ops"]


def test_stochastic_depth_is_a_path_site_with_one_keep_flag_per_sample(tmp_path: Path) -> None:
    """Keras's own StochasticDepth (ConvNeXt) and a user's DropPath in residual conv blocks, with a Dropout head:
    every check passes (MC mean against Keras's own training-mode draws included); one-pass moments are refused."""
    manifest = exported(models.residual_stochastic_depth(tmp_path / "m.keras"), tmp_path / "repo", "sd")
    assert sites(manifest) == [
        ("sd0", "StochasticDepth", "path", [1, 1, 1]),
        ("dp1", "DropPath", "path", [1, 1, 1]),
        ("dropout", "Dropout", "plain", [16]),
    ]
    assert [d["rate"] for d in manifest["dropout_layers"]] == [pytest.approx(0.2), pytest.approx(0.3), 0.3]
    assert not manifest["moments"]["available"] and "is stochastic depth" in manifest["moments"]["reason"]
    # From sd0 on, every sample row has its own maps: the second block's first Dense reads an 8 x 8 x 16 float32 map
    # and writes 8 x 8 x 32, both live at once. LiteRT sizes the tensors behind Dense's reshapes (shapes computed
    # from values) only while it runs: a footprint read before an invoke found 4,186 bytes per sample row.
    assert manifest["activation_memory"]["mc_masked"]["per_sample_row"] >= 8 * 8 * (16 + 32) * 4


def test_stochastic_depth_alone_gives_the_spread_and_drops_whole_samples(tmp_path: Path) -> None:
    """--mc-layers sd0,dp1: only the two paths are sampled. Fed masks that drop a path for one sample change that
    sample's output by exactly the branch (the dropped path's output is zero), and the drop fraction is the rate."""
    model = models.residual_stochastic_depth(tmp_path / "m.keras")
    version, record = export(ExportOptions(model_path=model, repository=tmp_path / "repo", name="sd",
                                           mc_layers="sd0,dp1"))  # fmt: skip
    manifest = record.to_json()
    assert [d["name"] for d in manifest["dropout_layers"]] == ["sd0", "dp1"]
    assert [d["name"] for d in manifest["unsampled_dropout_layers"]] == ["dropout"]
    assert manifest["moments"]["available"] is False
    graph = Graph((tmp_path / "repo" / "sd" / str(version) / "mc_masked.tflite").read_bytes())
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)
    kept = {name: np.ones((2, 3, 1, 1, 1), np.uint8) for name in ("mask_sd0", "mask_dp1")}
    dropped = {**kept, "mask_dp1": np.array([[[1], [0], [1]], [[1], [1], [1]]], np.uint8).reshape(2, 3, 1, 1, 1)}
    a, b = graph.run({"x": x, **kept})[0], graph.run({"x": x, **dropped})[0]
    changed = np.abs(a - b).max(axis=-1) > 1e-6
    assert changed.tolist() == [[False, True, False], [False, False, False]]  # sample 0, row 1 only
    reference = keras.models.load_model(model)
    reference.get_layer("dropout").rate = 0.0  # left out of sampling in the export: out of the reference too
    probs = np.mean([reference(x, training=True) for _ in range(400)], axis=0)
    draws = np.random.default_rng(1).random((2, 400, 1, 1, 1, 1))
    masks = {"mask_sd0": (draws[0] >= 0.2).astype(np.uint8), "mask_dp1": (draws[1] >= 0.3).astype(np.uint8)}
    mc = graph.run({"x": x[:1], **masks})[0]
    assert np.abs(mc.mean(axis=0)[0] - probs[0]).max() < 0.05  # Keras's own stochastic depth
