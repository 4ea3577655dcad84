"""The `kvstore` command: one entry point, each command group registered by its own module.

Exit codes: 0 success; 1 the operation failed (server error, unreachable, a chaos violation);
2 usage or configuration error; 3 key not found; 4 a condition (If-Match, ack) did not hold.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from . import config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONDITION = 4

# Modules that add subcommands: each has `register(subparsers) -> None`, and the subparsers it
# adds set `func` to a callable taking the parsed arguments and returning an exit code.
COMMAND_MODULES = (
    "kvstore.cli_client",
    "kvstore.bench",
    "kvstore.backup",
    "kvstore.local.cli",
    "kvstore.chaos",
)

Handler = Callable[[argparse.Namespace], int]


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = config.load(flags=config.flags_from(args))
    except config.ConfigError as exc:
        print(f"kvstore serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from .app import run

    return run(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvstore", description="A replicated key-value store made to run as a StatefulSet."
    )
    from .cli_client import add_connection_arguments

    add_connection_arguments(parser)  # `kvstore --url URL put a 1` as well as `put a 1 --url URL`
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve = sub.add_parser(
        "serve",
        help="run one pod's server",
        description="Run one pod's server. Every flag is also an environment variable.",
    )
    config.add_arguments(serve)
    serve.set_defaults(func=_serve)
    for name in COMMAND_MODULES:
        try:
            module = import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
