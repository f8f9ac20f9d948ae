"""Verify exports against strict float32 TensorFlow: oneDNN's optimised kernels off unless the user says otherwise.

The export's parity checks compare LiteRT with TensorFlow running the same Keras model, at 1e-5 (scaled by
the model's measured rounding sensitivity). On some CPUs TensorFlow's oneDNN kernels compute float32
convolutions with less precision than float32 (TensorFlow's own start-up notice: "You may see slightly
different numerical results"; oneDNN's reduced-precision and large-accumulation paths lose up to ~3e-4
relative), which makes the reference, not the graph, the inexact side. TensorFlow reads the switch only when
it is imported, so this runs before that, and never overrides a value the user set.
"""

from __future__ import annotations

import os
import sys

__all__ = ["ONEDNN_VARIABLE", "onednn_enabled", "use_strict_float32"]

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"


def use_strict_float32() -> None:
    """Turn TensorFlow's oneDNN kernels off for this process, if TensorFlow is not imported yet and the user has
    not chosen (``TF_ENABLE_ONEDNN_OPTS`` unset)."""
    if "tensorflow" not in sys.modules:
        os.environ.setdefault(ONEDNN_VARIABLE, "0")


def onednn_enabled() -> bool:
    """Whether TensorFlow (as configured by the environment) uses its oneDNN kernels: on unless set to 0 or false,
    the values TensorFlow reads as off."""
    return os.environ.get(ONEDNN_VARIABLE, "1").strip().lower() not in ("0", "false")
