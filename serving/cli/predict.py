"""``mcdrop predict``: ask a running server for a prediction with uncertainty; a table or ``--json``."""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mcdrop.serving.cli.arguments import positive_float, positive_int
from mcdrop.serving.errors import InvalidArgument, NotFound
from mcdrop.serving.models.manifest import Manifest

__all__ = ["print_prediction", "register"]

NPY_MAGIC = b"\x93NUMPY"


def register(subcommands: Any) -> None:
    predict = subcommands.add_parser(
        "predict",
        help="ask a running server for a prediction with uncertainty",
        description="Send the rows of FILE to a server. FILE is .npy or JSON (a list of rows, or one row); "
        "a pipe such as <(...) or '-' for standard input works too (the format is recognised from the content).",
    )
    add = predict.add_argument
    add("--server", default="localhost:8500", metavar="HOST:PORT", help="server address (default %(default)s)")
    add("--model", required=True, help="model name")
    add("--version", type=positive_int, default=None, help="model version (default: latest)")
    add("--input", required=True, metavar="FILE", help="input rows: .npy or .json file, a pipe, or - for stdin")
    add("--mode", choices=["deterministic", "monte_carlo"], default=None, help="default: monte_carlo if possible")
    add("--samples", type=positive_int, default=None, metavar="T", help="Monte-Carlo samples (default: the model's)")
    add("--seed", type=int, default=None, help="seed: identical answers on every call")
    add("--tolerance", type=positive_float, default=None, help="adaptive: sample until the standard error is below")
    add("--interval", type=float, default=None, help="regression interval level (default 0.95)")
    add("--timeout", type=positive_float, default=30.0, help="deadline in seconds (default %(default)s)")
    add("--json", action="store_true", help="print JSON instead of a table")
    add("--ca", default=None, metavar="PEM", help="CA bundle to verify the server (turns on TLS)")
    add("--cert", default=None, metavar="PEM", help="client certificate, for mutual TLS")
    add("--key", default=None, metavar="PEM", help="client private key, for mutual TLS")
    add("--server-name", default=None, help="name to verify in the server certificate")
    add("--token-file", default=None, metavar="FILE", help="file holding the bearer token")
    predict.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from mcdrop.serving.client import Client

    x = read_input(args.input)
    token = None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise NotFound(f"Cannot read token file {args.token_file}: {exc}") from None
    security = {"ca": args.ca, "cert": args.cert, "key": args.key, "server_name": args.server_name, "token": token}
    with Client(args.server, timeout=args.timeout, **security) as client:
        prediction = client.predict(
            args.model,
            x,
            version=args.version,
            mode=args.mode,
            samples=args.samples or 0,
            seed=args.seed,
            tolerance=args.tolerance,
            interval=args.interval,
        )
        source = (
            uncertainty_source(client.manifest(args.model, prediction.version))
            if prediction.mode != "deterministic"
            else None
        )
    if args.json:
        json.dump({**prediction_as_json(prediction), **({"uncertainty_from": source} if source else {})}, sys.stdout,
                  indent=2)  # fmt: skip
        print()
    else:
        print_prediction(prediction)
        if source:
            print_source(source)
    return 0


def uncertainty_source(manifest: Manifest) -> dict[str, Any]:
    """Which dropout layers the Monte-Carlo uncertainty comes from (``mcdrop export --mc-layers``)."""
    return {
        "mc_layers": manifest.mc_layers,
        "sampled": [d.name for d in manifest.dropout_layers],
        "unsampled": [d.name for d in manifest.unsampled_dropout_layers],
    }


def print_source(source: dict[str, Any]) -> None:
    from mcdrop.serving.cli.console import stdout_console

    sampled, unsampled = source["sampled"], source["unsampled"]
    shown = ", ".join(sampled[:6]) + (f" and {len(sampled) - 6} more" if len(sampled) > 6 else "")
    line = f"Uncertainty from {len(sampled)} sampled dropout site(s): {shown}"
    if unsampled:
        line += f"; {len(unsampled)} other(s) run as in inference (exported with --mc-layers {source['mc_layers']})"
    stdout_console().print(line)


def read_input(source: str) -> np.ndarray:
    """Rows from a ``.npy`` or JSON file, a pipe, or ``-`` (stdin), as float32 ``[B, ...]``.

    The format comes from the content (the ``.npy`` magic bytes, else JSON), so pipes and
    stdin, which have no suffix, work. A single row becomes a batch of one.

    Raises:
        NotFound: the file does not exist.
        InvalidArgument: the content is neither, or does not hold numbers.
    """
    name = "standard input" if source == "-" else source
    try:
        content = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except FileNotFoundError:
        raise NotFound(f"Input file not found: {source}") from None
    except OSError as exc:
        raise InvalidArgument(f"Cannot read {name}: {exc}") from None
    try:
        if content.startswith(NPY_MAGIC):
            array = np.load(io.BytesIO(content), allow_pickle=False)
        else:
            array = np.asarray(json.loads(content.decode("utf-8")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            f"Cannot read {name}: expected a .npy array or JSON rows of numbers. ({type(exc).__name__}: {exc})"
        ) from None
    if array.dtype.kind not in "biuf" or array.size == 0:
        raise InvalidArgument(f"{name} must hold rows of numbers. Received dtype {array.dtype}, shape {array.shape}.")
    if array.ndim == 1:
        array = array[np.newaxis]
    return np.ascontiguousarray(array, dtype=np.float32)


def prediction_as_json(p: Any) -> dict[str, Any]:
    fields = {k: v for k, v in vars(p).items() if v is not None}
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in fields.items()}


def print_prediction(p: Any) -> None:
    """One table row per input row: the prediction and its uncertainty."""
    from rich.table import Table

    from mcdrop.serving.cli.console import stdout_console

    title = f"{p.model} v{p.version} · {p.mode} · T={p.samples}" + (f" · seed {p.seed}" if p.seed is not None else "")
    table = Table(title=title)
    if p.task == "classification":
        for column in ("row", "predicted", "p(predicted)", "± std", "entropy (nats)", "mutual info", "var. ratio"):
            table.add_column(column, justify="right")
        for i, cls in enumerate(p.predicted_class):
            label = p.predicted_label[i] if p.predicted_label else str(cls)
            table.add_row(
                str(i),
                label,
                f"{p.mean[i, cls]:.4f}",
                f"{p.std[i, cls]:.4f}",
                f"{p.predictive_entropy[i]:.4f}",
                f"{p.mutual_information[i]:.4f}",
                f"{p.variation_ratio[i]:.3f}",
            )
    else:
        epistemic_only = p.noise_variance is None
        interval = f"{p.interval:.0%} interval of y" + (" (epistemic only)" if epistemic_only else "")
        for column in ("row", "output", "mean", "± std (model)", "± predictive std", interval, "interval of mean"):
            table.add_column(column, justify="right")
        rows = len(p.mean)
        mean, std, predictive = (a.reshape(rows, -1) for a in (p.mean, p.std, p.predictive_std))
        lower, upper = p.lower.reshape(rows, -1), p.upper.reshape(rows, -1)
        mean_lower, mean_upper = p.mean_lower.reshape(rows, -1), p.mean_upper.reshape(rows, -1)
        for i in range(rows):
            for j in range(mean.shape[1]):
                table.add_row(
                    str(i),
                    str(j),
                    f"{mean[i, j]:.4g}",
                    f"{std[i, j]:.3g}",
                    f"{predictive[i, j]:.3g}",
                    f"[{lower[i, j]:.4g}, {upper[i, j]:.4g}]",
                    f"[{mean_lower[i, j]:.4g}, {mean_upper[i, j]:.4g}]",
                )
    stdout_console().print(table)
    if p.task == "regression" and p.noise_variance is None:
        stdout_console().print(
            "This model was exported without an observation-noise estimate: the intervals cover the model's "
            "uncertainty about the mean, not where y will fall (export with --noise-precision TAU to add it)."
        )
