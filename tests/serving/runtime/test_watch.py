"""Drift of served uncertainty: decile bins of the last rows, PSI and the share above the 90th percentile."""

from __future__ import annotations

import numpy as np
import pytest

from mcdrop.serving.runtime import watch


def _deciles(values: np.ndarray) -> list[float]:
    return [float(v) for v in np.quantile(values, np.linspace(0, 1, 11))]


def test_rows_like_the_calibration_stay_stable_and_shifted_rows_do_not() -> None:
    rng = np.random.default_rng(0)
    calibration = rng.exponential(size=5000)
    same, shifted = watch.Window(_deciles(calibration)), watch.Window(_deciles(calibration))
    same.add(rng.exponential(size=1000))
    shifted.add(rng.exponential(size=1000) * 3)  # three times as uncertain: most rows land in the top bins
    stable, moved = watch.psi(same.counts()), watch.psi(shifted.counts())
    assert stable is not None and moved is not None
    assert stable < 0.05 < 0.25 < moved
    assert watch.share_above(same.counts()) == pytest.approx(0.1, abs=0.03)
    assert watch.share_above(shifted.counts()) > 0.4


def test_the_window_keeps_only_the_last_rows() -> None:
    window = watch.Window(list(range(11)), size=100)  # bins [.., 1), [1, 2), …, [9, ..)
    window.add(np.full(100, 0.5))
    assert window.counts().tolist() == [100] + [0] * 9
    window.add(np.full(30, 9.5))  # the 30 oldest rows make room
    assert window.counts().tolist() == [70] + [0] * 8 + [30]
    window.add(np.arange(250) % 10 + 0.5)  # more rows than the window: the last 100, ten per bin
    assert window.counts().tolist() == [10] * 10
    window.add(np.array([np.nan, 3.5]))  # NaN rows are left out
    assert window.counts().sum() == 100 and window.counts()[3] == 11


def test_too_few_rows_give_no_psi_and_a_bad_decile_list_is_refused() -> None:
    counts = np.array([5] * 10)
    assert watch.psi(counts) is None
    assert watch.psi(counts * 10) == pytest.approx(0.0)
    assert watch.share_above(np.zeros(10)) is None
    with pytest.raises(ValueError, match="Expected 11 finite deciles"):
        watch.Window([0.0, 1.0])
    with pytest.raises(ValueError, match="Expected 11 finite deciles"):
        watch.Window([0.0] * 10 + [float("inf")])


def test_workers_counts_add_up_to_the_servers_psi() -> None:
    """A supervisor sums its workers' bin counts and computes one PSI, as if one window had seen every row."""
    rng = np.random.default_rng(1)
    deciles = _deciles(rng.normal(size=5000))
    rows = rng.normal(loc=0.7, size=1200)
    one, first, second = (watch.Window(deciles, size=1200), watch.Window(deciles, size=600),
                          watch.Window(deciles, size=600))  # fmt: skip
    one.add(rows)
    first.add(rows[:600])
    second.add(rows[600:])
    assert watch.psi(first.counts() + second.counts()) == pytest.approx(watch.psi(one.counts()))
