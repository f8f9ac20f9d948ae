"""Graphs for devices: stable names and signatures in every graph, mc_summary's verification (shown able to
fail), static shapes in the manifest, observation noise inside the summary, and the CLI's errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import Manifest
from tests.helpers import REPO, run_cli

MODELS = ("digits", "lstm", "cnn", "regression")


def graph_files(manifest: Manifest) -> list[tuple[str, list[str], list[str]]]:
    """(file, input names, output names) of every graph the manifest lists."""
    listed = [(s.file, [t.name for t in s.inputs], [t.name for t in s.outputs]) for s in manifest.graphs.values()]
    return listed + [(d.file, [t.name for t in d.inputs], [t.name for t in d.outputs]) for d in manifest.device_graphs]


@pytest.mark.parametrize("model", MODELS)
def test_every_graph_has_the_manifests_names_as_tensor_and_signature_names(device_repository: Path,
                                                                          model: str) -> None:  # fmt: skip
    folder = device_repository / model / "1"
    manifest = Manifest.load(folder)
    files = graph_files(manifest)
    assert len(files) == 3 + 1 + 4  # server graphs, mc_summary, one static shape of four graphs
    for file, inputs, outputs in files:
        interpreter = Interpreter(model_path=str(folder / file))
        signature = interpreter.get_signature_list()
        assert list(signature) == ["serving_default"], file
        assert sorted(signature["serving_default"]["inputs"]) == sorted(inputs), file
        assert sorted(signature["serving_default"]["outputs"]) == sorted(outputs), file
        assert [d["name"] for d in interpreter.get_input_details()] == inputs, file
        assert sorted(d["name"] for d in interpreter.get_output_details()) == sorted(outputs), file
        assert not any(":" in n or n.startswith("serving_default") or n.startswith("Identity")
                       for n in inputs + outputs), file  # fmt: skip
        runner = interpreter.get_signature_runner("serving_default")
        assert sorted(runner.get_output_details()) == sorted(outputs), file


def test_static_graphs_have_fixed_shapes_and_are_listed_with_them(device_repository: Path) -> None:
    folder = device_repository / "digits" / "1"
    manifest = Manifest.load(folder)
    shapes = {(d.graph, d.batch, d.samples): d for d in manifest.device_graphs}
    assert set(shapes) == {("mc_summary", None, None), ("deterministic", 1, None), ("mc", 1, 100),
                           ("mc_masked", 1, 100), ("mc_summary", 1, 100)}  # fmt: skip
    for (graph, batch, samples), spec in shapes.items():
        details = Interpreter(model_path=str(folder / spec.file)).get_input_details()
        dynamic = any(-1 in d["shape_signature"] for d in details)
        assert dynamic == (batch is None), spec.file
        assert [tuple(t.shape) for t in spec.inputs] == [tuple(d["shape_signature"]) for d in details]
        assert ("samples" in [t.name for t in spec.inputs]) == (graph in ("mc", "mc_summary") and samples is None)
    masked = shapes[("mc_masked", 1, 100)]
    assert [t.shape for t in masked.inputs] == [(1, 64), (100, 1, 64), (100, 1, 64)]
    assert Manifest.from_json(manifest.to_json()) == manifest
    record = json.loads((folder / "manifest.json").read_text())
    assert record["graphs"].keys() == {"deterministic", "mc", "mc_masked"}  # servers load these only
    checks = {(c["check"], c.get("graph")) for c in manifest.verification["checks"]}
    assert {("summary_arithmetic", "mc_summary"), ("summary_statistics", "mc_summary"),
            ("static_parity", "mc_masked.b1_t100"), ("static_parity", "deterministic.b1"),
            ("mc_mean", "mc.b1_t100"), ("summary_statistics", "mc_summary.b1_t100"),
            ("fresh_randomness", "mc.b1_t100")} <= checks  # fmt: skip


def test_the_summary_graph_carries_the_observation_noise(device_repository: Path) -> None:
    """Exported with tau = (4, 0.5): predictive_std^2 - std^2 is the noise variance 1/tau per output."""
    folder = device_repository / "regression" / "1"
    manifest = Manifest.load(folder)
    summary = next(d for d in manifest.device_graphs if d.graph == "mc_summary" and d.batch is None)
    graph = Graph(folder / summary.file)
    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    out = dict(zip(graph.output_names, graph.run({"x": x, "samples": np.array(50, np.int32)}), strict=True))
    assert sorted(out) == ["lower", "mean", "predictive_std", "std", "upper"]
    noise = out["predictive_std"].astype(np.float64) ** 2 - out["std"].astype(np.float64) ** 2
    np.testing.assert_allclose(noise, np.broadcast_to([0.25, 2.0], noise.shape), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["upper"] - out["mean"], 1.959964 * out["predictive_std"], rtol=1e-5)


def test_summary_arithmetic_passes_the_real_ops_and_fails_wrong_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    import tensorflow as tf

    from mcdrop.pipeline.export.graphs import summary
    from mcdrop.pipeline.export.verify import device

    rng = np.random.default_rng(1)
    logits = rng.standard_normal((40, 3, 5))
    probabilities = (np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)).astype(np.float32)
    regression = rng.standard_normal((40, 3, 2)).astype(np.float32) * 3 + 100  # a large mean: cancellation-prone
    outputs = [summary.OutputSummary("cls", "classification"), summary.OutputSummary("reg", "regression", (0.5, 2.0))]
    assert device.summary_arithmetic(outputs, [probabilities, regression])["passed"]

    real = summary.classification

    def natural_log_base_2(samples: tf.Tensor) -> list[tf.Tensor]:
        fields = real(samples)
        return [*fields[:5], fields[5] * 1.01, fields[6]]  # mutual information off by 1 %

    monkeypatch.setattr(summary, "classification", natural_log_base_2)
    check = device.summary_arithmetic(outputs, [probabilities, regression])
    assert not check["passed"] and "cls/mutual_information" in check["problems"][0]


def test_statistical_agreement_passes_equal_distributions_and_fails_a_shift() -> None:
    from mcdrop.pipeline.export.verify.device import REPLICATES, statistical_agreement

    rng = np.random.default_rng(2)
    a = {"mean": rng.normal(0.3, 0.02, (REPLICATES, 4, 10))}
    b = {"mean": rng.normal(0.3, 0.02, (REPLICATES, 4, 10))}
    assert statistical_agreement("s", "g", a, b, ["mean"])["passed"]
    shifted = {"mean": b["mean"] + 0.05}  # ~7 standard errors of the difference of means (0.007)
    check = statistical_agreement("s", "g", a, shifted, ["mean"])
    assert not check["passed"] and check["problems"][0].startswith("mean: means differ")


def test_device_shape_and_export_web_errors_exit_2(model_repository: Path, tmp_path: Path) -> None:
    bad = run_cli("export", "missing.keras", "--repository", str(tmp_path), "--name", "m", "--device-shape", "B=0,T=3")
    assert bad.returncode == 2
    assert "Invalid device shape 'B=0,T=3'. Expected B=<rows>,T=<samples>" in bad.stderr
    no_static = run_cli("export-web", str(model_repository / "digits" / "1"), str(tmp_path / "web"),
                        "--litertjs", str(tmp_path))  # fmt: skip
    assert no_static.returncode == 2
    assert "has no static-shape graphs with B=1" in no_static.stderr and "--device-shape B=1,T=" in no_static.stderr
    assert "Traceback" not in no_static.stderr


def test_mask_vectors_are_what_the_code_draws_and_the_javascript_reproduces_them(tmp_path: Path) -> None:
    from mcdrop.serving.models.mask_vectors import vectors

    committed = REPO / "docs" / "mask-vectors.json"
    assert json.loads(committed.read_text()) == vectors(), "regenerate: python -m mcdrop.serving.models.mask_vectors"
    node = shutil.which("node")
    if node is None:
        if os.environ.get("MCDROP_REQUIRE_BROWSER_TESTS") == "1":
            pytest.fail("node is not installed")
        pytest.skip("node is not installed (the browser test checks the JavaScript too)")
    script = Path(__file__).with_name("check_masks.mjs")
    masks = REPO / "pipeline" / "web" / "static" / "masks.js"
    done = subprocess.run([node, str(script), str(masks), str(committed)], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"cases": len(vectors()["cases"]), "mismatches": []}
    broken = tmp_path / "masks.js"
    broken.write_text(masks.read_text().replace("? 1 : 0", "? 0 : 1"))  # flags inverted: must be caught
    done = subprocess.run([node, str(script), str(broken), str(committed)], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert json.loads(done.stdout)["mismatches"]
