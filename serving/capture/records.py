"""Captured rows as an Arrow table: where they came from, the inputs as ``mcdrop score`` reads them, the answer.

Columns, in order:

* ``captured_at`` (timestamp, ms, UTC), ``request_id``, ``model``, ``version``, ``mode``, ``variant`` (the graphs
  that answered: ``float32``, ``int8``, …), ``seed`` (null when the answer had none), ``samples`` (T), ``row`` (the
  row's position in its request);
* every input, as ``mcdrop score`` reads a model's inputs: one column per training feature when the manifest
  names them (categorical inputs as their categories), else a list column named after the input;
* the answer: the columns ``mcdrop score`` writes (``mcdrop.serving.protocols.table``), each prefixed ``served/``
  (``served/p_mean``, ``served/mutual_information``, ``served/abstain``), so that scoring a capture with a new
  version keeps the old answer beside the new one.

The schema depends only on the model version, so every file holds one version; its key-value metadata
``mcdrop.capture`` marks it as a capture (``mcdrop score`` then reads inputs by name).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from mcdrop.serving.core.requests import Prediction
from mcdrop.serving.models.manifest import InputSpec, Manifest, Task
from mcdrop.serving.protocols import table

__all__ = ["CAPTURE_METADATA", "SERVED", "CapturedRequest", "SchemaClash", "capture_schema", "captured_table"]

CAPTURE_METADATA = b"mcdrop.capture"
SERVED = "served/"
FORMAT_VERSION = 1
_META_FIELDS = [
    pa.field("captured_at", pa.timestamp("ms", tz="UTC")),
    pa.field("request_id", pa.string()),
    pa.field("model", pa.string()),
    pa.field("version", pa.int64()),
    pa.field("mode", pa.string()),
    pa.field("variant", pa.string()),
    pa.field("seed", pa.int64()),
    pa.field("samples", pa.int32()),
    pa.field("row", pa.int32()),
]


class SchemaClash(ValueError):
    """A model whose column names collide with the capture's own (an input feature named ``row``, say)."""


@dataclasses.dataclass(frozen=True)
class CapturedRequest:
    """One answered request's rows to capture (references only: no copy on the request path)."""

    manifest: Manifest
    inputs: Mapping[str, np.ndarray]
    prediction: Prediction
    rows: np.ndarray
    request_id: str
    time: float
    """Seconds since the epoch, when the answer was ready."""

    @property
    def nbytes(self) -> int:
        """About what holding it costs: its inputs plus one float per row and output value."""
        answer = sum(np.asarray(o.summary.mean).nbytes * 4 for o in self.prediction.outputs)
        return int(sum(np.asarray(x).nbytes for x in self.inputs.values()) + answer)


def capture_schema(manifest: Manifest) -> pa.Schema:
    """The schema of one version's captures.

    Raises:
        SchemaClash: two columns would have the same name.
    """
    fields = list(_META_FIELDS)
    for spec in manifest.inputs:
        fields += [pa.field(name, kind) for name, kind in _input_fields(spec)]
    fields += [pa.field(SERVED + f.name, f.type) for f in table.output_fields(manifest.outputs, _abstaining(manifest))]
    names = [f.name for f in fields]
    clashes = sorted({name for name in names if names.count(name) > 1})
    if clashes:
        raise SchemaClash(f"columns {clashes} would appear twice in captures of {manifest.name}")
    metadata = {"format": FORMAT_VERSION, "model": manifest.name, "version": manifest.version,
                "inputs": [spec.name for spec in manifest.inputs]}  # fmt: skip
    return pa.schema(fields, metadata={CAPTURE_METADATA: json.dumps(metadata).encode()})


def captured_table(requests: list[CapturedRequest], schema: pa.Schema) -> pa.Table:
    """The captured rows of ``requests`` (answered by one version), in ``schema`` (``capture_schema`` of it).

    One table for many requests: each column is built once from the requests' stacked values, so a busy server
    pays Arrow's per-column cost once per batch of requests, not once per request.
    """
    counts = np.array([len(r.rows) for r in requests])
    n = int(counts.sum())
    predictions = [r.prediction for r in requests]
    seeds = [p.seed for p in predictions]
    millis = np.repeat([int(r.time * 1000) for r in requests], counts).astype(np.int64)
    seed_values = np.repeat([s or 0 for s in seeds], counts).astype(np.int64)
    columns: dict[str, pa.Array] = {
        "captured_at": pa.array(millis, pa.timestamp("ms", tz="UTC")),
        "request_id": pa.array(np.repeat(np.array([r.request_id for r in requests], object), counts), pa.string()),
        "model": pa.array(np.repeat(np.array([p.model for p in predictions], object), counts), pa.string()),
        "version": pa.array(np.repeat([p.version for p in predictions], counts).astype(np.int64)),
        "mode": pa.array(np.repeat(np.array([p.mode.value for p in predictions], object), counts), pa.string()),
        "variant": pa.array(np.repeat(np.array([p.variant for p in predictions], object), counts), pa.string()),
        "seed": pa.array(seed_values, mask=np.repeat([s is None for s in seeds], counts)),
        "samples": pa.array(np.repeat([p.samples for p in predictions], counts).astype(np.int32)),
        "row": pa.array(np.concatenate([r.rows for r in requests]).astype(np.int32)),
    }
    manifest = requests[0].manifest
    for spec in manifest.inputs:
        stacked = np.concatenate([np.asarray(r.inputs[spec.name])[r.rows] for r in requests])
        columns.update(_input_columns(spec, stacked))
    answers = [table.prediction_columns(manifest.outputs, r.prediction) for r in requests]
    everything = np.arange(n)
    for field in schema:
        if not field.name.startswith(SERVED):
            continue
        name = field.name[len(SERVED) :]
        parts = [a.get(name) for a in answers]
        present = next((np.asarray(p) for p in parts if p is not None), None)
        if present is None:  # no answer has it (abstain columns without a rule): null
            columns[field.name] = pa.nulls(n, field.type)
            continue
        missing = np.repeat([p is None for p in parts], counts)
        values = np.concatenate([np.asarray(p)[r.rows] if p is not None else _blank(present, len(r.rows))
                                 for p, r in zip(parts, requests, strict=True)])  # fmt: skip
        columns[field.name] = table.column(values, everything, missing, field.type)
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


def _blank(like: np.ndarray, rows: int) -> np.ndarray:
    """Placeholder rows shaped like ``like``'s (masked as null in the column)."""
    shape = (rows, *like.shape[1:])
    return np.full(shape, None, object) if like.dtype == object else np.zeros(shape, like.dtype)


def _abstaining(manifest: Manifest) -> set[str]:
    """Every classification output gets the abstain columns (null in answers that do not abstain)."""
    return {spec.name for spec in manifest.outputs if spec.task == Task.CLASSIFICATION}


def _input_fields(spec: InputSpec) -> list[tuple[str, pa.DataType]]:
    if spec.feature_names and spec.categories is not None:
        return [(name, pa.string()) for name in spec.feature_names]
    if spec.feature_names:
        return [(name, pa.float32()) for name in spec.feature_names]
    return [(spec.name, pa.list_(pa.float32()))]


def _input_columns(spec: InputSpec, x: np.ndarray) -> dict[str, pa.Array]:
    flat = x.reshape(len(x), -1)
    if spec.feature_names and spec.categories is not None:
        labels = np.asarray([None, *spec.categories], dtype=object)  # code 0: a category training did not see
        codes = np.clip(np.nan_to_num(flat, nan=0).astype(np.int64), 0, len(spec.categories))
        return {name: pa.array(labels[codes[:, j]], pa.string()) for j, name in enumerate(spec.feature_names)}
    if spec.feature_names:
        return {name: pa.array(flat[:, j].astype(np.float32)) for j, name in enumerate(spec.feature_names)}
    width = math.prod(spec.row_shape)
    offsets = pa.array(np.arange(0, len(x) * width + 1, width, dtype=np.int32))
    return {spec.name: pa.ListArray.from_arrays(offsets, pa.array(flat.astype(np.float32).reshape(-1)))}
