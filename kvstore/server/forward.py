"""Followers send writes on to the manager (or answer 307 to it with `?redirect=true`)."""

from __future__ import annotations

import logging

import aiohttp
from aiohttp import web
from yarl import URL

from kvstore.cluster.node import Node
from kvstore.errors import ManagerUnavailable
from kvstore.server.httputil import float_param
from kvstore.server.keys import METRICS

log = logging.getLogger("kvstore.forward")
PASS_REQUEST = ("Content-Type", "If-Match", "If-None-Match", "Authorization")
PASS_RESPONSE = ("Content-Type", "ETag", "X-KV-Seq", "X-KV-Served-By", "Retry-After")


async def manager_url(node: Node) -> str:
    """The address of the live stream's connection if there is one, else DNS now."""
    if node.link.connected and node.link.manager_url:
        return node.link.manager_url
    return await node.discovery.manager_url()


async def forward(node: Node, request: web.Request, body: bytes) -> web.StreamResponse:
    base = await manager_url(node)
    query = {k: v for k, v in request.query.items() if k != "redirect"}
    url = request.rel_url.with_query(query)
    if request.query.get("redirect", "").lower() == "true":
        raise web.HTTPTemporaryRedirect(base + str(url))
    if request.method != "GET":  # a GET here is a read with consistency=manager
        request.app[METRICS].forwarded.inc()
    headers = {h: request.headers[h] for h in PASS_REQUEST if h in request.headers}
    wait = float_param(request, "timeout", 0.0)
    timeout = max(30.0, wait + 10)
    try:
        answer = await node.peers.forward(
            request.method, URL(base + str(url), encoded=True), body, headers, timeout
        )
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        node.link.manager_url = None
        raise ManagerUnavailable(
            f"the manager {node.settings.manager_name} cannot be reached ({type(exc).__name__});"
            " the write was not applied here; retry shortly",
            retry_after=1,
        ) from None
    out = {h: answer.headers[h] for h in PASS_RESPONSE if h in answer.headers}
    return web.Response(status=answer.status, body=answer.body, headers=out)
