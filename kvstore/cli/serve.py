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


EXAMPLES = """\
In Kubernetes the StatefulSet sets POD_NAME (kv-0 is the manager, the others follow it) and
mounts the volume at /data; on one machine, `kvstore local up` starts a whole set.

examples:
  kvstore serve --pod-name kv-0 --data-dir ./data-0 --port 8080 --access-log
  KV_POD_NAME=kv-1 KV_DATA_DIR=./data-1 KV_DNS_SERVER=127.0.0.1:5353 kvstore serve
  kvstore serve --pod-name kv-0 --data-dir ./data --auth-token "$(cat token)"
"""


def register(sub: Sub) -> None:
    serve = sub.add_parser(
        "serve",
        help=HELP,
        description="Run one pod's server. Every flag is also an environment variable.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    config.add_arguments(serve)
    serve.set_defaults(func=_serve)
