"""Every route belongs to a group, and the group decides who may call it: one middleware checks
the bearer token of the route's group before any handler runs, so no handler has to remember.

- client: the client API, status and digest, backups, the page's cluster view (KV_AUTH_TOKEN);
- replication: the endpoints between pods (KV_REPLICATION_TOKEN, else KV_AUTH_TOKEN);
- open: probes, metrics, the page's files and CORS preflights.

A route added without a group is refused to everyone: a test lists every route's group.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from aiohttp import web

from kvstore.config import Settings
from kvstore.errors import KVError, Unauthorized
from kvstore.server import httputil as h
from kvstore.server.keys import SETTINGS, STREAMS


@dataclass(frozen=True)
class Group:
    name: str
    token: Callable[[Settings], str | None]
    refusal_headers: Mapping[str, str] = field(default_factory=dict)


CLIENT = Group("the client API", lambda s: s.auth_token)
REPLICATION = Group("replication", lambda s: s.replication_secret)
OPEN = Group("open", lambda s: None)
# The page asks other pods for their cluster view from the browser: its refusal carries CORS.
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET",
    "Access-Control-Allow-Headers": "Authorization",
    "Access-Control-Max-Age": "600",
}
CLIENT_CORS = Group("the client API", lambda s: s.auth_token, CORS)
_GROUPS = web.AppKey("route_groups", dict[Callable[..., object], Group])


def add(app: web.Application, method: str, path: str, handler: h.Handler, group: Group) -> None:
    """Add a route in a group. GET routes answer HEAD too, with headers only."""
    if method == "GET":
        app.router.add_get(path, handler)
    else:
        app.router.add_route(method, path, handler)
    app.setdefault(_GROUPS, {})[handler] = group


def group_of(app: web.Application, handler: Callable[..., object]) -> Group | None:
    return app.get(_GROUPS, {}).get(handler)


@web.middleware
async def auth_middleware(request: web.Request, handler: h.Handler) -> web.StreamResponse:
    route_handler = request.match_info.handler
    group = group_of(request.app, route_handler)
    if group is None:
        if request.match_info.http_exception is not None:  # 404 / 405: nothing to protect
            return await handler(request)
        raise Unauthorized("this route belongs to no group, so nobody may call it")
    try:
        h.check_token(request, group.token(request.app[SETTINGS]), group.name)
    except KVError as exc:
        response = h.error_response(exc)
        response.headers.update(group.refusal_headers)
        return response
    return await handler(request)


@contextmanager
def tracked_stream(request: web.Request) -> Iterator[None]:
    """While a long response is sent: known to the app, so that shutdown ends it first."""
    task = asyncio.current_task()
    assert task is not None
    streams = request.app[STREAMS]
    streams.add(task)
    try:
        yield
    finally:
        streams.discard(task)
