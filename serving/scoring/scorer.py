"""Score one unit of rows through the prediction core: the same numbers as a server request with the same model,
version, T and seed, because a row's masks depend only on the seed and its global position."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mcdrop.serving.core import OutputPrediction, Prediction, PredictionRequest, Sampler, decision
from mcdrop.serving.core.requests import Mode
from mcdrop.serving.models.manifest import OutputSpec, Task
from mcdrop.serving.models.repository import ModelRepository
from mcdrop.serving.protocols.outputs import PER_ROW_OUTPUTS, REGRESSION_OUTPUTS, field_arrays, prefix
from mcdrop.serving.scoring import inputs
from mcdrop.serving.scoring.inputs import Columns, Unit

__all__ = ["BOOKKEEPING", "ERROR", "ROW", "ScoreSettings", "Scorer"]

ROW = "_mcdrop_row"
"""Global row position: the driver checks every row arrives exactly once, in order."""
ERROR = "_mcdrop_error"
"""Why a row could not be scored (null for scored rows)."""
BOOKKEEPING = (ROW, ERROR)


CLASS_PROBABILITIES = {"mean": "p_mean", "std": "p_std"}
"""Classification: the per-class outputs' column names (lists of floats); every other output keeps its name
(``mcdrop.serving.protocols.outputs``)."""


@dataclasses.dataclass(frozen=True)
class ScoreSettings:
    """What every worker needs to score (plain data: it travels to Ray actors)."""

    repository: str
    model: str
    version: int
    samples: int
    seed: int
    mode: str
    interval: float
    columns: Columns
    threads: int = 1


class Scorer:
    """One model version loaded in this process, scoring units of rows. Thread-safe (the sampler is)."""

    def __init__(self, settings: ScoreSettings, pool_size: int = 1) -> None:
        self.settings = settings
        store = ModelRepository(Path(settings.repository), pool_size=pool_size, interpreter_threads=settings.threads,
                                max_versions=1_000_000)  # fmt: skip
        store.scan()
        # No request limits: a unit's size is bounded by the job's batch size, and T by the job's options.
        self.sampler = Sampler(store)
        self.version = store.get(settings.model, settings.version)
        self._cache: tuple[str, Any] | None = None

    def score(self, unit: Unit) -> pa.Table:
        """Every row of ``unit``: its outputs, or its error; plus the bookkeeping columns."""
        data = self._read(unit)
        found = inputs.features(data, unit, self.settings.columns)
        n = unit.stop - unit.start
        outputs: dict[str, list[np.ndarray]] = {}
        for start, stop in _runs(found.good):  # contiguous rows keep their global positions for the masks
            positions = slice(np.searchsorted(found.good, start), np.searchsorted(found.good, stop - 1) + 1)
            rows = {name: values[positions] for name, values in found.inputs.items()}
            request = PredictionRequest(
                model=self.settings.model,
                inputs=rows,
                version=self.settings.version,
                mode=self.settings.mode,
                samples=self.settings.samples,
                seed=self.settings.seed,
                interval=self.settings.interval,
                first_row=unit.first_row + start,
            )
            prediction = self.sampler.run(self.sampler.plan(request))
            for name, values in self._columns(prediction).items():
                outputs.setdefault(name, []).append(values)
        table: dict[str, Any] = {}
        if found.keep is not None:
            for name in found.keep.column_names:
                table[name] = found.keep.column(name)
        failed = np.ones(n, dtype=bool)
        failed[found.good] = False
        for field in self.output_schema():
            parts = outputs.get(field.name)
            table[field.name] = _column(np.concatenate(parts) if parts else None, found.good, failed, field.type)
        table[ROW] = pa.array(np.arange(unit.first_row, unit.first_row + n, dtype=np.int64))
        table[ERROR] = pa.array([found.errors.get(row) for row in range(n)], pa.string())
        return pa.table(table)

    def output_schema(self) -> pa.Schema:
        """The output columns and their types (fixed, so units whose rows all failed still match). A model with
        several outputs has one group of columns per output, each named ``OUTPUT/COLUMN`` (``cls/p_mean``)."""
        fields: list[tuple[str, pa.DataType]] = []
        abstaining = decision.abstain_rules(self.version.manifest, Mode(self.settings.mode), None, None)
        for spec in self.version.outputs:
            start = prefix(spec.name, len(self.version.outputs))
            fields += [(start + name, kind) for name, kind in _output_fields(spec)]
            if spec.name in abstaining:
                fields += [(start + "abstain", pa.bool_()), (start + "abstain_score", pa.float64())]
        return pa.schema(fields)

    def _columns(self, prediction: Prediction) -> dict[str, np.ndarray]:
        columns: dict[str, np.ndarray] = {}
        for spec, output in zip(self.version.outputs, prediction.outputs, strict=True):
            start = prefix(spec.name, len(prediction.outputs))
            columns.update({start + name: values for name, values in _output_columns(spec, output).items()})
        return columns

    def _read(self, unit: Unit) -> Any:
        """The unit's file, read once per worker while its units keep coming."""
        if self._cache is None or self._cache[0] != unit.source.path:
            self._cache = (unit.source.path, inputs.read(unit.source))
        return self._cache[1]


def _output_fields(spec: OutputSpec) -> list[tuple[str, pa.DataType]]:
    if spec.task == Task.CLASSIFICATION:
        probabilities = pa.list_(pa.float32())
        fields = [("predicted_class", pa.int64())]
        if spec.class_labels:
            fields.append(("predicted_label", pa.string()))
        fields += [(column, probabilities) for column in CLASS_PROBABILITIES.values()]
        return fields + [(name, pa.float64()) for name in PER_ROW_OUTPUTS if name != "predicted_class"]
    kind = pa.float64() if _scalar(spec) else pa.list_(pa.float64())
    return [(name, kind) for name in REGRESSION_OUTPUTS]


def _scalar(spec: OutputSpec) -> bool:
    return list(spec.row_shape) in ([], [1])


def _output_columns(spec: OutputSpec, output: OutputPrediction) -> dict[str, np.ndarray]:
    arrays = field_arrays(output)
    if output.task == Task.CLASSIFICATION:
        columns = {CLASS_PROBABILITIES.get(name, name): values for name, values in arrays.items()}
        # abstain (bool) and abstain_score (float64) pass through as they are
        for name in CLASS_PROBABILITIES.values():
            columns[name] = columns[name].astype(np.float32)
        if output.class_labels:
            labels = np.asarray(output.class_labels, dtype=object)
            columns["predicted_label"] = labels[arrays["predicted_class"]]
        return columns
    scalar = _scalar(spec)
    return {
        name: (values.reshape(len(values), -1)[:, 0] if scalar else values).astype(np.float64)
        for name, values in arrays.items()
    }


def _column(values: np.ndarray | None, good: np.ndarray, failed: np.ndarray, kind: pa.DataType) -> pa.Array:
    """``values`` (one per good row) spread over all rows, null where a row failed; vectorised, no Python lists."""
    n = len(failed)
    mask = pa.array(failed) if failed.any() else None
    if pa.types.is_list(kind):
        width = values.shape[1] if values is not None else 0
        flat = np.zeros((n, width), dtype=kind.value_type.to_pandas_dtype())
        if values is not None:
            flat[good] = values
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


def _runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` runs of consecutive positions."""
    if len(positions) == 0:
        return []
    breaks = np.nonzero(np.diff(positions) != 1)[0]
    starts = [int(positions[0]), *(int(positions[i + 1]) for i in breaks)]
    stops = [*(int(positions[i]) + 1 for i in breaks), int(positions[-1]) + 1]
    return list(zip(starts, stops, strict=True))
