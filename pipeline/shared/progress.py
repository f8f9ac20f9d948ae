"""Progress text of the training stage (bars and consoles: ``mcdrop.serving.common.console``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["format_metrics"]


def format_metrics(logs: dict[str, Any] | None, keys: Iterable[str]) -> str:
    """``loss=0.123 val_loss=0.2`` for the keys present in ``logs``."""
    logs = logs or {}
    return " ".join(f"{key}={float(logs[key]):.4g}" for key in keys if key in logs)
