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

from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.models.manifest import Manifest

__all__ = ["Columns", "Unit", "columns", "features", "read", "sources", "units"]

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
class Columns:
    """Where a model's features come from in a table, and which columns pass through."""

    row_shape: tuple[int, ...]
    features: tuple[str, ...]
    """Numeric columns in the model's feature order; empty when ``tensor`` holds the features."""
    tensor: str | None
    """A list column holding each row's features (image or sequence models)."""
    keep: tuple[str, ...]
    integer_range: tuple[int, int] | None = None


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
        raise InvalidArgument(
            f"No input files at {pattern}. Expected a .parquet, .csv or .npy file, a folder or a glob."
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


def columns(found: list[Source], manifest: Manifest, keep: tuple[str, ...]) -> Columns:
    """Decide the feature columns from the model's manifest and the inputs' schemas; check every file has them.

    Raises:
        InvalidArgument: a missing column, or no unambiguous way to find the features.
    """
    row_shape = manifest.input.row_shape
    integer_range = manifest.input.integer_range
    if found[0].format == "npy":
        if keep:
            raise InvalidArgument(f"--keep {','.join(keep)}: .npy inputs have no columns. Expected no --keep.")
        return Columns(row_shape, (), None, (), integer_range)
    schemas = [(s.path, _schema(s)) for s in found]
    path, schema = schemas[0]
    names = manifest.input.feature_names
    width = math.prod(row_shape)
    if names:
        features: tuple[str, ...] = tuple(names)
        tensor = None
    else:
        lists = [f.name for f in schema if _is_list(f.type) and f.name not in keep]
        numeric = [f.name for f in schema if _is_number(f.type) and f.name not in keep]
        if len(row_shape) > 1 or (lists and not numeric):
            if len(lists) != 1:
                raise InvalidArgument(
                    f"{path}: found list columns {lists}. Expected exactly one list column holding each row's "
                    f"{width} values for input shape {list(row_shape)}."
                )
            features, tensor = (), lists[0]
        else:
            if len(numeric) != width:
                raise InvalidArgument(
                    f"{path}: found {len(numeric)} numeric columns {numeric[:8]}{' …' if len(numeric) > 8 else ''} "
                    f"outside --keep. Expected {width}, one per feature (or name them in the model's training data)."
                )
            features, tensor = tuple(numeric), None
    wanted = (*features, *([tensor] if tensor else []), *keep)
    for file, file_schema in schemas:
        missing = [c for c in wanted if c not in file_schema.names]
        if missing:
            raise InvalidArgument(f"{file}: missing column(s) {_few(missing)}. Expected columns {_few(list(wanted))}.")
    return Columns(row_shape, features, tensor, keep, integer_range)


def read(source: Source) -> pa.Table | np.ndarray:
    if source.format == "parquet":
        return pq.read_table(source.path)
    if source.format == "csv":
        return pa_csv.read_csv(source.path)
    return np.load(source.path, mmap_mode="r", allow_pickle=False)


@dataclasses.dataclass
class Features:
    x: np.ndarray
    """``[good rows, *row_shape]`` float32."""
    good: np.ndarray
    """Positions (within the unit) of the rows in ``x``."""
    errors: dict[int, str]
    """Position within the unit → what is wrong with that row (file, row, column, reason)."""
    keep: pa.Table | None


def features(data: pa.Table | np.ndarray, unit: Unit, cols: Columns) -> Features:
    """The unit's rows as model inputs; rows that cannot be scored are named in ``errors``, not dropped."""
    n = unit.stop - unit.start
    errors: dict[int, str] = {}
    where = unit.source.path

    def bad(row: int, column: str, reason: str) -> None:
        errors.setdefault(row, f"{where} row {unit.start + row} column {column}: {reason}")

    if isinstance(data, np.ndarray):
        values = np.asarray(data[unit.start : unit.stop], dtype=np.float64)
        if values.shape[1:] != cols.row_shape and values.reshape(n, -1).shape[1] != math.prod(cols.row_shape):
            raise InvalidArgument(
                f"{where}: rows of shape {list(values.shape[1:])}. Expected {list(cols.row_shape)} for this model."
            )
        x = values.reshape(n, -1)
        names = ["x"] * x.shape[1]
        keep = None
    else:
        table = data.slice(unit.start, n)
        keep = table.select(list(cols.keep)) if cols.keep else None
        if cols.tensor is not None:
            x, names = _tensor_column(table.column(cols.tensor), cols, bad), [cols.tensor] * math.prod(cols.row_shape)
        else:
            x = np.column_stack([_number_column(table.column(c), c, bad) for c in cols.features])
            names = list(cols.features)
    finite = np.isfinite(x)
    for row, column in zip(*np.nonzero(~finite), strict=True):
        bad(int(row), names[int(column)], "missing, NaN or infinite value")
    if cols.integer_range is not None:
        low, high = cols.integer_range
        with np.errstate(invalid="ignore"):
            wrong = finite & ((x != np.round(x)) | (x < low) | (x > high))
        for row, column in zip(*np.nonzero(wrong), strict=True):
            bad(int(row), names[int(column)], f"{x[row, column]!r} is not a token id in [{low}, {high}]")
    good = np.array(sorted(set(range(n)) - set(errors)), dtype=np.int64)
    rows = x[good].astype(np.float32).reshape(len(good), *cols.row_shape)
    return Features(rows, good, errors, keep)


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


def _tensor_column(column: pa.ChunkedArray, cols: Columns, bad: Any) -> np.ndarray:
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
        raise InvalidArgument(f"Cannot read {file} as {kind}: {str(exc).splitlines()[0] if str(exc) else exc}") from exc


def _schema(source: Source) -> pa.Schema:
    if source.format == "parquet":
        return pq.read_schema(source.path)
    return pa_csv.read_csv(source.path).schema


def _is_number(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind))


def _is_list(kind: pa.DataType) -> bool:
    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind))
