"""`create_app(settings)`: one aiohttp application per pod, one cleanup context per resource.

Start order: store -> HTTP client session -> the role's background work (the manager's restore
check, or the follower loop). Shutdown runs the reverse: streams are ended first so that
in-flight requests can finish within KV_SHUTDOWN_TIMEOUT, then the role's tasks stop, then the
store finishes its queued commits and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from aiohttp import web

from kvstore.cluster.discovery import Discovery
from kvstore.cluster.follower import Follower
from kvstore.cluster.node import Node
from kvstore.cluster.peer import PeerClient
from kvstore.cluster.restore import restore_or_init
from kvstore.config import Settings
from kvstore.model import Change
from kvstore.server import (
    api,
    backup,
    health,
    logs,
    metrics,
    openapi,
    page,
    repair,
    replication,
)
from kvstore.server.httputil import errors_middleware, query_middleware
from kvstore.server.keys import FOLLOWER, METRICS, NODE, SESSION, SETTINGS, STORE, STREAMS
from kvstore.server.routes import OPEN, auth_middleware
from kvstore.server.routes import add as add_route
from kvstore.store.backup import remove_copies, restore_into
from kvstore.store.store import Store

log = logging.getLogger("kvstore.app")
# Handlers read bodies themselves, each against its route's limit; aiohttp's own limit (for any
# read of a whole body) is the largest of them.
BODY_SLACK = 64 * 1024


def client_max_size(settings: Settings) -> int:
    return max(settings.max_value_bytes, settings.max_txn_bytes) + BODY_SLACK


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    for name in remove_copies(s.data_dir):
        log.info("removed %s, a backup copy left by an earlier process", name)
    if s.restore_from and restore_into(s.data_dir, s.restore_from):
        log.info("started from the backup %s", s.restore_from)
    store = Store(
        s.data_dir,
        durability=s.durability,
        retention=s.log_retention,
    )
    await store.open()
    if s.fault_skip_seq is not None and not s.is_manager:
        store.skip_change = _skipping(s.fault_skip_seq)
    store.on_commit = app[METRICS].observe_commit
    app[STORE] = store
    logs.bind_seq(lambda: store.state.seq)
    log.info(
        "store open at %s: epoch %s, seq %d, %d keys",
        store.path,
        store.state.epoch,
        store.state.seq,
        store.state.keys,
    )
    yield
    await store.close()
    log.info("store closed at seq %d", store.state.seq)


def _skipping(seq: int) -> Callable[[Change], bool]:
    """The test-only fault KV_FAULT_SKIP_SEQ: a follower loses the change at `seq` silently."""
    return lambda change: change.seq == seq


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    # Streams must outlive aiohttp's default 300 s total timeout: each call sets its own.
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=3)
    connector = aiohttp.TCPConnector(limit=256)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        app[SESSION] = session
        yield


async def _role_ctx(app: web.Application) -> AsyncIterator[None]:
    s = app[SETTINGS]
    node = Node(s, app[STORE], Discovery(s), PeerClient(app[SESSION], s))
    node.restoring = s.is_manager
    app[NODE] = node
    app[METRICS].bind(node)
    log.info("starting as %s (ordinal %d; manager is %s)", s.role, s.ordinal, s.manager_fqdn)
    follower = Follower(node, app[METRICS].snapshot_installed)
    if not s.is_manager:
        app[FOLLOWER] = follower
    work = restore_or_init(node) if s.is_manager else follower.run()
    task = asyncio.create_task(work, name=f"kv-{s.role}")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _on_shutdown(app: web.Application) -> None:
    """SIGTERM: stop being ready, end the long streams so the rest can drain."""
    if NODE in app:
        app[NODE].shutting_down = True
    streams = app[STREAMS]
    log.info("shutting down: ending %d streams", len(streams))
    for task in tuple(streams):
        task.cancel()


def create_app(settings: Settings) -> web.Application:
    counters = metrics.Metrics()
    app = web.Application(
        middlewares=[
            metrics.middleware(counters),
            errors_middleware,
            auth_middleware,
            query_middleware,
        ],
        client_max_size=client_max_size(settings),
    )
    app[SETTINGS] = settings
    app[METRICS] = counters
    streams: set[asyncio.Task[Any]] = set()
    app[STREAMS] = streams
    app.cleanup_ctx.extend([_store_ctx, _session_ctx, _role_ctx])
    app.on_shutdown.append(_on_shutdown)
    api.add_routes(app)
    health.add_routes(app)
    replication.add_routes(app)
    repair.add_routes(app)
    backup.add_routes(app)
    add_route(app, "GET", "/metrics", metrics.handler(counters), OPEN)
    page.add_routes(app)
    openapi.add_routes(app)
    return app


def _install_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run(settings: Settings) -> int:
    logs.setup(settings)
    _install_uvloop()
    app = create_app(settings)
    log.info(
        "listening on %s:%d (data %s, durability %s)",
        settings.host,
        settings.port,
        settings.data_dir,
        settings.durability,
    )
    kwargs: dict[str, Any] = {
        "access_log": logging.getLogger("aiohttp.access") if settings.access_log else None
    }
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        shutdown_timeout=settings.shutdown_timeout,
        handle_signals=True,
        **kwargs,
    )
    log.info("stopped")
    return 0
