"""The export's own error, in mcdrop's one error tree (``mcdrop.serving.errors``): the CLI exits 1 on it."""

from __future__ import annotations

from mcdrop.serving.errors import MCDropError

__all__ = ["ExportError"]


class ExportError(MCDropError):
    """An export could not be produced or failed its own verification; nothing was published."""
