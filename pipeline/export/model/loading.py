"""Load what the user gave the export: their custom-layer modules, the Keras model and its training record."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mcdrop.pipeline.export.errors import ExportError
from mcdrop.pipeline.export.model.user_code import IMPORT_HINT, import_user_code
from mcdrop.serving.errors import InvalidArgument, NotFound, first_line

__all__ = ["import_modules", "load_model", "training_record"]

_UNKNOWN_CLASS_HINTS = ("Could not locate", "could not be deserialized", "Unknown")


def import_modules(targets: Sequence[str]) -> None:
    """Import the user's modules or .py files, so their registered custom layers load."""
    for target in targets:
        import_user_code(target)


def load_model(path: Path) -> Any:
    """The Keras model in ``path`` (``.keras``, or legacy ``.h5``), uncompiled.

    Raises:
        NotFound: no such file.
        InvalidArgument: not a Keras model file.
        ExportError: Keras could not load it (an unknown custom class gets a hint to ``--import`` it).
    """
    if not path.is_file():
        raise NotFound(f"Model file not found: {path}")
    if path.suffix not in (".keras", ".h5"):
        raise InvalidArgument(f"Unsupported model file {path.name}. Expected a Keras 3 .keras (or legacy .h5) file.")
    import keras

    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as exc:
        unknown_class = any(hint in str(exc) for hint in _UNKNOWN_CLASS_HINTS)
        raise ExportError(
            f"Could not load {path} as a Keras model: {first_line(exc)}" + (f" {IMPORT_HINT}" if unknown_class else "")
        ) from exc


def training_record(model_path: Path) -> dict[str, Any] | None:
    """``training.json`` next to the model, if mcdrop trained it (None if absent or unreadable)."""
    record = model_path.parent / "training.json"
    if not record.is_file():
        return None
    try:
        data = json.loads(record.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None
