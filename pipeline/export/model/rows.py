"""Real input rows for an export: ``--verify-data FILE`` (unlabelled), else the inputs of ``--calibration-data``.

They replace drawn rows wherever the export runs its graphs: the verification checks (``VERIFY_ROWS`` of them), the
fingerprint, the representative dataset of full-integer quantization and the quantised variants' agreement with
float32. Checking an EfficientNet (pixels 0..255, rescaled inside) or a ResNet (caffe-scaled pixels) on N(0, 1)
rows measures parity and rounding sensitivity where the model is never used.

Rows are taken evenly spaced over the file, so a file sorted by class or time still gives a spread.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.serving.calibration.data import read_rows
from mcdrop.serving.models.manifest import ModelTensors

__all__ = ["CALIBRATION_DATA", "MAX_ROWS", "VERIFY_DATA", "DataRows", "read"]

MAX_ROWS = 2048
"""Rows kept in memory from the file (evenly spaced): enough for quantization and the agreement figures."""

VERIFY_DATA = "verify-data"
CALIBRATION_DATA = "calibration-data"


@dataclasses.dataclass(frozen=True)
class DataRows:
    """Rows of a data file, by graph input name (``x`` for a single-input model)."""

    source: str
    """``verify-data`` or ``calibration-data``: the option they came from."""
    file: Path
    sha256: str
    rows: int
    """Rows in the file."""
    inputs: dict[str, np.ndarray]
    """Up to ``MAX_ROWS`` of them, evenly spaced, float32."""
    positions: np.ndarray
    """The file's row number of each kept row."""

    @property
    def kept(self) -> int:
        return len(next(iter(self.inputs.values())))

    def pick(self, count: int) -> dict[str, np.ndarray]:
        """``count`` rows (fewer if the file has fewer), evenly spaced over the kept rows."""
        index = _spread(self.kept, count)
        return {name: np.ascontiguousarray(value[index]) for name, value in self.inputs.items()}

    def picked_positions(self, count: int) -> np.ndarray:
        """The file's row numbers of ``pick(count)``'s rows (to take their labels)."""
        return np.asarray(self.positions[_spread(self.kept, count)])

    def record(self, used: int) -> dict[str, Any]:
        """What the manifest says about the rows an export checked its graphs on."""
        return {"source": self.source, "file": self.file.name, "sha256": self.sha256, "rows": self.rows,
                "verification_rows": min(used, self.kept)}  # fmt: skip


def read(model: ModelTensors, verify_data: Path | None, calibration_data: Path | None) -> DataRows | None:
    """The export's real rows: ``verify_data`` if given, else the calibration file's inputs; None without either.

    Raises:
        InvalidArgument: the file is missing, unreadable or does not hold the model's inputs (named).
    """
    path, source = (verify_data, VERIFY_DATA) if verify_data is not None else (calibration_data, CALIBRATION_DATA)
    if path is None:
        return None
    found = read_rows(path, model, "verification data" if source == VERIFY_DATA else "calibration data")
    index = _spread(found.rows, MAX_ROWS)
    inputs = {name: np.ascontiguousarray(value[index], dtype=np.float32) for name, value in found.inputs.items()}
    return DataRows(source, path, found.sha256, found.rows, inputs, index)


def _spread(rows: int, count: int) -> np.ndarray:
    """``min(rows, count)`` indices evenly spaced over ``range(rows)``, first and last included."""
    if count >= rows:
        return np.arange(rows)
    return np.unique(np.linspace(0, rows - 1, count).round().astype(np.int64))
