"""Labelled calibration rows, read the way ``mcdrop score`` reads its inputs, plus a label per calibrated output.

* ``.npz``: the inputs under ``x`` (a single-input model) or under each input's name, the labels under the
  target name (``y`` unless ``--target`` says otherwise).
* CSV or Parquet: the model's input columns (``mcdrop.serving.scoring.inputs``), and a label column.

Several outputs: ``--target OUTPUT=COLUMN[,OUTPUT=COLUMN]`` (outputs left out are not calibrated). A
classification label is a class label (``"cat"``) or a class index; a regression target is a number (or a
list per row for an output with several values). Every problem is refused with the file, row and column.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.serving.errors import InvalidArgument, first_line
from mcdrop.serving.models.manifest import ModelTensors, OutputSpec, Task, sha256_file

__all__ = ["LabelledRows", "count_rows", "read_labelled", "read_rows", "target_columns"]

TABLE_FORMATS = (".csv", ".parquet", ".pq")
_Arrays = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]
"""Inputs by input name, raw labels by output name."""


@dataclasses.dataclass(frozen=True)
class LabelledRows:
    file: str
    sha256: str
    inputs: dict[str, np.ndarray]
    """Every model input by name, float32, ``[rows, *row_shape]``."""
    labels: dict[str, np.ndarray]
    """By output name: class indices (int64, ``[rows]``) or regression targets (float64, ``[rows, *row_shape]``)."""

    @property
    def rows(self) -> int:
        return len(next(iter(self.inputs.values())))


def target_columns(target: str | None, outputs: tuple[str, ...], *, default: str | None = None) -> dict[str, str]:
    """Output name → label column from ``--target`` (``COLUMN``, or ``OUTPUT=COLUMN,…`` for several outputs)."""
    if not target:
        if default is None or len(outputs) > 1:
            several = "OUTPUT=COLUMN[,OUTPUT=COLUMN] (outputs: " + ", ".join(outputs) + ")"
            wanted = "COLUMN" if len(outputs) == 1 else several
            raise InvalidArgument(f"No label column given. Expected --target {wanted}.")
        return {outputs[0]: default}
    if "=" not in target:
        if len(outputs) > 1:
            raise InvalidArgument(f"--target {target}: the model has outputs {', '.join(outputs)}. "
                                  "Expected OUTPUT=COLUMN[,OUTPUT=COLUMN].")  # fmt: skip
        return {outputs[0]: target.strip()}
    chosen: dict[str, str] = {}
    for part in target.split(","):
        output, _, column = part.partition("=")
        output, column = output.strip(), column.strip()
        if output not in outputs or not column or output in chosen:
            raise InvalidArgument(f"--target {target}: {part!r}. Expected OUTPUT=COLUMN with OUTPUT one of "
                                  f"{', '.join(outputs)}, each once.")  # fmt: skip
        chosen[output] = column
    return chosen


def count_rows(path: Path, columns: list[str]) -> int:
    """Rows of the calibration file, checking it is readable and holds the label ``columns`` (cheap: before an
    export converts anything)."""
    kind = _kind(path)
    try:
        if kind == "npz":
            with np.load(path, allow_pickle=False) as data:
                _require(path, columns, list(data.files), "arrays")
                return len(data[columns[0]])
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq

        if kind == "parquet":
            _require(path, columns, list(pq.read_schema(path).names), "columns")
            return int(pq.ParquetFile(path).metadata.num_rows)
        table = pa_csv.read_csv(path)
        _require(path, columns, list(table.column_names), "columns")
        return int(table.num_rows)
    except InvalidArgument:
        raise
    except Exception as exc:
        raise InvalidArgument(f"Cannot read calibration data {path}: {first_line(exc)}") from exc


def read_rows(path: Path, model: ModelTensors, what: str = "verification data") -> LabelledRows:
    """The input rows of ``path`` for ``model`` without labels (an export's verification and int8 rows)."""
    return read_labelled(path, model, {}, what)


def read_labelled(
    path: Path, manifest: ModelTensors, columns: Mapping[str, str], what: str = "calibration data"
) -> LabelledRows:
    """The rows and labels of ``path`` for ``manifest``'s model; ``columns``: output name → label column."""
    kind = _kind(path, what)
    specs = {spec.name: spec for spec in manifest.outputs}
    if kind == "npz":
        inputs, raw = _read_npz(path, manifest, columns)
    else:
        inputs, raw = _read_table(path, manifest, columns)
    rows = len(next(iter(inputs.values())))
    if rows == 0:
        wanted = "labelled rows the model did not train on" if columns else "rows of the model's inputs"
        raise InvalidArgument(f"{path} holds no rows. Expected {wanted}.")
    labels = {name: _labels(path, column, raw[name], specs[name], rows) for name, column in columns.items()}
    return LabelledRows(str(path), sha256_file(path), inputs, labels)


def _kind(path: Path, what: str = "calibration data") -> str:
    if not path.is_file():
        raise InvalidArgument(f"No {what} at {path}. Expected a .npz, .csv or .parquet file.")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return "npz"
    if suffix in TABLE_FORMATS:
        return "parquet" if suffix != ".csv" else "csv"
    raise InvalidArgument(f"{what.capitalize()} {path}: unknown format {suffix or '(none)'}. "
                          "Expected .npz (inputs and labels as arrays), .csv or .parquet.")  # fmt: skip


def _require(path: Path, wanted: list[str], found: list[str], what: str) -> None:
    missing = [c for c in wanted if c not in found]
    if missing:
        shown = ", ".join(found[:12]) + (" …" if len(found) > 12 else "")
        raise InvalidArgument(f"{path}: no label {what[:-1]} {', '.join(missing)}. It has {what}: {shown}.")


def _read_npz(path: Path, manifest: ModelTensors, columns: Mapping[str, str]) -> _Arrays:
    with np.load(path, allow_pickle=False) as data:
        names = list(data.files)
        single = len(manifest.inputs) == 1
        keys = {spec.name: "x" if single else spec.name for spec in manifest.inputs}
        _require(path, list(keys.values()) + list(columns.values()), names, "arrays")
        inputs = {}
        for spec in manifest.inputs:
            array = np.asarray(data[keys[spec.name]])
            rows = len(array)
            if array.reshape(rows, -1).shape[1] != math.prod(spec.row_shape):
                raise InvalidArgument(f"{path}: array {keys[spec.name]!r} has rows of shape {list(array.shape[1:])}. "
                                      f"Expected {list(spec.row_shape)} (model input {spec.name!r}).")  # fmt: skip
            values = array.astype(np.float64).reshape(rows, *spec.row_shape)
            bad = np.argwhere(~np.isfinite(values.reshape(rows, -1)))
            if len(bad):
                raise InvalidArgument(f"{path}: array {keys[spec.name]!r} row {int(bad[0][0])}: NaN or infinite value "
                                      f"({len(np.unique(bad[:, 0]))} such rows). Expected finite numbers.")  # fmt: skip
            inputs[spec.name] = values.astype(np.float32)
        raw = {output: np.asarray(data[column]) for output, column in columns.items()}
    _same_rows(path, inputs, raw)
    return inputs, raw


def _read_table(path: Path, manifest: ModelTensors, columns: Mapping[str, str]) -> _Arrays:
    from mcdrop.serving.scoring import inputs as table_inputs

    found = table_inputs.sources(str(path))
    cols = table_inputs.columns(found, manifest, tuple(dict.fromkeys(columns.values())))
    source = found[0]
    data = table_inputs.read(source)
    features = table_inputs.features(data, table_inputs.Unit(source, 0, source.rows), cols)
    if features.errors:
        first = [features.errors[row] for row in sorted(features.errors)[:3]]
        raise InvalidArgument(
            f"{path}: {len(features.errors)} row(s) cannot be used: {'; '.join(first)}. "
            "Expected every row complete (rows must not be dropped silently)."
        )
    table: Any = data
    raw = {output: np.asarray(table.column(column).to_pylist(), dtype=object) for output, column in columns.items()}
    return features.inputs, raw


def _same_rows(path: Path, inputs: dict[str, np.ndarray], raw: dict[str, np.ndarray]) -> None:
    counts = {name: len(v) for name, v in {**inputs, **raw}.items()}
    if len(set(counts.values())) != 1:
        raise InvalidArgument(f"{path}: arrays of different lengths {counts}. Expected one row count.")


def _labels(path: Path, column: str, values: np.ndarray, spec: OutputSpec, rows: int) -> np.ndarray:
    where = f"{path} column {column!r}"
    if spec.task == Task.CLASSIFICATION:
        indices = _class_indices(where, values, spec)
        pixels = spec.row_shape[:-1]  # a dense output ([H, W, C]) takes a class per pixel ([H, W])
        if indices.size != rows * math.prod(pixels):
            raise InvalidArgument(f"{where}: {indices.size // max(rows, 1)} label(s) per row. Expected "
                                  f"{list(pixels) or 'one class'} per row (output {spec.name!r}, "
                                  f"{list(spec.row_shape)}).")  # fmt: skip
        return indices.reshape(rows, *pixels)
    try:
        targets = np.array([np.asarray(v, np.float64) for v in values] if values.dtype == object else values,
                           dtype=np.float64)  # fmt: skip
    except (TypeError, ValueError):
        raise InvalidArgument(f"{where}: values that are not numbers. Expected regression targets for output "
                              f"{spec.name!r}.") from None  # fmt: skip
    if targets.reshape(rows, -1).shape[1] != math.prod(spec.row_shape):
        raise InvalidArgument(f"{where}: targets of shape {list(targets.shape[1:])} per row. Expected "
                              f"{list(spec.row_shape)} (output {spec.name!r}).")  # fmt: skip
    bad = np.flatnonzero(~np.isfinite(targets.reshape(rows, -1)).all(axis=1))
    if len(bad):
        raise InvalidArgument(f"{where} row {int(bad[0])}: missing, NaN or infinite target ({len(bad)} such rows). "
                              "Expected a finite number in every row.")  # fmt: skip
    return targets.reshape(rows, *spec.row_shape)


def _class_indices(where: str, values: np.ndarray, spec: OutputSpec) -> np.ndarray:
    """Class labels (by name) or indices → indices; anything the model does not know is refused, naming it."""
    classes = spec.shape[-1]
    labels = spec.labels
    text = [_text(v) for v in values.reshape(-1).tolist()]
    if labels and all(t in labels for t in text):
        position = {label: i for i, label in enumerate(labels)}
        return np.array([position[t] for t in text], np.int64)
    indices = [int(t) if t.lstrip("-").isdigit() else None for t in text]
    unknown = sorted({t for t, i in zip(text, indices, strict=True) if i is None or not 0 <= i < classes})
    if unknown:
        known = f"class labels {', '.join(labels[:12])}" if labels else "no class labels"
        raise InvalidArgument(f"{where}: labels the model does not know: {', '.join(unknown[:8])}"
                              f"{' …' if len(unknown) > 8 else ''} ({len(unknown)} distinct). Expected class indices "
                              f"0..{classes - 1} or one of the model's {known}.")  # fmt: skip
    return np.array(indices, np.int64)


def _text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        return _text(value.item())
    return "" if value is None else str(value).strip()
