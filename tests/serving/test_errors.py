"""The error tree's one helper for a one-line report: ``first_line``."""

from __future__ import annotations

import pytest

from mcdrop.serving.errors import InvalidArgument, first_line


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (InvalidArgument("bad shape\nsecond line"), "bad shape"),
        (InvalidArgument("\n\n  indented first  \nnext"), "indented first"),
        (InvalidArgument(""), "InvalidArgument"),  # an empty message: the type, never an IndexError
        (RuntimeError(), "RuntimeError"),
        (ValueError("   "), "ValueError"),
    ],
)
def test_first_line_is_safe_on_any_message(exc: BaseException, expected: str) -> None:
    assert first_line(exc) == expected


def test_first_line_takes_a_fallback() -> None:
    assert first_line(RuntimeError(""), fallback="unknown error") == "unknown error"
    assert first_line(RuntimeError("kept"), fallback="unknown error") == "kept"
