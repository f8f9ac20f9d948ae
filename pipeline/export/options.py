"""What one export is asked to do: ``ExportOptions``, checked before any work starts.

Users meet these settings in two ways: as ``mcdrop export`` flags (``--noise-precision``) and as keys of a batch
job entry or a library call (``noise_precision``). Messages name a setting with ``setting()``, so both readers
recognise it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mcdrop.pipeline.export.convert.shapes import Shape
from mcdrop.serving.calibration.calibrate import CalibrationOptions
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.models.layout import check_model_name
from mcdrop.serving.models.manifest import FULL_INTEGER, QUANTIZATIONS

__all__ = ["DEFAULT_SAMPLES", "ExportOptions", "setting"]

DEFAULT_SAMPLES = 100

_FLAGS = {
    "samples": "--samples",
    "quantize": "--quantize",
    "task": "--task",
    "labels": "--labels",
    "imports": "--import",
    "noise_precision": "--noise-precision",
    "mc_layers": "--mc-layers",
    "moments": "--no-moments",
    "device_shapes": "--device-shape",
    "calibration": "--calibration-data",
    "verify_data": "--verify-data",
}
_BATCH_KEYS = {"imports": "import"}
"""Batch-entry keys that differ from the field's name."""


def setting(field: str) -> str:
    """A setting as both of its users know it: ``noise_precision (--noise-precision)``."""
    key = _BATCH_KEYS.get(field, field)
    flag = _FLAGS.get(field)
    return f"{key} ({flag})" if flag else key


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """One export: the model, where it goes, and how its graphs are made and verified."""

    model_path: Path
    repository: Path
    name: str
    samples: int = DEFAULT_SAMPLES
    """The default T recorded in the manifest (a server's T when a request names none)."""
    quantize: tuple[str, ...] = ()
    """Quantised variants for the server, besides float32: any of ``QUANTIZATIONS``."""
    task: str | None = None
    """``classification`` or ``regression``; for a model with several outputs ``NAME=KIND[,NAME=KIND…]``."""
    labels: list[str] | None = None
    """Class labels (of the model's only classification output)."""
    seed: int = 0
    """Seed of the verification inputs and masks."""
    imports: tuple[str, ...] = ()
    """Modules or .py files to import before loading (the user's registered custom layers)."""
    noise_precision: tuple[float, ...] = ()
    """Observation-noise precision tau per output (regression); overrides the training record's."""
    mc_layers: str = "all"
    """Which dropout sites stay stochastic: ``all``, ``last`` or names (``mcdrop.pipeline.export.model.selection``)."""
    moments: bool = True
    """Also export the one-pass moments graph where every layer after the first dropout has a propagation rule."""
    device_shapes: tuple[Shape, ...] = ()
    """Static shapes (from ``--device-shape B=1,T=32``, ``convert.shapes.parse_shape``) of extra graphs for devices."""
    calibration: CalibrationOptions | None = None
    """Labelled rows to calibrate abstention and intervals on (``mcdrop.serving.calibration``); None: not calibrated."""
    verify_data: Path | None = None
    """Unlabelled rows of the model's inputs to verify, fingerprint and quantise on (``model.rows``); None: the
    calibration data's inputs, else drawn rows."""
    extra_source: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Recorded under ``source`` in the manifest (e.g. the batch job entry that produced it)."""

    def check(self) -> None:
        """Refuse unusable options before any work starts.

        Raises:
            InvalidArgument: a bad model name, an unknown quantization or a sample count below 1.
        """
        check_model_name(self.name)
        for quantization in self.quantize:
            if quantization not in QUANTIZATIONS:
                raise InvalidArgument(
                    f"Unknown quantization {quantization!r} in {setting('quantize')}. "
                    f"Expected any of {', '.join(QUANTIZATIONS)}."
                )
            if quantization in FULL_INTEGER and self.verify_data is None and self.calibration is None:
                raise InvalidArgument(
                    f"{setting('quantize')} {quantization} calibrates its int8 ranges on real rows of the model's "
                    f"inputs, and none were given. Expected {setting('verify_data')} FILE (rows without labels) or "
                    f"{setting('calibration')} FILE."
                )
        if len(set(self.quantize)) != len(self.quantize):
            raise InvalidArgument(f"{setting('quantize')} names a variant twice: {', '.join(self.quantize)}.")
        if self.samples < 1:
            raise InvalidArgument(
                f"Invalid default sample count {setting('samples')}. Expected an integer >= 1. Received: {self.samples}"
            )
