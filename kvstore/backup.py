"""Backups: a consistent SQLite copy of any pod's store, and starting a pod from one.

- `GET /v1/backup` (any pod): the SQLite backup API copies the database inside one read
  transaction into a temporary file, which is then streamed. The copy is a complete kvstore
  database: data, change log, epoch, seq and digest.
- `kvstore backup --url URL --out FILE`: downloads it with a progress line, checks it, and says
  what it holds.
- `KV_RESTORE_FROM=FILE`: a pod whose volume holds no database starts from that copy (it is
  copied in, then renamed into place, so a crash leaves either nothing or the whole copy). A
  follower then resumes streaming from the backup's seq, a manager takes writes after it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from . import httputil as h
from . import schema
from .errors import InvalidRequest, NotReady

MAGIC = b"SQLite format 3\x00"


def _copy(src_path: str, dest_path: str) -> int:
    """Copy the database consistently; returns the copy's size in bytes."""
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
    dest = sqlite3.connect(dest_path)
    try:
        src.backup(dest, pages=4096)
        dest.execute("PRAGMA journal_mode = DELETE")
    finally:
        dest.close()
        src.close()
    return os.path.getsize(dest_path)


async def backup_handler(request: web.Request) -> web.StreamResponse:
    from .api import NODE

    node = request.app[NODE]
    h.check_token(request, node.settings.auth_token, "the client API")
    if node.store.state.epoch is None:
        raise NotReady("this pod has no data to back up yet", retry_after=1)
    fd, path = tempfile.mkstemp(prefix="kvstore-backup-", suffix=".db")
    os.close(fd)
    try:
        size = await asyncio.to_thread(_copy, node.store.path, path)
        resp = web.StreamResponse(
            headers={
                "Content-Type": "application/vnd.sqlite3",
                "Content-Length": str(size),
                "Content-Disposition": f'attachment; filename="{node.settings.pod_name}.db"',
            }
        )
        await resp.prepare(request)
        with open(path, "rb") as f:  # noqa: ASYNC230 - local temp file, read in 1 MiB chunks
            while chunk := f.read(1 << 20):
                await resp.write(chunk)
        return resp
    finally:
        os.unlink(path)


def describe(path: str) -> dict[str, object]:
    """What a backup file holds; InvalidRequest if it is not a kvstore database."""
    with open(path, "rb") as f:
        if f.read(16) != MAGIC:
            raise InvalidRequest(f"{path} is not an SQLite database")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        epoch, seq, digest, keys = conn.execute(schema.READ_META).fetchone()
    except sqlite3.DatabaseError as exc:
        raise InvalidRequest(f"{path} is not a kvstore database: {exc}") from None
    finally:
        conn.close()
    return {"epoch": epoch, "seq": seq, "digest": digest, "keys": keys}


def restore_into(data_dir: str, backup: str) -> bool:
    """Copy `backup` in as the store's database if the volume has none. True if it did."""
    target = os.path.join(data_dir, schema.DB_NAME)
    if os.path.exists(target):
        return False
    describe(backup)
    os.makedirs(data_dir, exist_ok=True)
    partial = target + ".restoring"
    shutil.copyfile(backup, partial)
    with open(partial, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(partial, target)
    return True


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
    from .cli_client import resolve_url

    url = resolve_url(getattr(args, "url", None))
    token = getattr(args, "token", None) or os.environ.get("KV_AUTH_TOKEN") or None
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


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from .cli_client import add_connection_arguments

    p = sub.add_parser(
        "backup",
        help="write a consistent SQLite copy of a pod's store",
        description="Download a consistent SQLite copy of any pod's store. Start "
        "a pod from it with KV_RESTORE_FROM=FILE on an empty volume.",
    )
    add_connection_arguments(p)
    p.add_argument("--out", required=True, help="the file to write")
    p.set_defaults(func=_run)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/backup", backup_handler)
