"""Abstention scores: one number per row, higher = less certain, from a classification summary.

Each is a ranking of rows by how little the model should be trusted on them; a calibration
(``mcdrop calibrate``, ``mcdrop export --calibration-data``) picks one and a threshold above which
the server answers ``abstain``. Named once here for the calibration, the server and the evaluation.

* ``mutual_information``   epistemic part of the predictive entropy (BALD), nats; Monte Carlo only
* ``predictive_entropy``   entropy of the mean probabilities, nats: total uncertainty
* ``variation_ratio``      share of the T samples that do not vote for the modal class
* ``least_confidence``     1 − the largest mean probability
* ``deterministic_least_confidence``   1 − the largest probability of one pass without dropout: the
  baseline every Monte-Carlo score is compared against (what a server without MC dropout can do)
"""

from __future__ import annotations

import enum

import numpy as np

from mcdrop.serving.core.uncertainty import ClassificationSummary

__all__ = ["MONTE_CARLO_SCORES", "Score", "score_values"]


class Score(enum.StrEnum):
    MUTUAL_INFORMATION = "mutual_information"
    PREDICTIVE_ENTROPY = "predictive_entropy"
    VARIATION_RATIO = "variation_ratio"
    LEAST_CONFIDENCE = "least_confidence"
    DETERMINISTIC_LEAST_CONFIDENCE = "deterministic_least_confidence"


MONTE_CARLO_SCORES = (Score.MUTUAL_INFORMATION, Score.PREDICTIVE_ENTROPY, Score.VARIATION_RATIO,
                      Score.LEAST_CONFIDENCE)  # fmt: skip
"""Scores of a Monte-Carlo answer; a deterministic answer has only ``deterministic_least_confidence``."""


def score_values(summary: ClassificationSummary, score: Score) -> np.ndarray:
    """``[B]`` float64 values of ``score`` for the rows of ``summary`` (a deterministic summary for the baseline)."""
    if score in (Score.LEAST_CONFIDENCE, Score.DETERMINISTIC_LEAST_CONFIDENCE):
        return np.asarray(1.0 - summary.mean.max(axis=-1).astype(np.float64))
    return np.asarray(getattr(summary, score.value), np.float64)
