"""Watching served uncertainty for drift: the scores of the last rows against the calibration's deciles.

A calibrated version (``mcdrop calibrate``) records, per output, the deciles of its score on the calibration rows
(classification: the score it abstains by; regression: the predictive std). Live rows fall into the ten bins those
deciles cut; with no drift each bin holds about a tenth of them. Two numbers say how far live traffic has moved:

* the **population stability index**, PSI = Σ_b (a_b − 0.1) · ln(a_b / 0.1) over the bins' live shares a_b (empty
  bins clipped to 1e-4): below 0.1 stable, 0.1–0.25 a moderate shift, above 0.25 a major one (the credit-scoring
  reading of it);
* the share of rows above the calibration's 90th percentile (0.1 without drift).

``Window`` keeps the bins of the last N rows of one output (a ring buffer: constant memory, vectorised updates);
``psi`` and ``share_above`` work on bin counts, so a supervisor can sum its workers' counts first and compute one PSI
for the whole server.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from mcdrop.serving.core.requests import OutputPrediction, Prediction
from mcdrop.serving.core.scores import Score, score_values
from mcdrop.serving.core.uncertainty import ClassificationSummary
from mcdrop.serving.models.calibration import ClassificationCalibration, OutputCalibration, RegressionCalibration
from mcdrop.serving.models.manifest import Manifest

__all__ = ["BINS", "DEFAULT_WINDOW", "EXPECTED_SHARE", "MIN_ROWS", "Watches", "Window", "psi", "share_above",
           "watched_score"]  # fmt: skip

BINS = 10
EXPECTED_SHARE = 1.0 / BINS
DEFAULT_WINDOW = 1000
MIN_ROWS = 100
"""Fewer rows than this in a window give no PSI: ten bins of a handful of rows would read noise as drift."""
_SMALLEST_SHARE = 1e-4


def psi(counts: np.ndarray) -> float | None:
    """The population stability index of decile-bin ``counts`` against equal shares; None below ``MIN_ROWS`` rows."""
    total = float(np.sum(counts))
    if total < MIN_ROWS:
        return None
    shares = np.maximum(np.asarray(counts, np.float64) / total, _SMALLEST_SHARE)
    return float(np.sum((shares - EXPECTED_SHARE) * np.log(shares / EXPECTED_SHARE)))


def share_above(counts: np.ndarray, bins: int = 1) -> float | None:
    """The share of rows in the top ``bins`` bins (1: above the calibration's 90th percentile); None without rows."""
    total = float(np.sum(counts))
    return None if total == 0 else float(np.sum(counts[-bins:])) / total


class Window:
    """The decile bins of one output's last ``size`` scores. Thread-safe."""

    def __init__(self, deciles: tuple[float, ...] | list[float], size: int = DEFAULT_WINDOW) -> None:
        """Args:
        deciles: the calibration's 11 values (minimum, 10 %, …, 90 %, maximum); the 9 inner ones cut the bins.
        size: rows kept.
        """
        if len(deciles) != BINS + 1 or any(not math.isfinite(d) for d in deciles):
            raise ValueError(f"Expected {BINS + 1} finite deciles (minimum to maximum). Received: {list(deciles)}")
        if size < 1:
            raise ValueError(f"Expected a window of at least 1 row. Received: {size}")
        self.edges = np.asarray(deciles[1:BINS], np.float64)
        self.size = size
        self._bins = np.full(size, -1, np.int64)
        self._next = 0
        self._counts = np.zeros(BINS, np.int64)
        self._lock = threading.Lock()

    def add(self, scores: np.ndarray) -> None:
        """Put the rows' ``scores`` in the window (NaN rows are left out), pushing out the oldest."""
        values = np.asarray(scores, np.float64).reshape(-1)
        values = values[~np.isnan(values)][-self.size :]
        if not len(values):
            return
        new = np.searchsorted(self.edges, values, side="right")
        with self._lock:
            positions = (self._next + np.arange(len(new))) % self.size
            old = self._bins[positions]
            np.subtract.at(self._counts, old[old >= 0], 1)
            self._bins[positions] = new
            np.add.at(self._counts, new, 1)
            self._next = int((self._next + len(new)) % self.size)

    def counts(self) -> np.ndarray:
        """Rows per decile bin (a copy)."""
        with self._lock:
            return self._counts.copy()


class Watches:
    """One ``Window`` per calibrated output of every version served, fed from the answers. Thread-safe."""

    def __init__(self, window_rows: int = DEFAULT_WINDOW) -> None:
        self.window_rows = window_rows
        self._windows: dict[tuple[str, int, str], Window | None] = {}
        self._lock = threading.Lock()

    def observe(self, prediction: Prediction, manifest: Manifest) -> list[tuple[tuple[str, int, str], Window]]:
        """Put the answer's watched scores in their windows; return the windows that changed, by (model, version,
        output). Only modes the calibration covers are watched (its deciles describe those answers)."""
        calibration = manifest.calibration
        if calibration is None or prediction.mode.value != calibration.mode:
            return []
        changed = []
        for output in prediction.outputs:
            key = (prediction.model, prediction.version, output.name)
            window = self._window(key, calibration.output(output.name))
            if window is None:
                continue
            window.add(watched_score(output, calibration.output(output.name)))
            changed.append((key, window))
        return changed

    def forget(self, model: str, version: int) -> None:
        """Drop the windows of an unloaded version."""
        with self._lock:
            for key in [key for key in self._windows if key[:2] == (model, version)]:
                del self._windows[key]

    def _window(self, key: tuple[str, int, str], record: OutputCalibration | None) -> Window | None:
        with self._lock:
            if key not in self._windows:
                deciles = _deciles(record)
                self._windows[key] = None if deciles is None else Window(deciles, self.window_rows)
            return self._windows[key]


def _deciles(record: OutputCalibration | None) -> tuple[float, ...] | None:
    if isinstance(record, RegressionCalibration):
        return record.deciles
    if isinstance(record, ClassificationCalibration):
        chosen = record.record(record.score or Score.MUTUAL_INFORMATION.value)
        return chosen.deciles if chosen is not None else None
    return None


def watched_score(output: OutputPrediction, record: OutputCalibration | None) -> np.ndarray:
    """The values a drift window takes from one output's answer: the score it abstains by (classification; mutual
    information when the calibration chose none), every predictive std (regression) — as the calibration's deciles."""
    summary = output.summary
    if isinstance(summary, ClassificationSummary):
        name = record.score if isinstance(record, ClassificationCalibration) and record.score else None
        return score_values(summary, Score(name or Score.MUTUAL_INFORMATION.value))
    return np.asarray(summary.predictive_std, np.float64).reshape(-1)
