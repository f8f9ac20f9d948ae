"""``mcdrop export-web``: a static page that runs a model version's uncertainty in the browser (LiteRT.js)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subcommands: Any) -> None:
    web = subcommands.add_parser(
        "export-web",
        help="write a static page that computes the model's uncertainty in the browser (LiteRT.js, WebAssembly)",
        description="Write OUT_DIR: a page that runs REPO/NAME/VERSION's static-shape mc_summary and mc_masked graphs "
        "(export with --device-shape B=1,T=100) in the browser with LiteRT.js, with a drawing pad for image inputs. "
        "Serve it over HTTP, e.g. python -m http.server -d OUT_DIR 8000.",
    )
    web.add_argument("version_dir", metavar="REPO/NAME/VERSION", help="an exported model version")
    web.add_argument("out", metavar="OUT_DIR", help="a new or empty folder for the page")
    web.add_argument("--litertjs", metavar="NODE_MODULES", default=None,
                     help="a node_modules folder with @litertjs/core (default: installed once with npm into "
                     "--cache-dir)")  # fmt: skip
    web.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "mcdrop"), help="default: %(default)s")
    web.add_argument("--input-range", default=None, metavar="LOW,HIGH",
                     help="the drawing pad's value range (default: 0,16 for the bundled digits, else 0,1)")  # fmt: skip
    web.add_argument("--mi-threshold", type=float, default=0.25,
                     help="mutual information (nats) above which the page says the model does not know "
                     "(default %(default)s)")  # fmt: skip
    web.add_argument("--variant", default="float32", metavar="NAME",
                     help="the graphs the page runs: float32 (default) or a variant exported with --quantize (int8, "
                     "float16, dynamic-int8; not int8-io: LiteRT.js has no int8 tensors)")  # fmt: skip
    web.set_defaults(handler=run_export_web)


def run_export_web(args: argparse.Namespace) -> int:
    from mcdrop.pipeline.web.export_web import export_web, litertjs_modules
    from mcdrop.serving.common.console import stdout_console
    from mcdrop.serving.errors import InvalidArgument

    input_range = None
    if args.input_range is not None:
        try:
            low, high = (float(v) for v in args.input_range.split(","))
        except ValueError:
            raise InvalidArgument(f"Invalid --input-range {args.input_range!r}. Expected LOW,HIGH.") from None
        if not low < high:
            raise InvalidArgument(f"Invalid --input-range {args.input_range!r}. Expected LOW < HIGH.")
        input_range = (low, high)
    modules = Path(args.litertjs) if args.litertjs else litertjs_modules(Path(args.cache_dir))
    done = export_web(Path(args.version_dir), Path(args.out), modules=modules, input_range=input_range,
                      mi_threshold=args.mi_threshold, variant=args.variant)  # fmt: skip
    console = stdout_console()
    console.print(f"Wrote {done.out} ({done.bytes / 2**20:.1f} MiB, {args.variant}): T = {done.samples}, graphs "
                  f"{', '.join(done.graphs.values())}")  # fmt: skip
    console.print(f"Serve it over HTTP: python -m http.server -d {done.out} 8000  →  http://localhost:8000/")
    return 0
