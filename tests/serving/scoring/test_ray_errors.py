"""Errors raised inside Ray actors come back as mcdrop's own, one line each, whatever their constructor."""

from __future__ import annotations

import pytest

pytest.importorskip("pyarrow")

from mcdrop.serving.errors import InvalidArgument, MCDropError, RpcFailed, UserInputError
from mcdrop.serving.scoring.on_ray import _unwrapped


class RayTaskError(Exception):
    """Stands in for Ray's wrapper: the actor's exception is its ``cause``."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"wrapped: {cause}")
        self.cause = cause


class CodedInvalid(InvalidArgument):
    """An error type whose constructor takes more than a message."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code


def test_our_error_comes_back_with_its_first_line() -> None:
    found = _unwrapped(RayTaskError(InvalidArgument("Column 'x' missing\n  at row 3")))
    assert type(found) is InvalidArgument and str(found) == "Column 'x' missing"


def test_an_error_type_with_another_constructor_keeps_its_place_in_the_tree() -> None:
    # type(seen)(message) raised TypeError here, inside the handler meant to report the error
    found = _unwrapped(RayTaskError(CodedInvalid(7, "bad unit\ndetail")))
    assert isinstance(found, UserInputError) and str(found) == "bad unit"
    rpc = _unwrapped(RayTaskError(RpcFailed("UNAVAILABLE", "down")))
    assert isinstance(rpc, MCDropError) and str(rpc) == "UNAVAILABLE: down"


def test_an_empty_message_is_reported_by_type() -> None:
    assert str(_unwrapped(RayTaskError(InvalidArgument("")))) == "InvalidArgument"


def test_a_foreign_error_is_returned_as_it_is() -> None:
    error = RayTaskError(RuntimeError("boom"))
    assert _unwrapped(error) is error
