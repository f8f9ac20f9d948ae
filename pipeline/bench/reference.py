"""The benchmark's reference models, exported the way users export theirs, and their FLOP counts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.serving.models.manifest import Manifest

SAMPLES = 100


@dataclasses.dataclass
class Reference:
    name: str
    description: str
    model: Any
    input_shape: tuple[int, ...]
    manifest: Manifest
    all_rows: bool = True
    """Every row; else only Keras batched, mcdrop and the deterministic floor (T eager calls of a sequence
    model would take minutes and say nothing new)."""

    def inputs(self, batch: int) -> np.ndarray:
        rng = np.random.default_rng(batch)
        token_range = self.manifest.input.integer_range
        if token_range is not None:
            return rng.integers(token_range[0], token_range[1] + 1, size=(batch, *self.input_shape)).astype(np.float32)
        return rng.normal(size=(batch, *self.input_shape)).astype(np.float32)


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
    from mcdrop.pipeline.training.config import TrainConfig
    from mcdrop.pipeline.training.data import load_dataset
    from mcdrop.pipeline.training.models import build_models

    config = TrainConfig(out="-", architecture="cnn", dataset="digits").validate()
    dataset = load_dataset("digits", task="auto", target=[], val_fraction=0.2, seed=0)
    import keras

    keras.utils.set_random_seed(0)
    return build_models(config, dataset)[0]


def sequence_lstm() -> Any:
    """LSTM(64, dropout 0.2, recurrent dropout 0.2) over 32 steps of 16 features, softmax over 10; random weights."""
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((32, 16)),
            keras.layers.LSTM(64, dropout=0.2, recurrent_dropout=0.2),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="lstm_32x16_64",
    )


def transformer_block() -> Any:
    """Tokens (vocabulary 1000, length 32) → Embedding 64 → one encoder block (4 heads, attention dropout 0.1,
    feed-forward 128 with dropout 0.1, LayerNorm) → mean over positions → softmax over 4; random weights."""
    import keras

    keras.utils.set_random_seed(0)
    tokens = keras.Input((32,), dtype="int32")
    h = keras.layers.Embedding(1000, 64)(tokens)
    attended = keras.layers.MultiHeadAttention(4, 16, dropout=0.1)(h, h)
    h = keras.layers.LayerNormalization()(h + attended)
    ff = keras.layers.Dense(128, activation="relu")(h)
    ff = keras.layers.Dropout(0.1)(keras.layers.Dense(64)(ff))
    h = keras.layers.LayerNormalization()(h + ff)
    outputs = keras.layers.Dense(4, activation="softmax")(keras.layers.GlobalAveragePooling1D()(h))
    return keras.Model(tokens, outputs, name="transformer_block")


def export_references(repository: Path, only: tuple[str, ...] | None = None) -> list[Reference]:
    """Export the reference models (``only`` these names, if given) into ``repository`` (with the usual
    verification)."""
    from mcdrop.pipeline.export.exporter import ExportOptions, export

    references = []
    for name, description, build, all_rows in (
        ("mlp", "MLP 784-256-256-10, dropout 0.2/0.5", classic_mlp, True),
        ("cnn", "digits CNN, spatial dropout + dropout", digits_cnn, True),
        ("lstm", "LSTM 64 units over 32x16, input + recurrent dropout 0.2", sequence_lstm, False),
        ("transformer", "Transformer encoder block on 32 tokens, attention + feed-forward dropout", transformer_block,
         False),
    ):  # fmt: skip
        if only is not None and name not in only:
            continue
        model = build()
        path = repository.parent / f"{name}.keras"
        model.save(path)
        _, manifest = export(ExportOptions(model_path=path, repository=repository, name=name, samples=SAMPLES))
        references.append(Reference(name, description, model, tuple(model.inputs[0].shape[1:]), manifest, all_rows))
    return references


def flops(manifest: Manifest, batch: int, samples: int) -> float:
    """FLOPs of one MC estimate with prefix caching (the manifest's count, which the server's cost limit uses)."""
    assert manifest.cost is not None  # every export since M2 records it
    return manifest.cost.flops(batch, samples)


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
