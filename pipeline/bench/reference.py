"""The benchmark's reference models, exported the way users export theirs, and their FLOP counts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

SAMPLES = 100


@dataclasses.dataclass
class Reference:
    name: str
    description: str
    model: Any
    input_shape: tuple[int, ...]
    manifest: dict[str, Any]

    def inputs(self, batch: int) -> np.ndarray:
        return np.random.default_rng(batch).normal(size=(batch, *self.input_shape)).astype(np.float32)


def classic_mlp() -> Any:
    """784-256-256-10 with dropout 0.2 and 0.5 after the hidden layers (Srivastava et al.); random weights."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((784,)),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dropout(0.5),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="mlp_784_256_256_10",
    )


def digits_cnn() -> Any:
    """mcdrop's default CNN on digits (conv 16/32 + spatial dropout 0.1, dense 256/256 + dropout 0.2/0.5)."""
    from mcdrop.pipeline.config import TrainConfig
    from mcdrop.pipeline.data import load_dataset
    from mcdrop.pipeline.models import build_models

    config = TrainConfig(out="-", architecture="cnn", dataset="digits").validate()
    dataset = load_dataset("digits", task="auto", target=[], val_fraction=0.2, seed=0)
    import keras

    keras.utils.set_random_seed(0)
    return build_models(config, dataset)[0]


def export_references(repository: Path) -> list[Reference]:
    """Export both models into ``repository`` (with the usual verification)."""
    from mcdrop.pipeline.export.exporter import ExportOptions, export

    references = []
    for name, description, build in (
        ("mlp", "MLP 784-256-256-10, dropout 0.2/0.5", classic_mlp),
        ("cnn", "digits CNN, spatial dropout + dropout", digits_cnn),
    ):
        model = build()
        path = repository.parent / f"{name}.keras"
        model.save(path)
        _, manifest = export(ExportOptions(model_path=path, repository=repository, name=name, samples=SAMPLES))
        references.append(Reference(name, description, model, tuple(model.inputs[0].shape[1:]), manifest))
    return references


def flops(manifest: dict[str, Any], batch: int, samples: int) -> float:
    """FLOPs of one MC estimate with prefix caching (the manifest's count, which the server's cost limit uses)."""
    from mcdrop.serving.manifest import request_flops

    return request_flops(manifest["cost"], batch, samples)


def sgemm_gflops(repeats: int = 30) -> float:
    """Best float32 matrix-multiply rate of one thread on this machine, in GFLOP/s."""
    import time

    from threadpoolctl import threadpool_limits

    best = 0.0
    with threadpool_limits(1):
        for n in (256, 512, 1024):
            a = np.random.default_rng(0).random((n, n), dtype=np.float32)
            b = np.random.default_rng(1).random((n, n), dtype=np.float32)
            a @ b
            for _ in range(repeats if n < 1024 else 5):
                started = time.perf_counter()
                a @ b
                best = max(best, 2.0 * n**3 / (time.perf_counter() - started) / 1e9)
    return best
