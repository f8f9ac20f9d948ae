"""Statistical checks of the in-graph randomness of ``mc.tflite``: the masks it draws are the model's.

* ``drop_fraction``: each layer's empirical drop fraction lies within a Hoeffding bound of its rate (Gaussian
  sites: noise mean and mean square within exact normal and chi-square bounds).
* ``mc_mean``: mc.tflite's MC mean vs Keras's own training-mode dropout MC mean, per output, within a
  Bonferroni-corrected number of standard errors.
* ``fresh_randomness``: mc.tflite gives different samples on every invoke, also after tensors are re-allocated
  (a fixed-seed random op would restart its sequence).
* ``prefix_cached``: the first op that turns the input's rows into T x B sample rows (a TILE, or the
  broadcasting multiply of a Dropout layer's input by its masks) reads ``B`` rows, so the deterministic prefix
  before it runs once per input.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from statistics import NormalDist
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mcdrop.pipeline.export.graphs import forward as passes
from mcdrop.pipeline.export.model import signature
from mcdrop.pipeline.export.model.sites import BERNOULLI, DropoutSite
from mcdrop.pipeline.export.verify.common import (
    Feeds,
    as_tensors,
    batch_of,
    joined,
    rows_of,
    run_graph,
    tensor_names,
    with_outputs,
)
from mcdrop.serving.models.litert import Graph

# False alarms: a correct graph must pass. The mask checks use distribution-free (Hoeffding) or exact
# bounds at 1e-9 per layer; the mean check (a normal approximation) runs at 1e-7 per attempt, over all
# outputs together, and is redrawn once. So a correct export fails with probability below
# sites x 1e-9 + (1e-7)^2, far below 1e-6, while a rate that is off by 0.05 lies tens of bounds away
# at the verification's sample sizes (n = T x rows x units, about 10^5 to 10^7 flags per layer).
MASK_FALSE_ALARM = 1e-9


MEAN_FALSE_ALARM = 1e-7


STATISTICAL_ATTEMPTS = 2


@dataclasses.dataclass(frozen=True)
class Chunks:
    """Samples per invoke for the statistics: ``tflite`` through mc.tflite, ``keras`` through the Keras reference."""

    tflite: int
    keras: int


def mc_statistics(
    model: keras.Model,
    mc_bytes: bytes,
    sites: list[DropoutSite],
    x: Feeds,
    samples: int,
    chunks: Chunks,
    inactive: list[DropoutSite] | None = None,
    allowance: float = 0.0,
) -> list[dict[str, Any]]:
    """Drop fractions, MC mean vs Keras, fresh randomness and prefix caching of mc.tflite, in bounded memory.

    Both sides run ``samples`` samples in chunks (``chunks``), accumulating exact per-output moments, so memory
    does not grow with ``samples`` or the model's size; the mask checks read only the mask tensors (made extra
    outputs of a copy of the graph, whose ops are the shipped graph's). The statistical checks' false-alarm rates
    are bounded (see ``MASK_FALSE_ALARM`` and ``MEAN_FALSE_ALARM``); if one fails, both are redrawn once with fresh
    samples, and a wrong rate or a wrong mean fails both draws. ``allowance``: the largest float32 difference of the
    two implementations on one set of masks (``masked_parity``'s tolerance), not counted against the means.
    """
    inactive = inactive or []
    probe, found = mask_probe(mc_bytes, sites)
    reference = _keras_reference(model, sites, x, inactive)
    names = signature.output_names(model)
    attempts = 0
    while True:
        attempts += 1
        tflite_moments, drop = _run_mc(probe, found, x, samples, chunks.tflite, names)
        for site in sites:
            if site not in found:
                drop["passed"] = False
                drop["problems"].append(f"mask tensor {site.tensor_name} not found in mc.tflite")
        keras_moments = Moments()
        for start in range(0, samples, chunks.keras):
            keras_moments.add(reference(min(chunks.keras, samples - start)))
        mean = _mean_agreement(tflite_moments, keras_moments, allowance)
        if (drop["passed"] and mean["passed"]) or attempts == STATISTICAL_ATTEMPTS:
            break
    drop["attempts"] = mean["attempts"] = attempts
    mean["chunks"] = {"tflite": chunks.tflite, "keras": chunks.keras}
    return [drop, prefix_cached(mc_bytes, x), mean,
            fresh_randomness(mask_probe(mc_bytes, sites)[0], rows_of(x, slice(0, 2)))]  # fmt: skip


def mask_probe(mc_bytes: bytes, sites: list[DropoutSite]) -> tuple[Graph, list[DropoutSite]]:
    """mc.tflite with the mask tensors of ``sites`` as extra outputs, and the sites whose mask tensor was found."""
    names = tensor_names(mc_bytes)
    found = [site for site in sites if site.tensor_name in names]
    return Graph(with_outputs(mc_bytes, [site.tensor_name for site in found])), found


class Moments:
    """Per-element count, mean and sum of squared deviations of samples added in chunks (Chan et al.'s update)."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray = np.zeros(())
        self.m2: np.ndarray = np.zeros(())

    def add(self, chunk: np.ndarray) -> None:
        """Add ``[n, ...]`` samples."""
        n = chunk.shape[0]
        mean = chunk.mean(axis=0, dtype=np.float64)
        m2 = np.square(chunk - mean, dtype=np.float64).sum(axis=0)
        if self.count == 0:
            self.count, self.mean, self.m2 = n, mean, m2
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + np.square(delta) * (self.count * n / total)
        self.count = total

    @property
    def variance(self) -> np.ndarray:
        """Unbiased sample variance."""
        return self.m2 / max(1, self.count - 1)


def _run_mc(
    probe: Graph, sites: list[DropoutSite], x: Feeds, samples: int, chunk: int, names: list[str]
) -> tuple[Moments, dict[str, Any]]:
    """``samples`` samples of mc.tflite in chunks: output moments, and per-site mask statistics."""
    moments = Moments()
    counts = [0] * len(sites)
    sums = [0.0] * len(sites)
    squares = [0.0] * len(sites)
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        outputs = run_graph(probe, {**x, "samples": np.array(size, np.int32)}, names)
        moments.add(joined(outputs[: len(names)], lead=2))
        for i, values in enumerate(outputs[len(names) :]):
            counts[i] += int(values.size)
            sums[i] += float(values.sum(dtype=np.float64))
            squares[i] += float(np.square(values, dtype=np.float64).sum()) if sites[i].kind != BERNOULLI else 0.0
    return moments, _drop_fraction(sites, counts, sums, squares)


def drop_fraction(
    probe: Graph, sites: list[DropoutSite], x: Feeds, samples: int, chunk: int, names: list[str]
) -> dict[str, Any]:
    """The ``drop_fraction`` check alone, over ``samples`` samples of a ``mask_probe`` (a quantised variant's mc
    graph: its masks must still be drawn at the layers' rates)."""
    return _run_mc(probe, sites, x, samples, chunk, names)[1]


def fresh_randomness(graph: Graph, x: Feeds, samples: int = 4) -> dict[str, Any]:
    """Consecutive invokes differ, also across a resize to another batch size and back.

    Compares every output of ``graph``: with a ``mask_probe`` the masks too, so a model whose outputs are
    saturated on ``x`` (a confident softmax that dropout cannot move) is not mistaken for a fixed-seed graph.
    """
    t = np.array(samples, np.int32)

    def run() -> list[np.ndarray]:
        return [output.copy() for output in graph.run({**x, "samples": t})]

    first, second = run(), run()
    graph.run({**{name: np.concatenate([v, v[:1]]) for name, v in x.items()}, "samples": t})
    after_resize = run()

    def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
        return all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))

    repeats = [
        name
        for name, identical in (
            ("consecutive invokes", same(first, second)),
            ("after re-allocation", same(first, after_resize)),
        )
        if identical
    ]
    return {
        "check": "fresh_randomness",
        "passed": not repeats,
        "problems": [f"identical samples {r}" for r in repeats],
    }


def _drop_fraction(
    sites: list[DropoutSite], counts: list[int], sums: list[float], squares: list[float]
) -> dict[str, Any]:
    per_site, problems = [], []
    for spec, n, total, square_total in zip(sites, counts, sums, squares, strict=True):
        if spec.kind == BERNOULLI:
            observed = 1.0 - total / n
            half = hoeffding_half_width(n, MASK_FALSE_ALARM)
            low, high = spec.rate - half, spec.rate + half
            ok = low <= observed <= high
            per_site.append({"site": spec.name, "rate": spec.rate, "observed": observed, "n": n,
                              "bound": [low, high], "false_alarm": MASK_FALSE_ALARM, "passed": ok})  # fmt: skip
        else:
            mean = total / n
            mean_square = square_total / n
            mean_bound = normal_quantile(MASK_FALSE_ALARM / 4) / math.sqrt(n)
            square_low, square_high = chi_square_mean_bounds(n, MASK_FALSE_ALARM / 2)
            ok = abs(mean) <= mean_bound and square_low <= mean_square <= square_high
            per_site.append({"site": spec.name, "noise_mean": mean, "noise_mean_square": mean_square, "n": n,
                              "mean_bound": mean_bound, "mean_square_bound": [square_low, square_high],
                              "false_alarm": MASK_FALSE_ALARM, "passed": ok})  # fmt: skip
        if not ok:
            problems.append(f"site {spec.name}: {per_site[-1]}")
    return {"check": "drop_fraction", "passed": not problems, "problems": problems, "sites": per_site}


PREFIX_CHECK_SAMPLES = 3


def prefix_cached(mc_bytes: bytes, x: Feeds, samples: int = PREFIX_CHECK_SAMPLES) -> dict[str, Any]:
    """Follow the data flow from the inputs to the first op whose output has T x B sample rows; its input from
    them must have ``B`` rows (``[B, ...]``, or ``[1, B, ...]`` when it broadcasts against ``[T, B, ...]`` masks).

    Runs one small invoke without the XNNPACK delegate (whose partitions do not report their inner shapes) and
    reads only tensor shapes."""
    graph = Graph(mc_bytes, delegate=False)
    batch = batch_of(x)
    graph.run({**x, "samples": np.array(samples, np.int32)})
    derived = {graph.input_index(name) for name in x}
    prefix_ops: list[str] = []
    for op in graph.op_details():
        from_x = [int(i) for i in op["inputs"] if int(i) in derived]
        if not from_x or op["op_name"] == "SHAPE":  # a shape is not the input's data
            continue
        outputs = [int(i) for i in op["outputs"]]
        if any(_sample_rows(graph.tensor_shape(i), batch, samples) for i in outputs):
            shapes = [graph.tensor_shape(i) for i in from_x]
            ok = all(_input_rows(shape, batch) == batch for shape in shapes)
            problems = [] if ok else [f"{op['op_name']} makes the samples from rows of shapes {shapes}; expected "
                                      f"{batch} rows of the input"]  # fmt: skip
            return {"check": "prefix_cached", "passed": ok, "problems": problems, "prefix_ops": prefix_ops,
                    "expanding_op": str(op["op_name"]), "rows_before_samples": _input_rows(shapes[0], batch),
                    "rows_after": batch * samples}  # fmt: skip
        prefix_ops.append(str(op["op_name"]))
        derived.update(outputs)
    return {"check": "prefix_cached", "passed": False, "problems": ["no op of mc.tflite makes T x B sample rows"]}


def _sample_rows(shape: tuple[int, ...], batch: int, samples: int) -> bool:
    return bool(shape) and (shape[0] == batch * samples or shape[:2] == (samples, batch))


def _input_rows(shape: tuple[int, ...], batch: int) -> int:
    """The rows of a tensor from the input: ``[B, ...]``, or ``[1, B, ...]`` when it broadcasts against ``[T, B, ...]``
    masks. With B = 1 a ``[1, H, W, C]`` image is ``[B, ...]``: read ``[1, x, ...]`` as broadcast rows only when the
    first reading does not fit."""
    if not shape:
        return 0
    if shape[0] == batch or len(shape) < 2 or shape[0] != 1:
        return shape[0]
    return shape[1]


def _keras_reference(
    model: keras.Model, sites: list[DropoutSite], x: Feeds, inactive: list[DropoutSite]
) -> Callable[[int], np.ndarray]:
    """``samples -> [T, B, ...]`` samples from Keras's own dropout (training=True on the layers that own the sampled
    dropout only), as one traced function: the prefix before the first sampled site runs once per call, and the
    graph executor frees every intermediate as soon as it is used (eager Keras would hold them)."""
    x_tensor = as_tensors(x)

    def run(samples: tf.Tensor) -> Any:
        return passes.forward(model, sites, x_tensor, passes.KerasTrainingMode(), samples, inactive)

    traced = tf.function(run, input_signature=[tf.TensorSpec([], tf.int32)], autograph=False)
    return lambda samples: joined([np.asarray(y) for y in tf.nest.flatten(traced(tf.constant(samples, tf.int32)))],
                                  lead=2)  # fmt: skip


def _mean_agreement(a: Moments, b: Moments, allowance: float = 0.0) -> dict[str, Any]:
    """z-scores of the difference of two MC means; differences up to ``allowance`` (the float32 difference of the
    two implementations on the same masks, bounded by ``masked_parity``) are not counted: where dropout barely
    moves an output (a saturated softmax) the standard error is below float32 rounding."""
    se = np.sqrt(a.variance / a.count + b.variance / b.count)
    diff = np.maximum(0.0, np.abs(a.mean - b.mean) - allowance)
    z = np.where(se > 0, diff / np.maximum(se, 1e-30), np.where(diff <= 1e-6, 0.0, np.inf))
    worst = float(z.max())
    tolerance = normal_quantile(MEAN_FALSE_ALARM / (2 * max(1, z.size)))  # Bonferroni over all outputs
    return {
        "check": "mc_mean",
        "passed": worst <= tolerance,
        "problems": [] if worst <= tolerance else [f"MC means differ by {worst:.2f} standard errors"],
        "samples": int(a.count),
        "max_z": worst,
        "max_abs_diff": float(np.abs(a.mean - b.mean).max()),
        "rounding_allowance": allowance,
        "tolerance_se": tolerance,
        "false_alarm": MEAN_FALSE_ALARM,
    }


def hoeffding_half_width(n: int, false_alarm: float) -> float:
    """``e`` with P(|mean of n independent [0, 1] variables - their expectation| >= e) <= ``false_alarm``."""
    return math.sqrt(math.log(2.0 / false_alarm) / (2.0 * n))


def normal_quantile(upper_tail: float) -> float:
    """``z`` with P(Z > z) = ``upper_tail`` for a standard normal Z."""
    return NormalDist().inv_cdf(1.0 - upper_tail)


def chi_square_mean_bounds(n: int, false_alarm: float) -> tuple[float, float]:
    """Bounds on the mean of n squared standard normals (chi-square / n), each side exceeded with probability at
    most ``false_alarm / 2`` (Laurent & Massart, 2000)."""
    x = math.log(2.0 / false_alarm)
    return 1.0 - 2.0 * math.sqrt(x / n), 1.0 + 2.0 * math.sqrt(x / n) + 2.0 * x / n
