"""Draw the dashboard's panels as a PNG from a Prometheus, without Grafana.

    python deploy/grafana/render.py --prometheus http://localhost:9090 --minutes 10 --out dashboard.png

Every panel's PromQL is the dashboard's own (``mcdrop-dashboard.json``), evaluated by Prometheus's ``query_range``
API with ``$job`` as every job and ``$__rate_interval`` as ``--rate-interval``; the panels keep their titles, units,
legends and grid positions. Only the drawing is matplotlib's rather than Grafana's: Grafana is not installable on
a machine without internet access (no Debian, PyPI or npm package), Prometheus is (Debian's ``prometheus``).
Needs matplotlib (the ``train`` extra).
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import math
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

DASHBOARD = Path(__file__).with_name("mcdrop-dashboard.json")
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")
Series = tuple[str, list[float], list[float]]  # legend, unix times, values


def expression(expr: str, rate_interval: str) -> str:
    """The panel's query with the dashboard variables Grafana would fill in."""
    return expr.replace("$__rate_interval", rate_interval).replace('"$job"', '".+"')


def query_range(prometheus: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    """Prometheus's ``/api/v1/query_range`` result (a matrix) for ``expr``."""
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    try:
        with urllib.request.urlopen(f"{prometheus.rstrip('/')}/api/v1/query_range?{query}", timeout=30) as answer:
            body = json.loads(answer.read())
    except urllib.error.HTTPError as exc:  # Prometheus says why in a JSON body (400 bad_data, 422, 503)
        body = json.loads(exc.read() or b"{}")
    if body.get("status") != "success":
        raise RuntimeError(f"Prometheus refused {expr!r}: {body.get('error', body)}")
    return list(body["data"]["result"])


def panel_series(
    panel: dict[str, Any], prometheus: str, start: float, end: float, step: float, rate_interval: str
) -> list[Series]:
    """Every series of a panel's targets, named by the target's legend format."""
    found: list[Series] = []
    for target in panel.get("targets", []):
        for result in query_range(prometheus, expression(target["expr"], rate_interval), start, end, step):
            labels: dict[str, str] = result.get("metric", {})
            legend = LEGEND.sub(lambda m, labels=labels: labels.get(m.group(1), ""),
                                target.get("legendFormat") or target["expr"])  # fmt: skip
            times = [float(t) for t, _ in result["values"]]
            values = [float(v) for _, v in result["values"]]  # "NaN" (no traffic in a window) stays a gap
            found.append((legend.strip(), times, values))
    return found


def formatted(value: float, unit: str) -> str:
    if value != value:  # NaN
        return "–"
    if unit == "percentunit":
        return f"{value * 100:.2f} %"
    if unit == "s":
        return f"{value * 1e3:.3g} ms" if value < 1 else f"{value:.3g} s"
    if unit == "reqps":
        return f"{value:,.0f} req/s"
    return f"{value:,.0f}"


def _stack(axes: Any, series: list[Series]) -> None:
    """Grafana's "normal" stacking: each series on top of the ones before it, on the union of their times (a missing
    point, or NaN, counts 0)."""
    times = sorted({t for _, ts, _ in series for t in ts})
    layers = []
    for _, ts, values in series:
        at = {t: v for t, v in zip(ts, values, strict=True) if not math.isnan(v)}
        layers.append([at.get(t, 0.0) for t in times])
    axes.stackplot([datetime.datetime.fromtimestamp(t) for t in times], layers, labels=[s[0] for s in series],
                   alpha=0.6)  # fmt: skip


def _heatmap(axes: Any, series: list[Series]) -> None:
    """Grafana's heatmap of a histogram: one series per cumulative bucket (legend ``{{le}}``), drawn as rows per
    bucket and interval on a log axis (the +Inf bucket's rows go in the top bucket)."""
    import matplotlib.colors as mcolors
    import numpy as np

    buckets = sorted((float(legend), values) for legend, _, values in series if _is_number(legend))
    finite = [b for b in buckets if math.isfinite(b[0]) and b[0] > 0]
    if len(finite) < 2:
        axes.text(0.5, 0.5, "No data", color="#8e8e8e", ha="center", va="center", transform=axes.transAxes)
        return
    times = [datetime.datetime.fromtimestamp(t) for t in series[0][1]]
    cumulative = np.nan_to_num(np.array([values[: len(times)] for _, values in buckets], float))
    rows = np.diff(np.vstack([np.zeros(len(times)), cumulative]), axis=0).clip(min=0)
    edges = [finite[0][0] / 10**0.25] + [le for le, _ in finite]
    counts = rows[: len(finite)].copy()
    counts[-1] += rows[len(finite) :].sum(axis=0)  # beyond the last finite bound: shown in the top bucket
    mesh = axes.pcolormesh(times, edges, counts[:, :-1] if len(times) > 1 else counts, cmap="Oranges",
                           norm=mcolors.PowerNorm(0.5), shading="flat")  # fmt: skip
    axes.set_yscale("log")
    axes.set_ylim(edges[0], edges[-1])
    colorbar = axes.figure.colorbar(mesh, ax=axes, pad=0.01)
    colorbar.ax.tick_params(colors="#8e8e8e", labelsize=6)
    colorbar.set_label("rows per interval", color="#8e8e8e", fontsize=7)


def _timeline(axes: Any, series: list[Series]) -> None:
    """Grafana's state timeline of 0/1 series (alerts firing): one row per series, a band where it is 1."""
    if not series:
        axes.text(0.5, 0.5, "No data", color="#8e8e8e", ha="center", va="center", transform=axes.transAxes)
        return
    colours = ["#f2495c", "#ff9830", "#fade2a", "#5794f2", "#b877d9"]
    for row, (_, times, values) in enumerate(series):
        step = min((b - a for a, b in itertools.pairwise(times)), default=1.0)
        spans = [(datetime.datetime.fromtimestamp(t), datetime.timedelta(seconds=step))
                 for t, v in zip(times, values, strict=True) if v == v and v > 0]  # fmt: skip
        axes.broken_barh(spans, (row + 0.15, 0.7), color=colours[row % len(colours)])
    axes.set_yticks([row + 0.5 for row in range(len(series))], [legend or "(no labels)" for legend, _, _ in series])
    axes.set_ylim(0, len(series))
    axes.xaxis_date()


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def render(
    dashboard: dict[str, Any], prometheus: str, start: float, end: float, out: Path, rate_interval: str = "30s"
) -> None:
    """Query every panel for [start, end] and write them, laid out as in the dashboard, to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    step = max(1.0, (end - start) / 240)
    figure = plt.figure(figsize=(16, rows * 0.48), facecolor="#111217")
    grid = figure.add_gridspec(rows, 24, hspace=1.6, wspace=0.6, left=0.04, right=0.99, top=0.95, bottom=0.03)
    span = f"{datetime.datetime.fromtimestamp(start):%H:%M} – {datetime.datetime.fromtimestamp(end):%H:%M}"
    figure.suptitle(f"{dashboard['title']} · {span} · rendered from Prometheus by deploy/grafana/render.py",
                    color="#d8d9da", fontsize=12)  # fmt: skip
    for panel in panels:
        pos = panel["gridPos"]
        axes = figure.add_subplot(grid[pos["y"] : pos["y"] + pos["h"], pos["x"] : pos["x"] + pos["w"]])
        axes.set_facecolor("#181b1f")
        for spine in axes.spines.values():
            spine.set_color("#2c3235")
        axes.set_title(panel["title"], color="#d8d9da", fontsize=9, loc="left")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        series = panel_series(panel, prometheus, start, end, step, rate_interval)
        if panel["type"] == "stat":
            last = next((v for _, _, values in series for v in reversed(values) if v == v), float("nan"))
            axes.text(0.5, 0.4, formatted(last, unit), color="#73bf69", fontsize=20, ha="center", va="center",
                      transform=axes.transAxes)  # fmt: skip
            axes.set_xticks([])
            axes.set_yticks([])
            continue
        if panel["type"] == "state-timeline":
            _timeline(axes, series)
            axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
            axes.tick_params(colors="#8e8e8e", labelsize=7)
            continue
        if panel["type"] == "heatmap":
            _heatmap(axes, series)
            axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
            axes.tick_params(colors="#8e8e8e", labelsize=7)
            continue
        custom = panel.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
        if custom.get("stacking", {}).get("mode") == "normal" and series:
            _stack(axes, series)
        for legend, times, values in [] if custom.get("stacking", {}).get("mode") == "normal" else series:
            axes.plot(
                [datetime.datetime.fromtimestamp(t) for t in times],
                values,
                linewidth=1.2,
                label=legend or "(no labels)",
            )
        axes.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
        axes.tick_params(colors="#8e8e8e", labelsize=7)
        axes.grid(color="#2c3235", linewidth=0.6)
        defaults = panel.get("fieldConfig", {}).get("defaults", {})
        if "min" in defaults and "max" in defaults:  # a fixed range, padded so that a line at the bound shows
            low, high = float(defaults["min"]), float(defaults["max"])
            axes.set_ylim(low - 0.05 * (high - low), high + 0.05 * (high - low))
        if unit == "s":
            axes.yaxis.set_major_formatter(lambda v, _: formatted(v, "s") if v else "0")
        if series:
            axes.legend(fontsize=6, loc="upper left", ncol=2, facecolor="#181b1f", labelcolor="#d8d9da",
                        edgecolor="#2c3235")  # fmt: skip
        else:
            axes.text(0.5, 0.5, "No data", color="#8e8e8e", ha="center", va="center", transform=axes.transAxes)
    figure.savefig(out, dpi=100, facecolor=figure.get_facecolor())
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prometheus", default="http://localhost:9090", help="Prometheus base URL")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD, help="dashboard JSON (default: mcdrop's)")
    parser.add_argument("--minutes", type=float, default=15.0, help="time range ending now (default 15)")
    parser.add_argument("--rate-interval", default="30s", help="$__rate_interval (default 30s: 4 × a 7.5 s scrape)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    end = time.time()
    try:
        render(json.loads(args.dashboard.read_text(encoding="utf-8")), args.prometheus, end - args.minutes * 60, end,
               args.out, args.rate_interval)  # fmt: skip
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        print(f"render.py: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
