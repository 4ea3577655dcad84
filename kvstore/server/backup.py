"""`GET /v1/backup` (any pod): a consistent SQLite copy of this pod's store, a complete kvstore
database (data, change log, epoch, seq and digest), streamed.

The copy is made by `VACUUM INTO` (one read transaction: it finishes under any rate of writes)
into a file on the data volume (never /tmp: an emptyDir of a few MiB in k8s), sent with its
Content-Length, and removed once sent or abandoned. A client that leaves while the copy is made
stops it; one that stops reading is cut off after KV_WRITE_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import sqlite3
import time

from aiohttp import web

from kvstore.errors import NotReady
from kvstore.server import httputil as h
from kvstore.server import routes
from kvstore.server.keys import METRICS, NODE
from kvstore.server.routes import CLIENT
from kvstore.store.backup import DatabaseCopy, copy_path

log = logging.getLogger("kvstore.backup")
CHUNK = 1 << 20
POLL = 0.25  # how often a copy being made looks for its client


async def _make_copy(request: web.Request, copy: DatabaseCopy) -> int:
    """Run the copy in a thread; interrupt it if the client leaves or the handler is cancelled
    (it then stops within one SQLite step, not at the end of the copy)."""
    work = asyncio.get_running_loop().run_in_executor(None, copy.run)
    try:
        while True:
            done, _ = await asyncio.wait({work}, timeout=POLL)
            if done:
                return work.result()
            if h.disconnected(request):
                raise ConnectionResetError("the client left while the copy was made")
    finally:
        if not work.done():
            copy.interrupt()
            with contextlib.suppress(sqlite3.Error):
                await asyncio.shield(work)


async def backup_handler(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    if node.store.state.epoch is None:
        raise NotReady("this pod has no data to back up yet", retry_after=1)
    headers = {
        "Content-Type": "application/vnd.sqlite3",
        "Content-Disposition": f'attachment; filename="{node.settings.pod_name}.db"',
    }
    if request.method == "HEAD":  # headers only, and no copy made for them
        return web.Response(headers=headers)
    path = copy_path(node.store.data_dir, secrets.token_hex(8))
    copy = DatabaseCopy(node.store.path, path)
    started = time.monotonic()
    resp = web.StreamResponse()
    try:
        size = await _make_copy(request, copy)
        copy.close()
        resp.headers.update(headers | {"Content-Length": str(size)})
        await resp.prepare(request)
        out = h.DeadlineWriter(request, resp, node.settings.write_timeout)
        loop = asyncio.get_running_loop()
        with open(path, "rb") as f:  # noqa: ASYNC230 - each read runs in a thread
            while chunk := await loop.run_in_executor(None, f.read, CHUNK):
                await out.write(chunk)
        log.info(
            "backup sent to %s: %d bytes in %.2fs", request.remote, size, time.monotonic() - started
        )
    except h.Stalled as exc:
        request.app[METRICS].stream_cut("backup")
        log.warning("backup to %s cut off: %s", request.remote, exc)
    except ConnectionError as exc:
        log.info("backup to %s abandoned: %s", request.remote, exc)
    finally:
        copy.close()
        for leftover in (path, path + "-journal"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    return resp


def add_routes(app: web.Application) -> None:
    routes.add(app, "GET", "/v1/backup", backup_handler, CLIENT)
