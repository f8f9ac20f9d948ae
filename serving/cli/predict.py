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
from mcdrop.serving.client.dense import DEFAULT_PIXEL_THRESHOLD
from mcdrop.serving.errors import InvalidArgument, NotFound
from mcdrop.serving.models.manifest import Manifest

__all__ = ["print_prediction", "read_input", "read_inputs", "read_npz", "register"]

NPY_MAGIC = b"\x93NUMPY"


def register(subcommands: Any) -> None:
    predict = subcommands.add_parser(
        "predict",
        help="ask a running server for a prediction with uncertainty",
        description="Send the rows of FILE to a server. FILE is .npy, JSON (a list of rows, or one row) or CSV "
        "(rows of numbers, an optional header line); a pipe such as <(...) or '-' for standard input works too (the "
        "format is recognised from the content). A model with several inputs takes one --input NAME=FILE per input, "
        "or one .npz file whose array names are the input names.",
    )
    add = predict.add_argument
    add("--server", default="localhost:8500", metavar="HOST:PORT|URL",
        help="server address: HOST:PORT for gRPC (default %(default)s), or http(s)://HOST:PORT for the Open "
        "Inference Protocol over REST")  # fmt: skip
    add("--model", required=True, help="model name")
    add("--version", type=positive_int, default=None, help="model version (default: latest)")
    add("--input", required=True, action="append", metavar="[NAME=]FILE",
        help="input rows: a .npy, .json or .csv file, a pipe, or - for stdin; NAME=FILE (repeated) for a model with "
        "several inputs, or one .npz file of named arrays")  # fmt: skip
    add(
        "--mode",
        choices=["deterministic", "monte_carlo", "moments"],
        default=None,
        help="default: monte_carlo if possible; moments: one pass of the moments graph (an approximation)",
    )
    add("--samples", type=positive_int, default=None, metavar="T", help="Monte-Carlo samples (default: the model's)")
    add("--seed", type=int, default=None, help="seed: identical answers on every call")
    add("--tolerance", type=positive_float, default=None, help="adaptive: sample until the standard error is below")
    add("--interval", type=float, default=None, help="regression interval level (default 0.95)")
    add("--abstain-threshold", type=float, default=None, metavar="VALUE",
        help="abstain above this score instead of the calibrated threshold (mcdrop calibrate)")  # fmt: skip
    add("--abstain-score", default=None, metavar="NAME",
        help="abstain by this score instead of the calibrated one (e.g. mutual_information)")  # fmt: skip
    add("--variant", default=None, metavar="NAME",
        help="the exported graphs that answer: float32 or a variant the version was exported with (mcdrop export "
             "--quantize: float16, dynamic-int8, int8, int8-io); default: the server's")  # fmt: skip
    add("--timeout", type=positive_float, default=30.0, help="deadline in seconds (default %(default)s)")
    add("--json", action="store_true", help="print JSON instead of a table")
    add(
        "--out",
        type=Path,
        default=None,
        metavar="FILE.npz",
        help="also write every field of the answer (per-pixel maps of a dense output included) to FILE.npz",
    )
    add("--pixel-threshold", type=float, default=None, metavar="VALUE",
        help="dense outputs: the per-image summary's share of pixels whose mutual information (regression: std) "
        f"exceeds VALUE (classification default {DEFAULT_PIXEL_THRESHOLD:g} nats)")  # fmt: skip
    add("--ca", default=None, metavar="PEM", help="CA bundle to verify the server (turns on TLS)")
    add("--cert", default=None, metavar="PEM", help="client certificate, for mutual TLS")
    add("--key", default=None, metavar="PEM", help="client private key, for mutual TLS")
    add("--server-name", default=None, help="name to verify in the server certificate")
    add("--token-file", default=None, metavar="FILE", help="file holding the bearer token")
    predict.set_defaults(handler=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from mcdrop.serving.client import Client

    x = read_inputs(args.input)
    token = None
    if args.token_file:
        try:
            token = Path(args.token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise NotFound(f"Cannot read token file {args.token_file}: {exc}") from None
    security = {"ca": args.ca, "cert": args.cert, "key": args.key, "server_name": args.server_name, "token": token}
    if args.server.startswith(("http://", "https://")):
        return _predict_over_rest(args, x, security)
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
            abstain_threshold=args.abstain_threshold,
            abstain_score=args.abstain_score,
            variant=args.variant,
        )
        source = (
            uncertainty_source(client.manifest(args.model, prediction.version))
            if prediction.mode != "deterministic"
            else None
        )
    return _show(args, prediction, source)


def _predict_over_rest(args: argparse.Namespace, x: Any, security: dict[str, Any]) -> int:
    """The same answer through the Open Inference Protocol over REST (binary tensors both ways)."""
    from mcdrop.serving.client import RestClient

    with RestClient(args.server, timeout=args.timeout, **security) as client:
        prediction = client.predict(args.model, x, version=args.version, mode=args.mode, samples=args.samples or 0,
                                    seed=args.seed, tolerance=args.tolerance, interval=args.interval,
                                    abstain_threshold=args.abstain_threshold,
                                    abstain_score=args.abstain_score, variant=args.variant)  # fmt: skip
        parameters = client.metadata(args.model, prediction.version).get("parameters", {})
    source = None
    if prediction.mode != "deterministic":
        source = {"mc_layers": parameters.get("mc_layers", "all"),
                  "sampled": [n for n in str(parameters.get("sampled_dropout", "")).split(",") if n],
                  "unsampled": [n for n in str(parameters.get("unsampled_dropout", "")).split(",") if n]}  # fmt: skip
    return _show(args, prediction, source)


def _show(args: argparse.Namespace, prediction: Any, source: dict[str, Any] | None) -> int:
    """The answer as a table (and where its uncertainty comes from) or as ``--json``; either transport's. A dense
    output is summarised per image (``--json``: ``images``, besides every field); ``--out`` writes the arrays."""
    from mcdrop.serving.client.dense import image_summaries, is_dense, save_npz

    if args.out is not None:
        if args.out.suffix != ".npz":
            raise InvalidArgument(f"--out writes an .npz file. Expected FILE.npz. Received: {args.out}")
        written = save_npz(prediction, args.out)
    threshold = getattr(args, "pixel_threshold", None)
    if args.json:
        record = {**prediction_as_json(prediction), **({"uncertainty_from": source} if source else {})}
        for name, output in _outputs(prediction):
            if is_dense(output):
                images = image_summaries(output, threshold)
                (record["outputs"][name] if name else record)["images"] = images
        json.dump(record, sys.stdout, indent=2)
        print()
    else:
        print_prediction(prediction, threshold)
        if source:
            print_source(source)
        if args.out is not None:
            print(f"wrote {len(written)} arrays to {args.out}: {', '.join(written)}")
    return 0


def _outputs(prediction: Any) -> list[tuple[str | None, Any]]:
    return list(prediction.outputs.items()) if prediction.outputs else [(None, prediction)]


def uncertainty_source(manifest: Manifest) -> dict[str, Any]:
    """Which dropout layers the Monte-Carlo uncertainty comes from (``mcdrop export --mc-layers``)."""
    return {
        "mc_layers": manifest.mc_layers,
        "sampled": [d.name for d in manifest.dropout_layers],
        "unsampled": [d.name for d in manifest.unsampled_dropout_layers],
    }


def print_source(source: dict[str, Any]) -> None:
    from mcdrop.serving.common.console import stdout_console

    sampled, unsampled = source["sampled"], source["unsampled"]
    shown = ", ".join(sampled[:6]) + (f" and {len(sampled) - 6} more" if len(sampled) > 6 else "")
    line = f"Uncertainty from {len(sampled)} sampled dropout site(s): {shown}"
    if unsampled:
        line += f"; {len(unsampled)} other(s) run as in inference (exported with --mc-layers {source['mc_layers']})"
    stdout_console().print(line)


def read_inputs(values: list[str]) -> np.ndarray | dict[str, np.ndarray]:
    """The ``--input`` values: one FILE (an array, or an ``.npz`` of named arrays), or ``NAME=FILE`` per input.

    Raises:
        InvalidArgument: a mix of the forms, a name given twice, or an unreadable file.
    """
    named = [value for value in values if _named(value)]
    if not named:
        if len(values) != 1:
            raise InvalidArgument(
                f"--input given {len(values)} times without names. Expected one FILE, or NAME=FILE for each input "
                "of a model with several inputs."
            )
        if values[0].endswith(".npz"):
            return read_npz(values[0])
        return read_input(values[0])
    if len(named) != len(values):
        plain = [value for value in values if value not in named]
        raise InvalidArgument(f"--input mixes NAME=FILE with plain files {plain}. Expected NAME=FILE for every input.")
    arrays: dict[str, np.ndarray] = {}
    for value in named:
        name, _, path = value.partition("=")
        if name in arrays:
            raise InvalidArgument(f"--input names {name!r} twice. Expected each input once.")
        arrays[name] = read_input(path)
    return arrays


def _named(value: str) -> bool:
    """``NAME=FILE`` (and not a file whose own name holds ``=``)."""
    name, sign, _ = value.partition("=")
    return bool(sign) and name.isidentifier() and not Path(value).exists()


def read_npz(path: str) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file by its name, as float32 rows."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except FileNotFoundError:
        raise NotFound(f"Input file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise InvalidArgument(f"Cannot read {path} as .npz: {exc}") from None
    if not arrays:
        raise InvalidArgument(f"{path} holds no arrays. Expected one array per model input, named after it.")
    return {name: _rows(array, f"{path}[{name}]") for name, array in arrays.items()}


def read_input(source: str) -> np.ndarray:
    """Rows from a ``.npy``, JSON or CSV file, a pipe, or ``-`` (stdin), as float32 ``[B, ...]``.

    The format comes from the content (the ``.npy`` magic bytes, else JSON, else CSV), so pipes and
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
            array = _json_or_csv(content.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidArgument(
            f"Cannot read {name}: expected a .npy array, JSON rows or CSV rows of numbers. "
            f"({type(exc).__name__}: {exc})"
        ) from None
    return _rows(array, name)


def _json_or_csv(text: str) -> np.ndarray:
    try:
        return np.asarray(json.loads(text))
    except json.JSONDecodeError:
        pass
    lines = [line for line in text.splitlines() if line.strip()]
    try:  # a header line of column names is skipped
        float(lines[0].split(",")[0]) if lines else None
    except ValueError:
        lines = lines[1:]
    if not lines:
        raise ValueError("neither JSON nor a CSV row of numbers")
    return np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)


def _rows(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype.kind not in "biuf" or array.size == 0:
        raise InvalidArgument(f"{name} must hold rows of numbers. Received dtype {array.dtype}, shape {array.shape}.")
    if array.ndim == 1:
        array = array[np.newaxis]
    return np.ascontiguousarray(array, dtype=np.float32)


def prediction_as_json(p: Any) -> dict[str, Any]:
    """The client's prediction as JSON; a model with several outputs has them under ``outputs`` (by name) only."""
    if p.outputs:
        common = ("model", "version", "mode", "samples", "seed", "final", "max_standard_error", "queue_ms",
                  "compute_ms", "variant")  # fmt: skip
        shared = {k: getattr(p, k) for k in common if getattr(p, k) is not None}
        per_output = {name: _output_json(output, common) for name, output in p.outputs.items()}
        return {**shared, "outputs": per_output}
    return _output_json(p, ())


def _output_json(p: Any, leave_out: tuple[str, ...]) -> dict[str, Any]:
    fields = {k: v for k, v in vars(p).items() if v is not None and k not in leave_out and k != "outputs"}
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in fields.items()}


def print_prediction(p: Any, pixel_threshold: float | None = None) -> None:
    """One table row per input row: the prediction and its uncertainty; one table per output of a model with
    several outputs. A dense output (per-pixel fields) gets one row per image: its summary."""
    from mcdrop.serving.client.dense import is_dense

    for name, output in p.outputs.items() or [(None, p)]:
        if is_dense(output):
            _print_dense(output, name, pixel_threshold)
        else:
            _print_output(output, name)


def _print_dense(p: Any, output: str | None, threshold: float | None) -> None:
    from rich.table import Table

    from mcdrop.serving.client.dense import image_summaries
    from mcdrop.serving.common.console import stdout_console

    summaries = image_summaries(p, threshold)
    shape = "×".join(str(d) for d in p.mean.shape[1:])
    title = f"{p.model} v{p.version}" + (f" · output {output}" if output else "") + f" · dense {shape}"
    title += f" · {p.mode} · T={p.samples}" + (f" · seed {p.seed}" if p.seed is not None else "")
    table = Table(title=title)
    if p.task == "classification":
        cut = summaries[0]["threshold"] if summaries else DEFAULT_PIXEL_THRESHOLD
        columns = ["row", "mean MI", "max MI", f"pixels MI > {cut:g}", "mean entropy", "mean p(pred.)", "classes"]
        abstaining = p.abstain is not None
        if abstaining:
            columns.append(f"abstained ({p.abstain_score_name} > {p.abstain_threshold:.3g})")
        for column in columns:
            table.add_column(column, justify="left" if column == "classes" else "right")
        for s in summaries:
            classes = ", ".join(f"{label} {share:.0%}" for label, share in list(s["classes"].items())[:4])
            classes += ", …" if len(s["classes"]) > 4 else ""
            table.add_row(str(s["row"]), f"{s['mean_mutual_information']:.4f}", f"{s['max_mutual_information']:.4f}",
                          f"{s['share_above_threshold']:.1%}", f"{s['mean_predictive_entropy']:.4f}",
                          f"{s['mean_p_predicted']:.3f}", classes,
                          *([f"{s['share_abstained']:.1%}"] if abstaining else []))  # fmt: skip
    else:
        columns = ["row", "mean", "mean std", "max std"] + ([f"values std > {threshold:g}"] if threshold else [])
        for column in columns:
            table.add_column(column, justify="right")
        for s in summaries:
            share = [f"{s['share_above_threshold']:.1%}"] if threshold else []
            table.add_row(str(s["row"]), f"{s['mean']:.4g}", f"{s['mean_std']:.3g}", f"{s['max_std']:.3g}", *share)
    stdout_console().print(table)
    stdout_console().print("Per-pixel maps: --out FILE.npz writes them all (or --json prints them).")


def _print_output(p: Any, output: str | None) -> None:
    from rich.table import Table

    from mcdrop.serving.common.console import stdout_console

    title = f"{p.model} v{p.version}" + (f" · output {output}" if output else "")
    title += f" · {p.mode} · T={p.samples}" + (f" · seed {p.seed}" if p.seed is not None else "")
    title += "" if p.variant == "float32" else f" · {p.variant}"
    table = Table(title=title)
    if p.task == "classification":
        columns = ["row", "predicted", "p(predicted)", "± std", "entropy (nats)", "mutual info", "var. ratio"]
        abstaining = p.abstain is not None
        if abstaining:
            title += f" · abstain if {p.abstain_score_name} > {p.abstain_threshold:.4g}"
            table.title = title
            columns.append("decision")
        for column in columns:
            table.add_column(column, justify="right")
        for i, cls in enumerate(p.predicted_class):
            label = p.predicted_label[i] if p.predicted_label else str(cls)
            decision = ["[red]abstain[/]" if p.abstain[i] else "answer"] if abstaining else []
            table.add_row(
                str(i),
                label,
                f"{p.mean[i, cls]:.4f}",
                f"{p.std[i, cls]:.4f}",
                f"{p.predictive_entropy[i]:.4f}",
                f"{p.mutual_information[i]:.4f}",
                f"{p.variation_ratio[i]:.3f}",
                *decision,
            )
    else:
        epistemic_only = p.noise_variance is None
        interval = f"{p.interval:.0%} interval of y" + (" (epistemic only)" if epistemic_only else "")
        if p.interval_calibration:
            interval += f" ({p.interval_calibration})"
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
