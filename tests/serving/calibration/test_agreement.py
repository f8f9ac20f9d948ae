"""The rank statistics behind the variants' agreement figures, against scipy's and scikit-learn's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcdrop.serving.calibration.agreement import auroc, rows_for, spearman

scipy_stats = pytest.importorskip("scipy.stats")
metrics = pytest.importorskip("sklearn.metrics")

# Few distinct values, so ties are common: average ranks must be right.
values = st.lists(st.integers(0, 6).map(float), min_size=3, max_size=60)


@settings(max_examples=200, deadline=None)
@given(values, st.randoms(use_true_random=False))
def test_spearman_matches_scipy_with_ties(a: list[float], random: object) -> None:
    b = list(a)
    random.shuffle(b)  # type: ignore[attr-defined]
    expected = scipy_stats.spearmanr(a, b).statistic
    found = spearman(np.array(a), np.array(b))
    if math.isnan(expected):
        assert math.isnan(found)
    else:
        assert found == pytest.approx(expected, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(values, values)
def test_auroc_matches_scikit_learn_with_ties(negatives: list[float], positives: list[float]) -> None:
    labels = np.r_[np.zeros(len(negatives)), np.ones(len(positives))]
    expected = metrics.roc_auc_score(labels, np.r_[negatives, positives])
    assert auroc(np.array(negatives), np.array(positives)) == pytest.approx(expected, abs=1e-12)


def test_perfect_and_reversed_separation() -> None:
    assert auroc(np.arange(10.0), np.arange(10.0) + 100) == 1.0
    assert auroc(np.arange(10.0) + 100, np.arange(10.0)) == 0.0
    assert spearman(np.arange(5.0), -np.arange(5.0)) == pytest.approx(-1.0)


def test_rows_are_bounded_by_the_compute_of_monte_carlo(variant_repository: object) -> None:
    from pathlib import Path

    from mcdrop.serving.models.manifest import Manifest

    manifest = Manifest.load(Path(str(variant_repository)) / "digits" / "1")
    assert rows_for(manifest, 10_000) == 512  # a small model: all rows up to the cap
    assert rows_for(manifest, 100) == 100
    import dataclasses

    from mcdrop.serving.models.manifest import Cost

    huge = dataclasses.replace(manifest, cost=Cost(prefix=0.0, per_sample=1e9))  # 1 GFLOP per sample row
    assert rows_for(huge, 10_000) == 32  # 3000 GFLOP / (100 x 1 GFLOP) = 30 rows, raised to the floor of 32
