"""Host-side dropout masks for ``mc_masked.tflite``, reproducible from a seed.

Each dropout layer gets its own random stream, spawned from the request's seed,
and masks are drawn sample by sample (``[T, B, *noise_shape]`` in C order). So
the masks of samples ``0..T`` are the same whether they are drawn at once or in
chunks — a streamed or adaptive request with a seed ends where a one-shot
request with the same seed and T would.
"""

from __future__ import annotations

import numpy as np

from serving.repository import DropoutSpec


class SeededMasks:
    """Draws successive chunks of masks for one request."""

    def __init__(self, layers: list[DropoutSpec], seed: int, batch: int) -> None:
        children = np.random.SeedSequence(seed).spawn(len(layers))
        self._streams = [
            (spec, np.random.Generator(np.random.PCG64(child))) for spec, child in zip(layers, children, strict=True)
        ]
        self._batch = batch

    def next(self, samples: int) -> dict[str, np.ndarray]:
        """Masks (uint8 keep flags) and noise (float32) for the next ``samples`` samples."""
        feeds: dict[str, np.ndarray] = {}
        for spec, rng in self._streams:
            shape = (samples, self._batch, *spec.noise_shape)
            if spec.kind == "bernoulli":
                feeds[spec.feed_name] = (rng.random(shape, dtype=np.float32) >= spec.rate).view(np.uint8)
            else:
                feeds[spec.feed_name] = rng.standard_normal(shape, dtype=np.float32)
        return feeds
