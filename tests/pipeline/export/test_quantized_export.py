"""Real rows in, int8 out: verification on the calibration rows, full-integer variants of every graph, their checks
and their agreement with float32, refusals that say what to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mcdrop.pipeline.export.convert import tflite
from mcdrop.pipeline.export.errors import ExportError
from mcdrop.pipeline.export.exporter import ExportOptions, export
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import Manifest, sha256_file
from tests.helpers import REPO


@pytest.fixture(scope="module")
def manifest(variant_repository: Path) -> Manifest:
    return Manifest.load(variant_repository / "digits" / "1")


def test_the_graphs_are_verified_and_fingerprinted_on_the_calibration_rows(
    manifest: Manifest, calibration_files: dict[str, Path]
) -> None:
    inputs = manifest.verification["inputs"]
    path = calibration_files["digits"]
    rows = np.load(path)["x"]
    assert inputs == {"source": "calibration-data", "file": path.name, "sha256": sha256_file(path),
                      "rows": len(rows), "verification_rows": 4}  # fmt: skip
    assert manifest.fingerprint is not None
    fingerprinted = np.asarray(manifest.fingerprint.x, np.float32)
    # evenly spaced rows of the file, first and last included: real digits, not drawn numbers
    np.testing.assert_array_equal(fingerprinted[0], rows[0])
    np.testing.assert_array_equal(fingerprinted[-1], rows[-1])
    assert all(any(np.array_equal(row, real) for real in rows) for row in fingerprinted)


def test_full_integer_graphs_compute_in_int8_except_the_random_draws(
    manifest: Manifest, variant_repository: Path
) -> None:
    version = variant_repository / "digits" / "1"
    for name in ("int8", "int8-io"):
        variant = manifest.variants[name]
        assert set(variant.graphs) == {"deterministic", "mc", "mc_masked"}
        assert variant.graphs["deterministic"].float_ops == ()  # every op of the one-pass graph is integer
        assert "RANDOM_UNIFORM" in variant.graphs["mc"].float_ops
        assert "FULLY_CONNECTED" not in variant.graphs["mc"].float_ops
        assert [g.graph for g in variant.device_graphs] == ["mc_summary"] and not variant.unsupported
        graph = Graph(version / variant.graphs["deterministic"].file)
        kernels = [op for op in graph.op_details() if op["op_name"] == "FULLY_CONNECTED"]
        dtypes = {d["index"]: d["dtype"] for d in graph._interpreter.get_tensor_details()}
        assert kernels and all(dtypes[op["inputs"][1]] == np.int8 for op in kernels)  # int8 weights
        assert variant.representative["rows"] == manifest.verification["inputs"]["rows"]
    io = manifest.variants["int8-io"].graphs["deterministic"]
    assert io.inputs[0].dtype == "int8" and io.inputs[0].quantization is not None
    assert io.outputs[0].dtype == "int8" and io.outputs[0].quantization is not None
    assert manifest.variants["int8"].graphs["deterministic"].inputs[0].dtype == "float32"
    dynamic = manifest.variants["dynamic-int8"].graphs["mc"]
    assert dynamic.float_ops == () and manifest.variants["dynamic-int8"].representative == {}


def test_each_variant_keeps_its_randomness_and_records_its_agreement(manifest: Manifest) -> None:
    for name, variant in manifest.variants.items():
        checks = {c["check"]: c for c in variant.checks}
        assert checks["fresh_randomness"]["passed"] and checks["drop_fraction"]["passed"]
        rates = [site["rate"] for site in checks["drop_fraction"]["sites"]]
        observed = [site["observed"] for site in checks["drop_fraction"]["sites"]]
        np.testing.assert_allclose(observed, rates, atol=0.02)
        found: dict[str, Any] = variant.agreement["outputs"]["y"]
        assert variant.agreement["rows"] == manifest.verification["inputs"]["rows"]
        assert found["top1_agreement"] >= 0.95, name
        assert found["mutual_information_spearman"] >= 0.8, name
        assert found["abstain_agreement"] >= 0.9, name  # the version is calibrated: decisions compared
        assert abs(found["accuracy"][name] - found["accuracy"]["float32"]) <= 0.03, name
        assert abs(found["ood_auroc"][name] - found["ood_auroc"]["float32"]) <= 0.03, name
        assert found["ood_auroc"]["float32"] > 0.8  # noise in the rows' range is told apart by MI


def test_full_integer_quantization_needs_real_rows(tmp_path: Path) -> None:
    options = ExportOptions(model_path=tmp_path / "m.keras", repository=tmp_path / "repo", name="m", quantize=("int8",))
    with pytest.raises(InvalidArgument, match=r"calibrates its int8 ranges on real rows.*--verify-data\) FILE"):
        options.check()
    cli = subprocess.run([sys.executable, "-m", "mcdrop.serving.cli", "export", str(tmp_path / "m.keras"), "--repo",
                          str(tmp_path / "repo"), "--name", "m", "--quantize", "int8-io"],
                         capture_output=True, text=True, cwd=REPO, timeout=120, check=False)  # fmt: skip
    assert cli.returncode == 2, cli.stderr
    assert "calibrates its int8 ranges on real rows" in cli.stderr and "Traceback" not in cli.stderr
    with pytest.raises(InvalidArgument, match="names a variant twice"):
        ExportOptions(model_path=tmp_path / "m.keras", repository=tmp_path, name="m",
                      quantize=("float16", "float16")).check()  # fmt: skip


def test_verify_data_without_labels_and_a_graph_the_converter_refuses(
    model_repository: Path, calibration_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--verify-data takes rows without labels; a device graph that cannot be quantised is named with the
    converter's reason (the rest of the variant is made), a server graph stops the export with it."""
    rows = tmp_path / "rows.npz"
    np.savez(rows, x=np.load(calibration_files["digits"])["x"][:50])
    model = model_repository.parent / "digits" / "model.keras"
    convert = tflite.to_tflite
    refused = "TFLite conversion with builtin ops only failed: SOFTMAX has no int8 kernel here (test)"

    def refuse_summary(function: Any, *args: Any, **kwargs: Any) -> bytes:
        if args[1:2] == ("int8",) and "summary" in str(function.name):
            raise ExportError(refused)
        return convert(function, *args, **kwargs)

    monkeypatch.setattr(tflite, "to_tflite", refuse_summary)
    options = ExportOptions(model_path=model, repository=tmp_path / "repo", name="digits", quantize=("int8",),
                            verify_data=rows, moments=False)  # fmt: skip
    _, made = export(options)
    assert made.verification["inputs"]["source"] == "verify-data"
    variant = made.variants["int8"]
    assert variant.unsupported == {"mc_summary.int8.tflite": refused}
    assert "accuracy" not in variant.agreement["outputs"]["y"]  # no labels: agreement only
    assert variant.agreement["rows"] == 50

    def refuse_mc(function: Any, *args: Any, **kwargs: Any) -> bytes:
        if args[1:2] == ("int8",) and "mc_masked" in str(function.name):
            raise ExportError(refused)
        return convert(function, *args, **kwargs)

    monkeypatch.setattr(tflite, "to_tflite", refuse_mc)
    with pytest.raises(ExportError, match=r"The int8 variant of mc_masked.tflite cannot be made: TFLite conversion"):
        export(options)
    assert sorted(p.name for p in (tmp_path / "repo" / "digits").iterdir()) == ["1"]  # nothing half-published
