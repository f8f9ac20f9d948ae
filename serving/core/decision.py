"""What a calibrated version decides with its uncertainty: abstain or answer (classification), and conformal
intervals (regression). The numbers come from the manifest's ``calibration`` section; this module only applies
them, per request, for every transport and batch scoring alike.

* Abstain: a row is answered when its score (``mcdrop.serving.core.scores``) is ≤ the threshold, abstained on
  otherwise. A Monte-Carlo answer abstains by the calibration's chosen score at its threshold; a deterministic one
  by ``deterministic_least_confidence``, calibrated too. Requests may name another score (``abstain_score``) and
  another threshold (``abstain_threshold``); with both, any version abstains, calibrated or not.
* Intervals: a Monte-Carlo answer of a calibrated regression output uses ``mean ± q̂ · predictive_std`` with q̂ the
  conformal quantile for the requested level; other modes keep the Gaussian interval and say so.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mcdrop.serving.core.requests import Decision, Mode
from mcdrop.serving.core.scores import MONTE_CARLO_SCORES, Score, score_values
from mcdrop.serving.core.uncertainty import ClassificationSummary
from mcdrop.serving.errors import InvalidArgument
from mcdrop.serving.models.calibration import ClassificationCalibration, RegressionCalibration
from mcdrop.serving.models.manifest import Manifest, Task

__all__ = ["CONFORMAL", "GAUSSIAN", "AbstainRule", "Policy", "abstain_rules", "calibrated_abstain_rate",
           "conformal_multipliers", "decide", "metadata"]  # fmt: skip

CONFORMAL = "conformal"
GAUSSIAN = "gaussian"


@dataclasses.dataclass(frozen=True)
class AbstainRule:
    score: Score
    threshold: float


def _scores_of(mode: Mode) -> tuple[Score, ...]:
    return (Score.DETERMINISTIC_LEAST_CONFIDENCE,) if mode == Mode.DETERMINISTIC else MONTE_CARLO_SCORES


class Policy:
    """A version's decisions, worked out once (the sampler keeps one per loaded version): the rules of requests that
    do not override them, and the conformal multipliers by mode and level. What a request changes is worked out per
    request (``abstain_rules``)."""

    def __init__(self, manifest: Manifest) -> None:
        self.manifest = manifest
        self._defaults = {mode: abstain_rules(manifest, mode, None, None) for mode in Mode}
        self._multipliers: dict[tuple[Mode, float], dict[str, np.ndarray]] = {}

    def rules(self, mode: Mode, threshold: float | None, score: str | None) -> dict[str, AbstainRule]:
        if threshold is None and not score:
            return self._defaults[mode]
        return abstain_rules(self.manifest, mode, threshold, score)

    def multipliers(self, mode: Mode, level: float) -> dict[str, np.ndarray]:
        key = (mode, level)
        found = self._multipliers.get(key)
        if found is None:
            found = conformal_multipliers(self.manifest, mode, level)  # raises for a level beyond the rows
            if len(self._multipliers) < 256:  # levels are a handful in practice; never grow without bound
                self._multipliers[key] = found
        return found


def abstain_rules(manifest: Manifest, mode: Mode, threshold: float | None, score: str | None) -> dict[str, AbstainRule]:
    """Output name → the rule its answer abstains by (outputs without one are answered without ``abstain``).

    Raises:
        InvalidArgument: an unknown score, a score the mode does not compute, a bad threshold, or a request
            parameter that no output can use (the message says what would work).
    """
    if threshold is not None and not (math.isfinite(threshold) and threshold >= 0):
        raise InvalidArgument(f"Invalid abstain_threshold. Expected a finite number >= 0. Received: {threshold}")
    allowed = _scores_of(mode)
    asked: Score | None = None
    if score:
        try:
            asked = Score(score)
        except ValueError:
            raise InvalidArgument(f"Unknown abstain_score {score!r}. Expected one of "
                                  f"{', '.join(s.value for s in Score)}.") from None  # fmt: skip
        if asked not in allowed:
            raise InvalidArgument(f"abstain_score {score!r} is not computed in mode {mode.value.upper()}. Expected one "
                                  f"of {', '.join(allowed)}.")  # fmt: skip
    calibration = manifest.calibration
    rules: dict[str, AbstainRule] = {}
    for spec in manifest.outputs:
        if spec.task != Task.CLASSIFICATION:
            continue
        record = calibration.output(spec.name) if calibration is not None else None
        calibrated = record if isinstance(record, ClassificationCalibration) and mode != Mode.MOMENTS else None
        chosen = asked or _default_score(calibrated, mode)
        if chosen is None:
            continue
        limit = threshold if threshold is not None else (calibrated.threshold(chosen) if calibrated else None)
        if limit is not None:
            rules[spec.name] = AbstainRule(chosen, limit)
    if (threshold is not None or asked is not None) and not rules:
        raise InvalidArgument(_unusable(manifest, mode, threshold, asked))
    return rules


def _default_score(record: ClassificationCalibration | None, mode: Mode) -> Score | None:
    if record is None:
        return None
    if mode == Mode.DETERMINISTIC:
        return Score.DETERMINISTIC_LEAST_CONFIDENCE
    return Score(record.score) if record.score else None


def _unusable(manifest: Manifest, mode: Mode, threshold: float | None, score: Score | None) -> str:
    if not any(spec.task == Task.CLASSIFICATION for spec in manifest.outputs):
        return "abstain_threshold and abstain_score apply to classification outputs; this model has none."
    if score is None:
        scores = ", ".join(_scores_of(mode))
        return (f"abstain_threshold needs a score: this version has no calibrated score for mode "
                f"{mode.value.upper()}. Expected abstain_score too (one of {scores}).")  # fmt: skip
    return (f"abstain_score {score.value!r} has no calibrated threshold in this version. Expected abstain_threshold "
            "too.")  # fmt: skip


def decide(rule: AbstainRule, summary: ClassificationSummary) -> Decision:
    values = score_values(summary, rule.score)
    return Decision(rule.score.value, rule.threshold, values, values > rule.threshold)


def conformal_multipliers(manifest: Manifest, mode: Mode, level: float) -> dict[str, np.ndarray]:
    """Output name → q̂ (broadcast over the output's row shape) for each regression output calibrated in ``mode``.

    Raises:
        InvalidArgument: ``level`` needs more calibration rows than the version has.
    """
    calibration = manifest.calibration
    if calibration is None or mode.value != calibration.mode:
        return {}
    found: dict[str, np.ndarray] = {}
    for spec in manifest.outputs:
        record = calibration.output(spec.name)
        if not isinstance(record, RegressionCalibration):
            continue
        multiplier = record.conformal.multiplier(level)
        if multiplier is None:
            rows = record.conformal.rows
            raise InvalidArgument(
                f"Invalid interval {level:g} for model {manifest.name!r}: a conformal interval at that level needs "
                f"at least {math.ceil(level / (1 - level))} calibration rows and output {spec.name!r} was calibrated "
                f"on {rows}. Expected an interval <= {record.conformal.max_level():.4f}."
            )
        found[spec.name] = multiplier if record.conformal.pooled else multiplier.reshape(spec.row_shape)
    return found


def metadata(manifest: Manifest) -> dict[str, str | int | float]:
    """What metadata answers say of a calibrated version (nothing for an uncalibrated one): the rows, the target and,
    per output (``OUTPUT/`` prefixed when there are several), the score, threshold, coverage and risk it reached, or
    the interval calibration."""
    calibration = manifest.calibration
    if calibration is None:
        return {}
    found: dict[str, str | int | float] = {"calibration_rows": calibration.rows,
                                           "calibration_samples": calibration.samples,
                                           "calibration_mode": calibration.mode}  # fmt: skip
    if calibration.target is not None:
        found |= {"abstain_target": str(calibration.target), "abstain_delta": calibration.target.delta}
    several = len(manifest.outputs) > 1
    for record in calibration.outputs:
        start = f"{record.output}/" if several else ""
        if isinstance(record, RegressionCalibration):
            found[start + "interval_calibration"] = CONFORMAL
            continue
        chosen = record.record(record.score) if record.score else None
        if chosen is not None and chosen.selection is not None:
            found |= {start + "abstain_score": chosen.name, start + "abstain_threshold": chosen.selection.threshold,
                      start + "abstain_coverage": chosen.selection.coverage,
                      start + "abstain_risk": chosen.selection.risk}  # fmt: skip
            if chosen.selection.bound is not None:
                found[start + "abstain_risk_bound"] = chosen.selection.bound
    return found


def calibrated_abstain_rate(manifest: Manifest, output: str) -> float | None:
    """The share of calibration rows the version abstains on for ``output`` (1 − the chosen threshold's coverage): what
    an alert compares the live abstain rate with. None without a calibrated threshold."""
    record = manifest.calibration.output(output) if manifest.calibration is not None else None
    if not isinstance(record, ClassificationCalibration) or record.score is None:
        return None
    chosen = record.record(record.score)
    return None if chosen is None or chosen.selection is None else 1.0 - chosen.selection.coverage
