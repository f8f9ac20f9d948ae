"""Export models the project did not build; every export must pass its own verification."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from mcdrop.pipeline.export.errors import ExportError  # noqa: E402
from mcdrop.pipeline.export.exporter import ExportOptions, export  # noqa: E402
from mcdrop.serving.errors import InvalidArgument, NotFound  # noqa: E402
from mcdrop.serving.models.litert import Graph  # noqa: E402
from mcdrop.serving.models.manifest import sha256_file  # noqa: E402
from tests.pipeline.export import models  # noqa: E402


def run_export(model: Path, repo: Path, name: str, **options: Any) -> tuple[int, dict[str, Any]]:
    version, manifest = export(ExportOptions(model_path=model, repository=repo, name=name, **options))
    return version, manifest.to_json()


def checks(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["check"] + ("/" + c["graph"] if "graph" in c else ""): c for c in manifest["verification"]["checks"]}


@pytest.fixture(scope="module")
def mlp_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("mlp")
    model = models.sequential_mlp(root / "mlp.keras")
    version, manifest = run_export(model, root / "repo", "mlp", quantize=("float16", "dynamic-int8"))
    assert version == 1
    return model, root / "repo" / "mlp" / "1", manifest


def test_sequential_mlp_passes_verification(mlp_export: tuple[Path, Path, dict[str, Any]]) -> None:
    found = checks(mlp_export[2])
    manifest = mlp_export[2]
    assert all(c["passed"] for c in found.values())
    assert found["deterministic_parity"]["max_abs_diff"] <= 1e-5
    assert found["masked_parity"]["max_abs_diff"] <= 1e-5
    assert found["mc_mean"]["samples"] >= 2000 and found["mc_mean"]["max_z"] <= 4
    assert [layer["rate"] for layer in found["drop_fraction"]["sites"]] == [pytest.approx(0.3), pytest.approx(0.5)]
    assert "RANDOM_UNIFORM" in manifest["graphs"]["mc"]["ops"]
    assert not any(op.startswith("RANDOM") for op in manifest["graphs"]["deterministic"]["ops"])
    assert not any(op.startswith("RANDOM") for op in manifest["graphs"]["mc_masked"]["ops"])
    assert not any(op.startswith("Flex") or op in ("VAR_HANDLE", "READ_VARIABLE") for g in manifest["graphs"].values()
                   for op in g["ops"])  # fmt: skip


def test_manifest_describes_everything(mlp_export: tuple[Path, Path, dict[str, Any]]) -> None:
    model_path, version_dir, manifest = mlp_export
    on_disk = json.loads((version_dir / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["schema_version"] == 1 and manifest["task"] == "classification"
    assert manifest["input"] == {
        "name": "x",
        "shape": [-1, 20],
        "dtype": "float32",
        "model_dtype": "float32",
        "feature_names": None,
    }
    assert manifest["output"]["shape"] == [-1, 4]
    assert [(d["class"], d["rate"], d["noise_shape"]) for d in manifest["dropout_layers"]] == [
        ("Dropout", pytest.approx(0.3), [32]),
        ("Dropout", pytest.approx(0.5), [16]),
    ]
    assert manifest["default_samples"] == 100
    assert {i["name"] for i in manifest["graphs"]["mc_masked"]["inputs"]} == {
        "x",
        *(d["masked_input"] for d in manifest["dropout_layers"]),
    }
    files = {p.name for p in version_dir.iterdir()} - {"manifest.json"}
    # 4 graphs (3 for servers, mc_summary for devices) x (float32, float16, dynamic-int8) and moments (float32 only)
    assert set(manifest["files"]) == files and len(files) == 13 and {"mc_summary.tflite", "moments.tflite"} <= files
    assert {"mc_summary.float16.tflite", "mc_summary.dynamic-int8.tflite"} <= files
    for name, digest in manifest["files"].items():
        assert sha256_file(version_dir / name) == digest
    assert manifest["versions"]["tensorflow"] and manifest["versions"]["ai_edge_litert"]
    assert manifest["source"]["sha256"] == sha256_file(model_path)
    for variant, agreement in (("float16", 0.99), ("dynamic-int8", 0.9)):
        record = manifest["variants"][variant]
        deterministic = next(c for c in record["checks"] if c["check"] == "deterministic_agreement")
        assert deterministic["max_abs_diff"] < 0.1
        # A quantised graph predicts the float32 graph's class on (nearly) every verification row;
        # a broken one agrees about as often as chance (1 / classes).
        assert deterministic["top1_agreement"] >= agreement
        assert "RANDOM_UNIFORM" in record["graphs"]["mc"]["ops"]
        assert record["graphs"]["mc"]["file"] == f"mc.{variant}.tflite" and not record["graphs"]["mc"].get("float_ops")


def test_graphs_match_an_independent_numpy_forward_pass(mlp_export: tuple[Path, Path, dict[str, Any]]) -> None:
    """mc_masked with host masks equals the MLP written out in numpy; deterministic equals no dropout."""
    model_path, version_dir, manifest = mlp_export
    w1, b1, w2, b2, w3, b3 = keras.saving.load_model(model_path).get_weights()
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3, 20)).astype(np.float32)
    m1 = (rng.random((5, 3, 32)) >= 0.3).astype(np.uint8)
    m2 = (rng.random((5, 3, 16)) >= 0.5).astype(np.uint8)

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    h1 = np.maximum(x @ w1 + b1, 0)
    expected = softmax(np.maximum(h1 @ w2 + b2, 0) @ w3 + b3)
    deterministic = Graph(version_dir / "deterministic.tflite").run({"x": x})[0]
    np.testing.assert_allclose(deterministic, expected, atol=1e-5)
    names = [d["masked_input"] for d in manifest["dropout_layers"]]
    sampled = Graph(version_dir / "mc_masked.tflite").run({"x": x, names[0]: m1, names[1]: m2})[0]
    assert sampled.shape == (5, 3, 4)
    h1_t = h1[None] * m1 / 0.7
    expected_t = softmax(np.maximum(h1_t @ w2 + b2, 0) * m2 / 0.5 @ w3 + b3)
    np.testing.assert_allclose(sampled, expected_t, atol=1e-5)


def test_mc_graph_takes_any_sample_count_and_batch(mlp_export: tuple[Path, Path, dict[str, Any]]) -> None:
    _, version_dir, _ = mlp_export
    graph = Graph(version_dir / "mc.tflite")
    for samples, batch in ((1, 1), (100, 1), (7, 5), (100, 1)):
        out = graph.run({"x": np.ones((batch, 20), np.float32), "samples": np.array(samples, np.int32)})[0]
        assert out.shape == (samples, batch, 4)
        np.testing.assert_allclose(out.sum(-1), 1.0, atol=1e-5)


def test_functional_cnn_with_spatial_dropout_and_batchnorm(tmp_path: Path) -> None:
    model = models.functional_cnn(tmp_path / "cnn.keras")
    _, manifest = run_export(model, tmp_path / "repo", "cnn")
    layers = {d["name"]: d for d in manifest["dropout_layers"]}
    assert layers["spatial"]["class"] == "SpatialDropout2D"
    assert layers["spatial"]["noise_shape"] == [1, 1, 8]  # one mask per channel
    assert layers["always_on"]["rate"] == pytest.approx(0.4)  # training=True dropout kept, not silently removed
    found = checks(manifest)
    assert all(c["passed"] for c in found.values())
    # BatchNorm ran in inference mode: the deterministic graph equals Keras inference.
    assert found["deterministic_parity"]["max_abs_diff"] <= 1e-5
    # The prefix (conv + batchnorm) ran on the 4 verification rows, not on 4 x 2000.
    assert found["prefix_cached"]["rows_before_samples"] == 4
    assert "CONV_2D" in found["prefix_cached"]["prefix_ops"]


def test_regression_with_gaussian_dropout_and_skip_connection(tmp_path: Path) -> None:
    model = models.regression_with_skip(tmp_path / "reg.keras")
    _, manifest = run_export(model, tmp_path / "repo", "reg")
    assert manifest["task"] == "regression" and manifest["class_labels"] is None
    assert [d["kind"] for d in manifest["dropout_layers"]] == ["bernoulli", "gaussian"]
    assert {"RANDOM_UNIFORM", "RANDOM_STANDARD_NORMAL"} <= set(manifest["graphs"]["mc"]["ops"])
    assert all(c["passed"] for c in manifest["verification"]["checks"])


def test_model_without_dropout_exports_only_the_deterministic_graph(tmp_path: Path) -> None:
    _, manifest = run_export(models.without_dropout(tmp_path / "plain.keras"), tmp_path / "repo", "plain")
    assert manifest["stochastic"] is False and list(manifest["graphs"]) == ["deterministic"]
    assert {p.name for p in (tmp_path / "repo" / "plain" / "1").iterdir()} == {"deterministic.tflite", "manifest.json"}


@pytest.mark.parametrize("layer", ["GaussianNoise"])
def test_other_stochastic_layers_are_refused_by_name(tmp_path: Path, layer: str) -> None:
    instance = getattr(keras.layers, layer)(0.1, name=f"my_{layer.lower()}")
    model = models.with_layer(tmp_path / "m.keras", instance)
    with pytest.raises(ExportError, match=rf"my_{layer.lower()}.*{layer}.*not supported"):
        run_export(model, tmp_path / "repo", "m")
    assert not (tmp_path / "repo" / "m" / "1").exists()


def test_versions_increase_and_bad_options_are_refused(tmp_path: Path) -> None:
    model = models.without_dropout(tmp_path / "plain.keras")
    assert run_export(model, tmp_path / "repo", "p")[0] == 1
    assert run_export(model, tmp_path / "repo", "p")[0] == 2
    with pytest.raises(NotFound, match="Model file not found"):
        run_export(tmp_path / "nope.keras", tmp_path / "repo", "p")
    with pytest.raises(InvalidArgument, match="Invalid model name"):
        run_export(model, tmp_path / "repo", "../escape")
    with pytest.raises(InvalidArgument, match="Unknown quantization 'int4'"):
        run_export(model, tmp_path / "repo", "p", quantize=("int4",))
    assert sorted(p.name for p in (tmp_path / "repo" / "p").iterdir()) == ["1", "2"]


def test_observation_noise_given_at_export_or_epistemic_only(tmp_path: Path) -> None:
    model = models.regression_with_skip(tmp_path / "reg.keras")  # two outputs, no training record
    _, plain = run_export(model, tmp_path / "repo", "reg")
    noise = plain["output"]["observation_noise"]
    assert noise["precision"] is None and noise["variance"] is None and noise["method"].startswith("epistemic only")
    _, one = run_export(model, tmp_path / "repo", "reg", noise_precision=(4.0,))
    assert one["output"]["observation_noise"]["precision"] == [4.0, 4.0]
    assert one["output"]["observation_noise"]["variance"] == [0.25, 0.25]
    _, each = run_export(model, tmp_path / "repo", "reg", noise_precision=(4.0, 0.5))
    assert each["output"]["observation_noise"]["variance"] == [0.25, 2.0]
    with pytest.raises(InvalidArgument, match=r"one value or one per output \(2\). Received: 3 values"):
        run_export(model, tmp_path / "repo", "reg", noise_precision=(1.0, 2.0, 3.0))
    assert sorted(p.name for p in (tmp_path / "repo" / "reg").iterdir() if p.name.isdigit()) == ["1", "2", "3"]


def test_noise_precision_on_a_classifier_is_refused(tmp_path: Path) -> None:
    model = models.without_dropout(tmp_path / "plain.keras")
    with pytest.raises(InvalidArgument, match=r"noise_precision \(--noise-precision\) applies to regression models"):
        run_export(model, tmp_path / "repo", "plain", noise_precision=(1.0,))
