"""Which server a client command talks to, and with what token: one place for every command.

`--url`, else `$KV_URL`, else the local cluster started in the current directory
(`.kvstore/cluster.json`), else http://127.0.0.1:8080. `--token`, else `$KV_AUTH_TOKEN`.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Mapping
from pathlib import Path

from kvstore.client import KVClient

DEFAULT_URL = "http://127.0.0.1:8080"
LOCAL_CLUSTER_FILE = Path(".kvstore") / "cluster.json"


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


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """--url and --token. Left unset when not given (SUPPRESS), so they may also be given
    before the command name if the top-level parser adds them too."""
    parser.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="server URL (default: $KV_URL, else the local cluster of ./.kvstore/cluster.json, "
        f"else {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=argparse.SUPPRESS,
        help="bearer token for a server with KV_AUTH_TOKEN set (default: $KV_AUTH_TOKEN)",
    )


def client_for(args: argparse.Namespace) -> KVClient:
    token = getattr(args, "token", None) or os.environ.get("KV_AUTH_TOKEN") or None
    return KVClient(resolve_url(getattr(args, "url", None)), token)
