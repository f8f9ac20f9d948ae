"""Selective classification: risk–coverage curves, AURC, and thresholds with a guarantee.

A row is *accepted* when its score (higher = less certain) is at most a threshold θ; *coverage* is the share
accepted, *selective risk* the error rate among them. Two ways to choose θ from n calibration rows:

* ``risk_threshold`` — SGR's bound (Geifman & El-Yaniv 2017, "Selective classification for deep neural
  networks") over a grid of candidates fixed before any label is read: the scores at 5 %, 10 %, …, 100 % of the
  rows. Each candidate's selective risk is bounded by the exact binomial (Clopper–Pearson) upper limit at level
  δ / 20; the candidate of largest coverage whose limit is ≤ the target is chosen, and its true selective risk is
  ≤ the target with probability ≥ 1 − δ, for rows exchangeable with the calibration rows. (SGR's binary search
  over ⌈log2 n⌉ thresholds assumes the bound grows with coverage; on a good classifier it does not — one error
  among the most certain half can stop the search below thresholds that pass, as measured on the digits MLP.)
* ``coverage_threshold`` — the ⌈(n + 1) C⌉-th smallest score: a fresh exchangeable row is accepted with
  probability ≥ C (the conformal rank rule).

numpy only (the binomial tail is summed in log space), so ``mcdrop calibrate`` runs in the serving image.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from mcdrop.serving.models.calibration import Selection, conformal_rank

__all__ = [
    "CANDIDATES",
    "CURVE_POINTS",
    "RiskCoverage",
    "Unreachable",
    "binomial_upper_bound",
    "candidate_indices",
    "coverage_threshold",
    "risk_coverage",
    "risk_threshold",
    "rows_needed",
]

CURVE_POINTS = 200
"""Points of a risk–coverage curve kept in the manifest."""
CANDIDATES = 20
"""Candidate thresholds of a risk target: the scores at 5 %, 10 %, …, 100 % of the calibration rows."""


def _log_factorials(n: int) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1, dtype=np.float64)))])


def _binomial_cdf(errors: int, n: int, p: float, log_factorial: np.ndarray) -> float:
    """P(X ≤ errors) for X ~ Binomial(n, p)."""
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if errors >= n else 0.0
    i = np.arange(errors + 1)
    terms = log_factorial[n] - log_factorial[i] - log_factorial[n - i] + i * math.log(p) + (n - i) * math.log1p(-p)
    peak = float(terms.max())
    return float(min(1.0, math.exp(peak) * np.exp(terms - peak).sum()))


def binomial_upper_bound(errors: int, n: int, delta: float) -> float:
    """The one-sided Clopper–Pearson upper limit: the largest p with P(Binomial(n, p) ≤ errors) ≥ delta.

    The true error rate exceeds it with probability at most delta. 1.0 when ``n`` is 0 or every row is an error.
    """
    if n <= 0 or errors >= n:
        return 1.0
    log_factorial = _log_factorials(n)
    low, high = errors / n, 1.0
    for _ in range(100):  # bisection: the CDF falls as p grows; 100 halvings reach float precision
        middle = (low + high) / 2
        if _binomial_cdf(errors, n, middle, log_factorial) >= delta:
            low = middle
        else:
            high = middle
        if high - low < 1e-12:
            break
    return high


@dataclasses.dataclass(frozen=True)
class RiskCoverage:
    """The curve at every distinct threshold (rows with tied scores are accepted or refused together)."""

    thresholds: np.ndarray
    """Distinct scores, ascending."""
    accepted: np.ndarray
    """Rows with score ≤ each threshold."""
    errors: np.ndarray
    """Errors among them."""
    rows: int

    @property
    def coverage(self) -> np.ndarray:
        return np.asarray(self.accepted / self.rows)

    @property
    def risk(self) -> np.ndarray:
        return np.asarray(self.errors / self.accepted)

    @property
    def aurc(self) -> float:
        """Area under the curve: the mean selective risk over coverage (Geifman et al. 2019); without ties, the mean
        over k of the error rate of the k most certain rows."""
        steps = np.diff(np.concatenate([[0.0], self.coverage]))
        return float(np.sum(self.risk * steps))

    def points(self, count: int = CURVE_POINTS) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """At most ``count`` (coverage, risk) points, spread evenly along the curve, ending at coverage 1."""
        index = np.unique(np.round(np.linspace(0, len(self.thresholds) - 1, min(count, len(self.thresholds)))))
        index = index.astype(np.int64)
        return (tuple(round(float(c), 6) for c in self.coverage[index]),
                tuple(round(float(r), 6) for r in self.risk[index]))  # fmt: skip


def risk_coverage(scores: np.ndarray, errors: np.ndarray) -> RiskCoverage:
    """The risk–coverage curve of ``scores`` (higher = less certain) for rows whose prediction was wrong where
    ``errors`` is true."""
    scores = np.asarray(scores, np.float64)
    wrong = np.asarray(errors, bool)
    if scores.ndim != 1 or scores.shape != wrong.shape or not len(scores):
        raise ValueError(f"Expected scores and errors of one length >= 1. Received: {scores.shape}, {wrong.shape}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("Expected finite scores. Received NaN or infinite values.")
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    cumulative = np.cumsum(wrong[order])
    ends = np.flatnonzero(np.concatenate([ordered[1:] != ordered[:-1], [True]]))
    return RiskCoverage(ordered[ends], ends + 1, cumulative[ends], len(scores))


@dataclasses.dataclass(frozen=True)
class Unreachable:
    """No threshold reaches the target: the lowest bound found, where, and the rows the target would need."""

    target: float
    delta: float
    best_bound: float
    best_coverage: float
    rows: int
    rows_needed: int | None
    """At the error rate of the most certain rows; None when that rate is already above the target."""

    def __str__(self) -> str:
        need = (f"At the error rate of its most certain rows, a bound of {self.target:g} needs about "
                f"{self.rows_needed} accepted rows" if self.rows_needed is not None else
                f"Even its most certain rows err more often than {self.target:g}")  # fmt: skip
        return (f"no threshold bounds the selective risk by {self.target:g} with confidence {1 - self.delta:g} on "
                f"{self.rows} rows: the lowest bound is {self.best_bound:.4f} (at coverage {self.best_coverage:.3f}). "
                f"{need}.")  # fmt: skip


def risk_threshold(curve: RiskCoverage, target: float, delta: float) -> Selection | Unreachable:
    """The largest-coverage candidate threshold whose selective risk is ≤ ``target`` with probability ≥ 1 − ``delta``.

    The candidates are fixed by rank before any label is looked at: the scores at 5 %, 10 %, …, 100 % of the rows
    (``CANDIDATES``). Each is bounded at level delta / ``CANDIDATES``, so all the bounds hold at once with probability
    ≥ 1 − delta (a union bound), and so does the chosen one's.
    """
    level = delta / CANDIDATES
    best: Selection | None = None
    tried: list[tuple[float, float]] = []
    for index in candidate_indices(curve):
        accepted, errors = int(curve.accepted[index]), int(curve.errors[index])
        bound = binomial_upper_bound(errors, accepted, level)
        tried.append((bound, accepted / curve.rows))
        if bound <= target and (best is None or accepted > best.accepted):
            best = Selection(float(curve.thresholds[index]), accepted / curve.rows, errors / accepted, accepted,
                             errors, bound)  # fmt: skip
    if best is not None:
        return best
    bound, coverage = min(tried)
    # The error rate of the most certain rows (at least 30 of them): what more rows would be bounded at.
    head = int(np.searchsorted(curve.accepted, min(30, curve.rows)))
    rate = float(curve.errors[head]) / float(curve.accepted[head])
    return Unreachable(target, delta, bound, coverage, curve.rows, rows_needed(target, delta, rate))


def candidate_indices(curve: RiskCoverage) -> list[int]:
    """The curve positions of the candidate thresholds: the tie groups holding the ⌈j n / CANDIDATES⌉-th row."""
    ranks = [math.ceil(j * curve.rows / CANDIDATES) for j in range(1, CANDIDATES + 1)]
    return sorted({int(np.searchsorted(curve.accepted, rank)) for rank in ranks})


def coverage_threshold(curve: RiskCoverage, coverage: float) -> Selection:
    """The threshold accepting a fresh exchangeable row with probability ≥ ``coverage``: the ⌈(n + 1) C⌉-th smallest
    score (every row, threshold ``inf``, when that rank exceeds n)."""
    rank = conformal_rank(curve.rows, coverage)
    if rank > curve.rows:
        index, threshold = len(curve.thresholds) - 1, math.inf
    else:
        index = int(np.searchsorted(curve.accepted, rank))  # the tie group holding the rank-th row
        threshold = float(curve.thresholds[index])
    accepted, errors = int(curve.accepted[index]), int(curve.errors[index])
    return Selection(threshold, accepted / curve.rows, errors / accepted, accepted, errors)


def rows_needed(target: float, delta: float, error_rate: float = 0.0) -> int | None:
    """About how many accepted rows a risk target needs when they err at ``error_rate``: the smallest n whose bound
    (level delta / ``CANDIDATES``, round(error_rate · n) errors) is ≤ ``target``. None if ``error_rate`` ≥ target."""
    if error_rate >= target:
        return None

    def passes(n: int) -> bool:
        return binomial_upper_bound(round(error_rate * n), n, delta / CANDIDATES) <= target

    high = 1
    while not passes(high):
        high *= 2
        if high > 1 << 26:
            return None
    low = high // 2
    while high - low > 1:  # the bound is not exactly monotone in n (rounding the errors): close enough for advice
        middle = (low + high) // 2
        low, high = (low, middle) if passes(middle) else (middle, high)
    return high
