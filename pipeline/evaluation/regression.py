"""The regression suite: do the intervals a served ``mcdrop train`` model gives cover held-out targets?

Per dataset: hold out test rows (diabetes: a seeded 20 %; a UCI dataset: its split 0 test rows),
train with the training stage on the rest (its own validation split estimates the observation
noise tau), export, and score the held-out rows through ``mc_masked.tflite`` with the noise the
manifest records — what the server answers for the same rows. Coverage of the predictive interval
(``lower``/``upper``) is reported beside that of the interval of the mean (``mean_lower``/``mean_upper``),
which is all the server gave before it knew tau.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.pipeline.evaluation import uci
from mcdrop.pipeline.evaluation.graphs import Exported
from mcdrop.serving.core import uncertainty

SAMPLES = 1000
HIDDEN, DROPOUT = [64, 64], [0.1]  # the configuration M2.6's report was measured with
HELD_OUT = 0.2
DEFAULT_DATASETS = ("diabetes", *uci.available_datasets(uci.BUNDLED))


def run_regression(
    workdir: Path,
    *,
    datasets: list[str] | None = None,
    seed: int = 0,
    samples: int = SAMPLES,
    epochs: int = 40,
    step: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    results = []
    for name in datasets or DEFAULT_DATASETS:
        step(f"{name}: train, export, score the held-out rows")
        results.append(_one(name, workdir / name, seed=seed, samples=samples, epochs=epochs))
    return {"datasets": results, "samples": samples, "hidden": HIDDEN, "dropout": DROPOUT}


def _rows(name: str, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``x_fit, y_fit, x_test, y_test`` (raw units)."""
    if name == "diabetes":
        from sklearn.datasets import load_diabetes

        data = load_diabetes()
        x, y = data.data.astype(np.float32), data.target.astype(np.float32)
        order = np.random.default_rng(seed).permutation(len(x))
        cut = round(len(x) * (1 - HELD_OUT))
        return x[order[:cut]], y[order[:cut]], x[order[cut:]], y[order[cut:]]
    data = uci.load(uci.BUNDLED, name)
    train, test = data.split(0)
    return data.x[train], data.y[train], data.x[test], data.y[test]


def _one(name: str, folder: Path, *, seed: int, samples: int, epochs: int) -> dict[str, Any]:
    from mcdrop.pipeline.export.exporter import ExportOptions, export
    from mcdrop.pipeline.training.config import TrainConfig
    from mcdrop.pipeline.training.loop import train

    x_fit, y_fit, x_test, y_test = _rows(name, seed)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "fit.npz", x=x_fit, y=y_fit)
    config = TrainConfig(
        out=str(folder / "model"),
        dataset=f"npz:{folder / 'fit.npz'}",
        task="regression",
        hidden=HIDDEN,
        dropout=DROPOUT,
        epochs=epochs,
        seed=seed,
        quiet=True,
    ).validate()
    record = train(config)
    version, manifest = export(
        ExportOptions(model_path=Path(config.out) / "model.keras", repository=folder / "repository", name=name)
    )
    exported = Exported(folder / "repository" / name / str(version))
    draws = exported.sample(x_test, samples, seed=seed)  # [T, N, 1]
    noise = manifest.output.observation_noise
    assert noise is not None and noise.variance is not None  # mcdrop train records tau for regression
    variance = np.asarray(noise.variance, np.float64)
    result: dict[str, Any] = {
        "dataset": name,
        "train_rows": len(x_fit),
        "test_rows": len(x_test),
        "tau": None if noise.precision is None else list(noise.precision),
        "noise_method": noise.method,
        "epochs": record["epochs_run"],
        "coverage": {},
    }
    y = y_test[:, np.newaxis]
    for level in uci.COVERAGE_LEVELS:
        summary = uncertainty.regression(draws, level, noise_variance=variance)
        predictive, epistemic = uncertainty.coverage(summary, y)
        result["coverage"][f"{level:g}"] = {
            "predictive": predictive,
            "epistemic": epistemic,
            "predictive_width": float(np.mean(summary.upper - summary.lower)),
            "epistemic_width": float(np.mean(summary.mean_upper - summary.mean_lower)),
        }
    mean = draws.mean(axis=0)
    result["rmse"] = float(np.sqrt(np.mean((mean - y) ** 2)))
    result["mean_std"] = float(draws.std(axis=0).mean())
    return result
