"""`kvstore backup --url URL --out FILE`: download a consistent copy of a pod's store with a
progress line, check it, and say what it holds. Start a pod from it with KV_RESTORE_FROM."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

import aiohttp

from kvstore.cli.connection import add_connection_arguments, connection_of
from kvstore.cli.exits import Sub
from kvstore.errors import InvalidRequest
from kvstore.store.backup import describe


async def _download(url: str, token: str | None, out: Path) -> int:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=60)
    partial = out.with_name(out.name + ".partial")
    done = 0
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"{url.rstrip('/')}/v1/backup", headers=headers) as resp,
    ):
        if resp.status != 200:
            raise InvalidRequest(f"{url} answered {resp.status}: {(await resp.text())[:200]}")
        total = resp.content_length or 0
        with partial.open("wb") as f:
            async for chunk in resp.content.iter_chunked(1 << 20):
                f.write(chunk)
                done += len(chunk)
                _progress(done, total)
    partial.replace(out)
    return done


def _progress(done: int, total: int) -> None:
    if sys.stderr.isatty():
        share = f" ({done * 100 // total}%)" if total else ""
        print(f"\rbackup: {done / 1e6:.1f} MB{share}", end="", file=sys.stderr, flush=True)


def _run(args: argparse.Namespace) -> int:
    url, token = (conn := connection_of(args)).url, conn.token
    out = Path(args.out)
    started = time.monotonic()
    try:
        size = asyncio.run(_download(url, token, out))
        info = describe(str(out))
    except (aiohttp.ClientError, OSError, InvalidRequest) as exc:
        print(f"\nkvstore backup: {exc}", file=sys.stderr)
        return 1
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(
        f"{out}: {size} bytes in {time.monotonic() - started:.1f}s; {info['keys']} keys at "
        f"seq {info['seq']}, epoch {info['epoch']}, digest {info['digest']}"
    )
    return 0


EXAMPLES = """\
examples:
  kvstore backup --out kv.db                          # from the manager
  kvstore backup --url http://127.0.0.3:8080 --out kv-1.db
  KV_RESTORE_FROM=kv.db kvstore serve --pod-name kv-0 --data-dir ./fresh
"""


def register(sub: Sub) -> None:
    p = sub.add_parser(
        "backup",
        help="write a consistent SQLite copy of a pod's store",
        description="Download a consistent SQLite copy of any pod's store. Start "
        "a pod from it with KV_RESTORE_FROM=FILE on an empty volume.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(p)
    p.add_argument(
        "--out", required=True, help="the file to write (FILE.partial until it is complete)"
    )
    p.set_defaults(func=_run)
