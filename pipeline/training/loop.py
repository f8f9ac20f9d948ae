"""The training stage: fit a dropout model reproducibly and save it with its record.

Output directory layout::

    OUT/model.keras      the fitted model (raw features in, original units out)
    OUT/training.json    config, data statistics, history, final metrics, train/val gap
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.pipeline.progress import format_metrics, progress_bar
from mcdrop.pipeline.training.config import TrainConfig
from mcdrop.pipeline.training.data import Dataset, load_dataset

TRAINING_SCHEMA = 1


def train(config: TrainConfig) -> dict[str, Any]:
    """Load the data, fit the model, write ``model.keras`` and ``training.json``; return the record.

    The same config and seed give bit-identical weights on the same machine:
    every random source is seeded and TensorFlow runs in op-determinism mode.
    """
    # Bad data should fail in milliseconds, before TensorFlow's multi-second import.
    dataset = load_dataset(
        config.dataset, task=config.task, target=config.target, val_fraction=config.val_fraction, seed=config.seed
    )
    model, record = fit(config, dataset)
    save(model, record, Path(config.out))
    return record


def fit(config: TrainConfig, dataset: Dataset) -> tuple[Any, dict[str, Any]]:
    """Fit a model on ``dataset``'s training split; return it with its training record."""
    import keras
    import tensorflow as tf

    from mcdrop.pipeline.training.models import build_models, dropout_layers

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    model, trainable = build_models(config, dataset)
    y_train, y_val = _fit_targets(dataset)
    classification = dataset.task == "classification"
    trainable.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="sparse_categorical_crossentropy" if classification else "mean_squared_error",
        metrics=["accuracy"] if classification else [keras.metrics.RootMeanSquaredError(name="rmse")],
    )
    callbacks: list[keras.callbacks.Callback] = []
    if config.patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(patience=config.patience, restore_best_weights=True, monitor="val_loss")
        )
    started = time.perf_counter()
    with _EpochProgress(config.epochs, quiet=config.quiet) as progress:
        history = trainable.fit(
            dataset.x_train,
            y_train,
            validation_data=(dataset.x_val, y_val),
            epochs=config.epochs,
            batch_size=config.batch_size,
            shuffle=True,
            verbose=0,
            callbacks=[*callbacks, progress],
        )
    seconds = time.perf_counter() - started
    final = _final_metrics(model, dataset)
    record = {
        "schema_version": TRAINING_SCHEMA,
        "config": config.to_dict(),
        "task": dataset.task,
        "dataset": {
            "name": dataset.name,
            "feature_names": dataset.feature_names,
            "target_names": dataset.target_names,
            "class_labels": dataset.class_labels,
            "input_shape": list(dataset.x_train.shape[1:]),
        },
        "preprocessing": dataset.statistics() | {"applied_in_model": True},
        "dropout_layers": [{"name": n, "class": c, "rate": r} for n, c, r in dropout_layers(model)],
        "history": {
            "units": "targets standardised on the train split" if not classification else "probabilities",
            **{key: [float(v) for v in values] for key, values in history.history.items()},
        },
        "epochs_run": len(history.history.get("loss", [])),
        "final_metrics": final,
        "train_val_gap": _gap(final),
        "train_seconds": round(seconds, 3),
        **({} if classification else {"observation_noise": _observation_noise(model, dataset, config.seed)}),
        "environment": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
    }
    return model, record


def _fit_targets(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Class indices as they are; regression targets standardised on the train split."""
    if dataset.task == "classification":
        return dataset.y_train, dataset.y_val
    stats = dataset.statistics()
    mean, std = np.asarray(stats["y_mean"], np.float32), np.asarray(stats["y_std"], np.float32)
    shape = (-1, len(mean))
    return (
        (dataset.y_train.reshape(shape) - mean) / std,
        (dataset.y_val.reshape(shape) - mean) / std,
    )


def _final_metrics(model: Any, dataset: Dataset) -> dict[str, dict[str, float]]:
    """Deterministic (dropout off) metrics in original units on both splits."""
    metrics: dict[str, dict[str, float]] = {}
    for split, x, y in (("train", dataset.x_train, dataset.y_train), ("val", dataset.x_val, dataset.y_val)):
        predicted = np.asarray(model.predict(x, verbose=0, batch_size=1024), np.float64)
        if dataset.task == "classification":
            p_true = np.clip(predicted[np.arange(len(y)), y], 1e-12, 1.0)
            metrics[split] = {
                "accuracy": float(np.mean(predicted.argmax(axis=1) == y)),
                "nll": float(-np.mean(np.log(p_true))),
            }
        else:
            error = predicted - y.reshape(predicted.shape)
            metrics[split] = {
                "rmse": float(np.sqrt(np.mean(error**2))),
                "mae": float(np.mean(np.abs(error))),
            }
    return metrics


NOISE_SAMPLES = 200


def _observation_noise(model: Any, dataset: Dataset, seed: int) -> dict[str, Any]:
    """tau per output on the validation split, from T Monte-Carlo passes (Keras training-mode dropout,
    the distribution the exported MC graphs reproduce and the export verifies against)."""
    import keras

    from mcdrop.pipeline.training.observation_noise import estimate_precision, noise_record

    keras.utils.set_random_seed(seed + 1)
    x = dataset.x_val
    per_call = max(1, 200_000 // max(1, len(x)))
    parts, drawn = [], 0
    while drawn < NOISE_SAMPLES:
        size = min(per_call, NOISE_SAMPLES - drawn)
        out = np.asarray(model(np.tile(x, (size,) + (1,) * (x.ndim - 1)), training=True), np.float64)
        parts.append(out.reshape(size, len(x), -1))
        drawn += size
    precision = estimate_precision(np.concatenate(parts), dataset.y_val.reshape(len(x), -1))
    return noise_record(
        precision,
        method=f"validation split ({len(x)} rows), T = {NOISE_SAMPLES}: "
        "1/tau = mean squared error of the MC mean - mean MC variance",
    )


def _gap(final: dict[str, dict[str, float]]) -> dict[str, float]:
    """Train minus validation for scores, validation minus train for losses: positive means overfitting."""
    train, val = final["train"], final["val"]
    if "accuracy" in train:
        return {"accuracy": train["accuracy"] - val["accuracy"], "nll": val["nll"] - train["nll"]}
    return {"rmse": val["rmse"] - train["rmse"], "mae": val["mae"] - train["mae"]}


def save(model: Any, record: dict[str, Any], out: Path) -> None:
    """Write both files aside and rename, so a crash never leaves a half-written model."""
    out.mkdir(parents=True, exist_ok=True)
    partial_model = out / ".partial-model.keras"
    partial_record = out / ".partial-training.json"
    try:
        model.save(partial_model)
        partial_record.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(partial_model, out / "model.keras")
        os.replace(partial_record, out / "training.json")
    finally:
        for leftover in (partial_model, partial_record):
            leftover.unlink(missing_ok=True)


class _EpochProgress:
    """Keras callback drawing one bar over epochs with the latest metrics; a no-op when quiet."""

    def __init__(self, epochs: int, *, quiet: bool) -> None:
        import keras

        self._quiet = quiet
        self._bar = progress_bar()
        self._task = self._bar.add_task("training", total=epochs, status="")
        outer = self

        class Callback(keras.callbacks.Callback):  # type: ignore[misc]
            def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
                status = format_metrics(logs, ("loss", "accuracy", "rmse", "val_loss", "val_accuracy", "val_rmse"))
                outer._bar.update(outer._task, completed=epoch + 1, status=status)

        self.callback = Callback()

    def __enter__(self) -> Any:
        if not self._quiet:
            self._bar.start()
        return self.callback

    def __exit__(self, *exc: object) -> None:
        if not self._quiet:
            self._bar.stop()
