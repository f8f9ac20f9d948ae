"""Score one unit of rows through the prediction core: the same numbers as a server request with the same model,
version, T and seed, because a row's masks depend only on the seed and its global position."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mcdrop.serving.core import PredictionRequest, Sampler, decision
from mcdrop.serving.core.requests import Mode
from mcdrop.serving.models.manifest import FLOAT32
from mcdrop.serving.models.repository import ModelRepository
from mcdrop.serving.protocols import table as arrow_table
from mcdrop.serving.scoring import inputs
from mcdrop.serving.scoring.inputs import Columns, Unit

__all__ = ["BOOKKEEPING", "ERROR", "ROW", "ScoreSettings", "Scorer"]

ROW = "_mcdrop_row"
"""Global row position: the driver checks every row arrives exactly once, in order."""
ERROR = "_mcdrop_error"
"""Why a row could not be scored (null for scored rows)."""
BOOKKEEPING = (ROW, ERROR)


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
    variant: str = FLOAT32


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
                variant=self.settings.variant,
            )
            prediction = self.sampler.run(self.sampler.plan(request))
            for name, values in arrow_table.prediction_columns(self.version.outputs, prediction).items():
                outputs.setdefault(name, []).append(values)
        table: dict[str, Any] = {}
        if found.keep is not None:
            for name in found.keep.column_names:
                table[name] = found.keep.column(name)
        failed = np.ones(n, dtype=bool)
        failed[found.good] = False
        for field in self.output_schema():
            parts = outputs.get(field.name)
            table[field.name] = arrow_table.column(
                np.concatenate(parts) if parts else None, found.good, failed, field.type
            )
        table[ROW] = pa.array(np.arange(unit.first_row, unit.first_row + n, dtype=np.int64))
        table[ERROR] = pa.array([found.errors.get(row) for row in range(n)], pa.string())
        return pa.table(table)

    def output_schema(self) -> pa.Schema:
        """The output columns and their types (fixed, so units whose rows all failed still match). A model with
        several outputs has one group of columns per output, each named ``OUTPUT/COLUMN`` (``cls/p_mean``)."""
        abstaining = decision.abstain_rules(self.version.manifest, Mode(self.settings.mode), None, None)
        return arrow_table.output_fields(self.version.outputs, set(abstaining))

    def _read(self, unit: Unit) -> Any:
        """The unit's file, read once per worker while its units keep coming."""
        if self._cache is None or self._cache[0] != unit.source.path:
            self._cache = (unit.source.path, inputs.read(unit.source))
        return self._cache[1]


def _runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` runs of consecutive positions."""
    if len(positions) == 0:
        return []
    breaks = np.nonzero(np.diff(positions) != 1)[0]
    starts = [int(positions[0]), *(int(positions[i + 1]) for i in breaks)]
    stops = [*(int(positions[i]) + 1 for i in breaks), int(positions[-1]) + 1]
    return list(zip(starts, stops, strict=True))
