"""Tabular data with several inputs or outputs: categorical columns as integer codes (one model input each, read
by embeddings) and several targets as several heads (one model output each).

A categorical column's vocabulary comes from the training split only; code ``i + 1`` is ``vocabulary[i]`` and
code 0 is every value the training split did not hold (the validation split, and serving, may hold such values).
An empty field is a category of its own (``""``): tables often leave categories blank, and "blank" is information.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from mcdrop.serving.errors import InvalidArgument

UNKNOWN_CODE = 0
"""The code of a value the training split did not hold."""

NUMERIC_INPUT = "numeric"
"""The model input holding the numeric (non-categorical) feature columns."""


@dataclasses.dataclass
class Categorical:
    """One categorical column, encoded: a model input of one integer code per row."""

    name: str
    """The model input's name (the column's name made an identifier)."""
    column: str
    vocabulary: list[str]
    """Category ``vocabulary[i]`` has code ``i + 1``; code 0 is an unseen category."""
    codes_train: np.ndarray
    """``[N, 1]`` int32."""
    codes_val: np.ndarray

    @property
    def codes(self) -> int:
        """How many codes the embeddings take (the vocabulary and the unseen code)."""
        return len(self.vocabulary) + 1

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "feature_names": [self.column], "categorical": True,
                "vocabulary": self.vocabulary, "unknown_code": UNKNOWN_CODE}  # fmt: skip


@dataclasses.dataclass
class Head:
    """One target column as one model output with its own task."""

    name: str
    """The model output's name (the target column made an identifier)."""
    task: str
    y_train: np.ndarray
    """Class indices (int64) or float32 targets, ``[N]``."""
    y_val: np.ndarray
    target_names: list[str]
    class_labels: list[str] | None

    @property
    def num_outputs(self) -> int:
        return len(self.class_labels) if self.class_labels is not None else 1


def identifier(name: str) -> str:
    """``name`` as a tensor name: letters, digits and underscores, not starting with a digit."""
    cleaned = re.sub(r"[^A-Za-z0-9_]", "_", name.strip())
    return cleaned if cleaned and not cleaned[0].isdigit() else f"c_{cleaned}"


def unique_names(columns: list[str], taken: set[str], what: str) -> list[str]:
    """Identifier names for ``columns``, refusing two that clash (or one that clashes with ``taken``)."""
    names = [identifier(column) for column in columns]
    seen: dict[str, str] = {}
    for column, name in zip(columns, names, strict=True):
        if name in seen or name in taken or name == "samples":
            other = seen.get(name, name)
            raise InvalidArgument(
                f"{what} columns {other!r} and {column!r} both become the tensor name {name!r}. Expected column "
                "names that differ in letters, digits or underscores (and are not 'samples')."
            )
        seen[name] = column
    return names


def encode(column: str, name: str, train: np.ndarray, val: np.ndarray) -> Categorical:
    """Codes for one categorical column; the vocabulary is the training split's sorted distinct values."""
    vocabulary = sorted({str(v) for v in train.tolist()})
    codes = {value: code for code, value in enumerate(vocabulary, start=1)}

    def lookup(values: np.ndarray) -> np.ndarray:
        return np.array([codes.get(str(v), UNKNOWN_CODE) for v in values.tolist()], np.int32).reshape(-1, 1)

    return Categorical(name, column, vocabulary, lookup(train), lookup(val))


def embedding_width(codes: int) -> int:
    """A common rule of thumb for an embedding's width (fast.ai's ``1.6 n^0.56``), at most 16."""
    return int(max(2, min(16, round(1.6 * codes**0.56))))
