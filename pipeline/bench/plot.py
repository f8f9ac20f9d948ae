"""The benchmark as a picture: in-process rows per model and batch; server Monte-Carlo rows per transport."""

from __future__ import annotations

from pathlib import Path
from typing import Any

INFERENCE_ROWS = (
    "keras_eager_loop",
    "keras_batched",
    "tflite_sequential",
    "tflite_mc_graph_rng",
    "mcdrop",
    "deterministic",
    "limit",
)
COLOURS = {
    "keras_eager_loop": "#bbbbbb",
    "keras_batched": "#888888",
    "tflite_sequential": "#d9a441",
    "tflite_mc_graph_rng": "#e7c27d",
    "mcdrop": "#2a7ab9",
    "deterministic": "#7fb77e",
    "limit": "#333333",
}


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    groups = list(dict.fromkeys((r["model"], r["batch"]) for r in rows if r["name"] in INFERENCE_ROWS))  # run order
    fig, (left, right) = plt.subplots(1, 2, figsize=(19, 6), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(INFERENCE_ROWS)
    for i, name in enumerate(INFERENCE_ROWS):
        values = [
            next((r["median_ms"] for r in rows if r["name"] == name and (r["model"], r["batch"]) == g), 0)
            for g in groups
        ]
        positions = [j + (i - len(INFERENCE_ROWS) / 2 + 0.5) * width for j in range(len(groups))]
        bars = left.bar(positions, values, width, label=name, color=COLOURS[name])
        if name == "mcdrop":
            for bar, value in zip(bars, values, strict=True):
                left.annotate(
                    f"{value:.2f}",
                    (bar.get_x() + bar.get_width() / 2, value),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    color=COLOURS[name],
                    fontweight="bold",
                )
    left.set_yscale("log")
    left.set_xticks(range(len(groups)), [f"{m}\nbatch {b}" for m, b in groups])
    bottom, top = left.get_ylim()
    left.set_ylim(bottom, top * 30)  # room for the legend above the tallest bars
    left.set_ylabel(f"median ms per estimate (T={report['settings']['samples']}, 1 thread, log scale)")
    left.set_title("Monte-Carlo dropout inference, in process")
    left.legend(fontsize=8, loc="upper left", ncol=4)
    left.grid(axis="y", which="both", alpha=0.3)

    _server_panel(right, report)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


TRANSPORTS = (("server_mc_T{T}", "gRPC", "#2a7ab9"), ("rest_mc_T{T}", "REST JSON", "#d9a441"),
              ("rest_binary_mc_T{T}", "REST binary", "#7fb77e"))  # fmt: skip


def _server_panel(axes: Any, report: dict[str, Any]) -> None:
    """Monte-Carlo requests per transport, grouped by worker count and concurrency: p50 bars with the p99 as a
    whisker and the throughput on top, beside the echo floor's p50 (every other row is in the JSON and the table)."""
    samples = report["settings"]["samples"]
    rows = [r for r in report["rows"] if "concurrency" in r]
    groups = sorted({(r["workers"], r["concurrency"]) for r in rows if r["name"] == f"server_mc_T{samples}"})
    width = 0.8 / len(TRANSPORTS)
    for i, (name, label, colour) in enumerate(TRANSPORTS):
        found = [next((r for r in rows if r["name"] == name.format(T=samples) and (r["workers"], r["concurrency"])
                       == g), None) for g in groups]  # fmt: skip
        x = [g + (i - 1) * width for g, r in enumerate(found) if r is not None]
        measured = [r for r in found if r is not None]
        if not measured:
            continue
        p50 = [r["median_ms"] for r in measured]
        whiskers = [[0] * len(measured), [r["p99_ms"] - r["median_ms"] for r in measured]]
        axes.bar(x, p50, width, yerr=whiskers, capsize=2, color=colour, label=f"{label} p50 (whisker: p99)")
        for xi, r in zip(x, measured, strict=True):  # throughput inside the bar's foot, clear of the whiskers
            axes.annotate(f"{r['throughput_rps']:,.0f}/s", (xi, 0), ha="center", va="bottom", fontsize=7, rotation=90,
                          color="black", xytext=(0, 2), textcoords="offset points")  # fmt: skip
    floor = {r["concurrency"]: r["median_ms"] for r in rows if r["name"] == "echo_floor"}
    for g, (_, clients) in enumerate(groups):
        if clients in floor:
            axes.hlines(floor[clients], g - 0.45, g + 0.45, colors="#333333", linestyles="dashed",
                        label="gRPC echo floor p50" if g == 0 else None)  # fmt: skip
    axes.set_xticks(range(len(groups)), [f"{w} worker{'s' * (w > 1)}\nconcurrency {c}" for w, c in groups])
    axes.set_ylabel(f"latency ms (MLP, batch 1, MC T={samples}); in the bars: throughput")
    process = report["process"]
    axes.set_title(
        f"Server over gRPC and REST (separate client processes)\npeak RSS {process['peak_rss_mb']:.0f} MB, "
        f"ready in {process['ready_seconds_median']:.2f} s"
    )
    axes.legend(fontsize=8, loc="upper left")
    axes.grid(axis="y", alpha=0.3)
