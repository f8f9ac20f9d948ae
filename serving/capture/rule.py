"""``--capture-when``: which rows of an answer are captured.

* ``always``: every row;
* ``abstain``: the rows any classification output abstains on (a calibrated version, or a request with an abstain
  threshold; other answers have none);
* ``SCORE>VALUE``: the rows where any output's ``SCORE`` is above ``VALUE`` — a classification score
  (``mutual_information``, ``predictive_entropy``, ``variation_ratio``, ``least_confidence``) or a regression one
  (``std``, ``predictive_std``: the mean over the output's values).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mcdrop.serving.core.requests import Prediction
from mcdrop.serving.core.scores import MONTE_CARLO_SCORES, Score, score_values
from mcdrop.serving.core.uncertainty import ClassificationSummary
from mcdrop.serving.errors import InvalidArgument

__all__ = ["ABSTAIN", "ALWAYS", "REGRESSION_SCORES", "CaptureRule", "parse_rule"]

ALWAYS = "always"
ABSTAIN = "abstain"
REGRESSION_SCORES = ("std", "predictive_std")
CLASSIFICATION_SCORES = tuple(score.value for score in MONTE_CARLO_SCORES)


@dataclasses.dataclass(frozen=True)
class CaptureRule:
    """Parsed ``--capture-when``: ``kind`` is ``always``, ``abstain`` or ``score`` (with ``score`` > ``threshold``)."""

    kind: str
    score: str = ""
    threshold: float = 0.0

    def __str__(self) -> str:
        return f"{self.score}>{self.threshold:g}" if self.kind == "score" else self.kind

    def rows(self, prediction: Prediction) -> np.ndarray:
        """The positions of the captured rows in ``prediction`` (int64, ascending; maybe empty)."""
        batch = len(prediction.outputs[0].summary.mean)
        if self.kind == ALWAYS:
            return np.arange(batch)
        keep = np.zeros(batch, bool)
        for output in prediction.outputs:
            if self.kind == ABSTAIN:
                if output.decision is not None:
                    keep |= np.asarray(output.decision.abstain, bool)
                continue
            values = _score(output.summary, self.score)
            if values is not None:
                with np.errstate(invalid="ignore"):
                    keep |= values > self.threshold
        return np.flatnonzero(keep)


def parse_rule(text: str) -> CaptureRule:
    """``always``, ``abstain`` or ``SCORE>VALUE``.

    Raises:
        InvalidArgument: anything else, naming what is accepted.
    """
    cleaned = text.strip()
    if cleaned in (ALWAYS, ABSTAIN):
        return CaptureRule(cleaned)
    score, sign, value = cleaned.partition(">")
    score = score.strip()
    names = (*CLASSIFICATION_SCORES, *REGRESSION_SCORES)
    try:
        threshold = float(value)
    except ValueError:
        threshold = math.nan
    if not sign or score not in names or not math.isfinite(threshold):
        raise InvalidArgument(
            f"Invalid setting capture_when (--capture-when / MCDROP_CAPTURE_WHEN). Expected always, abstain or "
            f"SCORE>VALUE with SCORE one of {', '.join(names)} (e.g. mutual_information>0.2). Received: {text!r}"
        )
    return CaptureRule("score", score, threshold)


def _score(summary: object, name: str) -> np.ndarray | None:
    """Per-row values of ``name`` for one output's summary; None when the output has no such score."""
    if isinstance(summary, ClassificationSummary):
        return score_values(summary, Score(name)) if name in CLASSIFICATION_SCORES else None
    if name not in REGRESSION_SCORES:
        return None
    values = np.asarray(getattr(summary, name), np.float64)
    return np.asarray(values.reshape(len(values), -1).mean(axis=1))
