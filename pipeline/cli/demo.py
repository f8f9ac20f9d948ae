"""``mcdrop demo``: the main job end to end on the bundled digits data.

train → export (calibrated on the validation rows: answer 95 % of rows like them, abstain on the rest) → start
``mcdrop serve`` as a real process → query it with a held-out digit and with noise → print both predictions with
their uncertainty and decision → stop it with SIGTERM.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.pipeline.cli import prepare

DEFAULT_DEMO_DIR = "demo-output"


def register(subcommands: Any) -> None:
    demo = subcommands.add_parser(
        "demo",
        help="run the main job end to end on the bundled digits data",
        description="Train a dropout MLP on the bundled digits data, export it, serve it, query it with a "
        "held-out digit and with noise, and stop the server.",
    )
    demo.add_argument("--workdir", default=DEFAULT_DEMO_DIR, help="where to write everything (default: %(default)s)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    prepare(args)
    from mcdrop.pipeline.cli.export import export_with_status, print_export_summary
    from mcdrop.pipeline.cli.train import print_training_summary
    from mcdrop.pipeline.export.exporter import ExportOptions
    from mcdrop.pipeline.training.config import TrainConfig
    from mcdrop.pipeline.training.loop import train
    from mcdrop.serving.calibration.calibrate import CalibrationOptions, parse_target
    from mcdrop.serving.cli.calibrate import print_calibration

    workdir = Path(args.workdir)
    repository = workdir / "repository"
    config = TrainConfig(out=str(workdir / "digits-mlp"), dataset="digits", seed=1, quiet=args.quiet).validate()
    print(f"[1/4] training a dropout MLP on the bundled digits data → {config.out}")
    record = train(config)
    print_training_summary(record)
    print(f"[2/4] exporting deterministic and Monte-Carlo LiteRT graphs → {repository}, calibrated on the "
          "validation rows (answer 95 % of rows like them, abstain on the rest)")  # fmt: skip
    calibration = CalibrationOptions(_validation_file(record, workdir), abstain_target=parse_target("coverage=0.95"))
    options = ExportOptions(model_path=Path(config.out) / "model.keras", repository=repository, name="digits",
                            calibration=calibration)  # fmt: skip
    version, manifest = export_with_status(options, quiet=args.quiet)
    print_export_summary(repository, version, manifest)
    if manifest.calibration is not None:
        print_calibration(manifest.calibration)
    print("[3/4] starting the gRPC server (mcdrop serve) on a free loopback port")
    print("[4/4] querying it with an in-distribution digit and an out-of-distribution input")
    return query_demo_server(repository, workdir / "server.log", record)


def query_demo_server(repository: Path, log: Path, record: dict[str, Any]) -> int:
    from mcdrop.serving.cli.predict import print_prediction
    from mcdrop.serving.client import Client
    from mcdrop.serving.errors import MCDropError
    from mcdrop.serving.harness.process import ServerProcess

    in_distribution, out_of_distribution = _demo_inputs(record)
    with ServerProcess(repository, log=log) as server, Client(server.address, timeout=30) as client:
        print("in-distribution: a held-out digit from the validation split")
        digit = client.predict("digits", in_distribution, samples=100, seed=0)
        print_prediction(digit)
        print("out-of-distribution: uniform noise in the pixel range (not a digit)")
        noise = client.predict("digits", out_of_distribution, samples=100, seed=0)
        print_prediction(noise)
        if digit.mutual_information is None or noise.mutual_information is None:
            raise MCDropError("the demo model answered as a regressor; expected a classifier")
        mi_digit, mi_noise = float(digit.mutual_information[0]), float(noise.mutual_information[0])
        print(
            f"mutual information (epistemic uncertainty): digit {mi_digit:.4f} nats, "
            f"noise {mi_noise:.4f} nats ({mi_noise / max(mi_digit, 1e-12):.0f}x)"
        )
        code = server.stop()
    print(f"server stopped with exit code {code}; its log is {log}")
    return 0 if code == 0 else 1


def _validation(record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The rows the training stage held out (its validation split), with their labels."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    _, x_val, _, y_val = train_test_split(
        digits.data, digits.target, test_size=round(len(digits.data) * record["config"]["val_fraction"]),
        random_state=record["config"]["seed"], stratify=digits.target,
    )  # fmt: skip
    return x_val.astype(np.float32), y_val


def _validation_file(record: dict[str, Any], workdir: Path) -> Path:
    x_val, y_val = _validation(record)
    path = workdir / "validation.npz"
    np.savez(path, x=x_val, y=y_val)
    return path


def _demo_inputs(record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    x_val, _ = _validation(record)
    noise = np.random.default_rng(record["config"]["seed"]).uniform(0, 16, size=(1, 64))
    return x_val[:1], noise.astype(np.float32)
