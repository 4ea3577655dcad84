"""Which server a command talks to, with what token, and how it retries: one place for every
command.

`--url`, else `$KV_URL`, else the local cluster started in the current directory
(`.kvstore/cluster.json`), else http://127.0.0.1:8080. `--token`, else `$KV_AUTH_TOKEN`.

The flags may stand before the command name (`kvstore --token T chaos`) or after it
(`kvstore chaos --token T`): every parser adds them with no default of its own (SUPPRESS), so a
subcommand never overwrites what the top level parsed, and every command reads them here.
A command that talks to no URL (serve, local, chaos, completion) refuses `--url` instead of
ignoring it (see `kvstore.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kvstore.client import KVClient

DEFAULT_URL = "http://127.0.0.1:8080"
LOCAL_CLUSTER_FILE = Path(".kvstore") / "cluster.json"
URL_HELP = (
    "server URL (default: $KV_URL, else the local cluster of ./.kvstore/cluster.json, "
    f"else {DEFAULT_URL})"
)
TOKEN_HELP = "bearer token for a server with KV_AUTH_TOKEN set (default: $KV_AUTH_TOKEN)"
RETRY_HELP = (
    "retry up to N times while the server answers 503 (not ready, no manager) or cannot be "
    "reached, waiting as its Retry-After says; a write whose outcome is unknown is never retried"
)
WAIT_HELP = "keep retrying for up to S seconds in all (alone: as many tries as fit)"


def resolve_url(
    explicit: str | None, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> str:
    """--url, else $KV_URL, else the local cluster's url in ./.kvstore/cluster.json, else the
    default."""
    env = os.environ if env is None else env
    if explicit:
        return explicit
    if env.get("KV_URL"):
        return env["KV_URL"]
    try:
        url = json.loads(((cwd or Path.cwd()) / LOCAL_CLUSTER_FILE).read_text())["url"]
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_URL
    return url if isinstance(url, str) and url else DEFAULT_URL


def resolve_token(explicit: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """--token, else $KV_AUTH_TOKEN, else none."""
    env = os.environ if env is None else env
    return explicit or env.get("KV_AUTH_TOKEN") or None


def add_url_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=argparse.SUPPRESS, help=URL_HELP)


def add_token_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--token", default=argparse.SUPPRESS, help=TOKEN_HELP)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--url and --token, left unset when not given (SUPPRESS): they may be given before the
    command name too, and the top level's value stands."""
    add_url_argument(parser)
    add_token_argument(parser)


def add_retry_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--retry", type=_count, metavar="N", default=argparse.SUPPRESS, help=RETRY_HELP
    )
    parser.add_argument(
        "--wait",
        dest="retry_wait",
        type=_seconds,
        metavar="S",
        default=argparse.SUPPRESS,
        help=WAIT_HELP,
    )


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also NaN
        raise ValueError(text)
    return value


_count.__name__ = "count"  # argparse: "invalid count value: 'x'"
_seconds.__name__ = "seconds"


@dataclass(frozen=True)
class Connection:
    url: str
    token: str | None


def connection_of(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Connection:
    """The URL and token of this command line, wherever the flags stood."""
    url = resolve_url(getattr(args, "url", None), env)
    return Connection(url, resolve_token(getattr(args, "token", None), env))


def token_of(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> str | None:
    return resolve_token(getattr(args, "token", None), env)


def client_for(args: argparse.Namespace) -> KVClient:
    conn = connection_of(args)
    return KVClient(conn.url, conn.token)
