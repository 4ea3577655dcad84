"""`kvstore serve`: one pod's server. Every flag is also an environment variable (one table,
kvstore/config.py). This module is the only one of the CLI that loads the server."""

from __future__ import annotations

import argparse
import sys

from kvstore import config
from kvstore.cli.exits import EXIT_USAGE, Sub
from kvstore.server.app import run

HELP = "run one pod's server"


def _serve(args: argparse.Namespace) -> int:
    try:
        settings = config.load(flags=config.flags_from(args))
    except config.ConfigError as exc:
        print(f"kvstore serve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run(settings)


def register(sub: Sub) -> None:
    serve = sub.add_parser(
        "serve",
        help=HELP,
        description="Run one pod's server. Every flag is also an environment variable.",
    )
    config.add_arguments(serve)
    serve.set_defaults(func=_serve)
