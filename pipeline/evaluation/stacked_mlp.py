"""Many independent one-hidden-layer dropout MLPs trained at once, in numpy, with exact gradients.

The UCI protocol fits 13 tiny networks per split (a 12-point grid and a refit) for ``n_epochs x 100``
epochs each: up to 48,000 Adam steps of a 50-unit network, where a Keras ``fit`` spends nearly all
its time in per-step framework overhead (about 3 minutes for one split of the smallest dataset).
Here every network of a phase (e.g. 20 splits x 12 grid candidates) is one slice of stacked weights
``[K, ...]``: one step of all K networks is a dozen batched numpy calls, and the gradient is
written out by hand (two Dense layers, ReLU, two dropout masks, L2).

What each slice computes is what ``keras.Model.fit`` computes for the model
``pipeline.models.build_models`` builds (Normalization → Dropout(p) → Dense(H, relu) → Dropout(p) →
Dense(1), L2 ``reg`` on both kernels): Glorot-uniform kernels and zero biases, a fresh shuffle of the
rows every epoch, batches of 128 with the partial batch last, mean squared error on the standardised
target plus ``reg · Σw²``, inverted dropout, and Keras's Adam update (lr 1e-3, β 0.9/0.999, ε 1e-7).
Slices share no parameter, so each gets exactly its own gradient, and Adam is element-wise.

Randomness: networks come in *groups* (the candidates of one split); each group draws its
initial weights, shuffles and masks from its own ``SeedSequence``, so a group's result does not
depend on which other groups are trained beside it or on how many threads run them. Masks are
16-bit uniforms compared with ``round(p · 65536)``: the rate actually used differs from ``p`` by
less than 8e-6 and the kept units are scaled by the exact ``1 / keep``, so dropout stays unbiased.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

BATCH = 128
LEARNING_RATE = 1e-3
BETA_1, BETA_2, EPSILON = 0.9, 0.999, 1e-7  # keras.optimizers.Adam defaults
LEVELS = 1 << 16  # mask resolution: uint16 uniforms

Progress = Callable[[int], None]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
HEAP_ARRAYS_UP_TO = 256 << 20


@functools.cache
def _keep_temporaries_on_the_heap() -> None:
    """Every step allocates a dozen ``[K, B, H]`` temporaries of a few MB. glibc serves blocks that size
    with a fresh ``mmap`` and returns them with ``munmap``, so each step page-faults them in again:
    measured 16.4 vs 10.3 ms per step (K = 240, one thread), a third of it in the kernel. Raising the
    mmap threshold keeps them in the reused heap. No effect (and no harm) outside glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, HEAP_ARRAYS_UP_TO)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * HEAP_ARRAYS_UP_TO)
    except (OSError, AttributeError):
        pass


@dataclasses.dataclass
class StackedFit:
    """Weights of K fitted networks, ``W1 [K, D, H]``, ``b1 [K, H]``, ``W2 [K, H]``, ``b2 [K]``."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    def slice(self, k: int) -> list[np.ndarray]:
        """Network ``k``'s weights in Keras order: dense kernel, bias, output kernel ``[H, 1]``, bias ``[1]``."""
        return [self.w1[k], self.b1[k], self.w2[k][:, np.newaxis], self.b2[k : k + 1]]

    def take(self, index: np.ndarray) -> StackedFit:
        return StackedFit(self.w1[index], self.b1[index], self.w2[index], self.b2[index])

    @staticmethod
    def join(parts: Sequence[StackedFit]) -> StackedFit:
        return StackedFit(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("w1", "b1", "w2", "b2")))


class _Masks:
    """Dropout masks for a stack of groups: one generator per group, drawn into one buffer."""

    def __init__(self, generators: list[np.random.Generator], rates: np.ndarray) -> None:
        self.generators = generators
        self.per_group = len(rates) // len(generators)
        self.threshold = np.round(rates * LEVELS).astype(np.int32)  # drop when u < threshold
        self.scale = (LEVELS / (LEVELS - self.threshold)).astype(np.float32)  # 1 / keep, exactly

    def draw(self, shape: tuple[int, ...]) -> np.ndarray:
        """Inverted-dropout multipliers ``[K, *shape]``: 0 for dropped units, ``1/keep`` for kept ones."""
        per_model = math.prod(shape)
        words = -(-self.per_group * per_model // 4)  # 4 uint16 per uint64
        uniforms = np.concatenate(
            [g.integers(0, 1 << 64, words, dtype=np.uint64, endpoint=False).view(np.uint16) for g in self.generators]
        ).reshape(len(self.generators), -1)[:, : self.per_group * per_model]
        uniforms = uniforms.reshape(len(self.threshold), *shape)
        expand = (slice(None),) + (np.newaxis,) * len(shape)
        keep = uniforms >= self.threshold[expand].astype(np.uint16)
        return keep * self.scale[expand]


def fit(
    x: np.ndarray,
    y: np.ndarray,
    rates: np.ndarray,
    decays: np.ndarray,
    *,
    hidden: int,
    epochs: int,
    seeds: Sequence[np.random.SeedSequence],
    jobs: int = 1,
    progress: Progress | None = None,
) -> StackedFit:
    """Fit K networks on their own standardised data ``x [K, N, D]``, ``y [K, N]``.

    ``rates``/``decays`` are ``[K]``; ``seeds`` holds one seed per group of ``K / len(seeds)``
    consecutive networks. ``jobs`` threads share the groups (numpy releases the GIL in the heavy
    calls). ``progress(steps)`` is called as optimiser steps of the whole stack complete.
    """
    x, y = np.asarray(x, np.float32), np.asarray(y, np.float32)

    def work(rows: np.ndarray, generators: list[np.random.Generator], lead: bool) -> StackedFit:
        return _fit_stack(
            x[rows],
            y[rows],
            rates[rows],
            decays[rows],
            hidden=hidden,
            epochs=epochs,
            generators=generators,
            progress=progress if lead else None,  # one thread reports: all run the same steps
        )

    return StackedFit.join(_across_threads(len(x), seeds, jobs, work))


Result = TypeVar("Result")


def _across_threads(
    networks: int,
    seeds: Sequence[np.random.SeedSequence],
    jobs: int,
    work: Callable[[np.ndarray, list[np.random.Generator], bool], Result],
) -> list[Result]:
    """``work(rows, generators, lead)`` on ``jobs`` threads, each taking whole groups of networks.

    numpy releases the GIL in the heavy calls, so threads share the cores; a group's generators
    come from its own seed, so the split into threads does not change any number.
    """
    _keep_temporaries_on_the_heap()
    groups = len(seeds)
    if networks % groups:
        raise ValueError(f"{networks} networks cannot be split into {groups} equal groups")
    per_group = networks // groups
    chunks = np.array_split(np.arange(groups), max(1, min(jobs, groups)))

    def one(numbered: tuple[int, np.ndarray]) -> Result:
        number, chunk = numbered
        rows = np.concatenate([np.arange(g * per_group, (g + 1) * per_group) for g in chunk])
        return work(rows, [np.random.Generator(np.random.SFC64(seeds[g])) for g in chunk], number == 0)

    with concurrent.futures.ThreadPoolExecutor(len(chunks)) as pool:
        return list(pool.map(one, enumerate(chunks)))


def _fit_stack(
    x: np.ndarray,
    y: np.ndarray,
    rates: np.ndarray,
    decays: np.ndarray,
    *,
    hidden: int,
    epochs: int,
    generators: list[np.random.Generator],
    progress: Progress | None,
) -> StackedFit:
    k, n, d = x.shape
    per_group = k // len(generators)
    limit_1, limit_2 = math.sqrt(6 / (d + hidden)), math.sqrt(6 / (hidden + 1))  # Glorot uniform
    w1 = np.concatenate([g.uniform(-limit_1, limit_1, (per_group, d, hidden)) for g in generators]).astype(np.float32)
    w2 = np.concatenate([g.uniform(-limit_2, limit_2, (per_group, hidden)) for g in generators]).astype(np.float32)
    params = [w1, np.zeros((k, hidden), np.float32), w2, np.zeros(k, np.float32)]
    first = [np.zeros_like(p) for p in params]
    second = [np.zeros_like(p) for p in params]
    masks = _Masks(generators, rates)
    twice_decay = (2.0 * decays).astype(np.float32)
    models = np.arange(k)[:, np.newaxis]
    step = 0
    for _ in range(epochs):
        order = np.concatenate([np.argsort(g.random((per_group, n)), axis=1) for g in generators])
        for start in range(0, n, BATCH):
            idx = order[:, start : start + BATCH]
            xb, yb = x[models, idx], y[models, idx]
            grads = _gradients(params, xb, yb, masks, twice_decay)
            step += 1
            _adam(params, first, second, grads, step)
        if progress is not None:
            progress(-(-n // BATCH))
    return StackedFit(*params)


def _gradients(
    params: list[np.ndarray], xb: np.ndarray, yb: np.ndarray, masks: _Masks, twice_decay: np.ndarray
) -> list[np.ndarray]:
    """Gradients of mean squared error + decay·Σw² for one masked minibatch ``xb [K, B, D]``."""
    w1, b1, w2, b2 = params
    batch = xb.shape[1]
    x_masked = xb * masks.draw(xb.shape[1:])
    z = np.matmul(x_masked, w1)
    z += b1[:, np.newaxis, :]
    # The hidden mask and the ReLU's gate in one multiplier: h_masked = z · gate and dz = dh · gate.
    gate = masks.draw(z.shape[1:])
    gate *= z > 0
    h_masked = z * gate
    out = np.matmul(h_masked, w2[:, :, np.newaxis])[..., 0] + b2[:, np.newaxis]
    d_out = (out - yb) * np.float32(2.0 / batch)  # [K, B]
    d_w2 = np.matmul(h_masked.transpose(0, 2, 1), d_out[:, :, np.newaxis])[..., 0] + twice_decay[:, None] * w2
    d_z = d_out[:, :, np.newaxis] * w2[:, np.newaxis, :]
    d_z *= gate
    d_w1 = np.matmul(x_masked.transpose(0, 2, 1), d_z) + twice_decay[:, None, None] * w1
    return [d_w1, d_z.sum(axis=1), d_w2, d_out.sum(axis=1)]


def _adam(
    params: list[np.ndarray], first: list[np.ndarray], second: list[np.ndarray], grads: list[np.ndarray], step: int
) -> None:
    """Keras's Adam update, in place."""
    rate = np.float32(LEARNING_RATE * math.sqrt(1.0 - BETA_2**step) / (1.0 - BETA_1**step))
    for p, m, v, g in zip(params, first, second, grads, strict=True):
        m += (g - m) * np.float32(1 - BETA_1)
        v += (np.square(g) - v) * np.float32(1 - BETA_2)
        p -= rate * m / (np.sqrt(v) + np.float32(EPSILON))


@dataclasses.dataclass
class MonteCarloScores:
    """Per network ``[K]``: mean log-likelihood, mean squared error of the MC mean, mean MC variance."""

    log_likelihood: np.ndarray
    squared_error: np.ndarray
    epistemic_variance: np.ndarray


def mc_log_likelihood(
    fitted: StackedFit,
    x: np.ndarray,
    y: np.ndarray,
    rates: np.ndarray,
    taus: np.ndarray,
    y_scale: tuple[np.ndarray, np.ndarray],
    *,
    samples: int,
    seeds: Sequence[np.random.SeedSequence],
    jobs: int = 1,
) -> MonteCarloScores:
    """MC-dropout scores of each network on its own rows, in original units (see ``MonteCarloScores``).

    ``x [K, N, D]`` standardised, ``y [K, N]`` original units, ``y_scale = (mean [K], std [K])``
    un-does the target standardisation; the predictive density is the mixture of T Gaussians with
    precision ``taus`` (Gal & Ghahramani 2016, eq. 8), accumulated over chunks of samples.
    """
    x = np.asarray(x, np.float32)

    def work(rows: np.ndarray, generators: list[np.random.Generator], _lead: bool) -> np.ndarray:
        scale = (y_scale[0][rows], y_scale[1][rows])
        return _log_likelihood(fitted.take(rows), x[rows], y[rows], rates[rows], taus[rows], scale, samples, generators)

    return MonteCarloScores(*np.concatenate(_across_threads(len(x), seeds, jobs, work)).T)


def _log_likelihood(
    fitted: StackedFit,
    x: np.ndarray,
    y: np.ndarray,
    rates: np.ndarray,
    taus: np.ndarray,
    y_scale: tuple[np.ndarray, np.ndarray],
    samples: int,
    generators: list[np.random.Generator],
) -> np.ndarray:
    k, n, d = x.shape
    masks = _Masks(generators, rates)
    chunk = max(1, 2_000_000 // (k * n * fitted.w1.shape[-1]))
    tau = taus[:, np.newaxis].astype(np.float64)
    running = np.full((k, n), -np.inf)  # running logsumexp over samples of -tau/2 (y - y_t)^2
    total, squares = np.zeros((k, n)), np.zeros((k, n))  # moments of the samples, for the noise estimate
    drawn = 0
    while drawn < samples:
        size = min(chunk, samples - drawn)
        tiled = np.broadcast_to(x[:, np.newaxis], (k, size, n, d)).reshape(k, size * n, d)
        z = np.matmul(tiled * masks.draw((size * n, d)), fitted.w1) + fitted.b1[:, np.newaxis, :]
        np.maximum(z, 0, out=z)
        z *= masks.draw((size * n, fitted.w1.shape[-1]))
        out = np.matmul(z, fitted.w2[:, :, np.newaxis])[..., 0] + fitted.b2[:, np.newaxis]
        predictions = out.reshape(k, size, n) * y_scale[1][:, None, None] + y_scale[0][:, None, None]
        exponent = -0.5 * tau[:, np.newaxis] * np.square(y[:, np.newaxis] - predictions, dtype=np.float64)
        running = np.logaddexp(running, np.logaddexp.reduce(exponent, axis=1))
        total += predictions.sum(axis=1, dtype=np.float64)
        squares += np.square(predictions, dtype=np.float64).sum(axis=1)
        drawn += size
    ll = running - math.log(samples) - 0.5 * math.log(2 * math.pi) + 0.5 * np.log(tau)
    mean = total / samples
    return np.stack(
        [
            ll.mean(axis=1),
            np.mean((y - mean) ** 2, axis=1),
            np.mean(np.maximum(squares / samples - mean**2, 0), axis=1),
        ],
        axis=1,
    )
