"""Figures of the evaluation: reliability diagram, MC averaging vs weight scaling, OOD score histograms."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np


def digits_figures(results: dict[str, Any], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6), sharey=True)
    for ax, (name, r) in zip(axes, results["reliability"].items(), strict=True):
        edges = r["edges"]
        centres = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
        width = edges[1] - edges[0]
        accuracy = [a if a is not None else 0.0 for a in r["accuracy"]]
        ax.bar(centres, accuracy, width=width * 0.95, color="#2a7ab9", edgecolor="white", label="accuracy")
        for centre, value, count in zip(centres, accuracy, r["counts"], strict=True):
            if count:
                ax.annotate(f"n={int(count)}", (centre, value), ha="center", va="bottom", fontsize=7)
        ax.plot([0, 1], [0, 1], "--", color="#555555", label="perfect calibration")
        scores = results["calibration"][name]
        ax.set_title(f"{name}: ECE {r['ece']:.4f}, NLL {scores['nll']:.4f}, acc {scores['accuracy']:.3f}")
        ax.set_xlabel("confidence (top-class probability), 15 bins")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("accuracy in bin")
    fig.suptitle(f"Reliability on held-out digits ({results['test_rows']} rows), exported LiteRT graphs")
    fig.tight_layout()
    written.append(_save(fig, folder / "reliability.png"))

    averaging = results["averaging"]
    fig, ax = plt.subplots(figsize=(7, 4.6))
    mean = [100 * v for v in averaging["mc_error_mean"]]
    std = [100 * v for v in averaging["mc_error_std"]]
    ax.errorbar(
        averaging["samples"],
        mean,
        yerr=std,
        marker="o",
        capsize=3,
        color="#2a7ab9",
        label=f"Monte-Carlo model averaging (mean ± std, {averaging['repeats']} repeats)",
    )
    ax.axhline(100 * averaging["weight_scaling_error"], color="#d9a441", linestyle="--", label="weight scaling")
    ax.set_xscale("log")
    ax.set_xlabel("samples T")
    ax.set_ylabel("test error (%)")
    ax.set_title("Monte-Carlo averaging vs weight scaling (digits)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append(_save(fig, folder / "mc_vs_weight_scaling.png"))

    ood = results["ood"]
    fig, axes = plt.subplots(1, len(ood["scores"]), figsize=(14, 4))
    for ax, (name, values) in zip(axes, ood["scores"].items(), strict=True):
        ax.hist(values["in"], bins=40, alpha=0.6, density=True, label="digits 0-4 (held out)", color="#2a7ab9")
        ax.hist(values["out"], bins=40, alpha=0.6, density=True, label="digits 5-9 (unseen)", color="#d9a441")
        ax.set_title(f"{name}\nAUROC {ood['auroc'][name]:.3f}", fontsize=10)
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle("Out-of-distribution scores: trained on digits 0-4")
    fig.tight_layout()
    written.append(_save(fig, folder / "ood.png"))
    return written


def moments_figure(results: dict[str, Any], folder: Path) -> Path:
    """Per row, Monte Carlo's uncertainty against the moments graph's: mutual information of each digits model
    (held-out digits and noise images), std of each UCI dataset's first split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    panels: list[tuple[str, str, list[tuple[str, list[float], list[float]]]]] = []
    for found in results["classification"]:
        if found["available"]:
            rows = found["rows"]
            groups = [(part, rows["mc"][part], rows["moments"][part]) for part in ("test", "noise")]
            panels.append((found["model"], "mutual information (nats)", groups))
    for found in results["regression"]:
        first = next((s for s in found["per_split"] if s["available"]), None)
        if first is not None:
            panels.append((f"{found['dataset']} (split {first['split']})", "std of y",
                           [("test rows", first["rows"]["mc_std"], first["rows"]["moments_std"])]))  # fmt: skip
    columns = min(3, max(1, len(panels)))
    lines = -(-len(panels) // columns)
    fig, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 4.0 * lines), squeeze=False)
    colours = {"test": "#2a7ab9", "noise": "#d1495b", "test rows": "#2a7ab9"}
    for ax, (title, unit, groups) in zip(axes.flat, panels, strict=False):
        top = max(max(max(mc), max(approx)) for _, mc, approx in groups) * 1.05
        for label, mc, approx in groups:
            ax.scatter(mc, approx, s=6, alpha=0.5, color=colours.get(label, "#444444"), label=label)
        ax.plot([0, top], [0, top], "--", color="#555555", linewidth=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"Monte Carlo {unit}, T = {results['samples']}")
        ax.set_ylabel(f"moments {unit}")
        ax.legend(fontsize=8, loc="upper left")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("Per-row uncertainty: one-pass moments vs Monte Carlo", fontsize=11)
    fig.tight_layout()
    return _save(fig, folder / "moments-vs-mc.png")


def selective_figure(results: dict[str, Any], folder: Path) -> Path:
    """Held-out risk–coverage curves of every score (the deterministic baseline dashed) per digits model, and the
    held-out coverage of conformal vs Gaussian 95 % intervals per regression dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    models = [m for m in results["classification"] if "scores" in m]
    panels = len(models) + (1 if results["regression"] else 0)
    fig, axes = plt.subplots(1, max(1, panels), figsize=(4.6 * max(1, panels), 4.0), squeeze=False)
    for ax, model in zip(axes.flat, models, strict=False):
        for name, found in model["scores"].items():
            baseline = name == "deterministic_least_confidence"
            ax.plot(found["coverage"], found["risk"], "--" if baseline else "-", linewidth=1.4,
                    color="#333333" if baseline else None, label=f"{name} ({found['aurc']:.4f})")  # fmt: skip
        target = next((t for t in model["targets"] if t["reached"] and t["target"] == "risk=0.02"), None)
        if target is not None:
            ax.axvline(target["test_coverage"], color="#d1495b", linewidth=1, linestyle=":",
                       label=f"risk=0.02 threshold: coverage {target['test_coverage']:.2f}")  # fmt: skip
        ax.set_title(f"{model['model']}: {model['rows']['test']} held-out rows", fontsize=10)
        ax.set_xlabel("coverage (share of rows answered)")
        ax.set_ylabel("selective risk (error rate among answered)")
        ax.set_xlim(0.5, 1.0)  # below half coverage every score answers without an error on these rows
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7, title="score (AURC)", title_fontsize=7, loc="upper left")
    if results["regression"]:
        ax = axes.flat[len(models)]
        names = [d["dataset"] for d in results["regression"]]
        positions = np.arange(len(names))
        for offset, kind, colour in ((-0.18, "conformal", "#2a7ab9"), (0.18, "gaussian", "#999999")):
            values = [d["levels"]["0.95"][kind]["coverage"] for d in results["regression"]]
            errors = [2 * d["levels"]["0.95"][kind]["coverage_se"] for d in results["regression"]]
            ax.bar(positions + offset, values, 0.36, yerr=errors, color=colour, label=kind)
        ax.axhline(0.95, color="#d1495b", linewidth=1, linestyle="--", label="0.95")
        ax.set_xticks(positions, names, rotation=20, fontsize=8)
        ax.set_ylim(0.8, 1.0)
        ax.set_ylabel("held-out coverage of the 95 % interval")
        ax.set_title("regression: conformal vs Gaussian (± 2 s.e. over splits)", fontsize=10)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, folder / "selective.png")


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
