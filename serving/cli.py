"""The ``mcdrop`` command line: one entry point, subcommands registered by each package.

This is the single place that turns mcdrop errors into exit codes:
bad input → a one-line message on stderr and exit 2; any other mcdrop error →
exit 1; an unexpected exception → a generic line (the traceback only with
``--debug``); Ctrl-C → exit 130.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable, Sequence

from serving import __version__
from serving.client import RpcFailed
from serving.errors import MCDropError, UserInputError

Handler = Callable[[argparse.Namespace], int]

EXIT_USAGE = 2


class MissingExtraError(MCDropError):
    """A subcommand needs an optional dependency group that is not installed."""


def build_parser() -> argparse.ArgumentParser:
    from pipeline import commands as pipeline_commands
    from serving import commands as serving_commands

    parser = argparse.ArgumentParser(
        prog="mcdrop",
        description="Ship Keras dropout models to LiteRT and serve them with Monte-Carlo-dropout uncertainty.",
    )
    parser.add_argument("--version", action="version", version=f"mcdrop {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    pipeline_commands.register(subcommands)
    serving_commands.register(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except UserInputError as exc:
        print(f"mcdrop {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RpcFailed as exc:
        print(f"mcdrop {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if exc.is_user_error else 1
    except MissingExtraError as exc:
        print(f"mcdrop {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except MCDropError as exc:
        print(f"mcdrop {args.command}: error: {exc}", file=sys.stderr)
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


def require_extra(extra: str, *modules: str) -> None:
    """Raise MissingExtraError unless every module in ``modules`` imports."""
    import importlib.util

    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingExtraError(
            f"this command needs {', '.join(missing)}, which the base install leaves out. "
            f"Install it with: pip install 'mcdrop[{extra}]'"
        )


if __name__ == "__main__":
    sys.exit(main())
