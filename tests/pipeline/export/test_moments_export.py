"""The moments graph at export: made and checked where every layer has a rule, refused by name where one has not,
left out (with the figures and the reason) when its check against Monte Carlo fails — Monte Carlo never affected."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from mcdrop.pipeline.export.exporter import ExportOptions, export  # noqa: E402
from mcdrop.pipeline.export.graphs import moments  # noqa: E402
from mcdrop.serving.models.litert import Graph  # noqa: E402
from mcdrop.serving.models.manifest import Manifest  # noqa: E402
from tests.helpers import run_cli  # noqa: E402
from tests.pipeline.export import models  # noqa: E402


def exported(model: Path, repo: Path, name: str, **options: Any) -> Manifest:
    return export(ExportOptions(model_path=model, repository=repo, name=name, **options))[1]


@pytest.mark.parametrize(
    ("build", "links"),
    [(models.sequential_mlp, ("softmax",)), (models.functional_cnn, ("softmax",)),
     (models.regression_with_skip, (None,))],
    ids=["sequential_mlp", "functional_cnn_spatial_dropout", "regression_gaussian_dropout_skip"],
)  # fmt: skip
def test_models_with_rules_get_a_checked_moments_graph(
    build: Any, links: tuple[str | None, ...], tmp_path: Path
) -> None:
    manifest = exported(build(tmp_path / "m.keras"), tmp_path / "repo", "m")
    record = manifest.moments
    assert record is not None and record.available and record.graph is not None, record
    assert record.links == links
    assert record.check["passed"] and record.check["parity"]["passed"] and record.check["mc_samples"] == 2000
    for figures in record.check["outputs"].values():
        assert figures["mean_z"] <= 8.0 or figures["mean_in_std"] <= 0.5
    assert record.flops_per_row is not None and manifest.cost is not None
    assert record.flops_per_row >= manifest.cost.prefix + manifest.cost.per_sample  # mean and variance
    graph = Graph((tmp_path / "repo" / "m" / "1" / "moments.tflite").read_bytes())
    expected = ["logit_mean", "logit_variance", "logit_covariance"] if links[0] else ["mean", "variance"]
    assert graph.output_names == expected  # a softmax after a Dense: the logits' covariance across classes too
    assert record.covariances == ((True,) if links[0] else (False,))
    assert not any(op.startswith("RANDOM") for op in graph.ops())  # one deterministic pass
    assert "moments.tflite" in manifest.files and set(manifest.graphs) == {"deterministic", "mc", "mc_masked"}


def test_a_layer_without_a_rule_means_no_moments_graph_and_says_which(tmp_path: Path) -> None:
    lstm = keras.layers.LSTM(8, dropout=0.2, name="the_lstm")
    manifest = exported(models.sequence_model(tmp_path / "m.keras", lstm), tmp_path / "repo", "lstm")
    record = manifest.moments
    assert record is not None and not record.available and record.reason is not None
    assert "the_lstm" in record.reason and "LSTM" in record.reason
    assert manifest.stochastic and set(manifest.graphs) == {"deterministic", "mc", "mc_masked"}  # MC unaffected
    assert not (tmp_path / "repo" / "lstm" / "1" / "moments.tflite").exists()
    result = run_cli("export", str(tmp_path / "m.keras"), "--repository", str(tmp_path / "repo"), "--name", "again")
    assert result.returncode == 0, result.stderr
    assert "mode moments: unavailable" in result.stdout and "the_lstm" in result.stdout


def test_a_wrong_rule_fails_the_check_and_ships_no_graph(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The export's own check can fail: a ReLU rule that quadruples the variance is caught against Monte Carlo."""
    right = moments.relu

    def inflated(g: moments.Gaussian) -> moments.Gaussian:
        found = right(g)
        return moments.Gaussian(found.mean, 16.0 * found.var + 1.0)

    monkeypatch.setattr(moments, "relu", inflated)
    manifest = exported(models.sequential_mlp(tmp_path / "m.keras"), tmp_path / "repo", "m")
    record = manifest.moments
    assert record is not None and not record.available
    assert record.reason is not None and "failed its check against Monte Carlo" in record.reason
    assert record.check["passed"] is False and record.check["problems"]
    assert not (tmp_path / "repo" / "m" / "1" / "moments.tflite").exists()
    assert all(check["passed"] for check in manifest.verification["checks"])  # MC verified and published


def test_no_moments_option_and_old_manifests(tmp_path: Path) -> None:
    manifest = exported(models.sequential_mlp(tmp_path / "m.keras"), tmp_path / "repo", "m", moments=False)
    assert manifest.moments is None and "moments" not in manifest.to_json()
    old = Manifest.load(Path(__file__).resolve().parents[2] / "data" / "m2_repository" / "digits-m2" / "1")
    assert old.moments is None  # exported before the moments graph: loads, serves MC
    record = exported(models.regression_with_skip(tmp_path / "r.keras"), tmp_path / "repo", "r").moments
    assert record is not None
    raw = record.to_json()
    assert type(record).from_json(raw, "moments").to_json() == raw  # the typed record round-trips


def test_static_pass_matches_eager_propagation(tmp_path: Path) -> None:
    """The converted graph returns what the TensorFlow propagation computes (the export's parity check, redone)."""
    import tensorflow as tf

    from mcdrop.pipeline.export.model.sites import describe

    path = models.functional_cnn(tmp_path / "m.keras")
    exported(path, tmp_path / "repo", "m")
    model = keras.saving.load_model(path)
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)
    eager = moments.forward(model, describe(model), tf.constant(x))[0]
    graph = Graph((tmp_path / "repo" / "m" / "1" / "moments.tflite").read_bytes())
    mean, variance, covariance = graph.run({"x": x})
    np.testing.assert_allclose(mean, eager.mean, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(variance, eager.variance, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(covariance, eager.covariance, rtol=1e-4, atol=1e-5)
    diagonal = np.diagonal(covariance, axis1=1, axis2=2)
    np.testing.assert_allclose(diagonal, variance, rtol=1e-4, atol=1e-6)  # the covariance's diagonal is the variance
