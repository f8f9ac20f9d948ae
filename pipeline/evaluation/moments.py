"""The moments suite: one-pass moments vs Monte Carlo (T = 1,000) on the models mcdrop ships, through the exported
graphs only.

* Classification — the digits MLP and CNN (``mcdrop train`` defaults), held-out rows and as many uniform-noise
  images: accuracy, NLL and ECE of MC, of moments (logit draws, as served) and of the closed-form mean-field
  softmax; Spearman rank correlation of the per-row mutual information; OOD AUROC (digits vs noise) by mutual
  information on each side.
* Regression — the bundled UCI datasets at their published protocol (``mcdrop.pipeline.evaluation.uci``: grid search,
  refit, export), first ``splits`` splits: RMSE, test log-likelihood (the grid's tau; MC: the paper's mixture, moments:
  the Gaussian N(mean, var + 1/tau)), 95 % predictive coverage (the served tau), and the Spearman correlation of the
  per-row std.
* Latency of the deterministic, moments and Monte-Carlo graphs at B = 1 and B = 32, one thread, side by side.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mcdrop.pipeline.evaluation.graphs import Exported
from mcdrop.serving.common.timing import call_times_ms, percentile
from mcdrop.serving.core import moments as served_moments
from mcdrop.serving.core import uncertainty
from mcdrop.serving.models.litert import Graph

SAMPLES = 1000
DEFAULT_SPLITS = 5
LATENCY_BATCHES = (1, 32)
LATENCY_SAMPLES = 100
LATENCY_BUDGET_MS = 1500.0
ARCHITECTURES: tuple[Literal["mlp", "cnn"], ...] = ("mlp", "cnn")
QUICK_EPOCHS = 5
"""Digits training epochs of a run with ``--epoch-factor`` other than the protocol's (a quick, labelled run)."""
NOISE_HIGH = 16.0
"""Digits pixels are 0..16: noise images are uniform over the same range."""

Step = Callable[[str], None]


def run_moments(
    workdir: Path,
    *,
    uci_root: Path,
    datasets: list[str],
    splits: int,
    seed: int = 0,
    jobs: int = 1,
    epoch_factor: float = 100.0,
    step: Step = lambda _: None,
) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {"samples": SAMPLES, "classification": [], "regression": [], "latency": [],
                               "uci_protocol": epoch_factor == 100.0}  # fmt: skip
    quick_epochs = None if epoch_factor == 100.0 else QUICK_EPOCHS  # a non-protocol run trains briefly throughout
    for architecture in ARCHITECTURES:
        step(f"digits {architecture}: train, export, moments vs MC")
        found, version_dir = _classification(workdir, architecture, seed, quick_epochs)
        results["classification"].append(found)
        if found["available"]:
            results["latency"].append(_latency(f"digits {architecture}", version_dir, workdir / f"digits-{architecture}"
                                               / "model.keras"))  # fmt: skip
    for name in datasets:
        step(f"{name}: UCI protocol, {splits} split(s), moments vs MC")
        results["regression"].append(_regression(workdir, uci_root, name, splits, seed, jobs, epoch_factor))
    results["targets"] = _targets(results)
    results["total_seconds"] = round(time.monotonic() - started, 1)
    return results


# Classification ---------------------------------------------------------------------------------


def _classification(
    workdir: Path, architecture: Literal["mlp", "cnn"], seed: int, epochs: int | None = None
) -> tuple[dict[str, Any], Path]:
    from mcdrop.pipeline.evaluation.digits import held_out
    from mcdrop.pipeline.export.exporter import ExportOptions, export
    from mcdrop.pipeline.training.config import TrainConfig
    from mcdrop.pipeline.training.loop import train

    name = f"digits-{architecture}"
    settings: dict[str, Any] = {} if epochs is None else {"epochs": epochs}
    config = TrainConfig(out=str(workdir / name), dataset="digits", architecture=architecture, seed=seed,
                         quiet=True, **settings).validate()  # fmt: skip
    train(config)
    version, manifest = export(
        ExportOptions(model_path=Path(config.out) / "model.keras", repository=workdir / "repository", name=name)
    )
    version_dir = workdir / "repository" / name / str(version)
    record = manifest.moments
    if record is None or (not record.available and not record.check):  # no rule for some layer: nothing to measure
        reason = record.reason if record else "no moments record"
        return {"model": name, "available": False, "reason": reason}, version_dir
    x_test, y_test = held_out(config)
    rng = np.random.default_rng(seed)
    x_noise = rng.uniform(0.0, NOISE_HIGH, x_test.shape).astype(np.float32)
    exported = Exported(version_dir)
    moments_graph = Graph(moments_graph_bytes(version_dir, Path(config.out) / "model.keras"))
    sides: dict[str, dict[str, Any]] = {"mc": {}, "moments": {}}
    for part, x in (("test", x_test), ("noise", x_noise)):
        mc = uncertainty.classification(exported.sample(x, SAMPLES, seed=seed))
        logit_mean, logit_variance, covariance = _logits(moments_graph, x)
        approx, _ = served_moments.classification(logit_mean, logit_variance, SAMPLES, seed, covariance=covariance)
        sides["mc"][part], sides["moments"][part] = mc, approx
        if part == "test":
            mean_field = served_moments.mean_field_probabilities(logit_mean, logit_variance)
    result = {
        "model": name,
        "available": True,
        "test_rows": len(x_test),
        "noise_rows": len(x_noise),
        "scores": {
            f"mc_T{SAMPLES}": _scores(sides["mc"]["test"].mean, y_test),
            f"moments_S{SAMPLES}": _scores(sides["moments"]["test"].mean, y_test),
            "moments_mean_field": _scores(mean_field, y_test),
        },
        "spearman_mutual_information": {
            "test": spearman(sides["mc"]["test"].mutual_information, sides["moments"]["test"].mutual_information),
            "test_and_noise": spearman(
                np.concatenate([sides["mc"][p].mutual_information for p in ("test", "noise")]),
                np.concatenate([sides["moments"][p].mutual_information for p in ("test", "noise")]),
            ),
        },
        "ood_auroc_mutual_information": {
            side: uncertainty.auroc(found["test"].mutual_information, found["noise"].mutual_information)
            for side, found in sides.items()
        },
        "export_check": dict(record.check),
        "published": record.available,
        "export_verdict": "published" if record.available else record.reason,
        "rows": {  # per-row values for the figure
            side: {part: found[part].mutual_information.tolist() for part in ("test", "noise")}
            for side, found in sides.items()
        },
    }
    return result, version_dir


def moments_graph_bytes(version_dir: Path, model_path: Path) -> bytes:
    """The version's moments graph; where the export's check refused to publish it, the same graph converted here
    from the Keras model (for measuring what the export would have shipped, never for serving)."""
    if (version_dir / "moments.tflite").is_file():
        return (version_dir / "moments.tflite").read_bytes()
    import keras

    from mcdrop.pipeline.export.convert import functions, tflite
    from mcdrop.pipeline.export.model import sites
    from mcdrop.serving.models.manifest import Manifest, moments_output_names

    outputs = [spec.name for spec in Manifest.load(version_dir).outputs]
    model = keras.saving.load_model(model_path, compile=False)
    function, links, covariances = functions.moments_function(model, sites.describe(model))
    return tflite.to_tflite(function, model, output_names=moments_output_names(outputs, links, covariances))


def _logits(graph: Graph, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The moments graph's logit mean, variance and (where it has one) covariance for rows ``x``."""
    found = dict(zip(graph.output_names, graph.run({"x": np.ascontiguousarray(x, np.float32)}), strict=True))
    return found["logit_mean"], found["logit_variance"], found.get("logit_covariance")


def _scores(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": float(np.mean(probabilities.argmax(-1) == labels)),
        "nll": uncertainty.nll(probabilities, labels),
        "ece": uncertainty.reliability(probabilities, labels).ece,
    }


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    ranks = [_ranks(np.asarray(v, np.float64)) for v in (a, b)]
    return float(np.corrcoef(ranks[0], ranks[1])[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties given their average rank."""
    order = np.argsort(values, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(values[order])) + 1]
    ends = np.r_[starts[1:], len(values)]
    ranks = np.empty(len(values), np.float64)
    ranks[order] = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    return ranks


# Regression -------------------------------------------------------------------------------------


def _regression(
    workdir: Path, root: Path, name: str, splits: int, seed: int, jobs: int, epoch_factor: float
) -> dict[str, Any]:
    from mcdrop.pipeline.evaluation import uci

    data = uci.load(root, name)
    run = uci.run_uci(root, name, workdir, splits=splits, samples=SAMPLES, seed=seed, jobs=jobs,
                      epoch_factor=epoch_factor)  # fmt: skip
    per_split = []
    for done in run["per_split"]:
        k = done["split"]
        _, test = data.split(k)
        x, y = data.x[test], data.y[test]
        version_dir = workdir / name / f"split-{k}" / "repository" / "uci" / "1"
        exported = Exported(version_dir)
        record = exported.manifest.moments
        if record is None or (not record.available and not record.check):  # no rule for some layer
            per_split.append({"split": k, "available": False, "reason": record.reason if record else None})
            continue
        draws = exported.sample(x, SAMPLES, seed=seed + k)[..., 0]  # [T, N]
        graph = Graph(moments_graph_bytes(version_dir, version_dir.parents[2] / "model.keras"))
        found = dict(zip(graph.output_names, graph.run({"x": x}), strict=True))
        mean, variance = found["mean"][:, 0], found["variance"][:, 0]
        tau = float(done["best"]["tau"])
        noise = exported.manifest.output.observation_noise
        served_noise = float(noise.variance[0]) if noise is not None and noise.variance is not None else 0.0
        mc_summary = uncertainty.regression(draws[..., np.newaxis], 0.95, served_noise)
        approx = served_moments.regression(mean[:, np.newaxis], variance[:, np.newaxis], 0.95, served_noise)
        per_split.append({
            "split": k,
            "available": True,
            "published": record.available,
            "export_verdict": "published" if record.available else record.reason,
            "tau": tau,
            "rmse": {"mc": _rmse(draws.mean(axis=0), y), "moments": _rmse(mean, y)},
            "ll": {"mc": float(np.mean(uncertainty.gaussian_mixture_log_likelihood(draws, y, tau))),
                   "moments": float(np.mean(_gaussian_ll(mean, variance + 1.0 / tau, y)))},
            "coverage_95": {"mc": uncertainty.coverage(mc_summary, y[:, np.newaxis])[0],
                            "moments": uncertainty.coverage(approx, y[:, np.newaxis])[0]},
            "spearman_std": spearman(draws.std(axis=0), np.sqrt(variance)),
            "rows": {"mc_std": draws.std(axis=0).tolist(), "moments_std": np.sqrt(variance).tolist()},
        })  # fmt: skip
    good = [s for s in per_split if s["available"]]
    summary: dict[str, Any] = {}
    for metric in ("rmse", "ll", "coverage_95"):
        summary[metric] = {side: _mean_se([s[metric][side] for s in good]) for side in ("mc", "moments")}
    summary["spearman_std"] = _mean_se([s["spearman_std"] for s in good])
    published = sum(bool(s.get("published")) for s in good)
    return {"dataset": name, "splits": splits, "available_splits": len(good), "published_splits": published,
            "summary": summary,
            "per_split": per_split, "protocol_seconds": run["timing"]}  # fmt: skip


def _rmse(prediction: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((prediction - y) ** 2)))


def _gaussian_ll(mean: np.ndarray, variance: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.asarray(-0.5 * np.log(2.0 * np.pi * variance) - 0.5 * (y - mean) ** 2 / variance)


def _mean_se(values: list[float]) -> dict[str, float]:
    if not values:
        return {"mean": float("nan"), "se": float("nan")}
    se = statistics.stdev(values) / len(values) ** 0.5 if len(values) > 1 else float("nan")
    return {"mean": float(statistics.fmean(values)), "se": float(se)}


# Latency ----------------------------------------------------------------------------------------


def _latency(model: str, version_dir: Path, model_path: Path) -> dict[str, Any]:
    """Median ms per call of each graph at each batch, one thread, measured side by side in this run."""
    exported = Exported(version_dir, threads=1)
    shape = exported.manifest.input.row_shape
    graphs = {
        "deterministic": Graph(version_dir / "deterministic.tflite", num_threads=1),
        "moments": Graph(moments_graph_bytes(version_dir, model_path), num_threads=1),
        f"mc_T{LATENCY_SAMPLES}": Graph(version_dir / "mc.tflite", num_threads=1),
    }
    found: dict[str, Any] = {"model": model, "threads": 1, "batches": {}}
    rng = np.random.default_rng(0)
    for batch in LATENCY_BATCHES:
        x = rng.uniform(0.0, NOISE_HIGH, (batch, *shape)).astype(np.float32)
        times = {}
        for name, graph in graphs.items():
            feeds = {"x": x, "samples": np.array(LATENCY_SAMPLES, np.int32)} if name.startswith("mc") else {"x": x}
            graph.run(feeds)  # allocate before timing
            times[name] = _median_ms(functools.partial(graph.run, feeds))
        logit_mean, logit_variance, covariance = _logits(graphs["moments"], x)
        summarise = functools.partial(served_moments.classification, logit_mean, logit_variance, LATENCY_SAMPLES, 0,
                                      covariance=covariance)  # fmt: skip
        summary_ms = _median_ms(summarise)
        times[f"moments_summary_S{LATENCY_SAMPLES}_host"] = round(summary_ms, 4)
        times["moments_over_deterministic"] = round(times["moments"] / times["deterministic"], 3)
        found["batches"][str(batch)] = times
    return found


def _median_ms(call: Callable[[], object]) -> float:
    """Median ms of ``call``, repeated to fill about ``LATENCY_BUDGET_MS`` (at least 5, at most 200 times)."""
    first = percentile(call_times_ms(call, 3), 50)
    repeats = max(5, min(200, int(LATENCY_BUDGET_MS / max(first, 1e-3))))
    return round(percentile(call_times_ms(call, repeats), 50), 4)


# Targets ----------------------------------------------------------------------------------------


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    for timing in results["latency"]:
        for batch, times in timing["batches"].items():
            ratio = times["moments_over_deterministic"]
            targets.append({"target": f"{timing['model']} B={batch}: moments latency <= 2x deterministic",
                            "value": ratio, "bound": 2.0, "met": ratio <= 2.0})  # fmt: skip
    for found in results["classification"]:
        if not found["available"]:
            targets.append({"target": f"{found['model']}: moments graph", "value": None, "bound": None, "met": False})
            continue
        rho = found["spearman_mutual_information"]["test"]
        targets.append({"target": f"{found['model']}: Spearman(MI) vs MC T={SAMPLES} >= 0.9", "value": rho,
                        "bound": 0.9, "met": rho >= 0.9})  # fmt: skip
        auroc = found["ood_auroc_mutual_information"]
        gap = abs(auroc["moments"] - auroc["mc"])
        targets.append({"target": f"{found['model']}: |OOD AUROC moments - MC| <= 0.01", "value": gap, "bound": 0.01,
                        "met": gap <= 0.01})  # fmt: skip
    for found in results["regression"]:
        summary = found["summary"]
        name = found["dataset"]
        rho = summary["spearman_std"]["mean"]
        targets.append({"target": f"{name}: Spearman(std) vs MC T={SAMPLES} >= 0.9", "value": rho, "bound": 0.9,
                        "met": rho >= 0.9})  # fmt: skip
        for metric in ("rmse", "ll"):
            gap = abs(summary[metric]["moments"]["mean"] - summary[metric]["mc"]["mean"])
            se = summary[metric]["mc"]["se"]
            targets.append({"target": f"{name}: |{metric.upper()} moments - MC| <= one MC standard error",
                            "value": gap, "bound": se, "met": bool(gap <= se)})  # fmt: skip
        coverage = summary["coverage_95"]["moments"]["mean"]
        targets.append({"target": f"{name}: moments 95% coverage in [0.90, 0.98]", "value": coverage,
                        "bound": [0.90, 0.98], "met": 0.90 <= coverage <= 0.98})  # fmt: skip
    return targets
