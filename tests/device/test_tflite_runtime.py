"""Every graph kind of the device test models on ``tflite-runtime`` 2.14 (2023; what many deployed apps still ship),
in a venv of its own: loads, resizes, runs; the fed-mask graphs give LiteRT 2.x's numbers for the same masks;
the in-graph random graphs draw fresh masks on every invoke."""

from __future__ import annotations

import json
import subprocess
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from mcdrop.serving.models.litert import Graph, dequantize, quantize
from mcdrop.serving.models.manifest import Manifest
from mcdrop.serving.models.masks import MaskStream
from tests.tool_venvs import TFLITE_RUNTIME

PROBE = Path(__file__).with_name("tflite_runtime_probe.py")
ROWS, SAMPLES = 2, 6


@pytest.fixture(scope="session")
def old_runtime() -> Path:
    """The venv's python (kept in the checkout like the deploy tools' venv: installed once)."""
    return TFLITE_RUNTIME.bin() / "python"


def feeds_for(manifest: Manifest, inputs: list[str], shape: dict[str, tuple[int, ...]], seed: int) -> dict:
    """Inputs of one graph: valid rows for every model input, seeded masks, ``samples``."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    specs = {spec.name: spec for spec in manifest.inputs}
    for name in inputs:
        if name in specs:
            feeds[name] = rng.uniform(0, 4, (shape["B"], *specs[name].row_shape)).astype(np.float32)
        elif name == "samples":
            feeds[name] = np.array(SAMPLES, np.int32)
    masks = MaskStream(manifest.dropout_layers, seed, shape["B"]).next(shape["T"])
    feeds.update({name: value for name, value in masks.items() if name in inputs})
    return feeds


def test_every_graph_kind_runs_on_tflite_runtime_2_14(device_repository: Path, old_runtime: Path,
                                                     tmp_path: Path) -> None:  # fmt: skip
    jobs, expected = [], {}
    for model in ("digits", "lstm", "cnn", "regression"):
        folder = device_repository / model / "1"
        manifest = Manifest.load(folder)
        graphs = [
            (g.value, spec.file, [t.name for t in spec.inputs], None, None, "float32")
            for g, spec in manifest.graphs.items()
        ]
        graphs += [(d.graph, d.file, [t.name for t in d.inputs], d.batch, d.samples, "float32")
                   for d in manifest.device_graphs]  # fmt: skip
        assert {g[0] for g in graphs} == {"deterministic", "mc", "mc_masked", "mc_summary"}, model
        for name, variant in manifest.variants.items():  # the full-integer graphs too (int8 kernels of 2023)
            made = [(g.value, spec.file, [t.name for t in spec.inputs], None, None, name)
                    for g, spec in variant.graphs.items()]  # fmt: skip
            made += [(d.graph, d.file, [t.name for t in d.inputs], d.batch, d.samples, name)
                     for d in variant.device_graphs]  # fmt: skip
            assert {g[0] for g in made} == {"deterministic", "mc", "mc_masked", "mc_summary"}, (model, name)
            graphs += made
        assert model not in ("digits", "cnn") or set(manifest.variants) == {"int8", "int8-io"}
        for graph, file, inputs, batch, samples, variant_name in graphs:
            shape = {"B": batch or ROWS, "T": samples or SAMPLES}
            feeds = feeds_for(manifest, inputs, shape, seed=len(jobs))
            current = Graph(folder / file)
            for name in list(feeds):  # an int8-io graph takes its input quantised: both runtimes get the same
                scale = current.input_quantization(name)
                if scale is not None:
                    feeds[name] = quantize(feeds[name], scale, np.dtype(np.int8))
            random = graph in ("mc", "mc_summary")
            np.savez(tmp_path / f"{len(jobs)}-in.npz", **feeds)
            jobs.append({"file": str(folder / file), "inputs": str(tmp_path / f"{len(jobs)}-in.npz"),
                         "outputs": str(tmp_path / f"{len(jobs)}-out.npz"), "invokes": 2 if random else 1})  # fmt: skip
            expected[len(jobs) - 1] = (model, file, random, current.output_names, current.run(feeds),
                                       current.output_quantization(), variant_name)  # fmt: skip
    (tmp_path / "job.json").write_text(json.dumps(jobs))
    probe = subprocess.run([str(old_runtime), str(PROBE), str(tmp_path / "job.json")], capture_output=True, text=True,
                           timeout=300, check=False)  # fmt: skip
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert json.loads(probe.stdout.splitlines()[-1])["tflite_runtime"] == "2.14.0"
    differences: dict[str, list[float]] = {"float32": [], "int8": []}
    for index, (model, file, random, names, outputs, scales, variant) in expected.items():
        old = np.load(jobs[index]["outputs"])
        for name, new, scale in zip(names, outputs, scales, strict=True):
            first = old[f"o0_{name}"] if scale is None else dequantize(old[f"o0_{name}"], scale)
            assert first.shape == new.shape and first.dtype == new.dtype, (model, file, name)
            if not random:  # the same masks, the same numbers (XNNPACK in both runtimes: float rounding may differ)
                if variant == "float32":
                    np.testing.assert_allclose(first, new, rtol=1e-5, atol=1e-6, err_msg=f"{model} {file} {name}")
                else:
                    # the int8 kernels of 2023 and of today round some requantisations differently: a step (1/256
                    # of a probability) here and there, compounding through the layers (measured: mean gap under a
                    # step, the largest 0.08 on these off-distribution rows).
                    gap = np.abs(first.astype(np.float64) - new)
                    assert gap.mean() <= 0.01 and gap.max() <= 0.1, (model, file, name, gap.mean(), gap.max())
                    differences["int8"].append(float(gap.max()))
                    continue
                differences["float32"].append(float(np.max(np.abs(first.astype(np.float64) - new), initial=0.0)))
        if random:  # fresh masks on every invoke: the samples (mc) or the MC mean (mc_summary) move
            moved = names[0]
            assert not np.array_equal(old[f"o0_{moved}"], old[f"o1_{moved}"]), (model, file, "same on two invokes")
    print(
        f"tflite-runtime 2.14: {len(jobs)} graphs ran; fed-mask and deterministic outputs differ from LiteRT "
        f"{version('ai-edge-litert')} by at most {max(differences['float32']):.3g} (float32), "
        f"{max(differences['int8']):.3g} (int8 variants)"
    )
