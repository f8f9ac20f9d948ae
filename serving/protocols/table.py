"""A prediction as Arrow columns: the table layout ``mcdrop score`` writes and capture files hold.

One group of columns per model output, named as in ``mcdrop.serving.protocols.outputs`` except the per-class
lists, which are ``p_mean`` and ``p_std``; several outputs are ``OUTPUT/COLUMN`` (``cls/p_mean``). A classification
output that can abstain adds ``abstain`` (bool) and ``abstain_score``. A dense classification output (a class per
pixel, ``[H, W, C]`` per row) has every per-row column as a list over its pixels, row-major (``predicted_class``
``list<int64>`` of H x W, ``p_mean`` of H x W x C, …) and no ``predicted_label``. The types are fixed by the
manifest, so tables of different requests (or of units whose rows all failed) share one schema.

Imports pyarrow: only batch scoring and capture (extras ``score`` and ``capture``) import this module.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from mcdrop.serving.core.requests import OutputPrediction, Prediction
from mcdrop.serving.models.manifest import OutputSpec, Task
from mcdrop.serving.protocols.outputs import ABSTAIN_OUTPUTS, PER_ROW_OUTPUTS, REGRESSION_OUTPUTS, field_arrays, prefix

__all__ = ["CLASS_PROBABILITIES", "column", "output_fields", "prediction_columns"]

CLASS_PROBABILITIES = {"mean": "p_mean", "std": "p_std"}
"""Classification: the per-class outputs' column names (lists of floats); every other output keeps its name."""


def output_fields(outputs: tuple[OutputSpec, ...] | list[OutputSpec], abstaining: set[str]) -> pa.Schema:
    """The columns of ``outputs`` and their types; ``abstaining``: the outputs that get the abstain columns."""
    fields: list[tuple[str, pa.DataType]] = []
    for spec in outputs:
        start = prefix(spec.name, len(outputs))
        fields += [(start + name, kind) for name, kind in _fields(spec)]
        if spec.name in abstaining:
            dense = _dense(spec)
            fields += [(start + "abstain", pa.list_(pa.bool_()) if dense else pa.bool_()),
                       (start + "abstain_score", pa.list_(pa.float64()) if dense else pa.float64())]  # fmt: skip
    return pa.schema(fields)


def prediction_columns(
    outputs: tuple[OutputSpec, ...] | list[OutputSpec], prediction: Prediction
) -> dict[str, np.ndarray]:
    """Every column of ``prediction`` (one value per row), by column name."""
    columns: dict[str, np.ndarray] = {}
    for spec, output in zip(outputs, prediction.outputs, strict=True):
        start = prefix(spec.name, len(prediction.outputs))
        columns.update({start + name: values for name, values in _columns(spec, output).items()})
    return columns


def column(values: np.ndarray | None, good: np.ndarray, failed: np.ndarray, kind: pa.DataType) -> pa.Array:
    """``values`` (one per good row) spread over all rows, null where a row failed; vectorised, no Python lists."""
    n = len(failed)
    mask = pa.array(failed) if failed.any() else None
    if pa.types.is_list(kind):
        width = int(np.prod(values.shape[1:])) if values is not None else 0
        flat = np.zeros((n, width), dtype=kind.value_type.to_pandas_dtype())
        if values is not None:
            flat[good] = values.reshape(len(values), -1)
        offsets = pa.array(np.arange(0, n * width + 1, width, dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, pa.array(flat.reshape(-1)), type=kind, mask=mask)
    if pa.types.is_string(kind):
        cells = np.full(n, None, dtype=object)
        if values is not None:
            cells[good] = values
        return pa.array(cells, kind)
    full = np.zeros(n, dtype=kind.to_pandas_dtype())
    if values is not None:
        full[good] = values
    return pa.array(full, kind, mask=failed if failed.any() else None)


def _fields(spec: OutputSpec) -> list[tuple[str, pa.DataType]]:
    if spec.task == Task.CLASSIFICATION:
        probabilities = pa.list_(pa.float32())
        if _dense(spec):  # per pixel: lists over the pixels; labels would be H x W strings per row, left out
            fields = [("predicted_class", pa.list_(pa.int64()))]
            fields += [(name, probabilities) for name in CLASS_PROBABILITIES.values()]
            return fields + [(name, pa.list_(pa.float64())) for name in PER_ROW_OUTPUTS if name != "predicted_class"]
        fields = [("predicted_class", pa.int64())]
        if spec.class_labels:
            fields.append(("predicted_label", pa.string()))
        fields += [(name, probabilities) for name in CLASS_PROBABILITIES.values()]
        return fields + [(name, pa.float64()) for name in PER_ROW_OUTPUTS if name != "predicted_class"]
    kind = pa.float64() if _scalar(spec) else pa.list_(pa.float64())
    return [(name, kind) for name in REGRESSION_OUTPUTS]


def _dense(spec: OutputSpec) -> bool:
    """A classification output with axes between the batch and the classes: a class per pixel."""
    return spec.task == Task.CLASSIFICATION and len(spec.row_shape) > 1


def _scalar(spec: OutputSpec) -> bool:
    return list(spec.row_shape) in ([], [1])


def _columns(spec: OutputSpec, output: OutputPrediction) -> dict[str, np.ndarray]:
    arrays = field_arrays(output)
    if output.task == Task.CLASSIFICATION:
        columns = {CLASS_PROBABILITIES.get(name, name): values for name, values in arrays.items()}
        # abstain (bool) and abstain_score (float64) pass through as they are
        for name in CLASS_PROBABILITIES.values():
            columns[name] = columns[name].astype(np.float32)
        if output.class_labels and not _dense(spec):
            labels = np.asarray(output.class_labels, dtype=object)
            columns["predicted_label"] = labels[arrays["predicted_class"]]
        return columns
    scalar = _scalar(spec)
    return {
        name: (values.reshape(len(values), -1)[:, 0] if scalar else values).astype(np.float64)
        for name, values in arrays.items()
        if name not in ABSTAIN_OUTPUTS
    }
