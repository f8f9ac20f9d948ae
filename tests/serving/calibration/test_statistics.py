"""The statistics behind calibration: the binomial bound, risk–coverage, the risk guarantee, conformal coverage.

The guarantees are checked in simulation, where the true risk curve is known, with binomial margins: a test fails
when a guarantee is broken more often than chance allows, not when one repetition is unlucky.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from mcdrop.serving.calibration import conformal, selective
from mcdrop.serving.models.calibration import Selection, conformal_rank

REPETITIONS = 200


def _allowed_failures(probability: float, trials: int = REPETITIONS) -> int:
    """The most failures a guarantee of failure probability ≤ ``probability`` may show: 99.9 % binomial quantile."""
    return int(stats.binom.ppf(0.999, trials, probability))


@pytest.mark.parametrize(("errors", "rows", "delta"), [(0, 1, 0.05), (0, 100, 0.05), (3, 100, 0.01), (50, 1000, 0.005),
                                                       (10, 10_000, 0.05), (99, 100, 0.05)])  # fmt: skip
def test_binomial_bound_is_the_clopper_pearson_upper_limit(errors: int, rows: int, delta: float) -> None:
    expected = stats.beta.ppf(1 - delta, errors + 1, rows - errors)
    assert selective.binomial_upper_bound(errors, rows, delta) == pytest.approx(expected, abs=1e-9)


def test_binomial_bound_of_no_rows_or_all_errors_is_one() -> None:
    assert selective.binomial_upper_bound(0, 0, 0.05) == 1.0
    assert selective.binomial_upper_bound(7, 7, 0.05) == 1.0


def test_rows_needed_matches_the_issue_figure_and_the_bound() -> None:
    needed = selective.rows_needed(0.01, 0.05)
    # The issue's "about 520" was SGR's δ / ⌈log2 n⌉ = 0.005; the fixed grid's δ / 20 = 0.0025 asks for 597.
    assert needed == 597
    level = 0.05 / selective.CANDIDATES
    assert (
        selective.binomial_upper_bound(0, needed, level) <= 0.01 < selective.binomial_upper_bound(0, needed - 1, level)
    )
    assert selective.rows_needed(0.01, 0.05, error_rate=0.02) is None


def test_aurc_without_ties_is_the_mean_risk_of_the_k_most_certain_rows() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(500)
    errors = rng.random(500) < scores * 0.3
    ordered = errors[np.argsort(scores)]
    expected = np.mean(np.cumsum(ordered) / np.arange(1, 501))
    assert selective.risk_coverage(scores, errors).aurc == pytest.approx(expected)


def test_tied_scores_are_accepted_together() -> None:
    curve = selective.risk_coverage(np.array([0.0, 0.0, 0.5, 0.5, 0.5, 1.0]), np.array([0, 1, 0, 0, 1, 1], bool))
    assert curve.accepted.tolist() == [2, 5, 6]
    assert curve.risk.tolist() == pytest.approx([0.5, 0.4, 0.5])


def test_a_score_that_ranks_errors_last_has_a_lower_aurc_than_a_random_one() -> None:
    rng = np.random.default_rng(1)
    errors = rng.random(1000) < 0.1
    oracle = selective.risk_coverage(errors + rng.random(1000) * 0.1, errors).aurc
    random = selective.risk_coverage(rng.random(1000), errors).aurc
    assert oracle < 0.02 < 0.08 < random


def _known_risk_rows(rng: np.random.Generator, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores uniform on [0, 1], error probability 0.2 u: the true selective risk of threshold θ is 0.1 θ."""
    scores = rng.random(rows)
    return scores, rng.random(rows) < 0.2 * scores


def test_sgr_threshold_breaks_its_risk_target_at_most_about_delta_of_the_time() -> None:
    rng = np.random.default_rng(2)
    target, delta = 0.05, 0.05
    broken, coverage = 0, []
    for _ in range(REPETITIONS):
        scores, errors = _known_risk_rows(rng, 10_000)
        chosen = selective.risk_threshold(selective.risk_coverage(scores, errors), target, delta)
        assert isinstance(chosen, Selection)
        broken += 0.1 * min(chosen.threshold, 1.0) > target
        coverage.append(chosen.coverage)
    assert broken <= _allowed_failures(delta)
    # …and not met trivially: the largest safe threshold accepts 50 % of rows; the grid gets most of that.
    assert 0.35 < np.mean(coverage) < 0.5


def test_coverage_threshold_accepts_at_least_the_target_share_of_fresh_rows() -> None:
    rng = np.random.default_rng(3)
    accepted = []
    for _ in range(REPETITIONS):
        scores, errors = _known_risk_rows(rng, 400)
        chosen = selective.coverage_threshold(selective.risk_coverage(scores, errors), 0.9)
        accepted.append(min(chosen.threshold, 1.0))  # P(fresh uniform score <= θ) = θ
    # Marginal guarantee: E[P(accept)] >= 0.9; the average over repetitions within its standard error.
    assert np.mean(accepted) >= 0.9 - 3 * np.std(accepted) / math.sqrt(REPETITIONS)


def test_an_unreachable_target_says_the_best_bound_and_the_rows_it_would_need() -> None:
    scores, errors = _known_risk_rows(np.random.default_rng(4), 300)
    found = selective.risk_threshold(selective.risk_coverage(scores, errors), 0.001, 0.05)
    assert isinstance(found, selective.Unreachable)
    text = str(found)
    assert "0.001" in text and "300 rows" in text and f"{found.best_bound:.4f}" in text
    assert found.best_bound > 0.001


def test_conformal_multiplier_matches_crepes() -> None:
    crepes = pytest.importorskip("crepes")
    rng = np.random.default_rng(5)
    mean, spread = rng.normal(size=500), rng.uniform(0.5, 2.0, size=500)
    targets = mean + spread * rng.standard_t(4, size=500)
    record = conformal.conformal_scores(conformal.normalised_residuals(targets, mean, spread))
    reference = crepes.ConformalRegressor().fit(np.abs(targets - mean), sigmas=spread)
    for level in (0.5, 0.8, 0.9, 0.95, 0.99):
        multiplier = record.multiplier(level)
        assert multiplier is not None
        half_width = reference.predict_int(np.zeros(1), sigmas=np.ones(1), confidence=level)[0, 1]
        assert multiplier[0] == pytest.approx(half_width, rel=1e-6)  # stored as the float32 at or above it
        assert multiplier[0] >= half_width


def test_conformal_intervals_cover_fresh_rows_at_their_level() -> None:
    rng = np.random.default_rng(6)
    covered = []
    for _ in range(REPETITIONS):
        mean, spread = rng.normal(size=300), rng.uniform(0.2, 3.0, size=300)
        targets = mean + spread * rng.laplace(size=300)  # heavy tails: a Gaussian interval would under-cover
        record = conformal.conformal_scores(conformal.normalised_residuals(targets[:200], mean[:200], spread[:200]))
        multiplier = record.multiplier(0.9)
        assert multiplier is not None
        covered.append(np.mean(np.abs(targets[200:] - mean[200:]) <= multiplier[0] * spread[200:]))
    assert np.mean(covered) >= 0.9 - 3 * np.std(covered) / math.sqrt(REPETITIONS)
    assert np.mean(covered) <= 0.9 + 1 / 201 + 3 * np.std(covered) / math.sqrt(REPETITIONS)


def test_a_level_beyond_the_rows_has_no_finite_interval() -> None:
    record = conformal.conformal_scores(np.arange(1.0, 20.0).reshape(19, 1))
    assert conformal_rank(19, 0.95) == 19
    assert record.multiplier(0.95) is not None
    assert record.multiplier(0.96) is None
    assert record.max_level() == pytest.approx(0.95)


def test_many_values_per_row_pool_their_scores() -> None:
    scores = np.random.default_rng(7).random((50, conformal.MAX_TARGETS + 1))
    record = conformal.conformal_scores(scores)
    assert record.pooled and len(record.sorted_scores) == 1 and record.rows == scores.size


def test_a_threshold_past_an_early_error_is_found() -> None:
    """A good classifier's bound does not grow with coverage: one error among the most certain half must not hide
    the larger coverage that passes (SGR's binary search stopped there on the digits MLP)."""
    rows = 629
    scores = np.arange(rows, dtype=np.float64)
    errors = np.zeros(rows, bool)
    errors[[100, 560, 580, 600, 610, 620]] = True  # one early error, the rest among the least certain
    chosen = selective.risk_threshold(selective.risk_coverage(scores, errors), 0.02, 0.05)
    assert isinstance(chosen, Selection)
    assert chosen.coverage >= 0.85 and chosen.bound is not None and chosen.bound <= 0.02


def test_candidates_are_fixed_by_rank() -> None:
    curve = selective.risk_coverage(np.arange(100.0), np.zeros(100, bool))
    assert [int(curve.accepted[i]) for i in selective.candidate_indices(curve)] == list(range(5, 101, 5))
