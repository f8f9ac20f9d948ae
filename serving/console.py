"""Rich consoles for tables (stdout) and progress/status (stderr)."""

from __future__ import annotations

from rich.console import Console

stderr = Console(stderr=True)


def stdout_console() -> Console:
    """A console for tables on stdout; wide when piped, so tables are not squeezed to 80 columns."""
    console = Console()
    return console if console.is_terminal else Console(width=160)
