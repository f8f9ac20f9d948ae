"""Datasets for training: the bundled ones and user files, validated and split.

``load_dataset`` returns raw (unstandardised) features; the standardisation
statistics are computed on the training split only and baked into the model by
``pipeline.models``, so exported graphs take raw inputs.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.pipeline.training.tabular import NUMERIC_INPUT, Categorical, Head, encode, unique_names
from mcdrop.serving.errors import InvalidArgument, NotFound

BUNDLED = ("digits", "diabetes")
# An integer-valued numeric target with at most this many distinct values is a
# class label when the task is "auto"; anything else is a regression target.
AUTO_MAX_CLASSES = 20


@dataclasses.dataclass
class Dataset:
    """A dataset split into training and validation parts, plus what describes it."""

    name: str
    task: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    feature_names: list[str]
    target_names: list[str]
    class_labels: list[str] | None
    image_shape: list[int] | None
    """Natural image shape of flat rows (digits: 8x8x1), if known."""
    categorical: list[Categorical] = dataclasses.field(default_factory=list)
    """Categorical columns, one model input each (``x_*`` then hold the numeric columns only, maybe none)."""
    heads: list[Head] = dataclasses.field(default_factory=list)
    """Several targets with their own tasks, one model output each (``task`` is then ``multi-task`` and ``y_*``
    the first head's)."""

    @property
    def several_inputs_or_outputs(self) -> bool:
        return bool(self.categorical or self.heads)

    @property
    def has_numeric(self) -> bool:
        return self.x_train.ndim > 1 and int(np.prod(self.x_train.shape[1:])) > 0

    def inputs(self, split: str) -> dict[str, np.ndarray]:
        """The model's inputs by name for ``split`` (``train`` or ``val``): the numeric features, then one array of
        codes per categorical column."""
        x = self.x_train if split == "train" else self.x_val
        found = {NUMERIC_INPUT: x} if self.has_numeric else {}
        for c in self.categorical:
            found[c.name] = c.codes_train if split == "train" else c.codes_val
        return found

    @property
    def num_outputs(self) -> int:
        if self.class_labels is not None:
            return len(self.class_labels)
        return 1 if self.y_train.ndim == 1 else int(self.y_train.shape[1])

    def statistics(self) -> dict[str, Any]:
        """Standardisation statistics of the training split (features, and targets for regression)."""
        x_mean, x_std = standardisation(self.x_train)
        stats: dict[str, Any] = {
            "computed_on": "train split",
            "n_train": len(self.x_train),
            "n_val": len(self.x_val),
            "x_mean": x_mean.tolist(),
            "x_std": x_std.tolist(),
        }
        if self.task == "regression":
            y_mean, y_std = standardisation(self.y_train.reshape(len(self.y_train), -1))
            stats["y_mean"] = y_mean.tolist()
            stats["y_std"] = y_std.tolist()
        return stats


def standardisation(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over axis 0; a constant feature gets std 1, not 0."""
    mean = values.mean(axis=0, dtype=np.float64)
    std = values.std(axis=0, dtype=np.float64)
    std = np.where(std > 1e-12, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def load_dataset(
    spec: str, *, task: str, target: list[str], val_fraction: float, seed: int, categorical: list[str] | None = None
) -> Dataset:
    """Load ``spec`` (``digits``, ``diabetes``, ``csv:PATH``, ``npz:PATH``) and split it.

    ``categorical`` columns of a CSV become one integer-coded input each (``tabular``); several targets whose tasks
    differ (or several class targets) become several heads. Every other dataset is one input and one output.

    Raises:
        NotFound: the file or a named column is missing.
        InvalidArgument: the data is malformed (non-numeric, NaN/Inf, wrong shape, too small).
    """
    kind, _, location = spec.partition(":")
    if categorical and kind != "csv":
        raise InvalidArgument(
            f"--categorical applies to CSV files (csv:PATH). Received dataset={spec!r}, categorical={categorical}."
        )
    if kind == "csv" and location and (categorical or _several_heads(Path(location), target, task, categorical)):
        return _load_tabular(spec, Path(location), task, target, list(categorical or []), val_fraction, seed)
    labels: list[str] | None
    image: list[int] | None
    if kind == "digits" and not location:
        x, y, features, targets, labels, image = _digits()
        task = _resolve_task(task, "classification", spec)
    elif kind == "diabetes" and not location:
        x, y, features, targets, labels, image = _diabetes()
        task = _resolve_task(task, "regression", spec)
    elif kind == "csv" and location:
        x, y_raw, features, targets = read_csv(Path(location), target)
        task, y, labels = _encode_target(y_raw, task, spec)
        image = None
    elif kind == "npz" and location:
        x, y_raw = read_npz(Path(location))
        features = [f"x{i}" for i in range(int(np.prod(x.shape[1:])))]
        targets = ["y"] if y_raw.ndim == 1 else [f"y{i}" for i in range(y_raw.shape[1])]
        task, y, labels = _encode_target(y_raw, task, spec)
        image = None
    else:
        raise InvalidArgument(
            "Invalid value received for argument `dataset`. Expected digits, diabetes, csv:PATH "
            f"or npz:PATH. Received: dataset={spec!r}"
        )
    return _split(spec, task, x, y, features, targets, labels, image, val_fraction, seed)


def read_csv(path: Path, target: list[str]) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Read a headed CSV; return features (float32), raw target column(s) as strings, and names."""
    x, y, features, targets, _ = read_table(path, target, [])
    return x, y, features, targets


def read_table(
    path: Path, target: list[str], categorical: list[str]
) -> tuple[np.ndarray, np.ndarray, list[str], list[str], dict[str, np.ndarray]]:
    """``read_csv`` with ``categorical`` columns kept apart as strings (by column name, in the given order)."""
    if not path.is_file():
        raise NotFound(f"Data file not found: {path}")
    if not target:
        raise InvalidArgument(f"Missing target column for {path}. Expected --target COLUMN[,COLUMN...].")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except UnicodeDecodeError:
        raise InvalidArgument(f"{path} is not a UTF-8 text CSV file.") from None
    except csv.Error as exc:
        raise InvalidArgument(f"{path} is not a valid CSV file: {exc}") from None
    if len(rows) < 2:
        raise InvalidArgument(f"{path} has no data rows. Expected a header row and at least one data row.")
    header = [name.strip() for name in rows[0]]
    missing = [name for name in target if name not in header]
    if missing:
        raise NotFound(
            f"Target column {', '.join(repr(m) for m in missing)} not found in {path}. "
            f"Available columns: {', '.join(header)}"
        )
    unknown = [name for name in categorical if name not in header]
    if unknown:
        raise NotFound(
            f"Categorical column {', '.join(repr(m) for m in unknown)} not found in {path}. "
            f"Available columns: {', '.join(header)}"
        )
    both = [name for name in categorical if name in target]
    if both:
        raise InvalidArgument(f"Column(s) {both} of {path} given as both --target and --categorical. Expected one.")
    target_idx = [header.index(name) for name in target]
    category_idx = [header.index(name) for name in categorical]
    feature_idx = [i for i in range(len(header)) if i not in target_idx and i not in category_idx]
    if not feature_idx and not category_idx:
        raise InvalidArgument(f"{path} has no feature columns besides the target {target}.")
    x = np.empty((len(rows) - 1, len(feature_idx)), dtype=np.float32)
    y = np.empty((len(rows) - 1, len(target_idx)), dtype=object)
    categories = {header[i]: np.empty(len(rows) - 1, dtype=object) for i in category_idx}
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise InvalidArgument(
                f"Row {r} of {path} has {len(row)} fields. Expected {len(header)} (one per header column)."
            )
        for j, i in enumerate(feature_idx):
            x[r - 2, j] = _parse_number(row[i], path, r, header[i])
        for j, i in enumerate(target_idx):
            value = row[i].strip()
            if value == "" or value.lower() in ("nan", "na", "null"):
                raise InvalidArgument(f"Missing value (NaN) in column {header[i]!r}, row {r} of {path}.")
            y[r - 2, j] = value
        for i in category_idx:
            categories[header[i]][r - 2] = row[i].strip()
    features = [header[i] for i in feature_idx]
    return x, (y[:, 0] if len(target_idx) == 1 else y), features, list(target), categories


def read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read arrays ``x`` (features, any rank >= 2) and ``y`` (labels or targets) from an .npz file."""
    if not path.is_file():
        raise NotFound(f"Data file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = list(archive.files)
            missing = [key for key in ("x", "y") if key not in names]
            if missing:
                raise InvalidArgument(
                    f"{path} lacks array(s) {', '.join(missing)}. Expected arrays named x and y. "
                    f"Received: {', '.join(names) or 'no arrays'}"
                )
            x, y = archive["x"], archive["y"]
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"{path} is not a readable .npz archive: {exc}") from None
    if x.dtype.kind not in "biuf":
        raise InvalidArgument(f"Array x in {path} must be numeric. Received dtype {x.dtype}.")
    if x.ndim < 2 or len(x) != len(y):
        raise InvalidArgument(
            f"Arrays in {path} do not match. Expected x of shape (N, ...) and y of shape (N,) or (N, k). "
            f"Received x{tuple(x.shape)} and y{tuple(y.shape)}."
        )
    x = x.astype(np.float32)
    _check_finite(x, f"array x in {path}")
    if y.dtype.kind in "biuf":
        _check_finite(y.astype(np.float64), f"array y in {path}")
    return x, y


def _parse_number(text: str, path: Path, row: int, column: str) -> float:
    if text.strip() == "":
        raise InvalidArgument(f"Missing value (NaN) in column {column!r}, row {row} of {path}.")
    try:
        value = float(text)
    except ValueError:
        raise InvalidArgument(
            f"Non-numeric value {text!r} in column {column!r}, row {row} of {path}. "
            "Expected a number in every feature column."
        ) from None
    if math.isnan(value):
        raise InvalidArgument(f"Missing value (NaN) in column {column!r}, row {row} of {path}.")
    if math.isinf(value):
        raise InvalidArgument(f"Infinite value in column {column!r}, row {row} of {path}.")
    return value


def _check_finite(values: np.ndarray, what: str) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InvalidArgument(
            f"{what} contains {int(bad.sum())} NaN/Inf value(s) (first at index {first}). Expected finite numbers."
        )


def _resolve_task(task: str, natural: str, spec: str) -> str:
    if task not in ("auto", natural):
        raise InvalidArgument(f"Dataset {spec} is a {natural} dataset. Received: task={task!r}")
    return natural


def _encode_target(y_raw: np.ndarray, task: str, spec: str) -> tuple[str, np.ndarray, list[str] | None]:
    """Turn raw targets into class indices (with labels) or float regression targets."""
    numeric = _as_float(y_raw)
    if task == "auto":
        integral = numeric is not None and numeric.ndim == 1 and bool(np.all(numeric == np.round(numeric)))
        few = numeric is not None and len(np.unique(numeric)) <= AUTO_MAX_CLASSES
        task = "classification" if numeric is None or (integral and few) else "regression"
    if task == "regression":
        if numeric is None:
            raise InvalidArgument(
                f"Non-numeric target values in {spec}. Expected numbers for a regression target; "
                "use --task classification for labels."
            )
        _check_finite(numeric, f"target of {spec}")
        return task, numeric.astype(np.float32), None
    if y_raw.ndim != 1:
        raise InvalidArgument(
            f"Classification needs a single target column in {spec}. Received {y_raw.shape[1]} columns."
        )
    keys = numeric if numeric is not None else y_raw.astype(str)
    labels, indices = np.unique(keys, return_inverse=True)
    if len(labels) < 2:
        raise InvalidArgument(f"Classification needs at least 2 classes in {spec}. Received {len(labels)}.")
    names = [_label_name(v) for v in labels.tolist()]
    return task, indices.astype(np.int64), names


def _as_float(values: np.ndarray) -> np.ndarray | None:
    try:
        return values.astype(np.float64)
    except (ValueError, TypeError):
        return None


def _label_name(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _digits() -> tuple[np.ndarray, np.ndarray, list[str], list[str], list[str] | None, list[int] | None]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = bunch.data.astype(np.float32)
    return (
        x,
        bunch.target.astype(np.int64),
        [f"pixel_{i}" for i in range(64)],
        ["digit"],
        [str(c) for c in bunch.target_names],
        [8, 8, 1],
    )


def _diabetes() -> tuple[np.ndarray, np.ndarray, list[str], list[str], list[str] | None, list[int] | None]:
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    return (
        bunch.data.astype(np.float32),
        bunch.target.astype(np.float32),
        list(bunch.feature_names),
        ["progression"],
        None,
        None,
    )


def _split(
    spec: str,
    task: str,
    x: np.ndarray,
    y: np.ndarray,
    features: list[str],
    targets: list[str],
    labels: list[str] | None,
    image: list[int] | None,
    val_fraction: float,
    seed: int,
) -> Dataset:
    from sklearn.model_selection import train_test_split

    n_val = _validation_rows(spec, len(x), val_fraction)
    stratify = None
    if task == "classification":
        counts = np.bincount(y)
        if counts.min() >= 2 and n_val >= len(counts):
            stratify = y
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=n_val, random_state=seed, stratify=stratify)
    return Dataset(spec, task, x_train, y_train, x_val, y_val, features, targets, labels, image)


def _validation_rows(spec: str, rows: int, val_fraction: float) -> int:
    """How many of ``rows`` go to validation; refuses a split that leaves no validation or fewer than two training
    rows."""
    n_val = round(rows * val_fraction)
    if n_val < 1 or rows - n_val < 2:
        raise InvalidArgument(
            f"{spec} has {rows} rows: too few to split with val_fraction={val_fraction}. "
            "Expected at least one validation row and two training rows."
        )
    return n_val


def _several_heads(path: Path, target: list[str], task: str, categorical: list[str] | None) -> bool:
    """Several targets become several heads unless every one is a regression target (then one vector output,
    as before heads existed). Reads the target columns only when there are several."""
    if len(target) < 2 or task == "regression":
        return False
    if task == "classification":
        return True
    _, y_raw, _, _, _ = read_table(path, target, list(categorical or []))
    return any(_encode_target(y_raw[:, j], "auto", str(path))[0] == "classification" for j in range(len(target)))


def _load_tabular(
    spec: str, path: Path, task: str, target: list[str], categorical: list[str], val_fraction: float, seed: int
) -> Dataset:
    """A CSV as a model with a numeric input and one coded input per categorical column, and one head per target
    when several targets become several heads."""
    from sklearn.model_selection import train_test_split

    x, y_raw, features, targets, raw = read_table(path, target, categorical)
    several = len(target) > 1 and _several_heads(path, target, task, categorical)
    columns = [y_raw[:, j] for j in range(len(target))] if several else [y_raw]
    encoded = [_encode_target(column, task, spec) for column in columns]
    n_val = _validation_rows(spec, len(x), val_fraction)
    stratify = None
    if not several and encoded[0][0] == "classification":
        counts = np.bincount(encoded[0][1])
        stratify = encoded[0][1] if counts.min() >= 2 and n_val >= len(counts) else None
    train, val = train_test_split(np.arange(len(x)), test_size=n_val, random_state=seed, stratify=stratify)
    input_names = unique_names(categorical, {NUMERIC_INPUT} if features else set(), "Categorical")
    coded = [encode(column, name, raw[column][train], raw[column][val])
             for column, name in zip(categorical, input_names, strict=True)]  # fmt: skip
    heads = []
    if several:
        for name, column, (kind, y, labels) in zip(unique_names(target, set(), "Target"), target, encoded,
                                                   strict=True):  # fmt: skip
            heads.append(Head(name, kind, y[train], y[val], [column], labels))
    first_task, y, labels = encoded[0]
    dataset_task = "multi-task" if several else first_task
    return Dataset(spec, dataset_task, x[train], y[train], x[val], y[val], features, targets, labels, None,
                   categorical=coded, heads=heads)  # fmt: skip
