"""Host-side dropout masks for ``mc_masked.tflite``, reproducible from a seed and cheap to draw.

Keep flags are drawn with 16 random bits each: raw 64-bit words from one PCG64
stream are split into four 16-bit values and compared with ``round(rate * 2**16)``
(the applied rate differs from the nominal one by less than 8e-6). That is about
4x faster than drawing float32 uniforms, which matters: at T=100 the masks cost
as much as the network itself.

The stream is consumed sample by sample (every dropout layer's row of sample t,
then sample t+1), each sample padded to whole words, so the masks of samples
``0..T`` are the same whether drawn at once or in chunks: a streamed or adaptive
request with a seed ends exactly where a one-shot request with that seed does.
Gaussian-dropout noise comes from a second stream spawned from the same seed.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence

import numpy as np

from mcdrop.serving.manifest import DropoutSpec

BITS = 16
LEVELS = 1 << BITS
_PER_WORD = 64 // BITS


def fresh_seed() -> int:
    """A seed from the OS's entropy: unseeded requests never repeat masks (and can still be replayed).

    63 bits, so that it can be echoed and replayed through the Open Inference Protocol's int64 ``seed``.
    """
    return secrets.randbits(63)


class MaskStream:
    """Draws successive chunks of masks for one request."""

    def __init__(self, layers: Sequence[DropoutSpec], seed: int, batch: int) -> None:
        self._batch = batch
        self._bernoulli = [spec for spec in layers if spec.kind == "bernoulli"]
        self._gaussian = [spec for spec in layers if spec.kind != "bernoulli"]
        self._row_sizes = [batch * math.prod(spec.noise_shape) for spec in self._bernoulli]
        self._row_words = [-(-size // _PER_WORD) for size in self._row_sizes]  # ceil: whole words per row
        self._thresholds = [min(round(spec.rate * LEVELS), LEVELS - 1) for spec in self._bernoulli]
        self._bits = np.random.PCG64(seed)
        self._noise = np.random.Generator(np.random.PCG64([seed, 1])) if self._gaussian else None

    def next(self, samples: int) -> dict[str, np.ndarray]:
        """Masks (uint8 keep flags) and noise (float32) for the next ``samples`` samples, ``[T, B, ...]``."""
        feeds: dict[str, np.ndarray] = {}
        if self._bernoulli:
            words = self._bits.random_raw(samples * sum(self._row_words)).reshape(samples, -1)
            start = 0
            for spec, size, count, threshold in zip(
                self._bernoulli, self._row_sizes, self._row_words, self._thresholds, strict=True
            ):
                bits = words[:, start : start + count].view(np.uint16)[:, :size]
                start += count
                keep = bits >= threshold
                feeds[spec.feed_name] = keep.view(np.uint8).reshape(samples, self._batch, *spec.noise_shape)
        if self._noise is not None:
            for spec in self._gaussian:
                shape = (samples, self._batch, *spec.noise_shape)
                feeds[spec.feed_name] = self._noise.standard_normal(shape, dtype=np.float32)
        return feeds
