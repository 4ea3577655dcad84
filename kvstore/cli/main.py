"""The `kvstore` command: one entry point. Each command is registered by name with the module
that implements it, and that module is imported only when its command runs, so `kvstore serve`
loads the server and nothing of the tools (local cluster, chaos, bench).

Exit codes: see `kvstore.cli.exits`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib import import_module

from kvstore import __version__
from kvstore.cli.connection import add_connection_arguments

Handler = Callable[[argparse.Namespace], int]

# command -> (module with `register(sub)`, one line of help). A module may register several.
COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("kvstore.cli.serve", "run one pod's server"),
    "get": ("kvstore.cli.kv", "print a key's value (raw bytes)"),
    "put": ("kvstore.cli.kv", "set a key's value"),
    "delete": ("kvstore.cli.kv", "delete a key"),
    "list": ("kvstore.cli.kv", "list keys in order"),
    "watch": ("kvstore.cli.kv", "print changes as they happen"),
    "txn": ("kvstore.cli.kv", "apply several puts and deletes all or nothing"),
    "status": ("kvstore.cli.kv", "a pod's role, seqs, lag and followers"),
    "backup": ("kvstore.cli.backup", "write a consistent SQLite copy of a pod's store"),
    "repair": ("kvstore.cli.repair", "show and fix divergence and epoch disagreements"),
    "bench": ("kvstore.bench.command", "measure throughput, latency, lag and catch-up"),
    "local": ("kvstore.local.cli", "run a StatefulSet of kvstore pods on this machine"),
    "chaos": ("kvstore.local.chaos", "delete pods under load, then check consistency"),
}


def _command_of(argv: Sequence[str]) -> str | None:
    """The command named on the line: the first word that is a command's name."""
    return next((word for word in argv if word in COMMANDS), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser, with the full options of the command named in `argv` (all of them when none
    is) and a one-line entry for each of the others."""
    parser = argparse.ArgumentParser(
        prog="kvstore", description="A replicated key-value store made to run as a StatefulSet."
    )
    parser.add_argument("--version", action="version", version=f"kvstore {__version__}")
    add_connection_arguments(parser)  # `kvstore --url URL put a 1` as well as `put a 1 --url URL`
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = _command_of(argv)
    modules = (
        [COMMANDS[wanted][0]] if wanted else list(dict.fromkeys(m for m, _ in COMMANDS.values()))
    )
    for name in modules:
        import_module(name).register(sub)
    for command, (_, help_text) in COMMANDS.items():
        if command not in sub.choices:
            sub.add_parser(command, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    func: Handler = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130
