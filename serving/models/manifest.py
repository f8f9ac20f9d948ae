"""The model-version manifest: what an export promises and a server checks.

``REPO/NAME/VERSION/manifest.json`` is written by ``mcdrop export`` and read
by the server. Everything a server needs to run a version without TensorFlow is
here: task, tensor names/shapes/dtypes, dropout layers and the shapes of their
masks, class labels, and the sha256 of every file (checked before serving).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

from mcdrop.serving.errors import InvalidArgument, NotFound

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
GRAPH_FILES = {"deterministic": "deterministic.tflite", "mc": "mc.tflite", "mc_masked": "mc_masked.tflite"}


@dataclasses.dataclass(frozen=True)
class DropoutSpec:
    """What a server needs to draw host-side masks for one dropout layer of a manifest."""

    name: str
    kind: str
    """``bernoulli`` (uint8 keep flags) or ``gaussian`` (float32 standard-normal noise)."""
    rate: float
    noise_shape: tuple[int, ...]
    """One row's mask shape, without the batch dimension."""
    feed_name: str
    """The mask's input name in ``mc_masked.tflite``."""


def dropout_specs(manifest: dict[str, Any]) -> list[DropoutSpec]:
    """The manifest's dropout layers, in call order."""
    return [
        DropoutSpec(d["name"], d["kind"], float(d["rate"]), tuple(d["noise_shape"]), d["masked_input"])
        for d in manifest["dropout_layers"]
    ]


def request_flops(cost: dict[str, float], batch: int, samples: int) -> float:
    """FLOPs of one Monte-Carlo estimate from the manifest's ``cost`` (per input row): the prefix before the first
    dropout layer runs once per row, the rest once per row and sample."""
    return batch * cost["prefix"] + batch * samples * cost["per_sample"]


def graph_file(graph: str, quantization: str | None = None) -> str:
    """File name of a graph: ``mc.tflite``, or ``mc.float16.tflite`` for a quantised variant."""
    stem = GRAPH_FILES[graph].removesuffix(".tflite")
    return f"{stem}.{quantization}.tflite" if quantization else f"{stem}.tflite"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load(version_dir: Path) -> dict[str, Any]:
    """Read and sanity-check ``version_dir/manifest.json``.

    Raises:
        NotFound: there is no manifest.
        InvalidArgument: it is not valid JSON or not a schema this version understands.
    """
    path = version_dir / MANIFEST
    if not path.is_file():
        raise NotFound(f"No {MANIFEST} in {version_dir}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("schema_version") != SCHEMA_VERSION:
        found = manifest.get("schema_version") if isinstance(manifest, dict) else type(manifest).__name__
        raise InvalidArgument(f"{path} has schema_version {found!r}. Expected {SCHEMA_VERSION}.")
    return manifest


def read_verified(version_dir: Path, name: str, manifest: dict[str, Any]) -> bytes:
    """The bytes of ``name``, checked against the manifest's sha256.

    Raises:
        InvalidArgument: the file is not listed, missing, or its digest differs.
    """
    expected = manifest.get("files", {}).get(name)
    if expected is None:
        raise InvalidArgument(f"{name} is not listed in the manifest of {version_dir}.")
    path = version_dir / name
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise InvalidArgument(f"{path} is listed in the manifest but missing.") from None
    actual = hashlib.sha256(content).hexdigest()
    if actual != expected:
        raise InvalidArgument(f"{path} has sha256 {actual[:12]}…. Expected {expected[:12]}… (from the manifest).")
    return content
