"""/livez, /readyz, /v1/status and /v1/digest (docs/API.md)."""

from __future__ import annotations

from aiohttp import web

from kvstore.cluster.node import Node
from kvstore.model import digest_hex
from kvstore.server import httputil as h
from kvstore.server import routes
from kvstore.server.keys import NODE
from kvstore.server.routes import CLIENT, OPEN


def node_of(request: web.Request) -> Node:
    return request.app[NODE]


async def livez(request: web.Request) -> web.StreamResponse:
    """Alive while the process serves; never depends on another pod."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.StreamResponse:
    results = node_of(request).readiness()
    ok = all(passed for passed, _ in results)
    lines = [("[+]" if passed else "[-]") + line for passed, line in results]
    lines.append("readyz check " + ("passed" if ok else "failed"))
    return web.Response(text="\n".join(lines) + "\n", status=200 if ok else 503)


async def status(request: web.Request) -> web.StreamResponse:
    return h.json_response(node_of(request).status())


async def digest(request: web.Request) -> web.StreamResponse:
    st = node_of(request).store.state
    return h.json_response(
        {"seq": st.seq, "digest": digest_hex(st.digest), "keys": st.keys, "epoch": st.epoch}
    )


def add_routes(app: web.Application) -> None:
    routes.add(app, "GET", "/livez", livez, OPEN)
    routes.add(app, "GET", "/readyz", readyz, OPEN)
    routes.add(app, "GET", "/v1/status", status, CLIENT)
    routes.add(app, "GET", "/v1/digest", digest, CLIENT)
