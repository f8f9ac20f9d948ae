"""Models exported with graphs for devices: the digits classifier (the browser's model), an LSTM, a CNN with
BatchNorm and spatial dropout, and a vector regression with Gaussian dropout and observation noise. The digits
classifier and the CNN also have full-integer variants (``int8``, ``int8-io``), quantised on real rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workers import built_once

DIGITS_SHAPE = "B=1,T=100"
"""The browser's graphs: one digit, T = 100 samples per invoke."""
SMALL_SHAPE = "B=2,T=8"
VARIANTS = ("int8", "int8-io")
"""The quantised variants of the digits classifier and the CNN."""


@pytest.fixture(scope="session")
def device_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("keras")
    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    from mcdrop.pipeline.export.convert.shapes import parse_shape
    from mcdrop.pipeline.export.exporter import ExportOptions, export
    from mcdrop.pipeline.training.config import TrainConfig
    from mcdrop.pipeline.training.loop import train
    from tests.pipeline.export import models

    def build(root: Path) -> None:
        repo = root / "repo"
        digits = root / "digits"
        train(TrainConfig(out=str(digits), dataset="digits", hidden=[64, 64], dropout=[0.2, 0.5], epochs=15, seed=1,
                          quiet=True).validate())  # fmt: skip
        digits_rows, cnn_rows = root / "digits-rows.npz", root / "cnn-rows.npz"
        np.savez(digits_rows, x=load_digits().data[:400].astype(np.float32))
        np.savez(cnn_rows, x=np.random.default_rng(0).uniform(0, 4, (64, 8, 8, 3)).astype(np.float32))
        exports = {
            "digits": (digits / "model.keras", DIGITS_SHAPE, {"quantize": VARIANTS, "verify_data": digits_rows}),
            "lstm": (models.sequence_model(root / "lstm.keras", keras.layers.LSTM(8, dropout=0.2,
                                                                                   recurrent_dropout=0.3)),
                     SMALL_SHAPE, {}),
            "cnn": (models.functional_cnn(root / "cnn.keras"), SMALL_SHAPE, {"quantize": VARIANTS,
                                                                             "verify_data": cnn_rows}),
            "regression": (models.regression_with_skip(root / "regression.keras"), SMALL_SHAPE,
                           {"noise_precision": (4.0, 0.5)}),
        }  # fmt: skip
        for name, (path, shape, extra) in exports.items():
            export(ExportOptions(model_path=path, repository=repo, name=name, device_shapes=(parse_shape(shape),),
                                 **extra))  # type: ignore[arg-type]  # fmt: skip

    return built_once(tmp_path_factory, "device", build) / "repo"
