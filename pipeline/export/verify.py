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

import math
from statistics import NormalDist
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from mcdrop.pipeline.export import stochastic
from mcdrop.pipeline.export.stochastic import BERNOULLI, DropoutSite
from mcdrop.serving.litert import RANDOM_OPS, VARIABLE_OPS, Graph

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
    if graph == "mc":
        needed = {"RANDOM_UNIFORM" if s.kind == BERNOULLI else "RANDOM_STANDARD_NORMAL" for s in sites}
        if missing := sorted(needed - set(ops)):
            problems.append(f"no {missing} op: dropout was removed from the stochastic graph")
    elif random:
        problems.append(f"random ops {random} in a graph that must be a pure function")
    return {"check": "ops", "graph": graph, "passed": not problems, "problems": problems, "ops": ops}


def deterministic_parity(model: keras.Model, graph: Graph, x: np.ndarray) -> dict[str, Any]:
    reference = np.asarray(stochastic.keras_inference(model, x))
    actual = graph.run({"x": x})[0]
    return _parity("deterministic_parity", actual, reference)


def training_mode_parity(model: keras.Model, sites: list[DropoutSite], x: np.ndarray) -> dict[str, Any]:
    """The layers that own dropout, run in training mode with every mask kept unscaled, against Keras inference.

    MC samples must differ from the deterministic pass only by dropout: a layer that changes anything
    else in training mode (a custom training branch, statistics of the batch) fails here.
    """
    reference = np.asarray(stochastic.keras_inference(model, x))
    actual = np.asarray(stochastic.forward(model, sites, tf.constant(x), stochastic.TrainingModeIdentity()))
    record = _parity("training_mode_parity", actual, reference)
    if not record["passed"]:
        owners = sorted({s.owner for s in sites if s.class_name != "AlphaDropout"})
        record["problems"].append(
            f"layers {owners} change more than dropout in training mode (e.g. batch statistics or a custom training "
            "branch), so MC samples would not be dropout samples of the deterministic model"
        )
    return record


def masked_parity(
    model: keras.Model, graph: Graph, sites: list[DropoutSite], x: np.ndarray, samples: int, seed: int
) -> dict[str, Any]:
    """mc_masked.tflite against the model run once per sample, untiled, with the same masks."""
    feeds = draw_feeds(sites, samples, len(x), np.random.default_rng(seed))
    actual = graph.run({"x": x, **feeds})[0]
    reference = np.stack([_reference_sample(model, x, sites, feeds, t) for t in range(samples)])
    return _parity("masked_parity", actual, reference)


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
    model: keras.Model, x: np.ndarray, sites: list[DropoutSite], feeds: dict[str, np.ndarray], t: int
) -> np.ndarray:
    one_sample = {name: feed[t : t + 1] for name, feed in feeds.items()}
    return np.asarray(stochastic.forward(model, sites, tf.constant(x), stochastic.FedMasks(one_sample)))


def mc_statistics(
    model: keras.Model, mc_bytes: bytes, sites: list[DropoutSite], x: np.ndarray, samples: int
) -> list[dict[str, Any]]:
    """Drop fractions, MC mean vs Keras, fresh randomness and prefix caching of mc.tflite.

    The statistical checks' false-alarm rates are bounded (see ``MASK_FALSE_ALARM`` and
    ``MEAN_FALSE_ALARM``); if one fails, both are redrawn once with fresh samples, and a
    wrong rate or a wrong mean fails both draws.
    """
    graph = Graph(mc_bytes, preserve_all_tensors=True)
    feeds = {"x": x, "samples": np.array(samples, np.int32)}
    attempts = 0
    while True:
        attempts += 1
        tflite_samples = graph.run(feeds)[0]
        drop = _drop_fraction(graph, sites)
        mean = _mean_agreement(tflite_samples, _keras_mc(model, sites, x, samples))
        if (drop["passed"] and mean["passed"]) or attempts == STATISTICAL_ATTEMPTS:
            break
    drop["attempts"] = mean["attempts"] = attempts
    return [drop, _prefix_cached(graph, len(x), samples), mean, fresh_randomness(Graph(mc_bytes), x)]


def fresh_randomness(graph: Graph, x: np.ndarray, samples: int = 8) -> dict[str, Any]:
    """Consecutive invokes differ, also across a resize to another batch size and back."""
    t = np.array(samples, np.int32)
    first = graph.run({"x": x, "samples": t})[0].copy()
    second = graph.run({"x": x, "samples": t})[0].copy()
    graph.run({"x": np.concatenate([x, x[:1]]), "samples": t})
    after_resize = graph.run({"x": x, "samples": t})[0].copy()
    repeats = [
        name
        for name, same in (
            ("consecutive invokes", np.array_equal(first, second)),
            ("after re-allocation", np.array_equal(first, after_resize)),
        )
        if same
    ]
    return {
        "check": "fresh_randomness",
        "passed": not repeats,
        "problems": [f"identical samples {r}" for r in repeats],
    }


def _drop_fraction(graph: Graph, sites: list[DropoutSite]) -> dict[str, Any]:
    tensors = graph.tensors_named("mcdrop_")
    per_site, problems = [], []
    for spec in sites:
        values = tensors.get(spec.tensor_name)
        if values is None:
            problems.append(f"mask tensor {spec.tensor_name} not found in mc.tflite")
            continue
        n = int(values.size)
        if spec.kind == BERNOULLI:
            observed = float(1.0 - values.mean(dtype=np.float64))
            half = hoeffding_half_width(n, MASK_FALSE_ALARM)
            low, high = spec.rate - half, spec.rate + half
            ok = low <= observed <= high
            per_site.append({"site": spec.name, "rate": spec.rate, "observed": observed, "n": n,
                              "bound": [low, high], "false_alarm": MASK_FALSE_ALARM, "passed": ok})  # fmt: skip
        else:
            mean = float(values.mean(dtype=np.float64))
            mean_square = float(np.mean(np.square(values, dtype=np.float64)))
            mean_bound = normal_quantile(MASK_FALSE_ALARM / 4) / math.sqrt(n)
            square_low, square_high = chi_square_mean_bounds(n, MASK_FALSE_ALARM / 2)
            ok = abs(mean) <= mean_bound and square_low <= mean_square <= square_high
            per_site.append({"site": spec.name, "noise_mean": mean, "noise_mean_square": mean_square, "n": n,
                              "mean_bound": mean_bound, "mean_square_bound": [square_low, square_high],
                              "false_alarm": MASK_FALSE_ALARM, "passed": ok})  # fmt: skip
        if not ok:
            problems.append(f"site {spec.name}: {per_site[-1]}")
    return {"check": "drop_fraction", "passed": not problems, "problems": problems, "sites": per_site}


def _prefix_cached(graph: Graph, batch: int, samples: int) -> dict[str, Any]:
    """Follow the data flow from ``x`` to the first op whose output has T x B sample rows; its input from ``x``
    must have ``B`` rows (``[B, ...]``, or ``[1, B, ...]`` when it broadcasts against ``[T, B, ...]`` masks)."""
    derived = {graph.input_index("x")}
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


def _keras_mc(model: keras.Model, sites: list[DropoutSite], x: np.ndarray, samples: int) -> np.ndarray:
    """``[T, B, ...]`` samples from Keras's own dropout (training=True on the layers that own dropout only)."""
    repeated = np.tile(x, (samples,) + (1,) * (x.ndim - 1))
    out = np.asarray(stochastic.forward(model, sites, tf.constant(repeated), stochastic.KerasTrainingMode()))
    return out.reshape((samples, len(x), *out.shape[1:]))


def _mean_agreement(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    n_a, n_b = a.shape[0], b.shape[0]
    mean_a, mean_b = a.mean(axis=0, dtype=np.float64), b.mean(axis=0, dtype=np.float64)
    se = np.sqrt(a.var(axis=0, ddof=1) / n_a + b.var(axis=0, ddof=1) / n_b)
    diff = np.abs(mean_a - mean_b)
    z = np.where(se > 0, diff / np.maximum(se, 1e-30), np.where(diff <= 1e-6, 0.0, np.inf))
    worst = float(z.max())
    tolerance = normal_quantile(MEAN_FALSE_ALARM / (2 * max(1, z.size)))  # Bonferroni over all outputs
    return {
        "check": "mc_mean",
        "passed": worst <= tolerance,
        "problems": [] if worst <= tolerance else [f"MC means differ by {worst:.2f} standard errors"],
        "samples": int(n_a),
        "max_z": worst,
        "max_abs_diff": float(diff.max()),
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


def _parity(name: str, actual: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    problems = []
    if actual.shape != reference.shape:
        problems.append(f"shape {actual.shape} != reference {reference.shape}")
        diff = math.inf
    else:
        diff = float(np.max(np.abs(actual.astype(np.float64) - reference))) if actual.size else 0.0
    tolerance = parity_tolerance(reference)
    if not diff <= tolerance:
        problems.append(f"max abs diff {diff:.3g} > tolerance {tolerance:.3g}")
    return {"check": name, "passed": not problems, "problems": problems, "max_abs_diff": diff, "tolerance": tolerance}


def failures(checks: list[dict[str, Any]]) -> list[str]:
    return [f"{c['check']}{' (' + c['graph'] + ')' if 'graph' in c else ''}: {'; '.join(c['problems'])}"
            for c in checks if not c["passed"]]  # fmt: skip
