"""The export's own error, in mcdrop's one error tree (``mcdrop.serving.errors``): the CLI exits 1 on it."""

from __future__ import annotations

from mcdrop.serving.errors import MCDropError

__all__ = ["ExportError", "verification_failed"]


class ExportError(MCDropError):
    """An export could not be produced or failed its own verification; nothing was published."""


def verification_failed(problems: list[str], what: str = "Export") -> ExportError:
    """The one message for failed checks: ``what`` (the export, or a variant) and every failing check's line."""
    return ExportError(f"{what} verification failed; nothing was published:\n  " + "\n  ".join(problems))
