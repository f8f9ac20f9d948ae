"""Subcommands of the serving side: ``serve`` and ``predict``. No TensorFlow anywhere here."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from serving.errors import InvalidArgument, NotFound


def register(subcommands: Any) -> None:
    serve = subcommands.add_parser(
        "serve",
        help="serve a model repository over gRPC with Monte-Carlo-dropout uncertainty",
        description="Serve REPO/NAME/VERSION/ over gRPC (mcdrop.v1 API, health, reflection) with Prometheus "
        "metrics. Every setting can also come from an MCDROP_<NAME> environment variable; flags win.",
    )
    add = serve.add_argument
    add("--repository", "--repo", default=None, metavar="REPO", help="model repository (env MCDROP_REPOSITORY)")
    add("--host", default=None, help="bind address (default 0.0.0.0)")
    add("--port", type=int, default=None, help="gRPC port (default 8500; 0 = any free port)")
    add("--metrics-port", type=int, default=None, help="Prometheus port (default 8502; -1 = off)")
    add("--workers", type=int, default=None, help="gRPC worker threads (default 8)")
    add("--pool-size", type=int, default=None, help="interpreters per graph per version (default 2)")
    add("--interpreter-threads", type=int, default=None, help="threads per interpreter invoke (default 1)")
    add("--max-queue", type=int, default=None, help="requests that may wait for an interpreter (default 64)")
    add("--max-samples", type=int, default=None, help="largest T per request (default 10000)")
    add("--max-batch", type=int, default=None, help="largest batch per request (default 1024)")
    add("--max-sample-rows", type=int, default=None, help="largest T x batch per request (default 1e6)")
    add("--max-request-gflops", type=float, default=None, help="largest compute per request (default 50 GFLOP)")
    add("--max-message-bytes", type=int, default=None, help="largest gRPC message (default 64 MiB)")
    add(
        "--mask-source",
        choices=["host", "graph"],
        default=None,
        help="masks of unseeded MC requests: host (default, reports a replayable seed) or graph (in-graph RNG)",
    )
    add("--poll-seconds", type=float, default=None, help="repository poll interval (default 2; 0 = off)")
    add("--max-versions", type=int, default=None, help="newest versions kept loaded per model (default 2)")
    add("--grace-seconds", type=float, default=None, help="time in-flight requests get on SIGTERM (default 20)")
    add("--tls-cert", default=None, metavar="PEM", help="server certificate: serve TLS (with --tls-key)")
    add("--tls-key", default=None, metavar="PEM", help="server private key")
    add("--tls-client-ca", default=None, metavar="PEM", help="require client certificates signed by this CA")
    add("--auth-token-file", default=None, metavar="FILE", help="bearer tokens, one per line (reloaded on change)")
    add("--log-level", default=None, help="DEBUG, INFO (default), WARNING, ERROR")
    add("--log-format", default=None, help="json (default) or text")
    serve.set_defaults(handler=run_serve)

    predict = subcommands.add_parser(
        "predict",
        help="ask a running server for a prediction with uncertainty",
        description="Send the rows of FILE (.npy, or .json: a list of rows or one row) to a server.",
    )
    add = predict.add_argument
    add("--server", default="localhost:8500", metavar="HOST:PORT", help="server address (default %(default)s)")
    add("--model", required=True, help="model name")
    add("--version", type=int, default=None, help="model version (default: latest)")
    add("--input", required=True, metavar="FILE", help="input rows: .npy or .json")
    add("--mode", choices=["deterministic", "monte_carlo"], default=None, help="default: monte_carlo if possible")
    add("--samples", type=int, default=0, help="Monte-Carlo samples T (default: the model's)")
    add("--seed", type=int, default=None, help="seed: identical answers on every call")
    add("--tolerance", type=float, default=None, help="adaptive: sample until the standard error is below this")
    add("--interval", type=float, default=None, help="regression interval level (default 0.95)")
    add("--timeout", type=float, default=30.0, help="deadline in seconds (default 30)")
    add("--json", action="store_true", help="print JSON instead of a table")
    add("--ca", default=None, metavar="PEM", help="CA bundle to verify the server (turns on TLS)")
    add("--cert", default=None, metavar="PEM", help="client certificate, for mutual TLS")
    add("--key", default=None, metavar="PEM", help="client private key, for mutual TLS")
    add("--server-name", default=None, help="name to verify in the server certificate")
    add("--token-file", default=None, metavar="FILE", help="file holding the bearer token")
    predict.set_defaults(handler=run_predict)
    register_soak(subcommands)


def register_soak(subcommands: Any) -> None:
    soak = subcommands.add_parser(
        "soak",
        help="N client processes against a server for M minutes: errors, RSS growth, latency drift",
        description="Starts a server on REPO (or uses --server), then runs --clients processes of mixed requests "
        "for --minutes (at most --max-requests in all). Exit code 1 unless: zero errors, RSS growth within "
        "--max-rss-growth-mb, last-quarter median latency within --max-latency-drift of the first quarter's.",
    )
    group = soak.add_mutually_exclusive_group(required=True)
    group.add_argument("--repository", type=Path, default=None, metavar="REPO", help="start a server on REPO")
    group.add_argument("--server", default=None, metavar="HOST:PORT", help="soak a running server (no RSS figures)")
    soak.add_argument("--model", default="digits")
    soak.add_argument("--clients", type=int, default=8)
    soak.add_argument("--minutes", type=float, default=2.0)
    soak.add_argument("--max-requests", type=int, default=1_000_000)
    soak.add_argument("--max-rss-growth-mb", type=float, default=20.0)
    soak.add_argument("--max-latency-drift", type=float, default=0.5, help="relative, e.g. 0.5 = 50%%")
    soak.add_argument("--json", type=Path, default=None, metavar="FILE")
    soak.set_defaults(handler=run_soak)


def run_soak(args: argparse.Namespace) -> int:
    from serving.console import stdout_console
    from serving.soak import soak

    report = soak(
        repository=args.repository,
        server=args.server,
        model=args.model,
        clients=args.clients,
        minutes=args.minutes,
        max_requests=args.max_requests,
        max_rss_growth_mb=args.max_rss_growth_mb,
        max_latency_drift=args.max_latency_drift,
    )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    console = stdout_console()
    latency, rss = report["latency_ms"], report["rss_mb"]
    console.print(
        f"soak: {report['clients']} clients x {report['seconds']:.0f} s: {report['requests']} requests "
        f"({report['throughput_rps']:.0f}/s), {report['errors']} errors; latency p50 {latency['p50']:.2f} ms, "
        f"p99 {latency['p99']:.2f} ms, first/last-quarter p50 {latency['first_quarter_p50']:.2f}/"
        f"{latency['last_quarter_p50']:.2f} ms; RSS start {_mb(rss['start'])}, end {_mb(rss['end'])}"
    )
    for name, ok in report["checks"].items():
        console.print(f"  {'[green]pass[/]' if ok else '[red]FAIL[/]'} {name}")
    return 0 if report["passed"] else 1


def _mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} MB"


def run_serve(args: argparse.Namespace) -> int:
    from serving import logs
    from serving.server import run
    from serving.settings import ServerSettings, load_settings

    names = [field.name for field in dataclasses.fields(ServerSettings)]
    settings = load_settings({name: getattr(args, name) for name in names if hasattr(args, name)})
    if not Path(settings.repository).is_dir():
        raise NotFound(f"Model repository not found: {settings.repository}. Expected a directory (REPO/NAME/VERSION/).")
    logs.configure(settings.log_level, settings.log_format)
    return run(settings)


def run_predict(args: argparse.Namespace) -> int:
    from serving.client import Client

    x = read_input(Path(args.input))
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
            samples=args.samples,
            seed=args.seed,
            tolerance=args.tolerance,
            interval=args.interval,
        )
    if args.json:
        json.dump(prediction_as_json(prediction), sys.stdout, indent=2)
        print()
    else:
        print_prediction(prediction)
    return 0


def read_input(path: Path) -> np.ndarray:
    """Rows from ``.npy`` or ``.json`` as float32 ``[B, ...]``; a single row becomes a batch of one."""
    if not path.is_file():
        raise NotFound(f"Input file not found: {path}")
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif path.suffix == ".json":
            array = np.asarray(json.loads(path.read_text(encoding="utf-8")))
        else:
            raise InvalidArgument(f"Unsupported input file {path.name}. Expected .npy or .json.")
    except (ValueError, OSError) as exc:
        raise InvalidArgument(f"Cannot read {path}: {exc}") from None
    if array.dtype.kind not in "biuf":
        raise InvalidArgument(f"{path} must hold numbers. Received dtype {array.dtype}.")
    if array.ndim == 1:
        array = array[np.newaxis]
    return np.ascontiguousarray(array, dtype=np.float32)


def prediction_as_json(p: Any) -> dict[str, Any]:
    fields = {k: v for k, v in vars(p).items() if v is not None}
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in fields.items()}


def print_prediction(p: Any) -> None:
    from rich.table import Table

    from serving.console import stdout_console

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
        for column in ("row", "output", "mean", "± std", f"{p.interval:.0%} interval"):
            table.add_column(column, justify="right")
        mean, std = p.mean.reshape(len(p.mean), -1), p.std.reshape(len(p.std), -1)
        lower, upper = p.lower.reshape(len(p.lower), -1), p.upper.reshape(len(p.upper), -1)
        for i in range(len(mean)):
            for j in range(mean.shape[1]):
                table.add_row(
                    str(i), str(j), f"{mean[i, j]:.4g}", f"{std[i, j]:.3g}", f"[{lower[i, j]:.4g}, {upper[i, j]:.4g}]"
                )
    stdout_console().print(table)
