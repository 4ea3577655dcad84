"""`GET /v1/backup` (any pod): a consistent SQLite copy of this pod's store, a complete kvstore
database (data, change log, epoch, seq and digest), streamed."""

from __future__ import annotations

import asyncio
import os
import tempfile

from aiohttp import web

from kvstore.errors import NotReady
from kvstore.server import routes
from kvstore.server.keys import NODE
from kvstore.server.routes import CLIENT
from kvstore.store.backup import copy_database


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
    fd, path = tempfile.mkstemp(prefix="kvstore-backup-", suffix=".db")
    os.close(fd)
    try:
        size = await asyncio.to_thread(copy_database, node.store.path, path)
        resp = web.StreamResponse(headers=headers | {"Content-Length": str(size)})
        await resp.prepare(request)
        with open(path, "rb") as f:  # noqa: ASYNC230 - local temp file, read in 1 MiB chunks
            while chunk := f.read(1 << 20):
                await resp.write(chunk)
        return resp
    finally:
        os.unlink(path)


def add_routes(app: web.Application) -> None:
    routes.add(app, "GET", "/v1/backup", backup_handler, CLIENT)
