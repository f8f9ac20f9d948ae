"""``mcdrop train``: train a Keras 3 dropout MLP or CNN from a TOML file and flags."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mcdrop.pipeline.cli import prepare
from mcdrop.pipeline.training.config import parse_float_list, parse_int_list
from mcdrop.serving.cli.arguments import names
from mcdrop.serving.errors import InvalidArgument


def register(subcommands: Any) -> None:
    train = subcommands.add_parser(
        "train",
        help="train a Keras dropout model (MLP or CNN)",
        description="Train a Keras 3 dropout model. Settings come from --config (TOML) and flags; flags win.",
    )
    add_train_arguments(train)
    train.set_defaults(handler=run_train)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Training flags; every flag defaults to 'not given' so the TOML file can fill it."""
    s = argparse.SUPPRESS
    add = parser.add_argument
    add("--config", default=None, metavar="FILE", help="TOML file with training settings ([train] table or top level)")
    add("--out", default=s, metavar="DIR", help="output directory for model.keras and training.json")
    add("--dataset", default=s, help="digits (default), diabetes, csv:PATH or npz:PATH")
    add(
        "--target",
        default=s,
        type=names,
        metavar="COL[,COL]",
        help="target column(s) of a CSV file; several regression targets are one vector output, several whose "
        "tasks differ (or several class targets) one head each",
    )
    add(
        "--categorical",
        default=s,
        type=names,
        metavar="COL[,COL]",
        help="categorical CSV columns: one embedding input each, beside a numeric input (Wide & Deep)",
    )
    add("--task", default=s, help="classification, regression or auto (default)")
    add("--architecture", "--arch", dest="architecture", default=s, help="mlp (default) or cnn")
    add("--hidden", default=s, type=_ints, metavar="N,N", help="hidden dense units (default 256,256)")
    add("--dropout", default=s, type=_floats, metavar="R,R", help="dropout after each hidden layer (default 0.2,0.5)")
    add("--input-dropout", default=s, type=float, metavar="R", help="dropout rate on the inputs (default 0)")
    add("--conv-filters", default=s, type=_ints, metavar="N,N", help="CNN filters per block (default 16,32)")
    add("--conv-dropout", default=s, type=_floats, metavar="R,R", help="dropout after each conv block (default 0.1)")
    add("--conv-dropout-type", default=s, help="spatial (whole channels, default) or standard")
    add("--kernel-size", default=s, type=int, help="CNN kernel size (default 3)")
    add("--image-shape", default=s, type=_ints, metavar="H,W[,C]", help="reshape flat rows into images for the CNN")
    add("--max-norm", default=s, type=float, metavar="C", help="max-norm constraint on incoming weights")
    add("--l2", default=s, type=float, help="L2 weight decay (default 0)")
    add("--epochs", default=s, type=int, help="training epochs (default 40)")
    add("--batch-size", default=s, type=int, help="batch size (default 64)")
    add("--learning-rate", default=s, type=float, help="Adam learning rate (default 1e-3)")
    add("--val-fraction", default=s, type=float, help="validation fraction (default 0.2)")
    add("--seed", default=s, type=int, help="random seed; the same seed gives identical weights (default 0)")
    add("--patience", default=s, type=int, help="early-stopping patience in epochs (default: off)")
    add("--quiet", default=s, action="store_true", help="no progress bar")
    add("--json", action="store_true", help="print the training record as JSON instead of a table")


def run_train(args: argparse.Namespace) -> int:
    prepare(args)
    from mcdrop.pipeline.training.config import FIELD_NAMES, load_config
    from mcdrop.pipeline.training.loop import train

    overrides = {name: value for name, value in vars(args).items() if name in FIELD_NAMES}
    config = load_config(args.config, overrides)
    if args.json:
        config.quiet = True
    record = train(config)
    if args.json:
        json.dump(record, sys.stdout, indent=2)
        print()
    else:
        print_training_summary(record)
    return 0


def print_training_summary(record: dict[str, Any]) -> None:
    from rich.table import Table

    from mcdrop.serving.common.console import stdout_console

    final, gap = record["final_metrics"], record["train_val_gap"]
    table = Table(title=f"{record['dataset']['name']} · {record['task']} · {record['epochs_run']} epochs")
    table.add_column("metric")
    table.add_column("train", justify="right")
    table.add_column("validation", justify="right")
    table.add_column("gap", justify="right")
    for metric in final["train"]:
        table.add_row(metric, f"{final['train'][metric]:.4f}", f"{final['val'][metric]:.4f}", f"{gap[metric]:+.4f}")
    console = stdout_console()
    console.print(table)
    layers = ", ".join(f"{d['name']}={d['rate']:g}" for d in record["dropout_layers"]) or "none"
    console.print(f"dropout layers: {layers}")
    console.print(f"saved: {Path(record['config']['out']) / 'model.keras'} and training.json")


def _ints(text: str) -> list[int]:
    try:
        return parse_int_list(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _floats(text: str) -> list[float]:
    try:
        return parse_float_list(text)
    except InvalidArgument as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
