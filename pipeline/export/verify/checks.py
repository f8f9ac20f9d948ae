"""Numerical verification of exported graphs, run through LiteRT before anything is published.

Every check returns a JSON-ready record; ``failures()`` lists those that did
not pass, and the exporter refuses to publish if there is any. The checks:

* ``ops``: no Flex/custom or resource-variable ops; random ops only in ``mc``.
* ``deterministic_parity``: deterministic.tflite vs Keras inference, max abs diff ≤ tolerance.
* ``masked_parity``: mc_masked.tflite vs a per-sample reference pass with the same masks.
* ``drop_fraction``: each layer's empirical drop fraction in mc.tflite lies within a Hoeffding
  bound of its rate (Gaussian sites: noise mean and mean square within exact normal and
  chi-square bounds).
* ``mc_mean``: mc.tflite's MC mean vs Keras's own training-mode dropout MC mean, per output,
  within a Bonferroni-corrected number of standard errors.
* ``fresh_randomness``: mc.tflite gives different samples on every invoke, also after
  tensors are re-allocated (a fixed-seed random op would restart its sequence).
* ``prefix_cached``: the first op that turns the input's rows into T x B sample rows (a TILE,
  or the broadcasting multiply of a Dropout layer's input by its masks) reads ``B`` rows, so
  the deterministic prefix before it runs once per input.
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

from mcdrop.pipeline.export.errors import ExportError
from mcdrop.pipeline.export.graphs import forward as passes
from mcdrop.pipeline.export.model import signature
from mcdrop.pipeline.export.model.sites import BERNOULLI, DropoutSite
from mcdrop.pipeline.shared.strict_float32 import ONEDNN_VARIABLE, onednn_enabled
from mcdrop.serving.models.litert import RANDOM_OPS, VARIABLE_OPS, Graph

Feeds = dict[str, np.ndarray]
"""The model's inputs by graph input name (``x`` for a single-input model), in ``model.inputs`` order."""

PARITY_TOLERANCE = 1e-5
# False alarms: a correct graph must pass. The mask checks use distribution-free (Hoeffding) or exact
# bounds at 1e-9 per layer; the mean check (a normal approximation) runs at 1e-7 per attempt, over all
# outputs together, and is redrawn once. So a correct export fails with probability below
# sites x 1e-9 + (1e-7)^2, far below 1e-6, while a rate that is off by 0.05 lies tens of bounds away
# at the verification's sample sizes (n = T x rows x units, about 10^5 to 10^7 flags per layer).
MASK_FALSE_ALARM = 1e-9
MEAN_FALSE_ALARM = 1e-7
STATISTICAL_ATTEMPTS = 2


def parity_tolerance(reference: np.ndarray) -> float:
    """1e-5 absolute, scaled up for outputs larger than 1 (float32 carries ~7 significant digits)."""
    return PARITY_TOLERANCE * max(1.0, float(np.max(np.abs(reference))) if reference.size else 1.0)


def op_check(graph: str, ops: list[str], sites: list[DropoutSite]) -> dict[str, Any]:
    """Structural check of one graph's op list."""
    problems = []
    flex = sorted({op for op in ops if op.startswith("Flex") or op == "CUSTOM"})
    if flex:
        problems.append(f"Flex/custom ops {flex} need TensorFlow at run time")
    variables = sorted(set(ops) & VARIABLE_OPS)
    if variables:
        problems.append(f"resource-variable ops {variables} (weights not frozen)")
    random = sorted(set(ops) & RANDOM_OPS)
    if graph.split(".")[0] in ("mc", "mc_summary"):  # also the static ``mc.b1_t32``
        needed = {"RANDOM_UNIFORM" if s.kind == BERNOULLI else "RANDOM_STANDARD_NORMAL" for s in sites}
        if missing := sorted(needed - set(ops)):
            problems.append(f"no {missing} op: dropout was removed from the stochastic graph")
    elif random:
        problems.append(f"random ops {random} in a graph that must be a pure function")
    return {"check": "ops", "graph": graph, "passed": not problems, "problems": problems, "ops": ops}


def deterministic_parity(model: keras.Model, graph: Graph, x: Feeds) -> dict[str, Any]:
    def keras(rows: Feeds) -> np.ndarray:
        return joined(passes.keras_inference(model, keras_x(rows)), lead=1)

    reference = keras(x)
    actual = joined(run_graph(graph, x, signature.output_names(model)), lead=1)
    return _parity("deterministic_parity", actual, reference, rounding_sensitivity(keras, x),
                   weight_sensitivity(keras, x, model))  # fmt: skip


def keras_x(x: Feeds) -> Any:
    """``x`` as ``passes.forward`` and ``keras_inference`` take it: one array, or a list in input order."""
    values = list(x.values())
    return values[0] if len(values) == 1 else values


def rows_of(x: Feeds, rows: slice) -> Feeds:
    return {name: value[rows] for name, value in x.items()}


def batch_of(x: Feeds) -> int:
    return len(next(iter(x.values())))


def joined(outputs: Any, lead: int) -> np.ndarray:
    """A model's outputs as one array: the only output as it is; several flattened past their ``lead`` axes
    ([B] or [T, B]) and concatenated, so every check covers every output at once."""
    arrays = [np.asarray(o) for o in (outputs if isinstance(outputs, list) else [outputs])]
    if len(arrays) == 1:
        return arrays[0]
    return np.concatenate([a.reshape(*a.shape[:lead], -1) for a in arrays], axis=-1)


def run_graph(graph: Graph, feeds: Feeds, names: list[str]) -> list[np.ndarray]:
    """One invoke; the outputs in the model's order (``names``), then any extra outputs (a ``mask_probe``'s)."""
    outputs = graph.run(feeds)
    if len(names) == 1:
        return outputs
    found = graph.output_names
    if sorted(found[: len(names)]) != sorted(names):
        raise ExportError(f"The graph's outputs are {found[: len(names)]}. Expected {names}.")
    order = [found.index(name) for name in names]
    return [outputs[i] for i in order] + outputs[len(names) :]


def training_mode_parity(
    model: keras.Model, sites: list[DropoutSite], x: Feeds, inactive: list[DropoutSite] | None = None
) -> dict[str, Any]:
    """The layers that own dropout, run in training mode with every mask kept unscaled, against Keras inference.

    MC samples must differ from the deterministic pass only by dropout: a layer that changes anything
    else in training mode (a custom training branch, statistics of the batch) fails here.
    """
    reference = joined(passes.keras_inference(model, keras_x(x)), lead=1)
    policy = passes.TrainingModeIdentity()
    actual = joined(passes.forward(model, sites, _constant(x), policy, inactive=inactive or []), lead=1)
    record = _parity("training_mode_parity", actual, reference)
    if not record["passed"]:
        owners = sorted({s.owner for s in sites if s.class_name != "AlphaDropout"})
        record["problems"].append(
            f"layers {owners} change more than dropout in training mode (e.g. batch statistics or a custom training "
            "branch), so MC samples would not be dropout samples of the deterministic model"
        )
    return record


def masked_parity(
    model: keras.Model,
    graph: Graph,
    sites: list[DropoutSite],
    x: Feeds,
    samples: int,
    seed: int,
    chunk: int,
    inactive: list[DropoutSite] | None = None,
) -> dict[str, Any]:
    """mc_masked.tflite against the model run once per sample, untiled, with the same masks (``chunk`` samples
    per invoke)."""
    feeds = draw_feeds(sites, samples, batch_of(x), np.random.default_rng(seed))
    actual = run_masked(graph, x, feeds, chunk, signature.output_names(model))

    def keras(rows: Feeds) -> np.ndarray:
        return np.stack([_reference_sample(model, rows, sites, feeds, t, inactive or []) for t in range(samples)])

    return _parity("masked_parity", actual, keras(x), rounding_sensitivity(keras, x),
                   weight_sensitivity(keras, x, model))  # fmt: skip


def run_masked(graph: Graph, x: Feeds, feeds: dict[str, np.ndarray], chunk: int, names: list[str]) -> np.ndarray:
    """mc_masked.tflite over every sample of ``feeds`` (``[T, B, ...]`` masks), ``chunk`` samples per invoke; the
    outputs ``joined``."""
    samples = next(iter(feeds.values())).shape[0]
    return np.concatenate(
        [
            joined(
                run_graph(graph, {**x, **{name: feed[start : start + chunk] for name, feed in feeds.items()}}, names),
                lead=2,
            )
            for start in range(0, samples, chunk)
        ]
    )


def draw_feeds(sites: list[DropoutSite], samples: int, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Host-side masks (uint8 keep flags) and noise for mc_masked.tflite."""
    feeds: dict[str, np.ndarray] = {}
    for spec in sites:
        shape = (samples, batch, *spec.noise_shape)
        if spec.kind == BERNOULLI:
            feeds[spec.feed_name] = (rng.random(shape, dtype=np.float32) >= spec.rate).astype(np.uint8)
        else:
            feeds[spec.feed_name] = rng.standard_normal(shape, dtype=np.float32)
    return feeds


def _reference_sample(
    model: keras.Model,
    x: Feeds,
    sites: list[DropoutSite],
    feeds: dict[str, np.ndarray],
    t: int,
    inactive: list[DropoutSite],
) -> np.ndarray:
    one_sample = {name: feed[t : t + 1] for name, feed in feeds.items()}
    policy = passes.FedMasks(one_sample)
    return joined(passes.forward(model, sites, _constant(x), policy, inactive=inactive), lead=1)


def _constant(x: Feeds) -> Any:
    values = [tf.constant(v) for v in x.values()]
    return values[0] if len(values) == 1 else values


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


def tensor_names(content: bytes) -> set[str]:
    """The last name-scope part of every tensor's name in a LiteRT model."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    return {_name(tensor).rsplit("/", 1)[-1] for tensor in model.subgraphs[0].tensors}


def _name(tensor: Any) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)


def with_outputs(content: bytes, tensor_names: list[str]) -> bytes:
    """A copy of a LiteRT model with the tensors named ``tensor_names`` (last name-scope part) appended to its
    outputs, in that order: the same ops, weights and random ops, only more tensors handed back."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    subgraph = model.subgraphs[0]
    by_name: dict[str, int] = {}
    for index, tensor in enumerate(subgraph.tensors):
        by_name.setdefault(_name(tensor).rsplit("/", 1)[-1], index)
    missing = [name for name in tensor_names if name not in by_name]
    if missing:
        raise ExportError(f"Tensors {missing} not found in the graph.")
    subgraph.outputs = np.concatenate([np.asarray(subgraph.outputs, np.int32),
                                       np.asarray([by_name[n] for n in tensor_names], np.int32)])  # fmt: skip
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


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
            ok = all(_input_rows(shape) == batch for shape in shapes)
            problems = [] if ok else [f"{op['op_name']} makes the samples from rows of shapes {shapes}; expected "
                                      f"{batch} rows of the input"]  # fmt: skip
            return {"check": "prefix_cached", "passed": ok, "problems": problems, "prefix_ops": prefix_ops,
                    "expanding_op": str(op["op_name"]), "rows_before_samples": _input_rows(shapes[0]),
                    "rows_after": batch * samples}  # fmt: skip
        prefix_ops.append(str(op["op_name"]))
        derived.update(outputs)
    return {"check": "prefix_cached", "passed": False, "problems": ["no op of mc.tflite makes T x B sample rows"]}


def _sample_rows(shape: tuple[int, ...], batch: int, samples: int) -> bool:
    return bool(shape) and (shape[0] == batch * samples or shape[:2] == (samples, batch))


def _input_rows(shape: tuple[int, ...]) -> int:
    return shape[1] if len(shape) >= 2 and shape[0] == 1 else (shape[0] if shape else 0)


def _keras_reference(
    model: keras.Model, sites: list[DropoutSite], x: Feeds, inactive: list[DropoutSite]
) -> Callable[[int], np.ndarray]:
    """``samples -> [T, B, ...]`` samples from Keras's own dropout (training=True on the layers that own the sampled
    dropout only), as one traced function: the prefix before the first sampled site runs once per call, and the
    graph executor frees every intermediate as soon as it is used (eager Keras would hold them)."""
    x_tensor = _constant(x)

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


def rounding_sensitivity(reference: Callable[[Feeds], np.ndarray], x: Feeds) -> float:
    """How far the model's outputs move when its inputs move by float32 rounding (each value times 1 ± 2^-23).

    Another float32 implementation of the same layers (LiteRT's kernels against TensorFlow's) sums in another
    order, which acts like rounding noise injected at every layer; a deep network amplifies it (a 150-layer
    backbone into a confident softmax: ~1e-4). The parity tolerance grows with this measured amplification.
    """
    rng = np.random.default_rng(0)
    moved = {}
    for name, value in x.items():
        if value.dtype.kind != "f" or (len(x) > 1 and np.array_equal(value, np.round(value))):
            moved[name] = value  # several inputs: token ids (whole numbers) stay ids
            continue
        moved[name] = (value * (1 + _nudge(rng, value.shape))).astype(value.dtype)
    if all(moved[name] is value for name, value in x.items()):
        return 0.0
    return float(np.max(np.abs(np.asarray(reference(moved), np.float64) - np.asarray(reference(x), np.float64))))


def weight_sensitivity(reference: Callable[[Feeds], np.ndarray], x: Feeds, model: keras.Model) -> float:
    """How far the model's outputs move when every float32 weight moves by float32 rounding.

    Moving the input measures only the noise the first layer passes on; LiteRT also folds batch norm into the
    weights and every kernel rounds its own sums, noise injected at every layer. On some CPUs the input alone
    underestimates a deep network 100-fold (EfficientNetB0 at 32 px: 1.5e-6, against 1.6e-4 measured between
    LiteRT's and TensorFlow's kernels, and 1.0e-4 from moving the weights).
    """
    variables = [v for v in model.weights if str(v.dtype) == "float32"]
    if not variables:
        return 0.0
    base = np.asarray(reference(x), np.float64)
    rng = np.random.default_rng(1)
    originals = [v.numpy() for v in variables]
    try:
        for variable, value in zip(variables, originals, strict=True):
            variable.assign(value * (1 + _nudge(rng, value.shape)))
        moved = np.asarray(reference(x), np.float64)
    finally:
        for variable, value in zip(variables, originals, strict=True):
            variable.assign(value)
    return float(np.max(np.abs(moved - base)))


def _nudge(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0], np.float32), shape) * np.float32(2.0**-23)


ONEDNN_HINT = (
    "; the TensorFlow reference ran with oneDNN kernels, which on some CPUs compute float32 with less precision:"
    f" set {ONEDNN_VARIABLE}=0 before TensorFlow is imported (the mcdrop commands do) and export again"
)
SENSITIVITY_FACTOR = 50.0
"""Parity tolerance in units of the measured rounding sensitivity (when that exceeds the 1e-5 base)."""
WEIGHT_SENSITIVITY_FACTOR = 10.0
"""... and in units of the weight sensitivity, which injects the noise where the kernels do (measured: the kernels
differ by 1.2-2.7 of it)."""


def _parity(
    name: str, actual: np.ndarray, reference: np.ndarray, sensitivity: float = 0.0, weights: float = 0.0
) -> dict[str, Any]:
    problems = []
    if actual.shape != reference.shape:
        problems.append(f"shape {actual.shape} != reference {reference.shape}")
        diff = math.inf
    else:
        diff = float(np.max(np.abs(actual.astype(np.float64) - reference))) if actual.size else 0.0
    tolerance = max(parity_tolerance(reference), SENSITIVITY_FACTOR * sensitivity, WEIGHT_SENSITIVITY_FACTOR * weights)
    onednn = onednn_enabled()
    if not diff <= tolerance:
        problems.append(f"max abs diff {diff:.3g} > tolerance {tolerance:.3g} (rounding sensitivity {sensitivity:.3g}, "
                        f"weights {weights:.3g})"
                        + (ONEDNN_HINT if onednn and math.isfinite(diff) else ""))  # fmt: skip
    return {"check": name, "passed": not problems, "problems": problems, "max_abs_diff": diff, "tolerance": tolerance,
            "rounding_sensitivity": sensitivity, "weight_sensitivity": weights, "reference_onednn": onednn}  # fmt: skip


def failures(checks: list[dict[str, Any]]) -> list[str]:
    return [f"{c['check']}{' (' + c['graph'] + ')' if 'graph' in c else ''}: {'; '.join(c['problems'])}"
            for c in checks if not c["passed"]]  # fmt: skip
