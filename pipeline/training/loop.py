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

from mcdrop.pipeline.shared.progress import format_metrics
from mcdrop.pipeline.training.config import TrainConfig
from mcdrop.pipeline.training.data import Dataset, load_dataset, standardisation
from mcdrop.pipeline.training.tabular import NUMERIC_INPUT, Head
from mcdrop.serving.common.console import progress_bar

TRAINING_SCHEMA = 1


def train(config: TrainConfig) -> dict[str, Any]:
    """Load the data, fit the model, write ``model.keras`` and ``training.json``; return the record.

    The same config and seed give bit-identical weights on the same machine:
    every random source is seeded and TensorFlow runs in op-determinism mode.
    """
    # Bad data should fail in milliseconds, before TensorFlow's multi-second import.
    dataset = load_dataset(
        config.dataset, task=config.task, target=config.target, val_fraction=config.val_fraction, seed=config.seed,
        categorical=config.categorical,
    )  # fmt: skip
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
    if dataset.heads:
        loss: Any = {h.name: _loss(h.task) for h in dataset.heads}
        metrics: Any = {h.name: _metrics(h.task) for h in dataset.heads}
    else:
        loss, metrics = _loss(dataset.task), _metrics(dataset.task)
    trainable.compile(optimizer=keras.optimizers.Adam(config.learning_rate), loss=loss, metrics=metrics)
    callbacks: list[keras.callbacks.Callback] = []
    if config.patience is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(patience=config.patience, restore_best_weights=True, monitor="val_loss")
        )
    started = time.perf_counter()
    with _EpochProgress(config.epochs, quiet=config.quiet) as progress:
        history = trainable.fit(
            _model_inputs(dataset, "train"),
            y_train,
            validation_data=(_model_inputs(dataset, "val"), y_val),
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
            **({"categorical": [c.column for c in dataset.categorical]} if dataset.categorical else {}),
        },
        "preprocessing": dataset.statistics() | {"applied_in_model": True} | _input_statistics(dataset),
        **_inputs_and_outputs(model, dataset, config.seed),
        "dropout_layers": [{"name": n, "class": c, "rate": r} for n, c, r in dropout_layers(model)],
        "history": {
            "units": "targets standardised on the train split" if not classification else "probabilities",
            **{key: [float(v) for v in values] for key, values in history.history.items()},
        },
        "epochs_run": len(history.history.get("loss", [])),
        "final_metrics": final,
        "train_val_gap": _gap(final),
        "train_seconds": round(seconds, 3),
        **_single_output_noise(model, dataset, config.seed),
        "environment": {
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "numpy": np.__version__,
        },
    }
    return model, record


def _loss(task: str) -> str:
    return "sparse_categorical_crossentropy" if task == "classification" else "mean_squared_error"


def _metrics(task: str) -> list[Any]:
    import keras

    return ["accuracy"] if task == "classification" else [keras.metrics.RootMeanSquaredError(name="rmse")]


def _model_inputs(dataset: Dataset, split: str) -> Any:
    """What the model is called with: the features array, or the named inputs of a Wide & Deep model."""
    if not dataset.categorical:
        return dataset.x_train if split == "train" else dataset.x_val
    inputs = dataset.inputs(split)
    return next(iter(inputs.values())) if len(inputs) == 1 else inputs


def _input_statistics(dataset: Dataset) -> dict[str, Any]:
    """Per input (several inputs): the numeric input's standardisation, which the export draws check rows from."""
    if not dataset.categorical or not dataset.has_numeric:
        return {}
    stats = dataset.statistics()
    return {"inputs": {NUMERIC_INPUT: {"x_mean": stats["x_mean"], "x_std": stats["x_std"]}}}


def _inputs_and_outputs(model: Any, dataset: Dataset, seed: int) -> dict[str, Any]:
    """The record's ``inputs`` (categorical columns: name, columns, vocabulary) and ``outputs`` (several heads:
    name, task, labels, target names, observation noise), which the export reads into the manifest."""
    found: dict[str, Any] = {}
    if dataset.categorical:
        numeric = [{"name": NUMERIC_INPUT, "feature_names": dataset.feature_names}] if dataset.has_numeric else []
        found["inputs"] = numeric + [c.record() for c in dataset.categorical]
    if dataset.heads:
        noise = _observation_noise(model, dataset, seed) if any(h.task == "regression" for h in dataset.heads) else {}
        found["outputs"] = [
            {"name": h.name, "task": h.task, "class_labels": h.class_labels, "target_names": h.target_names,
             **({"observation_noise": noise[h.name]} if h.name in noise else {})}
            for h in dataset.heads
        ]  # fmt: skip
    return found


def _single_output_noise(model: Any, dataset: Dataset, seed: int) -> dict[str, Any]:
    """A single regression output's ``observation_noise`` (several heads record theirs under ``outputs``)."""
    if dataset.task != "regression" or dataset.heads:
        return {}
    return {"observation_noise": _observation_noise(model, dataset, seed)}


def _fit_targets(dataset: Dataset) -> tuple[Any, Any]:
    """Class indices as they are; regression targets standardised on the train split; by head name for several
    heads."""
    if dataset.heads:
        pairs = {h.name: _head_targets(h) for h in dataset.heads}
        return {k: v[0] for k, v in pairs.items()}, {k: v[1] for k, v in pairs.items()}
    if dataset.task == "classification":
        return dataset.y_train, dataset.y_val
    stats = dataset.statistics()
    mean, std = np.asarray(stats["y_mean"], np.float32), np.asarray(stats["y_std"], np.float32)
    shape = (-1, len(mean))
    return (
        (dataset.y_train.reshape(shape) - mean) / std,
        (dataset.y_val.reshape(shape) - mean) / std,
    )


def _head_targets(head: Head) -> tuple[np.ndarray, np.ndarray]:
    if head.task == "classification":
        return head.y_train, head.y_val
    mean, std = standardisation(head.y_train.reshape(len(head.y_train), -1))
    return ((head.y_train.reshape(-1, 1) - mean) / std, (head.y_val.reshape(-1, 1) - mean) / std)


def _final_metrics(model: Any, dataset: Dataset) -> dict[str, dict[str, float]]:
    """Deterministic (dropout off) metrics in original units on both splits; ``HEAD/METRIC`` for several heads."""
    metrics: dict[str, dict[str, float]] = {}
    for split in ("train", "val"):
        predicted = model.predict(_model_inputs(dataset, split), verbose=0, batch_size=1024)
        if not dataset.heads:
            y = dataset.y_train if split == "train" else dataset.y_val
            metrics[split] = _scores(dataset.task, np.asarray(predicted, np.float64), y)
            continue
        metrics[split] = {}
        for head in dataset.heads:
            y = head.y_train if split == "train" else head.y_val
            scores = _scores(head.task, np.asarray(predicted[head.name], np.float64), y)
            metrics[split] |= {f"{head.name}/{name}": value for name, value in scores.items()}
    return metrics


def _scores(task: str, predicted: np.ndarray, y: np.ndarray) -> dict[str, float]:
    if task == "classification":
        p_true = np.clip(predicted[np.arange(len(y)), y], 1e-12, 1.0)
        return {"accuracy": float(np.mean(predicted.argmax(axis=1) == y)), "nll": float(-np.mean(np.log(p_true)))}
    error = predicted - y.reshape(predicted.shape)
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}


NOISE_SAMPLES = 200


def _observation_noise(model: Any, dataset: Dataset, seed: int) -> dict[str, Any]:
    """tau per output on the validation split, from T Monte-Carlo passes (Keras training-mode dropout,
    the distribution the exported MC graphs reproduce and the export verifies against); by head name for a model
    with several heads (its regression heads)."""
    import keras

    from mcdrop.pipeline.training.observation_noise import estimate_precision, noise_record

    keras.utils.set_random_seed(seed + 1)
    x = _model_inputs(dataset, "val")
    rows = len(dataset.y_val)
    per_call = max(1, 200_000 // max(1, rows))
    parts: list[Any] = []
    drawn = 0
    while drawn < NOISE_SAMPLES:
        size = min(per_call, NOISE_SAMPLES - drawn)
        tiled = keras.tree.map_structure(lambda a, n=size: np.tile(a, (n,) + (1,) * (a.ndim - 1)), x)
        out = model(tiled, training=True)
        parts.append(keras.tree.map_structure(lambda o, n=size: np.asarray(o, np.float64).reshape(n, rows, -1), out))
        drawn += size
    method = (f"validation split ({rows} rows), T = {NOISE_SAMPLES}: "
              "1/tau = mean squared error of the MC mean - mean MC variance")  # fmt: skip
    if not dataset.heads:
        precision = estimate_precision(np.concatenate(parts), dataset.y_val.reshape(rows, -1))
        return noise_record(precision, method=method)
    found = {}
    for head in (h for h in dataset.heads if h.task == "regression"):
        samples = np.concatenate([p[head.name] for p in parts])
        found[head.name] = noise_record(estimate_precision(samples, head.y_val.reshape(rows, -1)), method=method)
    return found


def _gap(final: dict[str, dict[str, float]]) -> dict[str, float]:
    """Train minus validation for scores, validation minus train for losses: positive means overfitting."""
    train, val = final["train"], final["val"]
    return {key: (train[key] - val[key]) if key.endswith("accuracy") else (val[key] - train[key]) for key in train}


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
