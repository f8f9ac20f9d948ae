"""Write a static page that classifies (or regresses) an input in the browser, with its uncertainty computed on
the device: the model's static-shape ``mc_summary`` and ``mc_masked`` graphs (``mcdrop export --device-shape
B=1,T=…``), LiteRT.js (npm ``@litertjs/core``, WebAssembly) and the JavaScript mask reference.

Layout of OUT_DIR (serve it over HTTP: browsers do not fetch WebAssembly from ``file://``)::

    index.html  app.js  masks.js
    model/model.json                 what the page needs: input, output, dropout sites, graph files, T
    model/manifest.json              the version's manifest, as exported
    model/mc_summary.b1_t100.tflite  model/mc_masked.b1_t100.tflite
    vendor/@litertjs/core/{dist,wasm}/  vendor/@litertjs/wasm-utils/dist/
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import math
import shutil
import subprocess
from pathlib import Path
from typing import Any

from mcdrop.serving.errors import InvalidArgument, NotFound
from mcdrop.serving.models.manifest import FLOAT32, DeviceGraph, GraphName, Manifest, Task

__all__ = ["LITERTJS", "WebExport", "export_web", "litertjs_modules"]

LITERTJS = "@litertjs/core@2.5.3"
"""The LiteRT.js release the page is tested with (tests/device/test_browser.py)."""
STATIC = Path(__file__).with_name("static")
DIGITS_RANGE = (0.0, 16.0)
"""scikit-learn's digits: 8x8 pixels in 0..16."""


@dataclasses.dataclass(frozen=True)
class WebExport:
    out: Path
    samples: int
    graphs: dict[str, str]
    bytes: int


def export_web(
    version_dir: Path,
    out: Path,
    *,
    modules: Path,
    input_range: tuple[float, float] | None = None,
    mi_threshold: float = 0.25,
    variant: str = FLOAT32,
) -> WebExport:
    """Write the page for the model version in ``version_dir`` into ``out`` (created; must be empty or absent).

    Args:
        modules: a ``node_modules`` folder holding ``@litertjs/core`` and ``@litertjs/wasm-utils``
            (``litertjs_modules``).
        input_range: the drawing pad's value range (default: 0..16 for the bundled digits, else 0..1).
        mi_threshold: mutual information (nats) above which the page says the model does not know.
        variant: the exported graphs the page runs: float32 or a quantised variant (``mcdrop export --quantize``)
            whose tensors LiteRT.js can hold (not ``int8-io``: it has no int8 tensors).

    Raises:
        NotFound: no manifest, or LiteRT.js missing from ``modules``.
        InvalidArgument: the model has no static graphs with B=1 (of ``variant``), or several inputs or outputs, a
            dense (per-pixel) output, an unexported variant, or ``out`` is not empty.
    """
    manifest = Manifest.load(version_dir)
    if not manifest.single:
        raise InvalidArgument(
            f"export-web shows one input and one output. Model {manifest.name!r} has inputs "
            f"{[i.name for i in manifest.inputs]} and outputs {[o.name for o in manifest.outputs]}."
        )
    output = manifest.output
    if len(output.row_shape) > 1:  # [H, W, C] classes or [H, W] values per input row
        raise InvalidArgument(
            f"Model {manifest.name!r} has a dense output {output.name!r} {list(output.row_shape)} (a value per "
            "pixel), and the page shows one class vector or a few values per input: it has no uncertainty map yet. "
            "Expected a model with one answer per input; for per-pixel maps ask the server (mcdrop predict --out "
            "MAPS.npz writes them all)."
        )
    device_graphs = _variant_graphs(manifest, variant)
    chosen = _static_graphs(manifest, version_dir, device_graphs, variant)
    _check_tensors(device_graphs, chosen, variant)
    if out.exists() and any(out.iterdir()):
        raise InvalidArgument(f"{out} is not empty. Expected a new or empty folder for the page.")
    for package in ("core", "wasm-utils"):
        if not (modules / "@litertjs" / package / "dist" / "index.js").is_file():
            raise NotFound(f"LiteRT.js not found: {modules}/@litertjs/{package}/dist/index.js is missing.")
    (out / "model").mkdir(parents=True, exist_ok=True)
    for name in ("index.html", "app.js", "masks.js"):
        shutil.copyfile(STATIC / name, out / name)
    for file in chosen.values():
        shutil.copyfile(version_dir / file, out / "model" / file)
    shutil.copyfile(version_dir / "manifest.json", out / "model" / "manifest.json")
    samples = next(g.samples for g in device_graphs if g.file == chosen["mc_summary"])
    config = _page_config(manifest, version_dir, chosen, samples or 0, input_range, mi_threshold)
    config["variant"] = variant
    (out / "model" / "model.json").write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    vendor = out / "vendor" / "@litertjs"
    shutil.copytree(modules / "@litertjs" / "core" / "dist", vendor / "core" / "dist")
    shutil.copytree(modules / "@litertjs" / "core" / "wasm", vendor / "core" / "wasm")
    shutil.copytree(modules / "@litertjs" / "wasm-utils" / "dist", vendor / "wasm-utils" / "dist")
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    return WebExport(out, samples or 0, chosen, size)


def _variant_graphs(manifest: Manifest, variant: str) -> tuple[DeviceGraph, ...]:
    """The device graphs of ``variant`` (float32's are the manifest's own)."""
    if variant == FLOAT32:
        return manifest.device_graphs
    found = manifest.variants.get(variant)
    if found is None:
        exported = ", ".join([FLOAT32, *manifest.variants])
        raise InvalidArgument(f"Model {manifest.name!r} has no variant {variant!r}. Expected one of {exported} (the "
                              f"variants it was exported with; add one with mcdrop export --quantize).")  # fmt: skip
    return found.device_graphs


def _check_tensors(graphs: tuple[DeviceGraph, ...], chosen: dict[str, str], variant: str) -> None:
    """LiteRT.js (2.5) holds no int8 tensors: it refuses them with 'Element type INT8 is not supported'."""
    quantized = sorted({t.name for g in graphs if g.file in chosen.values() for t in (*g.inputs, *g.outputs)
                        if t.quantization is not None})  # fmt: skip
    if quantized:
        raise InvalidArgument(
            f"Variant {variant!r} has int8 input or output tensors ({', '.join(quantized)}), and LiteRT.js "
            f"({LITERTJS}) has no int8 tensors: the browser refuses them ('Element type INT8 is not supported'). "
            "Expected --variant int8 (int8 inside, float32 input and output), or float32."
        )


def _static_graphs(
    manifest: Manifest, version_dir: Path, graphs: tuple[DeviceGraph, ...], variant: str = FLOAT32
) -> dict[str, str]:
    """The B=1 ``mc_summary`` and ``mc_masked`` graphs of one T (the largest exported)."""
    by_samples: dict[int, dict[str, str]] = {}
    for graph in graphs:
        if graph.batch == 1 and graph.samples and graph.graph in (GraphName.MC_SUMMARY, GraphName.MC_MASKED):
            by_samples.setdefault(graph.samples, {})[graph.graph] = graph.file
    complete = {t: files for t, files in by_samples.items() if len(files) == 2}
    if not complete and variant != FLOAT32:
        unsupported = manifest.variants[variant].unsupported
        reasons = "; ".join(f"{file}: {reason}" for file, reason in unsupported.items()) or "none were exported"
        raise InvalidArgument(f"Variant {variant!r} of model {manifest.name!r} has no static-shape graphs with B=1 "
                              f"to run in the browser ({reasons}). Expected a version exported with --device-shape "
                              f"B=1,T=<samples> and --quantize {variant}, or --variant float32.")  # fmt: skip
    if not complete:
        raise InvalidArgument(
            f"Model {manifest.name!r} in {version_dir} has no static-shape graphs with B=1 (LiteRT.js cannot run "
            "dynamic shapes). Expected a version exported with --device-shape B=1,T=<samples>, e.g. "
            "mcdrop export MODEL.keras --repository REPO --name NAME --device-shape B=1,T=100."
        )
    return complete[max(complete)]


def _page_config(
    manifest: Manifest,
    version_dir: Path,
    graphs: dict[str, str],
    samples: int,
    input_range: tuple[float, float] | None,
    mi_threshold: float,
) -> dict[str, Any]:
    spec, output = manifest.input, manifest.output
    features = math.prod(spec.row_shape)
    side = math.isqrt(features)
    image = [side, side] if side * side == features and features >= 16 else None
    names = spec.feature_names or ()
    digits = features == 64 and len(names) == 64 and all(n.startswith("pixel_") for n in names)
    low, high = input_range or (DIGITS_RANGE if digits else (0.0, 1.0))
    classes = output.row_shape[-1] if output.row_shape else 1
    labels = list(output.class_labels or [str(i) for i in range(classes)])
    return {
        "name": manifest.name,
        "version": manifest.version or (int(version_dir.name) if version_dir.name.isdigit() else 1),
        "samples": samples,
        "graphs": graphs,
        "input": {"name": spec.name, "row_shape": list(spec.row_shape), "range": [low, high], "image": image},
        "output": {"name": output.name, "task": output.task.value,
                   "labels": labels if output.task == Task.CLASSIFICATION else None},
        "sites": [{"feed_name": d.feed_name, "kind": d.kind.value, "rate": d.rate, "noise_shape": list(d.noise_shape)}
                  for d in manifest.dropout_layers],
        "mi_threshold": mi_threshold,
    }  # fmt: skip


def litertjs_modules(cache: Path) -> Path:
    """A ``node_modules`` folder with ``LITERTJS``: installed once into ``cache`` with npm (from the npm registry).

    Raises:
        NotFound: npm is not installed.
        InvalidArgument: npm failed (its last line is in the message).
    """
    modules = cache / f"litertjs-{LITERTJS.rsplit('@', 1)[1]}" / "node_modules"
    if _installed(modules):
        return modules
    npm = shutil.which("npm")
    if npm is None:
        raise NotFound("export-web needs LiteRT.js: install npm (Node.js), or pass --litertjs NODE_MODULES.")
    prefix = modules.parent
    prefix.mkdir(parents=True, exist_ok=True)
    with (cache / f"{prefix.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two exports sharing a cache: one installs, the other waits and reuses
        if _installed(modules):
            return modules
        done = subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--no-save",
                               LITERTJS], capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise InvalidArgument(f"npm install {LITERTJS} failed: {last}")
    return modules


def _installed(modules: Path) -> bool:
    return (modules / "@litertjs" / "core" / "dist" / "index.js").is_file()
