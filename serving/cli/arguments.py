"""Argument types and checks shared by the subcommands: bad values are usage errors (exit 2, one line)."""

from __future__ import annotations

import argparse
import importlib.util

from mcdrop.serving.errors import MissingExtra

__all__ = ["names", "positive_float", "positive_floats", "positive_int", "require_extra"]


def positive_int(text: str) -> int:
    """An integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, received {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, received {value}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number > 0, received {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number > 0, received {text}")
    return value


def positive_floats(text: str) -> tuple[float, ...]:
    """``0.5,2`` → ``(0.5, 2.0)``, each finite and > 0."""
    return tuple(positive_float(part) for part in names(text))


def names(text: str) -> list[str]:
    """``a,b , c`` → ``["a", "b", "c"]``."""
    return [part.strip() for part in text.split(",") if part.strip()]


def require_extra(extra: str, *modules: str) -> None:
    """Raise ``MissingExtra`` unless every module in ``modules`` can be imported."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtra(
            f"this command needs {', '.join(missing)}, which the base install leaves out. "
            f"Install it with: pip install 'mcdrop[{extra}]'"
        )
