"""Gal & Ghahramani's UCI regression experiment (MC dropout, 2016) at the published protocol.

Protocol, per split (``UCI_PROTOCOL.md`` beside the bundled data says where each rule comes from):
standardise X and y on the rows a network is fitted on; one hidden ReLU layer of ``n_hidden``
units with dropout on the input and on the hidden layer (the same rate); L2 weight decay
``l^2 (1 - p) / (2 N tau)`` with l = 1e-2 on both kernels; Adam, batch 128, **n_epochs x 100**
epochs; a grid over every dropout rate x tau scored by the MC log-likelihood (T = 10,000) of an
80/20 (train/validation, file order) split of the training rows; refit on all training rows with
the best pair. Test figures come from the refit network **exported by mcdrop** (``mc_masked.tflite``,
T = 10,000 seeded host masks), with mcdrop's noise estimate (on the grid's validation rows) as its
observation noise, so the numbers are the served model's.

Training is the expensive part (13 networks x up to 48,000 Adam steps per split), so every
network of a phase — 20 splits x 12 grid candidates, then 20 refits — is trained at once by
``stacked_mlp`` (numpy, exact gradients), and the export/test of each split follows.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.pipeline.evaluation import stacked_mlp
from mcdrop.pipeline.training.observation_noise import precision_from_moments
from mcdrop.serving.core import uncertainty
from mcdrop.serving.errors import InvalidArgument, NotFound

LENGTH_SCALE = 1e-2
PAPER_EPOCH_FACTOR = 100.0
COVERAGE_LEVELS = (0.5, 0.9, 0.95)
COVERAGE_KINDS = ("predictive", "grid_tau", "epistemic")
"""Intervals for y with the served (estimated) tau | with the grid's tau | the interval of the mean."""
BUNDLED = Path(__file__).parent / "uci_data"
"""The four datasets the project carries (with the paper's per-split results)."""

# The paper repository's grid-search table (yaringal/DropoutUncertaintyExps, 2018 update, "Grid
# Search (new)"; n_epochs x 100, one hidden layer): mean ± standard error over the splits.
PUBLISHED = {
    "bostonHousing": {"rmse": (2.90, 0.18), "ll": (-2.40, 0.04)},
    "concrete": {"rmse": (4.82, 0.16), "ll": (-2.93, 0.02)},
    "energy": {"rmse": (0.54, 0.06), "ll": (-1.21, 0.01)},
    "kin8nm": {"rmse": (0.08, 0.00), "ll": (1.14, 0.01)},
    "naval-propulsion-plant": {"rmse": (0.00, 0.00), "ll": (4.45, 0.00)},
    "power-plant": {"rmse": (4.01, 0.04), "ll": (-2.80, 0.01)},
    "protein-tertiary-structure": {"rmse": (4.27, 0.02), "ll": (-2.87, 0.00)},
    "wine-quality-red": {"rmse": (0.62, 0.01), "ll": (-0.93, 0.01)},
    "yacht": {"rmse": (0.67, 0.05), "ll": (-1.25, 0.01)},
}
PAPER_FILES = {
    "rmse": "test_MC_rmse_100_xepochs_1_hidden_layers.txt",
    "ll": "test_ll_100_xepochs_1_hidden_layers.txt",
    "tau": "test_tau_100_xepochs_1_hidden_layers.txt",
}

Advance = Callable[[float, str], None]


@dataclasses.dataclass
class UciData:
    name: str
    x: np.ndarray
    y: np.ndarray
    rates: list[float]
    taus: list[float]
    hidden: int
    epochs: int
    folder: Path
    paper: dict[str, np.ndarray]
    """Published per-split test values (``rmse``, ``ll``, ``tau``), when the folder has them."""

    def split(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        train = np.loadtxt(self.folder / f"index_train_{k}.txt", dtype=np.int64, ndmin=1)
        test = np.loadtxt(self.folder / f"index_test_{k}.txt", dtype=np.int64, ndmin=1)
        return train, test

    @property
    def splits(self) -> int:
        return len(list(self.folder.glob("index_train_*.txt")))


def dataset_folder(root: Path, name: str) -> Path:
    """``root/name`` (this project's layout) or ``root/name/data`` (the paper repository's)."""
    for folder in (root / name, root / name / "data"):
        if (folder / "data.txt").is_file():
            return folder
    available = ", ".join(available_datasets(root)) or "none"
    raise NotFound(f"UCI dataset {name!r} not found in {root}. Available: {available}")


def available_datasets(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "data.txt").is_file() or (p / "data" / "data.txt").is_file())


def load(root: Path, name: str) -> UciData:
    folder = dataset_folder(root, name)
    data = np.loadtxt(folder / "data.txt", ndmin=2)
    features = np.loadtxt(folder / "index_features.txt", dtype=np.int64, ndmin=1)
    target = int(np.loadtxt(folder / "index_target.txt"))
    return UciData(
        name=name,
        x=data[:, features].astype(np.float32),
        y=data[:, target].astype(np.float32),
        rates=[float(v) for v in np.loadtxt(folder / "dropout_rates.txt", ndmin=1)],
        taus=[float(v) for v in np.loadtxt(folder / "tau_values.txt", ndmin=1)],
        hidden=int(np.loadtxt(folder / "n_hidden.txt")),
        epochs=int(np.loadtxt(folder / "n_epochs.txt")),
        folder=folder,
        paper=_paper_results(folder),
    )


def _paper_results(folder: Path) -> dict[str, np.ndarray]:
    """Per-split published values from ``paper-results/`` (bundled) or ``../results/`` (paper repository)."""
    for results in (folder / "paper-results", folder.parent / "results"):
        if all((results / f).is_file() for f in PAPER_FILES.values()):
            return {metric: np.loadtxt(results / f, ndmin=1) for metric, f in PAPER_FILES.items()}
    return {}


@dataclasses.dataclass
class _Split:
    """One split's rows, standardisation statistics computed on the rows a network is fitted on."""

    k: int
    x_fit: np.ndarray
    y_fit: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray

    def standardised(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
        from mcdrop.pipeline.training.data import standardisation

        x_mean, x_std = standardisation(self.x_fit)
        y_mean, y_std = standardisation(self.y_fit[:, np.newaxis])
        return (  # float32 throughout: float64 statistics would double the training's cost
            ((self.x_fit - x_mean) / x_std).astype(np.float32),
            ((self.y_fit - y_mean[0]) / y_std[0]).astype(np.float32),
            ((self.x_eval - x_mean) / x_std).astype(np.float32),
            float(y_mean[0]),
            float(y_std[0]),
        )


EXPORT_UNITS = 200_000  # about one split's export + test, in network-steps of training time


def work_units(data: UciData, splits: int, epochs: int) -> float:
    """Progress units of a run (network-steps of training, plus an equivalent for each export)."""
    train_rows = len(data.split(0)[0])
    grid = len(data.rates) * len(data.taus) * splits * epochs * -(-int(0.8 * train_rows) // stacked_mlp.BATCH)
    refit = splits * epochs * -(-train_rows // stacked_mlp.BATCH)
    return float(grid + refit + splits * EXPORT_UNITS)


def run_uci(
    root: Path,
    name: str,
    workdir: Path,
    *,
    splits: int | None,
    samples: int = 10_000,
    validation_samples: int = 10_000,
    epoch_factor: float = PAPER_EPOCH_FACTOR,
    seed: int = 0,
    jobs: int = 1,
    advance: Advance = lambda _units, _status: None,
) -> dict[str, Any]:
    """Run the protocol on the first ``splits`` splits of ``name``; per-split results and a summary."""
    started = time.monotonic()
    data = load(root, name)
    count = data.splits if splits is None else splits
    if not 1 <= count <= data.splits:
        raise InvalidArgument(f"Invalid --splits. Expected 1 <= N <= {data.splits}. Received: {count}")
    if samples < 2 or validation_samples < 2:
        raise InvalidArgument(f"Expected samples >= 2. Received: {samples}, {validation_samples}")
    epochs = max(1, round(data.epochs * epoch_factor))
    indices = [data.split(k) for k in range(count)]
    timing: dict[str, float] = {}

    phase = time.monotonic()
    grid = _grid_search(data, indices, epochs, validation_samples, seed, jobs, advance)
    timing["grid_seconds"] = time.monotonic() - phase

    phase = time.monotonic()
    best = [max(candidates, key=lambda g: g["validation_ll"]) for candidates in grid]
    splits_fit = [_Split(k, data.x[tr], data.y[tr], data.x[te], data.y[te]) for k, (tr, te) in enumerate(indices)]
    refits = _refit(data, splits_fit, best, epochs, seed, jobs, advance)
    timing["refit_seconds"] = time.monotonic() - phase

    phase = time.monotonic()
    results = []
    for s in splits_fit:
        advance(0, f"{name} split {s.k + 1}/{count}: export + test")
        results.append(_test(data, s, refits.slice(s.k), best[s.k], grid[s.k], workdir, samples, seed, epochs))
        advance(EXPORT_UNITS, f"{name} split {s.k + 1}/{count} tested")
    timing["export_test_seconds"] = time.monotonic() - phase
    timing["total_seconds"] = time.monotonic() - started
    timing["seconds_per_split"] = timing["total_seconds"] / count
    return {
        "dataset": name,
        "splits": count,
        "epochs": epochs,
        "epoch_factor": epoch_factor,
        "protocol": epoch_factor == PAPER_EPOCH_FACTOR,
        "samples": samples,
        "validation_samples": validation_samples,
        "per_split": results,
        "summary": summarise(name, results),
        "timing": {k: round(v, 1) for k, v in timing.items()},
    }


def weight_decay(rates: np.ndarray, taus: np.ndarray, *, rows: int) -> np.ndarray:
    """The protocol's L2 factor per network, l^2 (1 - p) / (2 N tau), with N the rows it is fitted on."""
    return np.asarray(LENGTH_SCALE**2 * (1.0 - rates) / (2.0 * rows * taus), np.float32)


def _seeds(seed: int, name: str, splits: range, phase: int) -> list[np.random.SeedSequence]:
    """One stream per split and phase, independent of which other splits run beside it."""
    return [np.random.SeedSequence([seed, zlib.crc32(name.encode()), k, phase]) for k in splits]


def _grid_search(
    data: UciData,
    indices: list[tuple[np.ndarray, np.ndarray]],
    epochs: int,
    validation_samples: int,
    seed: int,
    jobs: int,
    advance: Advance,
) -> list[list[dict[str, Any]]]:
    """Validation log-likelihood of every (rate, tau) on every split; all networks trained together."""
    pairs = [(rate, tau) for rate in data.rates for tau in data.taus]
    xs, ys, xv, yv, y_means, y_stds = [], [], [], [], [], []
    for train, _ in indices:
        cut = int(0.8 * len(train))
        s = _Split(0, data.x[train[:cut]], data.y[train[:cut]], data.x[train[cut:]], data.y[train[cut:]])
        x_fit, y_fit, x_val, y_mean, y_std = s.standardised()
        for _ in pairs:
            xs.append(x_fit)
            ys.append(y_fit)
            xv.append(x_val)
            yv.append(s.y_eval)
            y_means.append(y_mean)
            y_stds.append(y_std)
    rates = np.array([r for _ in indices for r, _t in pairs], np.float32)
    taus = np.array([t for _ in indices for _r, t in pairs])
    fitted = stacked_mlp.fit(
        np.stack(xs),
        np.stack(ys),
        rates,
        weight_decay(rates, taus, rows=len(xs[0])),
        hidden=data.hidden,
        epochs=epochs,
        seeds=_seeds(seed, data.name, range(len(indices)), 0),
        jobs=jobs,
        progress=lambda n: advance(n * len(pairs) * len(indices), f"{data.name} grid search"),
    )
    advance(0, f"{data.name} grid: validation log-likelihood, T = {validation_samples}")
    scores = stacked_mlp.mc_log_likelihood(
        fitted,
        np.stack(xv),
        np.stack(yv),
        rates,
        taus,
        (np.array(y_means), np.array(y_stds)),
        samples=validation_samples,
        seeds=_seeds(seed, data.name, range(len(indices)), 1),
        jobs=jobs,
    )
    # mcdrop's own noise estimate from the same validation predictions (what `mcdrop train` does):
    # the served model's tau, beside the grid's tau that the paper's log-likelihood uses.
    estimated = precision_from_moments(
        scores.squared_error, scores.epistemic_variance, np.array([np.var(v) for v in yv])
    )
    grid = []
    for k in range(len(indices)):
        grid.append(
            [
                {
                    "rate": rate,
                    "tau": tau,
                    "validation_ll": float(scores.log_likelihood[k * len(pairs) + i]),
                    "estimated_tau": float(estimated[k * len(pairs) + i]),
                }
                for i, (rate, tau) in enumerate(pairs)
            ]
        )
    return grid


def _refit(
    data: UciData,
    splits: list[_Split],
    best: list[dict[str, Any]],
    epochs: int,
    seed: int,
    jobs: int,
    advance: Advance,
) -> stacked_mlp.StackedFit:
    """Refit every split on all its training rows with its best pair."""
    standardised = [s.standardised() for s in splits]
    rates = np.array([b["rate"] for b in best], np.float32)
    taus = np.array([b["tau"] for b in best])
    fitted = stacked_mlp.fit(
        np.stack([s[0] for s in standardised]),
        np.stack([s[1] for s in standardised]),
        rates,
        weight_decay(rates, taus, rows=len(splits[0].x_fit)),
        hidden=data.hidden,
        epochs=epochs,
        seeds=_seeds(seed, data.name, range(len(splits)), 2),
        jobs=jobs,
        progress=lambda n: advance(n * len(splits), f"{data.name} refit"),
    )
    return fitted


def _test(
    data: UciData,
    split: _Split,
    weights: list[np.ndarray],
    best: dict[str, Any],
    grid: list[dict[str, Any]],
    workdir: Path,
    samples: int,
    seed: int,
    epochs: int,
) -> dict[str, Any]:
    """Export the refit network with its estimated noise; score the test rows through LiteRT.

    The log-likelihood uses the grid's tau (the paper's metric); the served predictive interval uses
    the tau mcdrop estimated on the validation rows (``estimated_tau`` of the best candidate), and
    coverage is reported for both and for the interval of the mean.
    """
    from mcdrop.pipeline.evaluation.graphs import Exported

    started = time.monotonic()
    tau = float(best["tau"])
    folder = workdir / data.name / f"split-{split.k}"
    served_tau = float(best["estimated_tau"])
    exported = Exported(_export(data, split, weights, best["rate"], served_tau, epochs, folder))
    draws = exported.sample(split.x_eval, samples, seed=seed + split.k)[..., 0]  # [T, N]
    y = split.y_eval
    mean = draws.mean(axis=0)
    result: dict[str, Any] = {
        "split": split.k,
        "best": {"rate": best["rate"], "tau": tau, "served_tau": served_tau},
        "grid": grid,
        "rmse": float(np.sqrt(np.mean((mean - y) ** 2))),
        "ll": float(np.mean(uncertainty.gaussian_mixture_log_likelihood(draws, y, tau))),
        "coverage": {},
        "test_rows": len(y),
    }
    noise = exported.manifest.output.observation_noise
    assert noise is not None and noise.variance is not None  # exported with the grid's tau
    served_noise = noise.variance[0]
    for level in COVERAGE_LEVELS:
        summary = uncertainty.regression(draws, level, noise_variance=served_noise)
        predictive, epistemic = uncertainty.coverage(summary, y)
        grid_tau, _ = uncertainty.coverage(uncertainty.regression(draws, level, noise_variance=1 / tau), y)
        result["coverage"][f"{level:g}"] = {"predictive": predictive, "grid_tau": grid_tau, "epistemic": epistemic}
    for metric, values in data.paper.items():
        if split.k < len(values):
            result[f"paper_{metric}"] = float(values[split.k])
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def _export(
    data: UciData, split: _Split, weights: list[np.ndarray], rate: float, tau: float, epochs: int, folder: Path
) -> Path:
    """The refit network as the Keras model ``mcdrop train`` builds, exported and verified by mcdrop."""
    from mcdrop.pipeline.export.exporter import ExportOptions, export
    from mcdrop.pipeline.training.config import TrainConfig
    from mcdrop.pipeline.training.data import Dataset
    from mcdrop.pipeline.training.models import build_models
    from mcdrop.pipeline.training.observation_noise import noise_record

    config = TrainConfig(
        out=str(folder), hidden=[data.hidden], dropout=[rate], input_dropout=rate, l2=0.0, epochs=epochs
    ).validate()
    x, y = split.x_fit, split.y_fit
    dataset = Dataset("uci", "regression", x, y, x[:1], y[:1], [], ["y"], None, None)
    model, _ = build_models(config, dataset)
    model.get_layer("dense_1").set_weights(weights[:2])
    model.get_layer("standardised_output").set_weights(weights[2:])
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / "model.keras")
    record = {
        "task": "regression",
        "dataset": {"name": data.name, "split": split.k},
        "observation_noise": noise_record(
            [tau],
            method="validation rows of the UCI grid search (best candidate, T = 10,000): "
            "1/tau = mean squared error of the MC mean - mean MC variance",
        ),
    }
    (folder / "training.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    version, _ = export(ExportOptions(model_path=folder / "model.keras", repository=folder / "repository", name="uci"))
    return folder / "repository" / "uci" / str(version)


def summarise(name: str, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean ± standard error over splits beside the published values; within 2 combined standard errors?"""
    summary: dict[str, Any] = {}
    for metric in ("rmse", "ll"):
        values = [r[metric] for r in results]
        mean = statistics.fmean(values)
        se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
        published, published_se = PUBLISHED.get(name, {}).get(metric, (float("nan"), float("nan")))
        combined = math.sqrt((se if not math.isnan(se) else 0.0) ** 2 + published_se**2)
        better = mean <= published if metric == "rmse" else mean >= published
        entry: dict[str, Any] = {
            "mean": mean,
            "se": se,
            "published": published,
            "published_se": published_se,
            # One split has no standard error to judge a table of 20 by: compare it split by split instead.
            "within_2se_or_better": None if math.isnan(se) else bool(better or abs(mean - published) <= 2 * combined),
        }
        paired = [(r[metric], r[f"paper_{metric}"]) for r in results if f"paper_{metric}" in r]
        if paired:
            ours_better = sum(o <= p if metric == "rmse" else o >= p for o, p in paired)
            entry["paper_same_splits"] = statistics.fmean(p for _, p in paired)
            entry["splits_at_least_as_good"] = ours_better
            entry["mean_difference"] = statistics.fmean(o - p for o, p in paired)
        summary[metric] = entry
    summary["coverage"] = {
        level: {kind: statistics.fmean(r["coverage"][level][kind] for r in results) for kind in COVERAGE_KINDS}
        for level in results[0]["coverage"]
    }
    return summary
