"""Rich consoles for tables (stdout) and progress/status (stderr)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["progress_bar", "stderr", "stdout_console"]

stderr = Console(stderr=True)


def stdout_console() -> Console:
    """A console for tables on stdout; wide when piped, so tables are not squeezed to 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def progress_bar(*, transient: bool = False, counts: bool = True) -> Progress:
    """A rich progress bar with count (or percentage, when the units mean nothing to a reader), elapsed and
    remaining time, drawn on stderr."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn() if counts else TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=stderr,
        transient=transient,
    )
