"""How good the one-pass moments graph is for *this* model: its answers vs Monte Carlo on the verification rows.

Both sides answer as the server would: Monte Carlo from T = ``STAT_SAMPLES`` samples of ``mc_masked.tflite`` with
the server's seeded masks (the export's ``--seed``; in chunks that fit the verification budget), moments from one
invoke of ``moments.tflite`` (classification: S = T logit draws, seeded). Per output:

* ``mean_z``: the largest difference of the means in standard errors of the difference (both sides' sampling
  errors; moments regression has none), and ``mean_in_std``: the same difference in units of the MC std. The
  approximation has a bias of its own (the softmax of a Gaussian, the independence assumption), which T = 2,000
  resolves: the means pass if they agree within ``MEAN_Z`` standard errors *or* within ``MEAN_SPREAD`` std;
* ``std_ratio``: moments std / MC std per unit with a visible MC spread (``STD_FLOOR`` of the largest); the check
  holds its median within ``STD_TOLERANCE`` of 1 (the rules' independence assumption shows here first);

``parity`` (``graph_parity``) compares the converted graph with the TensorFlow function it came from.

A failed check ships no moments graph (the manifest records the figures and the reason); Monte Carlo is unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mcdrop.pipeline.export.verify import common
from mcdrop.serving.core import moments as served_moments
from mcdrop.serving.core import uncertainty
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import DropoutSite, OutputSpec, Task, moments_fields
from mcdrop.serving.models.masks import MaskStream

MEAN_Z = 8.0
"""Mean difference in standard errors below which the means agree outright."""
MEAN_SPREAD = 0.5
"""Otherwise: largest mean difference in units of the MC std (the approximation's bias, small beside the spread it
reports); a wrong rule is far beyond either bound."""
STD_TOLERANCE = 0.35
"""Largest |median(moments std / MC std) - 1| over the units with a visible spread."""
PARITY_RELATIVE = 1e-4
"""Graph vs TensorFlow, relative to the largest value: float32 rounding through a deep network's two passes (mean
and variance; MobileNetV2 differs by 2e-5 relative), far below any conversion error."""
STD_FLOOR = 0.05
"""Units whose MC std is below this fraction of the output's largest are left out of ``std_ratio``."""


def check(
    moments_graph: Graph,
    masked_graph: Graph,
    sites: Sequence[DropoutSite],
    x: dict[str, np.ndarray],
    outputs: Sequence[OutputSpec],
    links: Sequence[str | None],
    samples: int,
    chunk: int,
    seed: int,
) -> dict[str, Any]:
    """The ``moments`` check: figures per output, the bounds, ``passed`` and (if not) ``problems``."""
    names = [spec.name for spec in outputs]
    mc = _mc_samples(masked_graph, sites, x, names, samples, chunk, seed)
    found = dict(zip(moments_graph.output_names, moments_graph.run(x), strict=True))
    per_output: dict[str, Any] = {}
    problems: list[str] = []
    for spec, link, drawn in zip(outputs, links, mc, strict=True):
        fields = moments_fields(spec.name, len(outputs), link)
        mean, variance, covariance = found[fields[0]], found[fields[1]], found.get(fields[2])
        figures = _compare(spec, link, drawn, mean, variance, covariance, samples, seed)
        per_output[spec.name] = figures
        if figures["mean_z"] > MEAN_Z and figures["mean_in_std"] > MEAN_SPREAD:
            problems.append(f"output {spec.name!r}: means differ by {figures['mean_z']:.1f} standard errors and "
                            f"{figures['mean_in_std']:.2f} MC std (max {figures['mean_abs_diff']:.3g}); bounds "
                            f"{MEAN_Z} SE or {MEAN_SPREAD} std")  # fmt: skip
        if figures["std_ratio_median"] is not None and abs(figures["std_ratio_median"] - 1.0) > STD_TOLERANCE:
            problems.append(f"output {spec.name!r}: moments std / MC std has median {figures['std_ratio_median']:.2f}"
                            f"; bound 1 -/+ {STD_TOLERANCE}")  # fmt: skip
    record: dict[str, Any] = {
        "check": "moments_vs_monte_carlo",
        "rows": common.batch_of(x),
        "mc_samples": samples,
        "logit_samples": samples,
        "bounds": {
            "mean_z": MEAN_Z,
            "mean_in_std": MEAN_SPREAD,
            "std_ratio_median": [1 - STD_TOLERANCE, 1 + STD_TOLERANCE],
            "std_floor": STD_FLOOR,
        },
        "outputs": per_output,
        "passed": not problems,
    }
    if problems:
        record["problems"] = problems
    return record


def graph_parity(moments_graph: Graph, function: Any, x: dict[str, np.ndarray]) -> dict[str, Any]:
    """moments.tflite vs the traced TensorFlow function on the verification rows (conversion, not approximation)."""
    expected = [np.asarray(t) for t in function(*[x[name] for name in moments_graph.input_names])]
    actual = moments_graph.run(x)
    worst, tolerance = 0.0, 0.0
    for got, reference in zip(actual, expected, strict=True):  # the converter keeps the function's output order
        tolerance = max(
            tolerance, PARITY_RELATIVE * max(1.0, float(np.max(np.abs(reference))) if reference.size else 1.0)
        )
        worst = max(worst, float(np.max(np.abs(got - reference))) if reference.size else 0.0)
    return {"check": "moments_parity", "max_abs_diff": worst, "tolerance": tolerance, "passed": worst <= tolerance}


def _mc_samples(
    graph: Graph,
    sites: Sequence[DropoutSite],
    x: dict[str, np.ndarray],
    names: list[str],
    samples: int,
    chunk: int,
    seed: int,
) -> list[np.ndarray]:
    """``samples`` Monte-Carlo samples of mc_masked.tflite with the server's masks from ``seed``: the verdict of an
    export is reproducible (a model near a bound does not pass one export and fail the next)."""
    stream = MaskStream(sites, seed, common.batch_of(x))
    parts: list[list[np.ndarray]] = []
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        parts.append(common.run_graph(graph, {**x, **stream.next(size)}, names)[: len(names)])
    return [np.concatenate(blocks) for blocks in zip(*parts, strict=True)]


def _compare(
    spec: OutputSpec,
    link: str | None,
    drawn: np.ndarray,
    mean: np.ndarray,
    variance: np.ndarray,
    covariance: np.ndarray | None,
    samples: int,
    seed: int,
) -> dict[str, Any]:
    count = drawn.shape[0]
    figures: dict[str, Any] = {}
    if spec.task == Task.CLASSIFICATION and link is not None:
        mc = uncertainty.classification(drawn)
        approx, _ = served_moments.classification(mean, variance, samples, seed, covariance=covariance)
        error = np.sqrt(np.square(mc.std) / count + np.square(approx.std) / samples) + 1e-6
        mc_mean, mc_std, approx_mean, approx_std = mc.mean, mc.std, approx.mean, approx.std
        figures["mutual_information"] = {"mc": _rounded(mc.mutual_information),
                                         "moments": _rounded(approx.mutual_information)}  # fmt: skip
        figures["predicted_class_agrees"] = float(np.mean(mc.predicted_class == approx.predicted_class))
    else:
        mc_mean = drawn.mean(axis=0, dtype=np.float64)
        mc_std = drawn.std(axis=0, dtype=np.float64)
        approx_mean, approx_std = np.asarray(mean, np.float64), np.sqrt(np.maximum(variance, 0.0))
        error = mc_std / np.sqrt(count) + 1e-6 * (1.0 + np.abs(mc_mean))
    difference = np.abs(np.asarray(approx_mean, np.float64) - mc_mean)
    figures["mean_z"] = round(float(np.max(difference / error)), 3)
    figures["mean_abs_diff"] = float(np.max(difference))
    spread = np.maximum(np.asarray(mc_std, np.float64), STD_FLOOR * float(np.max(mc_std)) + 1e-12)
    figures["mean_in_std"] = round(float(np.max(difference / spread)), 4)
    visible = mc_std >= STD_FLOOR * float(np.max(mc_std))
    ratios = np.asarray(approx_std, np.float64)[visible] / np.asarray(mc_std, np.float64)[visible]
    figures["std_ratio_median"] = round(float(np.median(ratios)), 4) if ratios.size and np.max(mc_std) > 0 else None
    figures["std_ratio_range"] = [round(float(ratios.min()), 4), round(float(ratios.max()), 4)] if ratios.size else None
    figures["std_units_compared"] = int(ratios.size)
    return figures


def _rounded(values: np.ndarray) -> list[float]:
    return [round(float(v), 5) for v in np.ravel(values)]
