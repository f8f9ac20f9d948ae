"""Running exported graphs for evaluation: the deployed artifacts, through LiteRT, not Keras."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import Manifest
from mcdrop.serving.models.masks import MaskStream

ROWS_PER_INVOKE = 200_000  # samples x rows per mc_masked invoke: bounds memory at T = 10,000


class Exported:
    """One exported model version, for batch evaluation."""

    def __init__(self, version_dir: Path, threads: int = 2) -> None:
        self.manifest = Manifest.load(version_dir)
        self.deterministic = Graph(version_dir / "deterministic.tflite", num_threads=threads)
        self.masked = Graph(version_dir / "mc_masked.tflite", num_threads=threads)
        self.layers = self.manifest.dropout_layers

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Deterministic (weight-scaling) outputs ``[N, ...]``."""
        return self.deterministic.run({"x": np.ascontiguousarray(x, np.float32)})[0].copy()

    def sample(self, x: np.ndarray, samples: int, seed: int) -> np.ndarray:
        """Monte-Carlo outputs ``[T, N, ...]`` from mc_masked.tflite with host masks from ``seed``."""
        x = np.ascontiguousarray(x, np.float32)
        chunk = max(1, ROWS_PER_INVOKE // max(1, len(x)))
        stream = MaskStream(self.layers, seed, len(x))
        parts, drawn = [], 0
        while drawn < samples:
            size = min(chunk, samples - drawn)
            parts.append(self.masked.run({"x": x, **stream.next(size)})[0].copy())
            drawn += size
        return np.concatenate(parts)
