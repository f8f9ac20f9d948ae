"""``mcdrop evaluate``: the quality of the deployed uncertainty, measured through the exported graphs."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from mcdrop.pipeline.cli import TRAIN_EXTRA, prepare
from mcdrop.serving.cli.arguments import names, positive_float, positive_int
from mcdrop.serving.errors import InvalidArgument, NotFound


def register(subcommands: Any) -> None:
    evaluate = subcommands.add_parser(
        "evaluate",
        help="measure the quality of the deployed uncertainty (calibration, OOD, interval coverage, UCI reproduction)",
        description="Train, export and evaluate through the exported LiteRT graphs. --suite digits: accuracy, "
        "NLL, Brier, ECE (weight scaling vs MC), OOD AUROC (train 0-4, score 5-9), MC averaging vs weight "
        "scaling. --suite regression: held-out coverage of the served intervals of mcdrop train regression models "
        "(diabetes and the bundled UCI data). --suite uci: Gal & Ghahramani's UCI regression protocol (n_epochs x "
        "100, grid search, T = 10,000), printed beside the paper's table, split by split. --suite moments: the "
        "one-pass moments graph vs Monte Carlo (T = 1,000) on the digits MLP and CNN and the bundled UCI datasets "
        "(default 5 splits each), with latency. --suite selective: abstention with a guaranteed risk on the digits "
        "MLP and CNN (train 50 %, calibrate 35 %, test 15 %) and conformal vs Gaussian intervals on diabetes and the "
        "bundled UCI data (default 20 splits each).",
    )
    add = evaluate.add_argument
    add("--suite", choices=["digits", "regression", "uci", "moments", "selective"], required=True)
    add(
        "--dataset",
        type=names,
        default=None,
        metavar="NAME[,NAME]",
        help="UCI datasets (default: every dataset in the UCI data: the four bundled ones)",
    )
    add(
        "--splits",
        type=positive_int,
        default=None,
        help="UCI: run the first N splits (default: all 20; the moments suite: 5)",
    )
    add("--samples", type=positive_int, default=None, help="test samples T (default: uci 10,000, regression 1,000)")
    add(
        "--validation-samples",
        type=positive_int,
        default=10_000,
        help="UCI grid-search validation samples T (default %(default)s, as the paper)",
    )
    add(
        "--epoch-factor",
        type=positive_float,
        default=100.0,
        help="UCI epochs = n_epochs x this (default %(default)s, the published protocol; any other value is "
        "reported as a non-protocol run, and --suite moments then trains its digits models for 5 epochs)",
    )
    add(
        "--uci-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="UCI data: DIR/<dataset>/data.txt, the index_*.txt splits and the grids, or the paper repository's "
        "UCI_Datasets/ (DIR/<dataset>/data/...) (default: the bundled bostonHousing, concrete, energy, "
        "wine-quality-red)",
    )
    add("--jobs", type=positive_int, default=None, help="UCI: threads for training (default: the machine's cores)")
    add("--workdir", type=Path, default=None, help="keep models here (default: a temp dir)")
    add("--json", type=Path, default=None, metavar="FILE")
    add("--figures", type=Path, default=None, metavar="DIR")
    add("--seed", type=int, default=0)
    add("--quiet", action="store_true")
    evaluate.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    if args.suite == "uci" and args.uci_root is not None and not args.uci_root.is_dir():
        raise NotFound(f"UCI data directory not found: {args.uci_root}. Expected DIR/<dataset>/data.txt.")
    prepare(args, *TRAIN_EXTRA, "matplotlib")
    from mcdrop.pipeline.evaluation.report import (
        print_digits,
        print_moments,
        print_regression,
        print_selective,
        print_uci,
    )
    from mcdrop.serving.common.console import progress_bar

    with tempfile.TemporaryDirectory(prefix="mcdrop-evaluate-") as tmp, progress_bar(counts=args.suite != "uci") as bar:
        if args.quiet:
            bar.stop()
        workdir = args.workdir or Path(tmp)
        if args.suite == "regression":
            from mcdrop.pipeline.evaluation.regression import DEFAULT_DATASETS, run_regression

            names = args.dataset or list(DEFAULT_DATASETS)
            task = bar.add_task("evaluate regression", total=len(names), status="")
            results: dict[str, Any] = run_regression(
                workdir,
                datasets=names,
                seed=args.seed,
                samples=args.samples or 1000,
                step=lambda text: bar.update(task, status=text, advance=1),
            )
            bar.update(task, completed=len(names), status="done")
        elif args.suite == "digits":
            from mcdrop.pipeline.evaluation.digits import run_digits

            task = bar.add_task("evaluate digits", total=5, status="")

            def step(text: str) -> None:
                bar.update(task, status=text, advance=1)

            results = run_digits(workdir, seed=args.seed, step=step)
            bar.update(task, completed=5, status="done")
            if args.figures is not None:
                from mcdrop.pipeline.evaluation.figures import digits_figures

                results["figures"] = [str(p) for p in digits_figures(results, args.figures)]
        elif args.suite == "moments":
            results = _run_moments(args, workdir, bar)
        elif args.suite == "selective":
            results = _run_selective(args, workdir, bar)
        else:
            results = _run_uci(args, workdir, bar)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    printers = {"digits": print_digits, "regression": print_regression, "uci": print_uci, "moments": print_moments,
                "selective": print_selective}  # fmt: skip
    printers[args.suite](results)
    return 0


def _run_moments(args: argparse.Namespace, workdir: Path, bar: Any) -> dict[str, Any]:
    import os

    from mcdrop.pipeline.evaluation import uci
    from mcdrop.pipeline.evaluation.moments import ARCHITECTURES, DEFAULT_SPLITS, run_moments

    root = args.uci_root or uci.BUNDLED
    datasets = args.dataset or uci.available_datasets(root)
    splits = args.splits or DEFAULT_SPLITS
    for name in datasets:  # every name and split count checked before the work starts
        data = uci.load(root, name)
        if splits > data.splits:
            raise InvalidArgument(f"Invalid --splits. {name} has {data.splits} splits. Received: {splits}")
    task = bar.add_task("evaluate moments", total=len(ARCHITECTURES) + len(datasets), status="")
    results = run_moments(workdir, uci_root=root, datasets=datasets, splits=splits, seed=args.seed,
                          jobs=args.jobs or os.cpu_count() or 1, epoch_factor=args.epoch_factor,
                          step=lambda text: bar.update(task, status=text, advance=0))  # fmt: skip
    bar.update(task, completed=len(ARCHITECTURES) + len(datasets), status="done")
    if args.figures is not None:
        from mcdrop.pipeline.evaluation.figures import moments_figure

        results["figures"] = [str(moments_figure(results, args.figures))]
    return results


def _run_selective(args: argparse.Namespace, workdir: Path, bar: Any) -> dict[str, Any]:
    from mcdrop.pipeline.evaluation import uci
    from mcdrop.pipeline.evaluation.selective import ARCHITECTURES, QUICK_EPOCHS, REGRESSION_SPLITS, run_selective

    datasets = args.dataset or ["diabetes", *uci.available_datasets(uci.BUNDLED)]
    splits = args.splits or REGRESSION_SPLITS
    for name in datasets:  # every name and split count checked before the work starts
        if name != "diabetes" and splits > uci.load(uci.BUNDLED, name).splits:
            raise InvalidArgument(f"Invalid --splits. {name} has {uci.load(uci.BUNDLED, name).splits} splits. "
                                  f"Received: {splits}")  # fmt: skip
    task = bar.add_task("evaluate selective", total=len(ARCHITECTURES) + len(datasets), status="")
    results = run_selective(workdir, datasets=datasets, splits=splits, seed=args.seed,
                            epochs=None if args.epoch_factor == 100.0 else QUICK_EPOCHS,
                            step=lambda text: bar.update(task, status=text, advance=1))  # fmt: skip
    bar.update(task, completed=len(ARCHITECTURES) + len(datasets), status="done")
    if args.figures is not None:
        from mcdrop.pipeline.evaluation.figures import selective_figure

        results["figures"] = [str(selective_figure(results, args.figures))]
    return results


def _run_uci(args: argparse.Namespace, workdir: Path, bar: Any) -> dict[str, Any]:
    import os
    import time

    from mcdrop.pipeline.evaluation import uci

    root = args.uci_root or uci.BUNDLED
    datasets = args.dataset or uci.available_datasets(root)
    if not datasets:
        raise NotFound(f"No UCI dataset in {root}. Expected DIR/<dataset>/data.txt.")
    loaded = [uci.load(root, name) for name in datasets]  # every name checked before hours of work
    for data in loaded:
        if args.splits is not None and args.splits > data.splits:
            raise InvalidArgument(f"Invalid --splits. {data.name} has {data.splits} splits. Received: {args.splits}")
    units = [uci.work_units(d, args.splits or d.splits, max(1, round(d.epochs * args.epoch_factor))) for d in loaded]
    task = bar.add_task("evaluate uci", total=sum(units), status="")
    jobs = args.jobs or os.cpu_count() or 1
    started = time.monotonic()
    results: dict[str, Any] = {"datasets": [], "jobs": jobs}
    for data in loaded:
        results["datasets"].append(
            uci.run_uci(
                root,
                data.name,
                workdir,
                splits=args.splits,
                samples=args.samples or 10_000,
                validation_samples=args.validation_samples,
                epoch_factor=args.epoch_factor,
                seed=args.seed,
                jobs=jobs,
                advance=lambda units, status: bar.update(task, advance=units, status=status),
            )
        )
    bar.update(task, completed=sum(units), status="done")
    results["total_seconds"] = round(time.monotonic() - started, 1)
    return results
