"""Host-side dropout masks for ``mc_masked.tflite``: a row's masks depend only on the seed and the row's
position.

The scheme is specified for other languages in ``docs/mask-scheme.md`` (with test vectors and a JavaScript
reference). Each row has its own PCG64 stream, started from a state derived from ``(seed, row)`` (SplitMix64's
output function over both, so neighbouring rows and seeds get unrelated streams), and each request
continues the streams from where the previous chunk stopped. Keep flags use 16 random bits each —
four per 64-bit word, compared with ``round(rate * 2**16)`` (the applied rate differs from the
nominal one by less than 8e-6), about 4x cheaper than float32 uniforms; Gaussian-dropout noise comes
from a second stream per row. Consequences:

* a row's masks are the same in any batch and at any position of it: a server request's rows are
  positions ``0..B-1``, ``mcdrop score`` passes each row's global position in its input, so scoring
  in process, on any number of Ray workers, with any batch size, or retrying a partition gives
  bit-identical output;
* the masks of samples ``0..T`` are the same whether drawn at once or in chunks, so a streamed or
  adaptive request with a seed ends exactly where a one-shot request with that seed does.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from mcdrop.serving.models.manifest import DropoutSite, NoiseKind

__all__ = ["LEVELS", "SCHEME", "MaskStream", "fingerprint_feeds", "fresh_seed", "mask_dtype", "row_states"]

BITS = 16
LEVELS = 1 << BITS
_PER_WORD = 64 // BITS
SCHEME = "pcg64-per-row-v1"
"""Recorded with export fingerprints: masks drawn by an older scheme cannot be recomputed."""

_GOLDEN = 0x9E3779B97F4A7C15
_MUL_1 = 0xBF58476D1CE4E5B9
_MUL_2 = 0x94D049BB133111EB
_MASK_64 = (1 << 64) - 1
_local = threading.local()


def mask_dtype(site: DropoutSite) -> type[np.generic]:
    """The dtype of a site's mask input: uint8 keep flags, or float32 Gaussian noise."""
    return np.uint8 if site.kind == NoiseKind.BERNOULLI else np.float32


def fresh_seed() -> int:
    """A seed from the OS's entropy: unseeded requests never repeat masks (and can still be replayed).

    63 bits, so that it can be echoed and replayed through the Open Inference Protocol's int64 ``seed``.
    """
    return secrets.randbits(63)


class MaskStream:
    """Draws successive chunks of masks for the rows ``first_row .. first_row + batch - 1`` of one request."""

    def __init__(self, layers: Sequence[DropoutSite], seed: int, batch: int, first_row: int = 0) -> None:
        self._batch = batch
        self._bernoulli = [spec for spec in layers if spec.kind == NoiseKind.BERNOULLI]
        self._gaussian = [spec for spec in layers if spec.kind != NoiseKind.BERNOULLI]
        self._sizes = [math.prod(spec.noise_shape) for spec in self._bernoulli]
        self._words = [-(-size // _PER_WORD) for size in self._sizes]  # ceil: whole words per site
        self._row_words = sum(self._words)
        self._thresholds = [np.uint16(min(round(spec.rate * LEVELS), LEVELS - 1)) for spec in self._bernoulli]
        self._noise_sizes = [math.prod(spec.noise_shape) for spec in self._gaussian]
        self._noise_count = sum(self._noise_sizes)
        self._flag_states: list[Any] = row_states(seed, first_row, batch, stream=0)
        self._noise_states: list[Any] = row_states(seed, first_row, batch, stream=1) if self._gaussian else []

    def next(self, samples: int) -> dict[str, np.ndarray]:
        """Masks (uint8 keep flags) and noise (float32) for the next ``samples`` samples, ``[T, B, ...]``."""
        feeds: dict[str, np.ndarray] = {}
        stream, noise = _generator()
        if self._bernoulli:
            words = np.empty((samples, self._batch, self._row_words), dtype=np.uint64)
            for row in range(self._batch):
                stream.state = self._flag_states[row]
                words[:, row, :] = stream.random_raw(samples * self._row_words).reshape(samples, -1)
                self._flag_states[row] = stream.state
            start = 0
            for spec, size, count, threshold in zip(
                self._bernoulli, self._sizes, self._words, self._thresholds, strict=True
            ):
                bits = words[:, :, start : start + count].view(np.uint16)[:, :, :size]
                start += count
                feeds[spec.feed_name] = (
                    (bits >= threshold).view(np.uint8).reshape(samples, self._batch, *spec.noise_shape)
                )
        if self._gaussian:
            normals = np.empty((samples, self._batch, self._noise_count), dtype=np.float32)
            for row in range(self._batch):
                stream.state = self._noise_states[row]
                normals[:, row, :] = noise.standard_normal((samples, self._noise_count), dtype=np.float32)
                self._noise_states[row] = stream.state
            start = 0
            for spec, size in zip(self._gaussian, self._noise_sizes, strict=True):
                feeds[spec.feed_name] = normals[:, :, start : start + size].reshape(
                    samples, self._batch, *spec.noise_shape
                )
                start += size
        return feeds


def row_states(seed: int, first_row: int, batch: int, stream: int) -> list[dict[str, Any]]:
    """PCG64 states of rows ``first_row ..``: 128-bit state and odd increment from ``(seed, row, stream)``."""
    seed_key, stream_key = _mix(seed & _MASK_64), _mix(stream)
    states = []
    for row in range(first_row, first_row + batch):
        high = _mix((seed_key + (row + 1) * _GOLDEN) & _MASK_64)
        low = _mix(high ^ stream_key ^ _GOLDEN)
        increment = _mix((low + _GOLDEN) & _MASK_64)
        states.append({"bit_generator": "PCG64", "state": {"state": (high << 64) | low, "inc": (increment << 1) | 1},
                       "has_uint32": 0, "uinteger": 0})  # fmt: skip
    return states


def _mix(z: int) -> int:
    """SplitMix64's output function: a bijection on 64-bit words that mixes every bit."""
    z = ((z ^ (z >> 30)) * _MUL_1) & _MASK_64
    z = ((z ^ (z >> 27)) * _MUL_2) & _MASK_64
    return z ^ (z >> 31)


def _generator() -> tuple[np.random.PCG64, np.random.Generator]:
    """This thread's bit generator (every use sets its state first, so sharing it within a thread is safe)."""
    cached = getattr(_local, "generator", None)
    if cached is None:
        bits = np.random.PCG64(0)
        cached = _local.generator = (bits, np.random.Generator(bits))
    return cached


def fingerprint_feeds(layers: Sequence[DropoutSite], seed: int, rows: int, samples: int) -> dict[str, np.ndarray]:
    """Masks for an export fingerprint: ``samples`` from the seed, except sample 0, which keeps every unit
    (zero noise), so every weight of the graph shows in the outputs (a unit dropped in all random samples
    would hide damage to its weights)."""
    feeds = MaskStream(layers, seed, rows).next(samples)
    for spec in layers:
        feeds[spec.feed_name][0] = 1 if spec.kind == "bernoulli" else 0
    return feeds
