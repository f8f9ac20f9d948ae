"""The manifest's ``calibration`` section: what labelled rows the model did not train on said about its uncertainty.

Written by ``mcdrop export --calibration-data`` or ``mcdrop calibrate`` (``mcdrop.serving.calibration``), read
by the server, which only applies it: for each classification output a threshold on one abstention score
(``mcdrop.serving.core.scores``) above which it answers ``abstain``; for each regression output the sorted
conformal scores |y − mean| / predictive_std that turn any interval level into a finite-sample guarantee.
Also kept: the risk–coverage curve and AURC of every score, and the deciles of each score on the
calibration rows (the baseline a drift monitor compares live traffic against).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mcdrop.serving.models.fields import (
    Fields,
    boolean,
    enum_of,
    integer,
    invalid,
    list_of,
    number,
    omit_none,
    positive_int,
    string,
)

__all__ = [
    "Calibration",
    "ClassificationCalibration",
    "ConformalScores",
    "OutputCalibration",
    "RegressionCalibration",
    "ScoreRecord",
    "Selection",
    "Target",
    "TargetKind",
    "conformal_rank",
    "deciles",
]


class TargetKind(enum.StrEnum):
    RISK = "risk"
    """Selective risk (error rate among accepted rows) at most ``value``, with confidence 1 − delta."""
    COVERAGE = "coverage"
    """Accept at least ``value`` of the rows (exchangeable with the calibration rows)."""


@dataclasses.dataclass(frozen=True)
class Target:
    """What a threshold was chosen for: ``risk=R`` or ``coverage=C``, and delta (risk targets)."""

    kind: TargetKind
    value: float
    delta: float

    def __str__(self) -> str:
        return f"{self.kind.value}={self.value:g}"

    @staticmethod
    def from_json(value: Any, where: str) -> Target:
        f = Fields(value, where)
        target = Target(f.required("kind", enum_of(TargetKind)), f.required("value", number),
                        f.optional("delta", number, 0.05))  # fmt: skip
        if not 0 < target.value < 1 or not 0 < target.delta < 1:
            raise invalid(where, "value and delta in (0, 1)", {"value": target.value, "delta": target.delta})
        return target

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "value": self.value, "delta": self.delta}


@dataclasses.dataclass(frozen=True)
class Selection:
    """A threshold on one score: rows with score ≤ ``threshold`` are answered, the others abstained on."""

    threshold: float
    """``inf``: every row is accepted (written as null)."""
    coverage: float
    """Share of the calibration rows accepted."""
    risk: float
    """Error rate among the accepted calibration rows."""
    accepted: int
    errors: int
    bound: float | None = None
    """Risk targets: the upper confidence bound of the selective risk (at delta over the candidates tried)."""

    @staticmethod
    def from_json(value: Any, where: str) -> Selection:
        f = Fields(value, where)
        return Selection(f.optional("threshold", finite, math.inf), f.required("coverage", probability),
                         f.required("risk", probability), f.required("accepted", integer),
                         f.required("errors", integer), f.optional("bound", probability, None))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"threshold": None if math.isinf(self.threshold) else self.threshold, "coverage": self.coverage,
                "risk": self.risk, "accepted": self.accepted, "errors": self.errors, "bound": self.bound}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class ScoreRecord:
    """One abstention score on the calibration rows."""

    name: str
    aurc: float
    """Area under the risk–coverage curve (lower is better; the error rate when the score ranks at random)."""
    coverage: tuple[float, ...]
    """The risk–coverage curve (at most about 200 points), coverage ascending."""
    risk: tuple[float, ...]
    deciles: tuple[float, ...]
    """Minimum, the 10 %, …, 90 % quantiles and maximum of the score on the calibration rows (11 values)."""
    selection: Selection | None = None
    """The threshold for the calibration's target; None without a target or when the target is out of reach."""
    unreachable: str | None = None
    """Why no threshold of this score reaches the target (with the best bound found)."""

    @staticmethod
    def from_json(value: Any, where: str) -> ScoreRecord:
        f = Fields(value, where)
        curve = Fields(f.required("curve", lambda v, w: v), f.path("curve"))
        record = ScoreRecord(
            name=f.required("name", string),
            aurc=f.required("aurc", probability),
            coverage=curve.required("coverage", list_of(probability)),
            risk=curve.required("risk", list_of(probability)),
            deciles=f.required("deciles", decile_list),
            selection=f.optional("selection", Selection.from_json, None),
            unreachable=f.optional("unreachable", string, None),
        )
        if len(record.coverage) != len(record.risk):
            raise invalid(f.path("curve"), "coverage and risk of one length",
                          [len(record.coverage), len(record.risk)])  # fmt: skip
        return record

    def to_json(self) -> dict[str, Any]:
        record = {"name": self.name, "aurc": self.aurc,
                  "curve": {"coverage": list(self.coverage), "risk": list(self.risk)},
                  "deciles": list(self.deciles),
                  "selection": None if self.selection is None else self.selection.to_json(),
                  "unreachable": self.unreachable}  # fmt: skip
        return omit_none(record, "selection", "unreachable")


@dataclasses.dataclass(frozen=True)
class ClassificationCalibration:
    """A classification output: every score's curve, and the score the server abstains by."""

    output: str
    rows: int
    error_rate: float
    """Error rate of the Monte-Carlo prediction (argmax of the mean) on all calibration rows."""
    scores: tuple[ScoreRecord, ...]
    score: str | None
    """The score a Monte-Carlo answer abstains by (lowest AURC among those reaching the target); None: no target."""

    def record(self, name: str) -> ScoreRecord | None:
        return next((s for s in self.scores if s.name == name), None)

    def threshold(self, name: str) -> float | None:
        """The calibrated threshold of score ``name``; None when it has none."""
        record = self.record(name)
        return None if record is None or record.selection is None else record.selection.threshold

    @staticmethod
    def from_json(value: Any, where: str) -> ClassificationCalibration:
        f = Fields(value, where)
        scores = f.required("scores", list_of(ScoreRecord.from_json))
        chosen = f.optional("score", string, None)
        found = [s.name for s in scores]
        if chosen is not None and chosen not in found:
            raise invalid(f.path("score"), "one of the scores " + ", ".join(found), chosen)
        return ClassificationCalibration(f.required("output", string), f.required("rows", positive_int),
                                         f.required("error_rate", probability), scores, chosen)  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"output": self.output, "task": "classification", "rows": self.rows, "error_rate": self.error_rate,
                "score": self.score, "scores": [s.to_json() for s in self.scores]}  # fmt: skip


def finite(value: Any, where: str) -> float:
    """A finite number: a NaN threshold would accept nothing and a NaN decile would put every row in one bin."""
    result = number(value, where)
    if not math.isfinite(result):
        raise invalid(where, "a finite number", str(result))
    return result


def probability(value: Any, where: str) -> float:
    result = finite(value, where)
    if not 0.0 <= result <= 1.0:
        raise invalid(where, "a number in [0, 1]", result)
    return result


def decile_list(value: Any, where: str) -> tuple[float, ...]:
    """The 11 deciles, minimum to maximum, ascending: the drift watch bins live scores by them."""
    values = list_of(finite)(value, where)
    if len(values) != 11 or list(values) != sorted(values):
        raise invalid(where, "11 ascending numbers (minimum, 10 %, …, 90 %, maximum)", list(values))
    return values


def conformal_rank(rows: int, level: float) -> int:
    """The split-conformal rank ⌈(n + 1) · level⌉: the interval with the rank-th smallest calibration score covers a
    fresh exchangeable row with probability ≥ level. Greater than ``rows`` means no finite interval can."""
    # The tiny slack keeps (n + 1) · level from rounding up past an exact integer (e.g. 19 · 0.95 = 18.05…).
    return math.ceil((rows + 1) * level - 1e-9)


@dataclasses.dataclass(frozen=True)
class ConformalScores:
    """Split conformal calibration of one regression output: per target, the sorted |y − mean| / predictive_std."""

    sorted_scores: tuple[tuple[float, ...], ...]
    """One ascending tuple per target (the output's values, flattened; one tuple for all when pooled)."""
    pooled: bool = False
    """True: one tuple for every value of the output (outputs with many values per row)."""

    @property
    def rows(self) -> int:
        return len(self.sorted_scores[0])

    def max_level(self) -> float:
        """The highest level a finite conformal interval can guarantee with these rows: n / (n + 1)."""
        return self.rows / (self.rows + 1)

    def multiplier(self, level: float) -> np.ndarray | None:
        """Per target, the q̂ such that ``mean ± q̂ · predictive_std`` covers with probability ≥ ``level``; None when
        ``level`` needs more calibration rows than there are (see ``max_level``)."""
        rank = conformal_rank(self.rows, level)
        if rank > self.rows:
            return None
        return np.array([scores[max(rank, 1) - 1] for scores in self.sorted_scores], np.float64)

    @staticmethod
    def from_json(value: Any, where: str) -> ConformalScores:
        f = Fields(value, where)
        lists = f.required("sorted_scores", list_of(list_of(finite)))
        if not lists or len({len(s) for s in lists}) != 1 or not lists[0]:
            raise invalid(f.path("sorted_scores"), "one non-empty list per target, all of one length",
                          [len(s) for s in lists])  # fmt: skip
        if any(list(s) != sorted(s) or s[0] < 0 for s in lists):
            raise invalid(f.path("sorted_scores"), "ascending scores >= 0", "unsorted or negative values")
        return ConformalScores(lists, f.optional("pooled", boolean, False))

    def to_json(self) -> dict[str, Any]:
        return {"sorted_scores": [list(s) for s in self.sorted_scores], "pooled": self.pooled}


@dataclasses.dataclass(frozen=True)
class RegressionCalibration:
    """A regression output: conformal scores for its intervals, and how the Gaussian interval covered for
    comparison."""

    output: str
    rows: int
    conformal: ConformalScores
    gaussian_coverage: Mapping[str, float]
    """Level (``"0.95"``) → share of calibration targets inside the uncalibrated mean ± z · predictive_std."""
    deciles: tuple[float, ...]
    """Deciles (11 values, minimum to maximum) of the predictive_std on the calibration rows."""

    @staticmethod
    def from_json(value: Any, where: str) -> RegressionCalibration:
        f = Fields(value, where)
        coverage = f.required("gaussian_coverage", lambda v, w: {str(k): probability(x, f"{w}.{k}")
                                                                  for k, x in Fields(v, w).data.items()})  # fmt: skip
        return RegressionCalibration(f.required("output", string), f.required("rows", positive_int),
                                     f.required("conformal", ConformalScores.from_json), coverage,
                                     f.required("deciles", decile_list))  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"output": self.output, "task": "regression", "rows": self.rows, "conformal": self.conformal.to_json(),
                "gaussian_coverage": dict(self.gaussian_coverage), "deciles": list(self.deciles)}  # fmt: skip


OutputCalibration = ClassificationCalibration | RegressionCalibration


def _output(value: Any, where: str) -> OutputCalibration:
    task = Fields(value, where).required("task", string)
    if task == "classification":
        return ClassificationCalibration.from_json(value, where)
    if task == "regression":
        return RegressionCalibration.from_json(value, where)
    raise invalid(f"{where}.task", "'classification' or 'regression'", task)


@dataclasses.dataclass(frozen=True)
class Calibration:
    """The whole section: where the rows came from, how they were predicted, and each calibrated output."""

    data_file: str
    data_sha256: str
    rows: int
    samples: int
    """T of the Monte-Carlo predictions (the version's default)."""
    seed: int
    outputs: tuple[OutputCalibration, ...]
    target: Target | None = None
    created: str = ""
    mode: str = "monte_carlo"
    """The mode the rows were predicted in (``deterministic`` for a version without dropout): the thresholds and
    conformal scores apply to answers of that mode."""
    base_version: int | None = None
    """``mcdrop calibrate``: the version whose graphs this one copies."""

    def output(self, name: str) -> OutputCalibration | None:
        return next((o for o in self.outputs if o.output == name), None)

    @staticmethod
    def from_json(value: Any, where: str = "calibration") -> Calibration:
        f = Fields(value, where)
        data = Fields(f.required("data", lambda v, w: v), f.path("data"))
        outputs = f.required("outputs", list_of(_output))
        if not outputs:
            raise invalid(f.path("outputs"), "at least one calibrated output", [])
        return Calibration(
            data_file=data.required("file", string),
            data_sha256=data.required("sha256", string),
            rows=data.required("rows", positive_int),
            samples=f.required("samples", positive_int),
            seed=f.required("seed", integer),
            outputs=outputs,
            target=f.optional("target", Target.from_json, None),
            created=f.optional("created", string, ""),
            mode=f.optional("mode", string, "monte_carlo"),
            base_version=f.optional("base_version", positive_int, None),
        )

    def to_json(self) -> dict[str, Any]:
        record = {"data": {"file": self.data_file, "sha256": self.data_sha256, "rows": self.rows},
                  "samples": self.samples, "seed": self.seed, "mode": self.mode, "created": self.created,
                  "target": None if self.target is None else self.target.to_json(),
                  "base_version": self.base_version, "outputs": [o.to_json() for o in self.outputs]}  # fmt: skip
        return omit_none(record, "target", "base_version")


def deciles(values: Sequence[float] | np.ndarray) -> tuple[float, ...]:
    """Minimum, 10 %, …, 90 % quantiles and maximum of ``values`` (11 numbers)."""
    quantiles = np.quantile(np.asarray(values, np.float64), np.linspace(0, 1, 11))
    return tuple(float(v) for v in np.maximum.accumulate(quantiles))  # ascending even after rounding
