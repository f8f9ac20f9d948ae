"""Graphs for devices and their verification: ``mc_summary`` and static-shape copies of every graph.

* ``mc_summary.tflite``: one invoke takes ``x`` (and ``samples``), draws the masks inside the graph and returns
  the server's uncertainty summary (``mcdrop.pipeline.export.graphs.summary``).
* ``--device-shape B=1,T=32``: copies of ``deterministic`` (fixed B), ``mc``, ``mc_masked`` and ``mc_summary``
  (fixed B and T; no ``samples`` input) for runtimes that cannot resize a dynamic dimension (LiteRT.js, phone
  GPU/NPU delegates). File names carry the shape: ``mc_masked.b1_t32.tflite``, ``deterministic.b1.tflite``.

Checks (JSON-ready records like ``verify.parity`` and ``verify.randomness``'s):

* ``summary_arithmetic``: the summary ops on fixed samples (mc_masked's, seeded) equal the server's own summary
  of the same samples (``mcdrop.serving.core.uncertainty``, float64) within float32 rounding; the predicted
  class exactly.
* ``summary_statistics``: the summary graph's in-graph randomness against the server's seeded masks. Each
  verification row is repeated ``REPLICATES`` times in the batch, so each side gives that many independent
  estimates of every summary field (mean, std, entropies, mutual information, variation ratio); their means
  must agree within ``SIGMAS`` standard errors (from the replicates' spread) plus a float allowance.
* static graphs: ``deterministic`` and ``mc_masked`` equal their dynamic graphs on the same rows and masks (within
  the dynamic graphs' own parity tolerance); ``mc``'s mean and ``mc_summary``'s fields agree statistically with
  the server's (replicates are successive invokes); ``mc`` draws fresh masks on every invoke.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from mcdrop.pipeline.export.convert.shapes import Shape, device_file
from mcdrop.pipeline.export.graphs.summary import OutputSummary, summarise
from mcdrop.pipeline.export.graphs.summary import output_names as summary_names
from mcdrop.pipeline.export.model.sites import DropoutSite
from mcdrop.pipeline.export.verify.common import batch_of, rows_of
from mcdrop.serving.core import uncertainty
from mcdrop.serving.models.litert import Graph
from mcdrop.serving.models.manifest import GraphName, Task
from mcdrop.serving.models.masks import MaskStream

Feeds = dict[str, np.ndarray]

REPLICATES = 16
SIGMAS = 6.0
"""Per field, a t statistic with ~30 degrees of freedom: a correct graph exceeds 6 with probability ~1e-6."""
FLOAT_ALLOWANCE = 1e-4
"""Added to the statistical bounds: float32 summation in the graph vs float64 on the server."""
ARITHMETIC_TOLERANCE = 2e-5
"""Relative and absolute: the summary's float32 ops vs the server's float64 arithmetic on the same samples."""
MAX_VERIFY_SAMPLES = 200


def replicated(x: Feeds, replicates: int) -> Feeds:
    """Each row repeated ``replicates`` times in a row: independent samples of the same input."""
    return {name: np.repeat(value, replicates, axis=0) for name, value in x.items()}


def server_summaries(samples: Sequence[np.ndarray], outputs: Sequence[OutputSummary]) -> dict[str, np.ndarray]:
    """The server's summary (``mcdrop.serving.core.uncertainty``) of each output's samples, by graph output name."""
    found: dict[str, np.ndarray] = {}
    names = iter(summary_names(outputs))
    for tensor, output in zip(samples, outputs, strict=True):
        if output.task == Task.CLASSIFICATION:
            computed: Any = uncertainty.classification(tensor)
        else:
            noise = None if output.noise_variance is None else np.asarray(output.noise_variance)
            computed = uncertainty.regression(tensor, level=0.95, noise_variance=_shaped(noise, tensor))
        for field in output.fields():  # the graph's fields are the server summary's attribute names
            found[next(names)] = np.asarray(getattr(computed, field))
    return found


def _shaped(noise: np.ndarray | None, samples: np.ndarray) -> np.ndarray | None:
    return None if noise is None else noise.reshape(samples.shape[2:])


def summary_arithmetic(outputs: Sequence[OutputSummary], samples: Sequence[np.ndarray]) -> dict[str, Any]:
    """The summary ops, converted alone, on fixed samples vs the server's summary of the same samples."""
    from mcdrop.pipeline.export.convert.tflite import to_tflite

    specs = [tf.TensorSpec([None, None, *s.shape[2:]], tf.float32, name=f"samples_{i}") for i, s in enumerate(samples)]
    function = tf.function(lambda *s: summarise(s, outputs), input_signature=specs, autograph=False)
    names = summary_names(outputs)
    graph = Graph(to_tflite(function.get_concrete_function(), tf.Module(), output_names=names))
    actual = dict(zip(graph.output_names, graph.run({f"samples_{i}": s for i, s in enumerate(samples)}), strict=True))
    expected = server_summaries(samples, outputs)
    problems, worst = [], 0.0
    for name in names:
        got, wanted = actual[name], expected[name]
        if name.rsplit("/", 1)[-1] == "predicted_class":
            if not np.array_equal(got, wanted):
                problems.append(f"{name} differs from the server's in {int(np.sum(got != wanted))} place(s)")
            continue
        diff = np.abs(got.astype(np.float64) - wanted)
        worst = max(worst, float(diff.max(initial=0.0)))
        if np.any(diff > ARITHMETIC_TOLERANCE * (1 + np.abs(wanted))):
            problems.append(f"{name}: max abs diff {float(diff.max()):.3g} > {ARITHMETIC_TOLERANCE:g} x (1 + |value|)")
    return {"check": "summary_arithmetic", "graph": GraphName.MC_SUMMARY.value, "passed": not problems,
            "problems": problems, "max_abs_diff": worst, "tolerance": ARITHMETIC_TOLERANCE}  # fmt: skip


def statistical_agreement(
    check: str, graph: str, ours: dict[str, np.ndarray], server: dict[str, np.ndarray], fields: Sequence[str]
) -> dict[str, Any]:
    """Per field, the replicates' means (``[R, ...]`` arrays) within ``SIGMAS`` standard errors plus an allowance."""
    problems, largest = [], 0.0
    for name in fields:
        a, b = ours[name].astype(np.float64), server[name].astype(np.float64)
        replicates = a.shape[0]
        se = np.sqrt((a.var(axis=0, ddof=1) + b.var(axis=0, ddof=1)) / replicates)
        gap = np.abs(a.mean(axis=0) - b.mean(axis=0))
        bound = SIGMAS * se + FLOAT_ALLOWANCE
        largest = max(largest, float(np.max(gap / bound, initial=0.0)))
        if np.any(gap > bound):
            worst = int(np.argmax(gap - bound))
            problems.append(f"{name}: means differ by {gap.flat[worst]:.4g} > {SIGMAS:g} standard errors "
                            f"({se.flat[worst]:.3g}) + {FLOAT_ALLOWANCE:g}")  # fmt: skip
    return {"check": check, "graph": graph, "passed": not problems, "problems": problems,
            "largest_gap_over_bound": round(largest, 4), "replicates": len(next(iter(ours.values()))),
            "sigmas": SIGMAS}  # fmt: skip


def by_replicate(arrays: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
    """``[rows x R, ...]`` (each row repeated R times) → ``[R, rows, ...]``."""
    return {name: np.moveaxis(value.reshape(rows, -1, *value.shape[1:]), 1, 0) for name, value in arrays.items()}


def seeded_samples(
    masked: Callable[[Feeds, Feeds], list[np.ndarray]],
    sites: Sequence[Any],
    x: Feeds,
    samples: int,
    seed: int,
) -> list[np.ndarray]:
    """mc_masked's ``[T, B, ...]`` samples of every output with the server's seeded masks (``MaskStream``)."""
    rows = len(next(iter(x.values())))
    feeds = MaskStream(sites, seed, rows).next(samples)
    return masked(x, feeds)


def verify_samples(per_sample_bytes: Callable[[int, int], int], rows: int, budget: int) -> int:
    """Samples per verification invoke of ``rows`` rows within ``budget`` bytes (2 ..``MAX_VERIFY_SAMPLES``)."""
    samples = MAX_VERIFY_SAMPLES
    while samples > 2 and per_sample_bytes(rows, samples) > budget:
        samples //= 2
    return samples


def statistical_fields(outputs: Sequence[OutputSummary]) -> list[str]:
    """The summary fields compared statistically (the predicted class is checked through the mean)."""
    return [name for name in summary_names(outputs) if not name.endswith("predicted_class")]


def summary_consistency(graph: str, fields: dict[str, np.ndarray], outputs: Sequence[OutputSummary]) -> dict[str, Any]:
    """Within one answer: predicted_class = argmax(mean), mutual information = predictive - expected entropy."""
    problems = []
    for output in outputs:
        if output.task != Task.CLASSIFICATION:
            continue
        prefix = f"{output.name}/" if len(outputs) > 1 else ""
        mean = fields[prefix + "mean"]
        if not np.array_equal(fields[prefix + "predicted_class"], mean.argmax(axis=-1)):
            problems.append(f"{prefix}predicted_class is not the argmax of {prefix}mean")
        gap = fields[prefix + "predictive_entropy"] - fields[prefix + "expected_entropy"]
        if np.any(np.abs(np.maximum(gap, 0) - fields[prefix + "mutual_information"]) > 1e-5):
            problems.append(f"{prefix}mutual_information is not predictive - expected entropy")
    return {"check": "summary_consistency", "graph": graph, "passed": not problems, "problems": problems}


def static_parity(graph: str, actual: list[np.ndarray], expected: list[np.ndarray], tolerance: float) -> dict[str, Any]:
    """A static graph against its dynamic graph on the same rows (and masks)."""
    diff = max(float(np.max(np.abs(a.astype(np.float64) - e), initial=0.0)) for a, e in zip(actual, expected,
                                                                                            strict=True))  # fmt: skip
    problems = [] if diff <= tolerance else [f"max abs diff {diff:.3g} > tolerance {tolerance:.3g}"]
    return {"check": "static_parity", "graph": graph, "passed": not problems, "problems": problems,
            "max_abs_diff": diff, "tolerance": tolerance}  # fmt: skip


def fresh_static(graph: str, run: Callable[[], list[np.ndarray]]) -> dict[str, Any]:
    """Two invokes of a static in-graph-random graph differ."""
    first = [a.copy() for a in run()]
    second = run()
    same = all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    return {"check": "fresh_randomness", "graph": graph, "passed": not same,
            "problems": ["identical samples on consecutive invokes"] if same else []}  # fmt: skip


def fill_rows(x: Feeds, batch: int) -> Feeds:
    """``batch`` rows from ``x``'s rows, cycled."""
    return {name: np.resize(value, (batch, *value.shape[1:])).astype(value.dtype) for name, value in x.items()}


def site_specs(sites: Sequence[DropoutSite]) -> list[Any]:
    """The sites as the manifest (and so the server's mask stream) records them."""
    return [site.to_manifest() for site in sites]


# Orchestration: what the exporter calls. -------------------------------------------------------


class Verifier:
    """Verifies the device graphs of one export against its verified dynamic graphs.

    Args:
        graphs: the dynamic graphs by name (``deterministic``, ``mc_masked``, ``mc_summary``).
        sites: the sampled dropout sites.
        outputs: the summary's view of every model output (name, task, noise variance).
        x: the verification rows.
        seed: for the server-side masks.
        chunk: samples per mc_masked invoke of ``len(x)`` rows that keep within the verification budget.
        bytes_for: live activation bytes of one mc_masked invoke of (rows, samples).
        budget: bytes one verification invoke may hold.
        tolerances: the dynamic graphs' parity tolerances (``deterministic``, ``mc_masked``).
    """

    def __init__(
        self,
        graphs: dict[str, Graph],
        sites: Sequence[DropoutSite],
        outputs: Sequence[OutputSummary],
        x: Feeds,
        seed: int,
        bytes_for: Callable[[int, int], int],
        budget: int,
        tolerances: dict[str, float],
    ) -> None:
        self._graphs, self._sites, self._outputs, self._x = graphs, list(sites), list(outputs), x
        self._seed, self._bytes_for, self._budget, self._tolerances = seed, bytes_for, budget, tolerances
        self._names = [o.name for o in outputs]

    def masked(self, x: Feeds, feeds: Feeds) -> list[np.ndarray]:
        """mc_masked's samples of every output, in invokes that keep within the budget."""
        rows = len(next(iter(x.values())))
        samples = next(iter(feeds.values())).shape[0]
        per_invoke = max(1, verify_samples(self._bytes_for, rows, self._budget))
        parts: list[list[np.ndarray]] = []
        for start in range(0, samples, per_invoke):
            chunk = {name: feed[start : start + per_invoke] for name, feed in feeds.items()}
            parts.append(self._run(self._graphs[GraphName.MC_MASKED], {**x, **chunk}, self._names))
        return [np.concatenate([part[i] for part in parts]) for i in range(len(self._names))]

    def summary(self) -> list[dict[str, Any]]:
        """``summary_arithmetic``, ``summary_consistency`` and ``summary_statistics`` of mc_summary.tflite."""
        x = rows_of(self._x, slice(0, 2))
        rows = batch_of(x)
        fixed = seeded_samples(self.masked, site_specs(self._sites), x, 64, self._seed)
        checks = [summary_arithmetic(self._outputs, fixed)]
        wide = replicated(x, REPLICATES)
        samples = verify_samples(self._bytes_for, rows * REPLICATES, self._budget)
        names = summary_names(self._outputs)
        ours = self._run(self._graphs[GraphName.MC_SUMMARY], {**wide, "samples": np.array(samples, np.int32)}, names)
        fields = dict(zip(names, ours, strict=True))
        checks.append(summary_consistency(GraphName.MC_SUMMARY, fields, self._outputs))
        server = server_summaries(seeded_samples(self.masked, site_specs(self._sites), wide, samples, self._seed),
                                  self._outputs)  # fmt: skip
        check = statistical_agreement("summary_statistics", GraphName.MC_SUMMARY, by_replicate(fields, rows),
                                      by_replicate(server, rows), statistical_fields(self._outputs))  # fmt: skip
        checks.append({**check, "samples": samples})
        return checks

    def static(self, shape: Shape, graphs: dict[str, Graph]) -> list[dict[str, Any]]:
        """The static-shape ``graphs`` of ``shape`` against the dynamic ones."""
        if shape.batch is None:
            raise ValueError("static() takes a static shape (B and T fixed)")
        det, mc, masked, summary = GraphName.DETERMINISTIC, GraphName.MC, GraphName.MC_MASKED, GraphName.MC_SUMMARY
        x, names = fill_rows(self._x, shape.batch), self._names
        checks = [static_parity(_label(det, shape), self._run(graphs[det], x, names),
                                self._run(self._graphs[det], x, names), self._tolerances[det])]  # fmt: skip
        if not self._sites or shape.samples is None:
            return checks
        specs, samples = site_specs(self._sites), shape.samples
        feeds = MaskStream(specs, self._seed, shape.batch).next(samples)
        checks.append(static_parity(_label(masked, shape), self._run(graphs[masked], {**x, **feeds}, names),
                                    self.masked(x, feeds), self._tolerances[masked]))  # fmt: skip
        checks.append(fresh_static(_label(mc, shape), lambda: self._run(graphs[mc], x, names)))
        # Replicates: successive invokes of the static graphs; on the server side the rows repeated in the batch.
        server_samples = seeded_samples(self.masked, specs, replicated(x, REPLICATES), samples, self._seed + 1)
        server_means = {name: by_replicate({name: s.mean(axis=0)}, shape.batch)[name]
                        for name, s in zip(names, server_samples, strict=True)}  # fmt: skip
        invokes = [self._run(graphs[mc], x, names) for _ in range(REPLICATES)]  # one invoke per replicate
        ours_means = {name: np.stack([outputs[i].mean(axis=0) for outputs in invokes])
                      for i, name in enumerate(names)}  # fmt: skip
        checks.append(statistical_agreement("mc_mean", _label(mc, shape), ours_means, server_means, names))
        fields = summary_names(self._outputs)
        runs = [dict(zip(fields, self._run(graphs[summary], x, fields), strict=True)) for _ in range(REPLICATES)]
        checks.append(summary_consistency(_label(summary, shape), runs[0], self._outputs))
        ours = {name: np.stack([run[name] for run in runs]) for name in fields}
        server = by_replicate(server_summaries(server_samples, self._outputs), shape.batch)
        checks.append(statistical_agreement("summary_statistics", _label(summary, shape), ours, server,
                                            statistical_fields(self._outputs)))  # fmt: skip
        return checks

    @staticmethod
    def _run(graph: Graph, feeds: Feeds, names: list[str]) -> list[np.ndarray]:
        """One invoke; the outputs in ``names`` order (the graphs name their output tensors)."""
        outputs = graph.run(feeds)
        found = graph.output_names
        return [outputs[found.index(name)] for name in names]


def _label(graph: str, shape: Shape) -> str:
    return device_file(graph, shape).removesuffix(".tflite")
