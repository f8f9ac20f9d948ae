"""Host-side masks: right rates, reproducible, and the same whether drawn at once or in chunks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mcdrop.serving.models.manifest import DropoutSite as DropoutSpec
from mcdrop.serving.models.masks import LEVELS, MaskStream, fresh_seed

LAYERS = [
    DropoutSpec("d1", "bernoulli", 0.2, (257,), "mask_d1"),  # odd sizes: rows do not fill whole words
    DropoutSpec("g", "gaussian", 0.3, (5,), "noise_g"),
    DropoutSpec("s2", "bernoulli", 0.5, (1, 1, 7), "mask_s2"),
]


def test_shapes_and_dtypes() -> None:
    feeds = MaskStream(LAYERS, 1, batch=3).next(4)
    assert feeds["mask_d1"].shape == (4, 3, 257) and feeds["mask_d1"].dtype == np.uint8
    assert feeds["mask_s2"].shape == (4, 3, 1, 1, 7)
    assert feeds["noise_g"].shape == (4, 3, 5) and feeds["noise_g"].dtype == np.float32
    assert set(np.unique(feeds["mask_d1"])) <= {0, 1}


def test_same_seed_same_masks_and_chunking_does_not_matter() -> None:
    one_shot = MaskStream(LAYERS, 99, batch=2).next(10)
    chunked_stream = MaskStream(LAYERS, 99, batch=2)
    chunks = [chunked_stream.next(n) for n in (3, 1, 6)]
    for name, values in one_shot.items():
        np.testing.assert_array_equal(values, np.concatenate([c[name] for c in chunks]))
    other = MaskStream(LAYERS, 100, batch=2).next(10)
    assert not np.array_equal(one_shot["mask_d1"], other["mask_d1"])


def test_a_rows_masks_depend_only_on_the_seed_and_its_position() -> None:
    """Row 3 of a batch of 5 gets the masks of a one-row batch starting at position 3; rows differ."""
    batch = MaskStream(LAYERS, 7, batch=5).next(6)
    alone = MaskStream(LAYERS, 7, batch=1, first_row=3).next(6)
    tail = MaskStream(LAYERS, 7, batch=2, first_row=3).next(6)
    for name, values in batch.items():
        np.testing.assert_array_equal(values[:, 3], alone[name][:, 0])
        np.testing.assert_array_equal(values[:, 3:5], tail[name])
        assert not np.array_equal(values[:, 0], values[:, 1])  # neighbouring rows: unrelated streams


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5, 0.9])
def test_drop_fraction_in_the_99_percent_interval(rate: float) -> None:
    spec = DropoutSpec("d", "bernoulli", rate, (256,), "mask_d")
    keep = MaskStream([spec], 7, batch=8).next(500)["mask_d"]
    n = keep.size
    dropped = 1.0 - keep.mean()
    assert abs(dropped - rate) <= 2.5758 * math.sqrt(rate * (1 - rate) / n) + 1.0 / LEVELS


def test_gaussian_noise_is_standard_normal() -> None:
    noise = MaskStream(LAYERS, 3, batch=16).next(2000)["noise_g"]
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 1.0) < 0.01


def test_fresh_seeds_differ() -> None:
    assert len({fresh_seed() for _ in range(100)}) == 100
