"""The ``mcdrop`` command line: one entry point; each subcommand lives in its own module.

Subcommands are found through the ``mcdrop.commands`` entry-point group (see
``pyproject.toml``): each entry names a ``register(subparsers)`` function. So this
package never imports the pipeline package, and the serving-only install (no
TensorFlow) still lists every command and answers the pipeline's with one line on
how to install the ``train`` extra.

This is the single place that turns mcdrop errors into exit codes:
bad input (``UserInputError``, a user-caused ``RpcFailed``) → a one-line message on
stderr and exit 2; any other mcdrop error, or a failed file operation (a full disk, a read-only folder), → exit 1
with one line; an unexpected exception → a
generic line (the traceback only with ``--debug``); Ctrl-C → exit 130.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from typing import NoReturn

from mcdrop.serving import __version__
from mcdrop.serving.errors import MCDropError, RpcFailed, UserInputError, describe_os_error

__all__ = ["main", "run"]

Handler = Callable[[argparse.Namespace], int]

ENTRY_POINT_GROUP = "mcdrop.commands"
EXIT_USAGE = 2
# The order of the help listing: the workflow, then the tools. Commands not named here follow by name.
HELP_ORDER = ("train", "export", "export-batch", "serve", "predict", "evaluate", "bench", "soak", "demo")


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2), like every other mcdrop error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mcdrop",
        description="Ship Keras dropout models to LiteRT and serve them with Monte-Carlo-dropout uncertainty.",
    )
    parser.add_argument("--version", action="version", version=f"mcdrop {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks of unexpected errors and TensorFlow's own logs"
    )
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for entry in _command_entry_points():
        entry.load()(subcommands)
    return parser


def _command_entry_points() -> list[metadata.EntryPoint]:
    entries = {entry.name: entry for entry in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    rank = {name: i for i, name in enumerate(HELP_ORDER)}
    return [entries[name] for name in sorted(entries, key=lambda name: (rank.get(name, len(rank)), name))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except UserInputError as exc:
        return _fail(args, exc, EXIT_USAGE)
    except RpcFailed as exc:
        return _fail(args, exc, EXIT_USAGE if exc.is_user_error else 1)
    except MCDropError as exc:
        return _fail(args, exc, 1)
    except OSError as exc:  # a full disk, a read-only folder, a missing file: the system's words, one line
        print(f"mcdrop {args.command}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mcdrop {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback to users
        if args.debug:
            traceback.print_exc()
        print(
            f"mcdrop {args.command}: internal error ({type(exc).__name__}: {exc}). Run with --debug for the traceback.",
            file=sys.stderr,
        )
        return 1


def _fail(args: argparse.Namespace, exc: MCDropError, code: int) -> int:
    print(f"mcdrop {args.command}: error: {exc}", file=sys.stderr)
    return code


def run() -> None:
    """``python -m mcdrop.serving.cli`` and the ``mcdrop`` console script."""
    sys.exit(main())
