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
        help="measure the quality of the deployed uncertainty (calibration, OOD, UCI reproduction)",
        description="Train, export and evaluate through the exported LiteRT graphs. --suite digits: accuracy, "
        "NLL, Brier, ECE (weight scaling vs MC), OOD AUROC (train 0-4, score 5-9), MC averaging vs weight "
        "scaling. --suite uci: Gal & Ghahramani's UCI regression protocol, printed beside the paper's table.",
    )
    add = evaluate.add_argument
    add("--suite", choices=["digits", "uci"], required=True)
    add("--dataset", type=names, default=None, metavar="NAME[,NAME]", help="UCI datasets (default: all four)")
    add("--splits", type=positive_int, default=None, help="UCI splits to run (default: all 20)")
    add("--samples", type=positive_int, default=10_000, help="UCI test samples T (default %(default)s)")
    add(
        "--epoch-factor",
        type=positive_float,
        default=10.0,
        help="UCI epochs = n_epochs x this (default %(default)s; smaller only for smoke tests)",
    )
    add(
        "--uci-root",
        type=Path,
        default=None,
        metavar="DIR",
        help="the UCI data: DIR/<dataset>/data.txt, index_*.txt split files and the grids (required with --suite uci)",
    )
    add("--workdir", type=Path, default=None, help="keep models here (default: a temp dir)")
    add("--json", type=Path, default=None, metavar="FILE")
    add("--figures", type=Path, default=None, metavar="DIR")
    add("--seed", type=int, default=0)
    add("--quiet", action="store_true")
    evaluate.set_defaults(handler=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    if args.suite == "uci":
        if args.uci_root is None:
            raise InvalidArgument(
                "--suite uci needs --uci-root DIR: the UCI regression data with its 20 standard splits "
                "(DIR/<dataset>/data.txt, index_train_K.txt, index_test_K.txt, ...)."
            )
        if not args.uci_root.is_dir():
            raise NotFound(f"UCI data directory not found: {args.uci_root}. Expected DIR/<dataset>/data.txt.")
    prepare(args, *TRAIN_EXTRA, "matplotlib")
    from mcdrop.pipeline.evaluation.report import print_digits, print_uci
    from mcdrop.pipeline.progress import progress_bar

    with tempfile.TemporaryDirectory(prefix="mcdrop-evaluate-") as tmp, progress_bar() as bar:
        if args.quiet:
            bar.stop()
        workdir = args.workdir or Path(tmp)
        if args.suite == "digits":
            from mcdrop.pipeline.evaluation.digits import run_digits

            task = bar.add_task("evaluate digits", total=5, status="")

            def step(text: str) -> None:
                bar.update(task, status=text, advance=1)

            results: dict[str, Any] = run_digits(workdir, seed=args.seed, step=step)
            bar.update(task, completed=5, status="done")
            if args.figures is not None:
                from mcdrop.pipeline.evaluation.figures import digits_figures

                results["figures"] = [str(p) for p in digits_figures(results, args.figures)]
        else:
            from mcdrop.pipeline.evaluation.uci import PUBLISHED, run_uci

            datasets = args.dataset or list(PUBLISHED)
            task = bar.add_task("evaluate uci", total=len(datasets) * (args.splits or 20), status="")
            results = {"datasets": []}
            for name in datasets:
                results["datasets"].append(
                    run_uci(
                        args.uci_root,
                        name,
                        workdir,
                        splits=args.splits,
                        samples=args.samples,
                        epoch_factor=args.epoch_factor,
                        seed=args.seed,
                        step=lambda text: bar.update(task, status=text, advance=1),
                    )
                )
            bar.update(task, status="done")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (print_digits if args.suite == "digits" else print_uci)(results)
    return 0
