"""The typed manifest: parsed and checked once, written back unchanged, and old exports still load and serve."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mcdrop.serving.core import PredictionRequest, Sampler
from mcdrop.serving.errors import InvalidArgument, NotFound
from mcdrop.serving.models.manifest import GraphName, Manifest, NoiseKind, Task
from mcdrop.serving.models.repository import ModelRepository
from tests.helpers import REPO

M2_REPOSITORY = REPO / "tests" / "data" / "m2_repository"
"""``digits-m2`` version 1 as ``mcdrop export`` wrote it at commit 3593373 (M2, before ``--mc-layers``,
``unsampled_dropout_layers``, ``activation_memory`` and ``export``): manifest and graphs unchanged since."""


def _m2_record() -> dict[str, Any]:
    record: dict[str, Any] = json.loads((M2_REPOSITORY / "digits-m2" / "1" / "manifest.json").read_text())
    return record


def test_an_m2_manifest_loads_with_the_defaults_of_later_fields() -> None:
    record = _m2_record()
    assert "mc_layers" not in record and "activation_memory" not in record  # really from before M3.1
    manifest = Manifest.load(M2_REPOSITORY / "digits-m2" / "1")
    assert manifest.task is Task.CLASSIFICATION and manifest.stochastic
    assert manifest.input.shape == (-1, 64) and manifest.output.shape == (-1, 10)
    assert [(d.name, d.kind, d.noise_shape) for d in manifest.dropout_layers] == [
        ("dropout_1", NoiseKind.BERNOULLI, (32,))
    ]
    assert set(manifest.graphs) == {GraphName.DETERMINISTIC, GraphName.MC, GraphName.MC_MASKED}
    assert manifest.mc_layers == "all" and manifest.unsampled_dropout_layers == ()
    assert manifest.activation_memory is None and manifest.export is None
    assert manifest.cost is not None and manifest.cost.flops(2, 10) == 2 * 4096.0 + 2 * 10 * 640.0
    written = manifest.to_json()
    assert {k: v for k, v in written.items() if k in record} == record  # nothing lost or changed
    assert Manifest.from_json(written) == manifest


def test_an_m2_version_is_served_by_this_version(tmp_path: Path) -> None:
    repository = ModelRepository(shutil.copytree(M2_REPOSITORY, tmp_path / "repo"))
    repository.scan()
    version = repository.get("digits-m2")
    assert version.manifest.fingerprint is not None  # the load checked it against both graphs
    sampler = Sampler(repository)
    x = np.random.default_rng(0).uniform(0, 16, size=(3, 64)).astype(np.float32)
    first = sampler.run(sampler.plan(PredictionRequest("digits-m2", x, samples=50, seed=7)))
    again = sampler.run(sampler.plan(PredictionRequest("digits-m2", x, samples=50, seed=7)))
    assert first.summary.mean.shape == (3, 10) and np.allclose(first.summary.mean.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(first.summary.mean, again.summary.mean)
    assert float(first.summary.std.max()) > 0  # the uncertainty did not vanish


def test_a_manifest_from_this_export_round_trips(model_repository: Path) -> None:
    record = json.loads((model_repository / "digits" / "1" / "manifest.json").read_text())
    manifest = Manifest.from_json(record)
    assert manifest.to_json() == record
    assert manifest.activation_memory is not None and manifest.fingerprint is not None


def test_unknown_keys_are_kept_for_a_round_trip() -> None:
    record = {**_m2_record(), "from_a_newer_export": {"anything": [1, 2]}}
    assert Manifest.from_json(record).to_json()["from_a_newer_export"] == {"anything": [1, 2]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("task"), "field `task` is missing"),
        (
            lambda m: m.update(task="ranking"),
            "Invalid manifest field `task`. Expected one of 'classification', 'regression'. Received: \"ranking\"",
        ),
        (lambda m: m["input"].update(shape=[-1, "64"]), "`input.shape[1]`. Expected a dimension"),
        (lambda m: m["dropout_layers"][0].update(rate=1.5), "`dropout_layers[0].rate`. Expected a rate in [0, 1)"),
        (lambda m: m["dropout_layers"][0].update(kind="uniform"), "`dropout_layers[0].kind`. Expected one of"),
        (lambda m: m["graphs"].pop("mc_masked"), "`graphs`. Expected mc and mc_masked graphs"),
        (lambda m: m["graphs"].update(extra=m["graphs"]["mc"]), "`graphs.extra`. Expected one of 'deterministic'"),
        (lambda m: m.update(default_samples=0), "`default_samples`. Expected an integer >= 1. Received: 0"),
        (lambda m: m.update(stochastic=False), "`stochastic`. Expected True (it has 1 dropout site(s))"),
        (lambda m: m.update(class_labels=["a", "b"]), "`class_labels`. Expected 10 labels, one per output"),
        (lambda m: m["files"].update({"mc.tflite": 7}), "`files.mc.tflite`. Expected a string"),
        (lambda m: m.update(schema_version=2), "`schema_version`. Expected 1. Received: 2"),
        (lambda m: m["cost"].pop("per_sample"), "field `cost.per_sample` is missing"),
    ],
)
def test_a_bad_field_is_named_with_expected_and_received(change: Any, message: str) -> None:
    record = copy.deepcopy(_m2_record())
    change(record)
    with pytest.raises(InvalidArgument) as caught:
        Manifest.from_json(record)
    assert message in str(caught.value)


def test_load_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match=r"No manifest\.json"):
        Manifest.load(tmp_path)
    record = _m2_record()
    del record["input"]["dtype"]
    (tmp_path / "manifest.json").write_text(json.dumps(record))
    with pytest.raises(InvalidArgument, match=r"manifest\.json: Invalid manifest: field `input\.dtype` is missing"):
        Manifest.load(tmp_path)


def _calibrated_record(calibrated_repository: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((calibrated_repository / "digits" / "2" / "manifest.json").read_text())
    return record


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c: c["outputs"][0].update(output="logits"), "`calibration.outputs[0].output`. Expected one of the "
                                                            "model's outputs y. Received: \"logits\""),
        (lambda c: c["outputs"][0].update(task="regression"),
         "field `calibration.outputs[0].gaussian_coverage` is missing"),
        (lambda c: c["outputs"][0].update(task="ranking"), "`calibration.outputs[0].task`. Expected 'classification'"),
        (lambda c: c["outputs"][0].update(score="entropy"), "`calibration.outputs[0].score`. Expected one of the "
                                                           "scores"),
        (lambda c: c["outputs"][0]["scores"][0]["curve"]["risk"].pop(), "Expected coverage and risk of one length"),
        (lambda c: c.update(outputs=[]), "`calibration.outputs`. Expected at least one calibrated output"),
        (lambda c: c["target"].update(value=1.5), "`calibration.target`. Expected value and delta in (0, 1)"),
        (lambda c: c["data"].pop("sha256"), "field `calibration.data.sha256` is missing"),
    ],
)  # fmt: skip
def test_a_bad_calibration_field_is_named(calibrated_repository: Path, change: Any, message: str) -> None:
    record = _calibrated_record(calibrated_repository)
    assert Manifest.from_json(record).calibration is not None
    change(record["calibration"])
    with pytest.raises(InvalidArgument) as caught:
        Manifest.from_json(record)
    assert message in str(caught.value)


def test_conformal_scores_must_match_the_output(calibrated_repository: Path) -> None:
    record: dict[str, Any] = json.loads((calibrated_repository / "diabetes" / "2" / "manifest.json").read_text())
    conformal = record["calibration"]["outputs"][0]["conformal"]
    conformal["sorted_scores"].append(conformal["sorted_scores"][0])
    with pytest.raises(InvalidArgument, match=r"sorted_scores`. Expected 1 lists, one per target. Received: 2"):
        Manifest.from_json(record)
    conformal["sorted_scores"] = [[0.5, 0.2]]
    with pytest.raises(InvalidArgument, match="Expected ascending scores >= 0"):
        Manifest.from_json(record)
