"""Console tables of the evaluation."""

from __future__ import annotations

from typing import Any

from mcdrop.serving.console import stdout_console


def print_digits(results: dict[str, Any]) -> None:
    from rich.table import Table

    console = stdout_console()
    table = Table(title=f"digits, held out ({results['test_rows']} rows), exported LiteRT graphs")
    for column in ("method", "accuracy", "NLL", "Brier", "ECE (15 bins)"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for name, s in results["calibration"].items():
        table.add_row(name, f"{s['accuracy']:.4f}", f"{s['nll']:.4f}", f"{s['brier']:.4f}", f"{s['ece']:.4f}")
    console.print(table)
    ood = Table(
        title=f"OOD: trained on 0-4 ({results['ood']['in_distribution_rows']} held-out rows) vs 5-9 "
        f"({results['ood']['out_of_distribution_rows']} rows)"
    )
    ood.add_column("score")
    ood.add_column("AUROC", justify="right")
    for name, value in results["ood"]["auroc"].items():
        ood.add_row(name, f"{value:.4f}")
    console.print(ood)
    averaging = results["averaging"]
    curve = Table(
        title=f"test error vs T (mean ± std over {averaging['repeats']} repeats); weight scaling "
        f"{100 * averaging['weight_scaling_error']:.2f}%"
    )
    for count in averaging["samples"]:
        curve.add_column(f"T={count}", justify="right")
    curve.add_row(
        *[
            f"{100 * m:.2f}±{100 * s:.2f}%"
            for m, s in zip(averaging["mc_error_mean"], averaging["mc_error_std"], strict=True)
        ]
    )
    console.print(curve)
    _targets(results["targets"])


def print_uci(results: dict[str, Any]) -> None:
    from rich.table import Table

    console = stdout_console()
    table = Table(title="UCI regression, MC dropout through exported graphs: ours vs Gal & Ghahramani (2016)")
    for column in ("dataset", "splits", "RMSE ours", "RMSE paper", "LL ours", "LL paper", "95% coverage", "verdict"):
        table.add_column(column, justify="left" if column in ("dataset", "verdict") else "right")
    for d in results["datasets"]:
        s = d["summary"]
        verdict = "/".join(f"{m.upper()} {'ok' if s[m]['within_2se_or_better'] else 'off'}" for m in ("rmse", "ll"))
        table.add_row(
            d["dataset"],
            str(d["splits"]),
            _pm(s["rmse"]["mean"], s["rmse"]["se"], 3),
            _pm(s["rmse"]["published"], s["rmse"]["published_se"], 2),
            _pm(s["ll"]["mean"], s["ll"]["se"], 3),
            _pm(s["ll"]["published"], s["ll"]["published_se"], 2),
            f"{s['coverage_95']['mean']:.3f}",
            verdict,
        )
    console.print(table)
    console.print(
        "mean ± standard error over splits; verdict: within 2 combined standard errors of the paper, or better"
    )


def _pm(mean: float, se: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def _targets(targets: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="targets")
    for column in ("target", "value", "bound", "met"):
        table.add_column(column)
    for t in targets:
        table.add_row(
            t["target"], f"{t['value']:.4f}", f"{t['bound']:.4f}", "[green]yes[/]" if t["met"] else "[red]no[/]"
        )
    stdout_console().print(table)
