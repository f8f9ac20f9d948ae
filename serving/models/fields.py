"""Reading a JSON manifest field by field: every failure names the field (its dotted path), what was expected and
what was received. Used by the manifest (``mcdrop.serving.models.manifest``) and its calibration section."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from mcdrop.serving.errors import InvalidArgument

__all__ = [
    "Fields",
    "Record",
    "arrays",
    "batch_shape",
    "boolean",
    "dimension",
    "enum_of",
    "integer",
    "invalid",
    "jsonable",
    "list_of",
    "number",
    "omit_none",
    "positive_int",
    "record",
    "string",
    "symbolic_dimension",
    "unique",
]

Record = Mapping[str, Any]
"""An informational part of the manifest: kept and written back as read, never interpreted by serving."""
T = TypeVar("T")


class Fields:
    """One JSON object of the manifest, read field by field; ``where`` is its dotted path."""

    def __init__(self, value: Any, where: str) -> None:
        if not isinstance(value, Mapping):
            raise invalid(where, "an object", value)
        self.data: Mapping[str, Any] = value
        self.where = where

    def path(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def required(self, key: str, check: Callable[[Any, str], T]) -> T:
        if key not in self.data:
            raise InvalidArgument(f"Invalid manifest: field `{self.path(key)}` is missing.")
        return check(self.data[key], self.path(key))

    def optional(self, key: str, check: Callable[[Any, str], T], default: T) -> T:
        value = self.data.get(key)
        return default if value is None else check(value, self.path(key))

    def record(self, key: str) -> Record:
        return self.optional(key, record, {})

    def extra(self, known: Sequence[str]) -> Record:
        return {k: v for k, v in self.data.items() if k not in known}


def invalid(where: str, expected: str, received: Any) -> InvalidArgument:
    shown = json.dumps(received)[:80] if jsonable(received) else type(received).__name__
    return InvalidArgument(f"Invalid manifest field `{where or '(top level)'}`. Expected {expected}. Received: {shown}")


def jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise invalid(where, "a string", value)
    return value


def integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(where, "an integer", value)
    return value


def positive_int(value: Any, where: str) -> int:
    if integer(value, where) < 1:
        raise invalid(where, "an integer >= 1", value)
    return int(value)


def boolean(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(where, "true or false", value)
    return value


def number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(where, "a number", value)
    return float(value)


def record(value: Any, where: str) -> Record:
    if not isinstance(value, Mapping):
        raise invalid(where, "an object", value)
    return dict(value)


def list_of(item: Callable[[Any, str], T]) -> Callable[[Any, str], tuple[T, ...]]:
    def check(value: Any, where: str) -> tuple[T, ...]:
        if not isinstance(value, list):
            raise invalid(where, "a list", value)
        return tuple(item(v, f"{where}[{i}]") for i, v in enumerate(value))

    return check


def dimension(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < -1:
        raise invalid(where, "a dimension (an integer >= 0, or -1 for any size)", value)
    return value


def batch_shape(value: Any, where: str) -> tuple[int, ...]:
    """``[-1 (any batch size), then one row's fixed dimensions]``."""
    shape = list_of(dimension)(value, where)
    if not shape or any(d < 0 for d in shape[1:]):
        raise invalid(where, "[-1 or a batch size, then fixed dimensions]", list(shape))
    return shape


def symbolic_dimension(value: Any, where: str) -> int | str:
    """A graph's output dimension: a size, -1, or a symbol (``T`` samples, ``B`` rows)."""
    return value if isinstance(value, str) else dimension(value, where)


def enum_of(kind: type[enum.StrEnum]) -> Callable[[Any, str], Any]:
    def check(value: Any, where: str) -> Any:
        try:
            return kind(value)
        except ValueError:
            raise invalid(where, "one of " + ", ".join(repr(k.value) for k in kind), value) from None

    return check


def arrays(value: Any, where: str) -> Any:
    """Nested lists (one array), or an object of them by tensor name (several)."""
    if isinstance(value, list):
        return list(value)
    if isinstance(value, Mapping) and value and all(isinstance(v, list) for v in value.values()):
        return {str(k): list(v) for k, v in value.items()}
    raise invalid(where, "nested lists, or an object of them by tensor name", value)


def unique(names: Sequence[str], where: str) -> None:
    if len(set(names)) != len(names):
        raise invalid(where, "unique names", list(names))


def omit_none(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in keys or v is not None}
