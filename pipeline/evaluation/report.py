"""Console tables of the evaluation."""

from __future__ import annotations

from typing import Any

from mcdrop.serving.common.console import stdout_console


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
    protocol = all(d["protocol"] for d in results["datasets"])
    title = "UCI regression, MC dropout through exported graphs: ours vs Gal & Ghahramani's grid-search table"
    table = Table(title=title + ("" if protocol else " — NON-PROTOCOL RUN (--epoch-factor)"))
    columns = ("dataset", "splits", "epochs", "RMSE ours", "RMSE paper", "LL ours", "LL paper", "verdict", "s/split")
    for column in columns:
        table.add_column(column, justify="left" if column in ("dataset", "verdict") else "right")
    for d in results["datasets"]:
        s = d["summary"]
        verdict = "/".join(f"{m.upper()} {_verdict(s[m]['within_2se_or_better'])}" for m in ("rmse", "ll"))
        table.add_row(
            d["dataset"],
            str(d["splits"]),
            str(d["epochs"]),
            _pm(s["rmse"]["mean"], s["rmse"]["se"], 3),
            _pm(s["rmse"]["published"], s["rmse"]["published_se"], 2),
            _pm(s["ll"]["mean"], s["ll"]["se"], 3),
            _pm(s["ll"]["published"], s["ll"]["published_se"], 2),
            verdict,
            f"{d['timing']['seconds_per_split']:.1f}",
        )
    console.print(table)
    console.print(
        "mean ± standard error over splits; verdict: within 2 combined standard errors of the paper, or better"
    )
    coverage = Table(
        title="held-out coverage of the interval for y — served tau (mcdrop's estimate) | the grid's tau — "
        "and of the interval of the mean"
    )
    coverage.add_column("dataset")
    levels = list(results["datasets"][0]["summary"]["coverage"])
    kinds = {"predictive": "served", "grid_tau": "grid tau", "epistemic": "mean only"}
    for level in levels:
        for label in kinds.values():
            coverage.add_column(f"{float(level):.0%} {label}", justify="right")
    for d in results["datasets"]:
        c = d["summary"]["coverage"]
        coverage.add_row(d["dataset"], *[f"{c[level][kind]:.3f}" for level in levels for kind in kinds])
    console.print(coverage)
    for d in results["datasets"]:
        if "paper_rmse" not in d["per_split"][0]:
            continue
        splits = Table(title=f"{d['dataset']}: split by split against the published values")
        headers = ("split", "rate", "tau", "tau paper", "served tau", "RMSE", "RMSE paper", "LL", "LL paper")
        for column in (*headers, "95% cover"):
            splits.add_column(column, justify="right")
        for r in d["per_split"]:
            splits.add_row(
                str(r["split"]),
                f"{r['best']['rate']:g}",
                f"{r['best']['tau']:g}",
                f"{r.get('paper_tau', float('nan')):g}",
                f"{r['best']['served_tau']:.3g}",
                f"{r['rmse']:.3f}",
                f"{r['paper_rmse']:.3f}",
                f"{r['ll']:.3f}",
                f"{r['paper_ll']:.3f}",
                f"{r['coverage']['0.95']['predictive']:.3f}",
            )
        console.print(splits)
        s = d["summary"]
        console.print(
            f"{d['dataset']}: ours at least as good as the paper on {s['rmse']['splits_at_least_as_good']}/"
            f"{d['splits']} splits (RMSE) and {s['ll']['splits_at_least_as_good']}/{d['splits']} (LL); mean "
            f"difference ours - paper: RMSE {s['rmse']['mean_difference']:+.3f}, LL {s['ll']['mean_difference']:+.3f}"
        )
    if "total_seconds" in results:
        console.print(f"wall time {results['total_seconds']:.0f} s with {results['jobs']} training threads")


def print_regression(results: dict[str, Any]) -> None:
    from rich.table import Table

    console = stdout_console()
    table = Table(
        title=f"held-out coverage of served regression intervals · mcdrop train --hidden "
        f"{','.join(map(str, results['hidden']))} --dropout {results['dropout'][0]} · T = {results['samples']}"
    )
    columns = ["dataset", "test rows", "RMSE", "tau"]
    columns += [f"{level} {kind}" for level in ("50%", "90%", "95%") for kind in ("predictive", "mean only")]
    for column in columns:
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for d in results["datasets"]:
        c = d["coverage"]
        table.add_row(
            d["dataset"],
            str(d["test_rows"]),
            f"{d['rmse']:.4g}",
            ", ".join(f"{t:.3g}" for t in d["tau"]),
            *[f"{c[level][kind]:.3f}" for level in ("0.5", "0.9", "0.95") for kind in ("predictive", "epistemic")],
        )
    console.print(table)
    console.print(
        "predictive: lower/upper (MC samples + observation noise 1/tau, estimated by mcdrop train on its validation "
        "split); mean only: mean_lower/mean_upper, the samples' own spread"
    )


def print_moments(results: dict[str, Any]) -> None:
    from rich.table import Table

    console = stdout_console()
    samples = results["samples"]
    table = Table(title=f"one-pass moments vs Monte Carlo (T = {samples}) · classification: digits held-out rows")
    for column in ("model", "method", "accuracy", "NLL", "ECE", "Spearman MI", "OOD AUROC (MI)", "export"):
        table.add_column(column, justify="left" if column in ("model", "method") else "right")
    for found in results["classification"]:
        if not found["available"]:
            table.add_row(found["model"], f"no moments graph: {found['reason']}", "", "", "", "", "", "")
            continue
        auroc = found["ood_auroc_mutual_information"]
        rho = found["spearman_mutual_information"]["test"]
        for method, scores in found["scores"].items():
            side = "mc" if method.startswith("mc") else "moments"
            shown_rho = "" if side == "mc" else f"{rho:.3f}"
            shown_auroc = "" if method == "moments_mean_field" else f"{auroc[side]:.4f}"
            verdict = "" if side == "mc" else "published" if found.get("published") else "refused by its check"
            table.add_row(found["model"], method, f"{scores['accuracy']:.4f}", f"{scores['nll']:.4f}",
                          f"{scores['ece']:.4f}", shown_rho, shown_auroc, verdict)  # fmt: skip
    console.print(table)
    protocol = "UCI protocol" if results.get("uci_protocol", True) else "NON-PROTOCOL UCI run (--epoch-factor)"
    table = Table(title=f"regression: {protocol}, mean ± standard error over splits (T = {samples})")
    for column in ("dataset", "splits (published)", "method", "RMSE", "test LL", "95% coverage", "Spearman std"):
        table.add_column(column, justify="left" if column in ("dataset", "method") else "right")
    for found in results["regression"]:
        summary = found["summary"]
        for side in ("mc", "moments"):
            rho = summary["spearman_std"]
            table.add_row(
                found["dataset"], f"{found['available_splits']} ({found.get('published_splits', '?')})", side,
                _pm(summary["rmse"][side]["mean"], summary["rmse"][side]["se"], 3),
                _pm(summary["ll"][side]["mean"], summary["ll"][side]["se"], 3),
                _pm(summary["coverage_95"][side]["mean"], summary["coverage_95"][side]["se"], 3),
                "" if side == "mc" else _pm(rho["mean"], rho["se"], 3),
            )  # fmt: skip
    console.print(table)
    table = Table(title="latency: median ms per call, one thread (graphs only; moments_summary: host logit draws)")
    columns = ["model", "B"]
    for timing in results["latency"]:
        for times in timing["batches"].values():
            columns += [k for k in times if k not in columns]
    for column in columns:
        table.add_column(column, justify="left" if column == "model" else "right")
    for timing in results["latency"]:
        for batch, times in timing["batches"].items():
            table.add_row(timing["model"], batch, *[f"{times.get(c, float('nan')):.4g}" for c in columns[2:]])
    console.print(table)
    _targets(results["targets"])


def _verdict(within: bool | None) -> str:
    return "n/a (1 split)" if within is None else "ok" if within else "off"


def _pm(mean: float, se: float, digits: int) -> str:
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:.2f}" for v in value) + "]"
    return f"{value:.4f}"


def _targets(targets: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="targets")
    for column in ("target", "value", "bound", "met"):
        table.add_column(column)
    for t in targets:
        table.add_row(
            t["target"], _shown(t["value"]), _shown(t["bound"]), "[green]yes[/]" if t["met"] else "[red]no[/]"
        )
    stdout_console().print(table)


def print_selective(results: dict[str, Any]) -> None:
    """AURC per score, the calibrated thresholds on held-out rows, and conformal vs Gaussian intervals."""
    from rich.table import Table

    console = stdout_console()
    quick = " — QUICK RUN (short training)" if results.get("quick") else ""
    for model in results["classification"]:
        if "export_error" in model:
            console.print(f"{model['model']}: the export refused its calibration: {model['export_error']}")
        rows = model["rows"]
        aurc = Table(title=f"{model['model']}: AURC on {rows['test']} held-out rows (test error "
                           f"{model['test_error_rate']:.4f}; lower is better){quick}")  # fmt: skip
        aurc.add_column("score")
        aurc.add_column("AURC", justify="right")
        aurc.add_column("× deterministic", justify="right")
        baseline = model["scores"]["deterministic_least_confidence"]["aurc"]
        for name, found in sorted(model["scores"].items(), key=lambda kv: kv[1]["aurc"]):
            ratio = f"{found['aurc'] / baseline:.2f}" if baseline > 0 else "—"
            aurc.add_row(name, f"{found['aurc']:.5f}", ratio)
        console.print(aurc)
        decided = Table(title=f"{model['model']}: thresholds calibrated on {rows['calibration']} rows "
                              f"(δ = {results['delta']}), applied to {rows['test']} held-out rows")  # fmt: skip
        for column in ("target", "score", "calibration coverage / risk", "held-out coverage", "held-out risk [95 %]",
                       "noise abstained"):  # fmt: skip
            decided.add_column(column, justify="left" if column in ("target", "score") else "right")
        for t in model["targets"]:
            if not t["reached"]:
                decided.add_row(t["target"], "—", "[red]unreachable[/]", "—", "—", "—")
                continue
            low, high = t["test_risk_interval"]
            risk = "—" if t["test_risk"] is None else f"{t['test_risk']:.4f} [{low:.4f}, {high:.4f}]"
            decided.add_row(t["target"], t["score"], f"{t['calibration_coverage']:.3f} / {t['calibration_risk']:.4f}",
                            f"{t['test_coverage']:.3f}", risk, f"{t['noise_abstained']:.3f}")  # fmt: skip
        console.print(decided)
    if results["regression"]:
        table = Table(title=f"regression: held-out coverage and mean width, conformal vs Gaussian intervals "
                            f"(mean over splits){quick}")  # fmt: skip
        table.add_column("dataset")
        table.add_column("splits", justify="right")
        for level in ("0.8", "0.9", "0.95"):
            table.add_column(f"{float(level):.0%} conformal", justify="right")
            table.add_column(f"{float(level):.0%} Gaussian", justify="right")
        table.add_column("width 95 % conformal / Gaussian", justify="right")
        for d in results["regression"]:
            cells = []
            for level in ("0.8", "0.9", "0.95"):
                found = d["levels"][level]
                cells += [f"{found['conformal']['coverage']:.3f}", f"{found['gaussian']['coverage']:.3f}"]
            widths = d["levels"]["0.95"]
            ratio = widths["conformal"]["width"] / widths["gaussian"]["width"]
            table.add_row(d["dataset"], str(d["splits"]), *cells, f"{ratio:.2f}")
        console.print(table)
    checks = Table(title="the issue's targets")
    for column in ("check", "value", "target", "met"):
        checks.add_column(column)
    for c in results["checks"]:
        checks.add_row(c["what"], _shown(c["value"]), c["target"], "[green]yes[/]" if c["met"] else "[red]no[/]")
    console.print(checks)
