"""Activation footprints predict an invoke's live bytes at any size; invoke plans keep within the budget."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mcdrop.serving.core import invokes
from mcdrop.serving.errors import ResourceExhausted
from mcdrop.serving.models.memory import Footprint, footprint, peak_live_bytes
from mcdrop.serving.models.repository import ModelRepository


def test_the_footprint_predicts_live_bytes_at_sizes_it_was_not_measured_at(model_repository: Path) -> None:
    store = ModelRepository(model_repository, pool_size=1)
    store.scan()
    version = store.get("digits")
    feeds = version._feeds(masks=True)
    measured = footprint(version.contents["mc_masked"], feeds)
    assert measured == version.footprint("mc") == version.footprint("mc_masked")
    for rows, samples in ((1, 1), (3, 7), (16, 100)):
        assert measured.bytes_for(rows, samples) == peak_live_bytes(version.contents["mc_masked"], feeds(rows, samples))
    # 64 features in, 64 and 64 hidden units per sample row, 10 out, uint8 masks: some hundreds of bytes per row.
    assert 4 * (64 + 10) < measured.per_sample_row < 4 * 1024
    assert Footprint.from_manifest(measured.as_manifest()) == measured


def test_plans_use_the_largest_invokes_within_the_budget() -> None:
    prefix_heavy = Footprint(((100, 1000, 10), (0, 10, 400)))  # wide early layers, a sampled part after them
    assert invokes.plan(prefix_heavy, 4, 50, 10**9, "m") == invokes.InvokePlan(4, 50)  # all in one invoke
    split = invokes.plan(prefix_heavy, 4, 50, 20_000, "m")
    assert split.rows == 4 and prefix_heavy.bytes_for(4, split.samples) <= 20_000 < prefix_heavy.bytes_for(
        4, split.samples + 1
    )
    rows_too = invokes.plan(prefix_heavy, 64, 50, 20_000, "m")  # not even one sample of every row fits
    assert rows_too.rows < 64 and prefix_heavy.bytes_for(rows_too.rows, rows_too.samples) <= 20_000
    assert prefix_heavy.bytes_for(rows_too.rows + 1, 1) > 20_000
    assert rows_too.invokes(64, 50) == -(-64 // rows_too.rows) * -(-50 // rows_too.samples)
    with pytest.raises(ResourceExhausted, match=r"model m needs 0\.0 MiB .* budget of 0\.0 MiB"):
        invokes.plan(prefix_heavy, 1, 1, 1000, "model m")


def test_a_random_sweep_of_plans_never_exceeds_the_budget() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        terms = tuple(tuple(int(v) for v in rng.integers(0, 5000, 3)) for _ in range(rng.integers(1, 4)))
        fp = Footprint(terms)  # type: ignore[arg-type]
        batch, samples = int(rng.integers(1, 40)), int(rng.integers(1, 300))
        budget = int(rng.integers(fp.bytes_for(1, 1), fp.bytes_for(batch, samples) + 2))
        plan = invokes.plan(fp, batch, samples, budget, "m")
        assert 1 <= plan.rows <= batch and 1 <= plan.samples <= samples
        assert fp.bytes_for(plan.rows, plan.samples) <= budget
