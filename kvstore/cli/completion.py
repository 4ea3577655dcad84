"""`kvstore completion bash|zsh|fish`: a shell completion script for every command and option,
generated from the parsers themselves (shtab), so it never falls behind them. Only this command
imports shtab."""

from __future__ import annotations

import argparse
import sys

import shtab

from kvstore.cli import main
from kvstore.cli.exits import EXIT_OK, Sub

SHELLS = ("bash", "zsh", "fish")
# Options and arguments whose values are paths: the shell completes file or directory names.
FILE_DESTS = {"file", "out"}
DIRECTORY_DESTS = {"dir", "data_dir"}

EXAMPLES = """\
examples:
  source <(kvstore completion bash)                         # this bash session
  kvstore completion bash > ~/.local/share/bash-completion/completions/kvstore
  kvstore completion zsh > "${fpath[1]}/_kvstore"           # then: compinit
  kvstore completion fish > ~/.config/fish/completions/kvstore.fish
"""


def script(shell: str) -> str:
    """The completion script of the whole `kvstore` command line for `shell`."""
    parser = main.build_parser(())
    _mark_paths(parser)
    text: str = shtab.complete(parser, shell=shell)
    return text


def _mark_paths(parser: argparse.ArgumentParser) -> None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                _mark_paths(child)
        elif action.dest in FILE_DESTS:
            action.complete = shtab.FILE  # type: ignore[attr-defined]
        elif action.dest in DIRECTORY_DESTS:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]


def _completion(args: argparse.Namespace) -> int:
    sys.stdout.write(script(args.shell))
    return EXIT_OK


def register(sub: Sub) -> None:
    p = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, fish)",
        description="Print a completion script for SHELL: commands, options and their choices "
        "complete with Tab.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("shell", choices=SHELLS, help="the shell to complete in")
    p.set_defaults(func=_completion)
