"""Parity checks: does each graph compute what Keras computes?

* ``ops``: no Flex/custom or resource-variable ops; random ops only in ``mc`` (and ``mc_summary``).
* ``deterministic_parity``: deterministic.tflite vs Keras inference, max abs diff ≤ tolerance.
* ``training_mode_parity``: the layers that own dropout, in training mode with every mask kept unscaled, vs Keras
  inference: Monte-Carlo samples must differ from the deterministic pass only by dropout.
* ``masked_parity``: mc_masked.tflite vs a per-sample reference pass with the same masks.

Tolerances start at float32 rounding and widen with the model's own measured sensitivity to rounding of its
inputs and weights (a deep model amplifies the converter's reordering of sums).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from mcdrop.pipeline.export.graphs import forward as passes
from mcdrop.pipeline.export.model import signature
from mcdrop.pipeline.export.model.sites import BERNOULLI, DropoutSite, draw_feeds
from mcdrop.pipeline.export.verify.common import (
    Feeds,
    as_tensors,
    batch_of,
    joined,
    keras_x,
    run_graph,
    run_masked,
)
from mcdrop.pipeline.shared.strict_float32 import ONEDNN_VARIABLE, onednn_enabled
from mcdrop.serving.models.litert import RANDOM_OPS, VARIABLE_OPS, Graph

PARITY_TOLERANCE = 1e-5


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
    return _parity("deterministic_parity", actual, reference, rounding_sensitivity(keras, x, reference),
                   weight_sensitivity(keras, x, model, reference))  # fmt: skip


def training_mode_parity(
    model: keras.Model, sites: list[DropoutSite], x: Feeds, inactive: list[DropoutSite] | None = None
) -> dict[str, Any]:
    """The layers that own dropout, run in training mode with every mask kept unscaled, against Keras inference.

    MC samples must differ from the deterministic pass only by dropout: a layer that changes anything
    else in training mode (a custom training branch, statistics of the batch) fails here.
    """
    reference = joined(passes.keras_inference(model, keras_x(x)), lead=1)
    policy = passes.TrainingModeIdentity()
    actual = joined(passes.forward(model, sites, as_tensors(x), policy, inactive=inactive or []), lead=1)
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

    reference = keras(x)  # computed once: the sensitivities move away from it
    return _parity("masked_parity", actual, reference, rounding_sensitivity(keras, x, reference),
                   weight_sensitivity(keras, x, model, reference))  # fmt: skip


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
    return joined(passes.forward(model, sites, as_tensors(x), policy, inactive=inactive), lead=1)


def rounding_sensitivity(reference: Callable[[Feeds], np.ndarray], x: Feeds, base: np.ndarray) -> float:
    """How far the model's outputs move when its inputs move by float32 rounding (each value times 1 ± 2^-23).

    Another float32 implementation of the same layers (LiteRT's kernels against TensorFlow's) sums in another
    order, which acts like rounding noise injected at every layer; a deep network amplifies it (a 150-layer
    backbone into a confident softmax: ~1e-4). The parity tolerance grows with this measured amplification.
    ``base`` is ``reference(x)``, which the caller has already computed (a real-size reference takes seconds).
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
    return float(np.max(np.abs(np.asarray(reference(moved), np.float64) - np.asarray(base, np.float64))))


def weight_sensitivity(
    reference: Callable[[Feeds], np.ndarray], x: Feeds, model: keras.Model, base: np.ndarray
) -> float:
    """How far the model's outputs move when every float32 weight moves by float32 rounding.

    Moving the input measures only the noise the first layer passes on; LiteRT also folds batch norm into the
    weights and every kernel rounds its own sums, noise injected at every layer. On some CPUs the input alone
    underestimates a deep network 100-fold (EfficientNetB0 at 32 px: 1.5e-6, against 1.6e-4 measured between
    LiteRT's and TensorFlow's kernels, and 1.0e-4 from moving the weights). ``base``: ``reference(x)``.
    """
    variables = [v for v in model.weights if str(v.dtype) == "float32"]
    if not variables:
        return 0.0
    rng = np.random.default_rng(1)
    originals = [v.numpy() for v in variables]
    try:
        for variable, value in zip(variables, originals, strict=True):
            variable.assign(value * (1 + _nudge(rng, value.shape)))
        moved = np.asarray(reference(x), np.float64)
    finally:
        for variable, value in zip(variables, originals, strict=True):
            variable.assign(value)
    return float(np.max(np.abs(moved - np.asarray(base, np.float64))))


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
