"""What ``mcdrop score`` reads: files (Parquet, CSV or .npy) with global row positions, split into work units,
and the feature matrix of a unit with every bad row named (file, row, column, reason)."""

from __future__ import annotations

import dataclasses
import glob
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from mcdrop.serving.capture.records import CAPTURE_METADATA
from mcdrop.serving.errors import InvalidArgument, first_line
from mcdrop.serving.models.manifest import InputSpec, ModelTensors

__all__ = ["Columns", "InputColumns", "Unit", "columns", "features", "read", "sources", "units"]

FORMATS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".npy": "npy"}


@dataclasses.dataclass(frozen=True)
class Source:
    """One input file and where its rows sit in the whole input."""

    path: str
    format: str
    first_row: int
    rows: int


@dataclasses.dataclass(frozen=True)
class Unit:
    """Rows ``start .. stop - 1`` of one source: what one worker call scores."""

    source: Source
    start: int
    stop: int

    @property
    def first_row(self) -> int:
        return self.source.first_row + self.start

    def as_item(self) -> dict[str, Any]:
        return {"path": self.source.path, "format": self.source.format, "source_first_row": self.source.first_row,
                "source_rows": self.source.rows, "start": self.start, "stop": self.stop}  # fmt: skip

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> Unit:
        source = Source(str(item["path"]), str(item["format"]), int(item["source_first_row"]), int(item["source_rows"]))
        return cls(source, int(item["start"]), int(item["stop"]))


@dataclasses.dataclass(frozen=True)
class InputColumns:
    """Where one model input's values come from in a table."""

    name: str
    """The model input (``x`` for a single-input model)."""
    row_shape: tuple[int, ...]
    features: tuple[str, ...]
    """Numeric columns in the input's feature order; empty when ``tensor`` holds the values."""
    tensor: str | None
    """A list column holding each row's values (image or sequence inputs, or an input without named columns)."""
    integer_range: tuple[int, int] | None = None
    categories: tuple[str, ...] | None = None
    """A categorical input: the column holds categories (any type), scored as their codes (``InputSpec``)."""


@dataclasses.dataclass(frozen=True)
class Columns:
    """Where each of a model's inputs comes from in a table, and which columns pass through."""

    inputs: tuple[InputColumns, ...]
    keep: tuple[str, ...]


def sources(pattern: str) -> list[Source]:
    """The input files (a file, a directory, or a glob of one format), in sorted order, with row counts.

    Raises:
        InvalidArgument: nothing matches, mixed or unknown formats, or an unreadable file.
    """
    path = Path(pattern)
    if path.is_dir():
        files = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in FORMATS)
    elif any(ch in pattern for ch in "*?["):
        files = sorted(glob.glob(pattern))
    else:
        files = [pattern] if path.is_file() else []
    if not files:
        models = sorted(p.name for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
        hint = f" {pattern} holds folders {models[:6]}: a capture directory? Expected DIR/MODEL." if models else ""
        raise InvalidArgument(
            f"No input files at {pattern}. Expected a .parquet, .csv or .npy file, a folder or a glob.{hint}"
        )
    formats = {FORMATS.get(Path(f).suffix.lower()) for f in files}
    if None in formats or len(formats) != 1:
        kinds = sorted(Path(f).suffix or "(none)" for f in files)
        raise InvalidArgument(f"Input files have formats {sorted(set(kinds))}. Expected one of .parquet, .csv, .npy.")
    kind = formats.pop()
    assert kind is not None
    found, first = [], 0
    for file in files:
        rows = _row_count(file, kind)
        found.append(Source(file, kind, first, rows))
        first += rows
    return found


def units(found: list[Source], batch_size: int) -> list[Unit]:
    return [Unit(s, start, min(start + batch_size, s.rows)) for s in found for start in range(0, s.rows, batch_size)]


def columns(found: list[Source], manifest: ModelTensors, keep: tuple[str, ...]) -> Columns:
    """Decide each input's columns from the model's manifest and the inputs' schemas; check every file has them.

    A single-input model reads its training columns, else one list column, else every numeric column outside
    ``--keep``. A model with several inputs reads each input's training columns, else a column named after the
    input (a list column, or a number for a one-value input).

    Raises:
        InvalidArgument: a missing column, or no unambiguous way to find an input's values.
    """
    specs = manifest.inputs
    if found[0].format == "npy":
        if len(specs) > 1:
            raise InvalidArgument(
                f"{found[0].path}: a .npy file holds one array. Expected Parquet or CSV with columns for each of the "
                f"model's inputs {[spec.name for spec in specs]}."
            )
        if keep:
            raise InvalidArgument(f"--keep {','.join(keep)}: .npy inputs have no columns. Expected no --keep.")
        spec = specs[0]
        return Columns((InputColumns(spec.name, spec.row_shape, (), None, spec.integer_range),), ())
    schemas = [(s.path, _schema(s)) for s in found]
    path, schema = schemas[0]
    by_name = len(specs) > 1 or _is_capture(schema)  # a capture holds more columns than the inputs: read by name
    chosen = tuple(_named_input(spec, path, schema) if by_name else _single_input(spec, path, schema, keep)
                   for spec in specs)  # fmt: skip
    wanted = [c for cols in chosen for c in (*cols.features, *([cols.tensor] if cols.tensor else []))] + list(keep)
    for file, file_schema in schemas:
        missing = [c for c in wanted if c not in file_schema.names]
        if missing:
            raise InvalidArgument(f"{file}: missing column(s) {_few(missing)}. Expected columns {_few(list(wanted))}.")
    return Columns(chosen, keep)


def _single_input(spec: InputSpec, path: str, schema: pa.Schema, keep: tuple[str, ...]) -> InputColumns:
    row_shape = spec.row_shape
    width = math.prod(row_shape)
    if spec.feature_names:
        return InputColumns(spec.name, row_shape, tuple(spec.feature_names), None, spec.integer_range,
                            spec.categories)  # fmt: skip
    lists = [f.name for f in schema if _is_list(f.type) and f.name not in keep]
    numeric = [f.name for f in schema if _is_number(f.type) and f.name not in keep]
    if len(row_shape) > 1 or (lists and not numeric):
        if len(lists) != 1:
            raise InvalidArgument(
                f"{path}: found list columns {lists}. Expected exactly one list column holding each row's "
                f"{width} values for input shape {list(row_shape)}."
            )
        return InputColumns(spec.name, row_shape, (), lists[0], spec.integer_range)
    if len(numeric) != width:
        raise InvalidArgument(
            f"{path}: found {len(numeric)} numeric columns {numeric[:8]}{' …' if len(numeric) > 8 else ''} "
            f"outside --keep. Expected {width}, one per feature (or name them in the model's training data)."
        )
    return InputColumns(spec.name, row_shape, tuple(numeric), None, spec.integer_range)


def _is_capture(schema: pa.Schema) -> bool:
    """A file of ``mcdrop serve --capture-dir`` (``mcdrop.serving.capture.records``)."""
    return bool(schema.metadata) and CAPTURE_METADATA in schema.metadata


def _named_input(spec: InputSpec, path: str, schema: pa.Schema) -> InputColumns:
    """One of several inputs: its training columns, or a column named after it."""
    if spec.feature_names:
        return InputColumns(spec.name, spec.row_shape, tuple(spec.feature_names), None, spec.integer_range,
                            spec.categories)  # fmt: skip
    if spec.name not in schema.names:
        raise InvalidArgument(
            f"{path}: no column {spec.name!r} for model input {spec.name!r} (shape {list(spec.row_shape)}), and the "
            "model records no training columns for it. Expected a list column named after the input."
        )
    kind = schema.field(spec.name).type
    if _is_number(kind) and math.prod(spec.row_shape) == 1:
        return InputColumns(spec.name, spec.row_shape, (spec.name,), None, spec.integer_range)
    return InputColumns(spec.name, spec.row_shape, (), spec.name, spec.integer_range)


def read(source: Source) -> pa.Table | np.ndarray:
    if source.format == "parquet":
        return pq.read_table(source.path)
    if source.format == "csv":
        return pa_csv.read_csv(source.path)
    return np.load(source.path, mmap_mode="r", allow_pickle=False)


@dataclasses.dataclass
class Features:
    inputs: dict[str, np.ndarray]
    """Each model input's ``[good rows, *row_shape]`` float32 values, by input name."""
    good: np.ndarray
    """Positions (within the unit) of the rows in ``inputs``."""
    errors: dict[int, str]
    """Position within the unit → what is wrong with that row (file, row, column, reason)."""
    keep: pa.Table | None


def features(data: pa.Table | np.ndarray, unit: Unit, cols: Columns) -> Features:
    """The unit's rows as model inputs; rows that cannot be scored (in any input) are named in ``errors``, not
    dropped."""
    n = unit.stop - unit.start
    errors: dict[int, str] = {}
    where = unit.source.path

    def bad(row: int, column: str, reason: str) -> None:
        errors.setdefault(row, f"{where} row {unit.start + row} column {column}: {reason}")

    keep = None
    values: dict[str, np.ndarray] = {}
    if isinstance(data, np.ndarray):
        only = cols.inputs[0]
        array = np.asarray(data[unit.start : unit.stop], dtype=np.float64)
        if array.shape[1:] != only.row_shape and array.reshape(n, -1).shape[1] != math.prod(only.row_shape):
            raise InvalidArgument(
                f"{where}: rows of shape {list(array.shape[1:])}. Expected {list(only.row_shape)} for this model."
            )
        values[only.name] = _checked(array.reshape(n, -1), ["x"] * math.prod(only.row_shape), only, bad)
    else:
        table = data.slice(unit.start, n)
        keep = table.select(list(cols.keep)) if cols.keep else None
        for spec in cols.inputs:
            if spec.tensor is not None:
                x = _tensor_column(table.column(spec.tensor), spec, bad)
                names = [spec.tensor] * math.prod(spec.row_shape)
            elif spec.categories is not None:
                x = np.column_stack([_category_codes(table.column(c), spec.categories) for c in spec.features])
                names = list(spec.features)
            else:
                x = np.column_stack([_number_column(table.column(c), c, bad) for c in spec.features])
                names = list(spec.features)
            values[spec.name] = _checked(x, names, spec, bad)
    good = np.array(sorted(set(range(n)) - set(errors)), dtype=np.int64)
    inputs = {spec.name: values[spec.name][good].astype(np.float32).reshape(len(good), *spec.row_shape)
              for spec in cols.inputs}  # fmt: skip
    return Features(inputs, good, errors, keep)


def _checked(x: np.ndarray, names: list[str], spec: InputColumns, bad: Any) -> np.ndarray:
    """``x`` (``[rows, width]``) with every non-finite value and (token inputs) every non-id reported."""
    finite = np.isfinite(x)
    for row, column in zip(*np.nonzero(~finite), strict=True):
        bad(int(row), names[int(column)], "missing, NaN or infinite value")
    if spec.integer_range is not None:
        low, high = spec.integer_range
        with np.errstate(invalid="ignore"):
            wrong = finite & ((x != np.round(x)) | (x < low) | (x > high))
        for row, column in zip(*np.nonzero(wrong), strict=True):
            bad(int(row), names[int(column)], f"{x[row, column]!r} is not a token id in [{low}, {high}]")
    return x


def _number_column(column: pa.ChunkedArray, name: str, bad: Any) -> np.ndarray:
    if _is_number(column.type):
        return np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
    values = np.full(len(column), np.nan)
    for row, cell in enumerate(column.to_pylist()):
        try:
            values[row] = float(cell)
        except (TypeError, ValueError):
            bad(row, name, f"{cell!r} is not a number")
            values[row] = 0.0  # reported above; keeps the finiteness check from reporting it twice
    return values


def _category_codes(column: pa.ChunkedArray, categories: tuple[str, ...]) -> np.ndarray:
    """A categorical column's codes as training made them: ``categories[i]`` is ``i + 1``; an empty or missing cell
    is the category ``""``; anything training did not see is 0."""
    codes = {category: code for code, category in enumerate(categories, start=1)}
    return np.array([codes.get(_category(cell), 0) for cell in column.to_pylist()], np.float64)


def _category(cell: Any) -> str:
    if cell is None:
        return ""
    if isinstance(cell, float) and cell.is_integer():  # a CSV reader's 3.0 for the training file's "3"
        return str(int(cell))
    return str(cell).strip()


def _tensor_column(column: pa.ChunkedArray, cols: InputColumns, bad: Any) -> np.ndarray:
    width = math.prod(cols.row_shape)
    x = np.zeros((len(column), width))
    for row, cell in enumerate(column.to_pylist()):
        flat = np.asarray(cell if cell is not None else [], dtype=object).reshape(-1)
        if flat.size != width:
            bad(row, cols.tensor, f"{flat.size} values. Expected {width} (input shape {list(cols.row_shape)})")
            continue
        try:
            x[row] = flat.astype(np.float64)
        except (TypeError, ValueError):
            bad(row, cols.tensor, "a value that is not a number")
    return x


def _few(names: list[str]) -> str:
    return ", ".join(names[:6]) + (f", … ({len(names)} in all)" if len(names) > 6 else "")


def _row_count(file: str, kind: str) -> int:
    try:
        if kind == "parquet":
            return int(pq.ParquetFile(file).metadata.num_rows)
        if kind == "csv":
            return int(pa_csv.read_csv(file).num_rows)
        array = np.load(file, mmap_mode="r", allow_pickle=False)
        if array.ndim < 2:
            raise InvalidArgument(f"{file}: an array of shape {list(array.shape)}. Expected [rows, features...].")
        return int(array.shape[0])
    except InvalidArgument:
        raise
    except Exception as exc:
        raise InvalidArgument(f"Cannot read {file} as {kind}: {first_line(exc)}") from exc


def _schema(source: Source) -> pa.Schema:
    if source.format == "parquet":
        return pq.read_schema(source.path)
    return pa_csv.read_csv(source.path).schema


def _is_number(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind))


def _is_list(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind))
