"""``mcdrop calibrate``: calibrate an exported version on labelled rows and publish it as the next version."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from mcdrop.serving.cli.arguments import positive_float

__all__ = ["add_calibration_arguments", "calibration_options", "print_calibration", "register"]


def register(subcommands: Any) -> None:
    calibrate = subcommands.add_parser(
        "calibrate",
        help="calibrate abstention and intervals on labelled rows; publish the result as a new version",
        description="Predict labelled rows the model did not train on (seeded Monte Carlo at the default T, the "
        "server's own code), then record in a new version's manifest: per classification output the risk-coverage "
        "curve of every uncertainty score and the threshold for --abstain-target; per regression output the "
        "conformal scores that give every interval level a finite-sample coverage guarantee. The graphs are copied "
        "unchanged; the calibrated version is the model's next version (published versions never change).",
    )
    add = calibrate.add_argument
    add("version", metavar="REPO/NAME[/VERSION]", help="the version to calibrate (default: the newest)")
    add_calibration_arguments(calibrate, flag="--data")
    add("--quiet", action="store_true", help="no progress bar")
    add("--json", action="store_true", help="print the calibration as JSON")
    calibrate.set_defaults(handler=run)


def add_calibration_arguments(parser: argparse.ArgumentParser, *, flag: str) -> None:
    """The calibration flags, shared with ``mcdrop export`` (which calls the data flag --calibration-data)."""
    add = parser.add_argument
    add(flag, dest="calibration_data", type=Path, required=flag == "--data", metavar="FILE",
        help="labelled rows the model did not train on: .npz (x or each input by name, and the labels), CSV or "
             "Parquet (the input columns and a label column)")  # fmt: skip
    add("--target", default=None, metavar="COLUMN",
        help="the label column (OUTPUT=COLUMN[,OUTPUT=COLUMN] for several outputs; default y in a .npz)")  # fmt: skip
    add("--abstain-target", default=None, metavar="risk=R|coverage=C",
        help="the abstention threshold: selective risk <= R with confidence 1 - delta, or coverage >= C")  # fmt: skip
    add("--abstain-delta", type=positive_float, default=0.05, metavar="DELTA",
        help="the risk target's allowed failure probability (default %(default)s)")  # fmt: skip
    add("--abstain-score", default=None, metavar="NAME",
        help="abstain by this score (mutual_information, predictive_entropy, variation_ratio, least_confidence) "
             "instead of the one with the lowest AURC")  # fmt: skip
    add("--calibration-seed", type=int, default=0, metavar="SEED",
        help="seed of the calibration's Monte-Carlo predictions (default %(default)s)")  # fmt: skip


def calibration_options(args: argparse.Namespace) -> Any:
    """The ``CalibrationOptions`` of the parsed flags; None without calibration data."""
    from mcdrop.serving.calibration.calibrate import CalibrationOptions, parse_target
    from mcdrop.serving.core.scores import Score
    from mcdrop.serving.errors import InvalidArgument

    if args.calibration_data is None:
        for flag in ("target", "abstain_target", "abstain_score"):
            if getattr(args, flag) is not None:
                raise InvalidArgument(f"--{flag.replace('_', '-')} needs calibration data. Expected "
                                      "--calibration-data FILE too.")  # fmt: skip
        return None
    if not 0 < args.abstain_delta < 1:
        raise InvalidArgument(f"Invalid --abstain-delta {args.abstain_delta}. Expected a value in (0, 1), e.g. 0.05.")
    target = parse_target(args.abstain_target, args.abstain_delta) if args.abstain_target else None
    score = None
    if args.abstain_score is not None:
        try:
            score = Score(args.abstain_score)
        except ValueError:
            raise InvalidArgument(f"Unknown --abstain-score {args.abstain_score!r}. Expected one of "
                                  f"{', '.join(s.value for s in Score)}.") from None  # fmt: skip
        if target is None:
            raise InvalidArgument("--abstain-score chooses the score of a threshold. Expected --abstain-target too.")
    return CalibrationOptions(args.calibration_data, args.target, target, score, args.calibration_seed)


def run(args: argparse.Namespace) -> int:
    from mcdrop.serving.calibration.publish import calibrate_version, parse_version_path
    from mcdrop.serving.common.console import progress_bar, stderr

    options = calibration_options(args)
    repository, name, version = parse_version_path(args.version)
    if args.quiet or args.json or not stderr.is_terminal:
        source, published, manifest = calibrate_version(repository, name, version, options)
    else:
        with progress_bar(transient=True) as bar:
            task = bar.add_task("predicting calibration rows", total=None, status="")
            source, published, manifest = calibrate_version(
                repository, name, version, options, lambda done, total: bar.update(task, completed=done, total=total)
            )
    assert manifest.calibration is not None
    if args.json:
        record = {"model": name, "source_version": source, "version": published,
                  "calibration": manifest.calibration.to_json()}  # fmt: skip
        json.dump(record, sys.stdout, indent=2)
        print()
        return 0
    print_calibration(manifest.calibration)
    where = repository / name / str(published)
    print(f"published {where} (version {published}: version {source}'s graphs, calibrated)")
    return 0


def print_calibration(calibration: Any) -> None:
    """Tables of a ``Calibration``: per classification output every score's AURC and threshold; per regression
    output the Gaussian interval's coverage and the conformal multipliers."""
    from rich.table import Table

    from mcdrop.serving.common.console import stdout_console
    from mcdrop.serving.models.calibration import ClassificationCalibration

    console = stdout_console()
    target = f" · target {calibration.target} (δ = {calibration.target.delta:g})" if calibration.target else ""
    console.print(f"calibrated on {calibration.rows} rows of {calibration.data_file} · {calibration.mode} · "
                  f"T={calibration.samples} · seed {calibration.seed}{target}")  # fmt: skip
    for output in calibration.outputs:
        if isinstance(output, ClassificationCalibration):
            table = Table(title=f"output {output.output}: error rate {output.error_rate:.4f} on {output.rows} rows")
            for column in ("score", "AURC", "threshold", "coverage", "risk", "risk bound"):
                table.add_column(column, justify="left" if column == "score" else "right")
            for score in output.scores:
                chosen = " ← abstains by" if score.name == output.score else ""
                selection = score.selection
                if selection is None:
                    cells = ["—", "—", "—", "unreachable" if score.unreachable else "—"]
                else:
                    bound = "—" if selection.bound is None else f"{selection.bound:.4f}"
                    threshold = "accept all" if math.isinf(selection.threshold) else f"{selection.threshold:.4g}"
                    cells = [threshold, f"{selection.coverage:.3f}", f"{selection.risk:.4f}", bound]
                table.add_row(score.name + chosen, f"{score.aurc:.5f}", *cells)
            console.print(table)
        else:
            table = Table(title=f"output {output.output}: conformal intervals from {output.rows} rows")
            for column in ("level", "Gaussian coverage (calibration rows)", "conformal q̂ (× predictive std)"):
                table.add_column(column, justify="right")
            for level, covered in output.gaussian_coverage.items():
                multiplier = output.conformal.multiplier(float(level))
                shown = "—" if multiplier is None else ", ".join(f"{m:.3f}" for m in multiplier[:4])
                more = " …" if multiplier is not None and len(multiplier) > 4 else ""
                table.add_row(level, f"{covered:.3f}", shown + more)
            console.print(table)
