"""K-fold cross-validation over candidate settings (e.g. dropout rates), as the dropout literature recommends.

Only the training split is folded; the validation split stays untouched for
reporting the final model. Candidates are scored by the mean deterministic
validation NLL (classification) or RMSE (regression) over the folds.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from typing import Any

import numpy as np

from mcdrop.pipeline.training.config import TrainConfig
from mcdrop.pipeline.training.data import Dataset
from mcdrop.serving.errors import InvalidArgument

MIN_FOLDS = 2


def candidates(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values: ``{"dropout": [a, b]}`` → ``[{"dropout": a}, {"dropout": b}]``."""
    if not grid:
        raise InvalidArgument("Empty selection grid. Expected at least one setting with candidate values.")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise InvalidArgument(f"Selection grid entry {key!r} must be a non-empty list. Received: {values!r}")
    keys = list(grid)
    return [dict(zip(keys, combination, strict=True)) for combination in itertools.product(*grid.values())]


def cross_validate(config: TrainConfig, dataset: Dataset, grid: dict[str, list[Any]], folds: int) -> dict[str, Any]:
    """Score every candidate by k-fold CV on the training split; return all scores and the best candidate."""
    from sklearn.model_selection import KFold, StratifiedKFold

    from mcdrop.pipeline.training.loop import fit

    if dataset.several_inputs_or_outputs:
        raise InvalidArgument(
            "Cross-validated selection takes a dataset with one input and one output. Received categorical columns "
            f"{[c.column for c in dataset.categorical]} and heads {[h.name for h in dataset.heads]}: drop `select`, "
            "or train each candidate with mcdrop train."
        )
    if not isinstance(folds, int) or folds < MIN_FOLDS or folds > len(dataset.x_train):
        raise InvalidArgument(f"Invalid folds. Expected an integer in [2, {len(dataset.x_train)}]. Received: {folds!r}")
    classification = dataset.task == "classification"
    metric = "nll" if classification else "rmse"
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=config.seed)
        if classification and np.bincount(dataset.y_train).min() >= folds
        else KFold(folds, shuffle=True, random_state=config.seed)
    )
    results: list[dict[str, Any]] = []
    for candidate in candidates(grid):
        trial = dataclasses.replace(config, **candidate, quiet=True).validate()
        scores = []
        for train_idx, val_idx in splitter.split(dataset.x_train, dataset.y_train):
            fold = dataclasses.replace(
                dataset,
                x_train=dataset.x_train[train_idx],
                y_train=dataset.y_train[train_idx],
                x_val=dataset.x_train[val_idx],
                y_val=dataset.y_train[val_idx],
            )
            _, record = fit(trial, fold)
            scores.append(record["final_metrics"]["val"][metric])
        results.append({"candidate": candidate, f"mean_val_{metric}": statistics.fmean(scores), "fold_scores": scores})
    best = min(results, key=lambda r: float(r[f"mean_val_{metric}"]))
    return {"folds": folds, "metric": f"mean_val_{metric}", "results": results, "best": best["candidate"]}
