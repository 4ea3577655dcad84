"""Followers send writes on to the manager (or answer 307 to it with `?redirect=true`).

A forwarded request is the client's, byte for byte: the raw path and the raw query exactly as
received (only the `redirect` parameter is the follower's own), the body, and the end-to-end
headers; never the hop-by-hop ones (RFC 9110 §7.6.1) nor Host. So `x/../victim` stays a key
and never becomes a path to resolve.

When no answer comes back, what happened depends on whether the request left:
- nothing was sent (the manager's name does not resolve, the connection is refused or cannot
  be made): 503 `manager_unavailable` with Retry-After; a retry is safe;
- the request was sent and the answer did not come (the manager stalled past
  KV_FORWARD_TIMEOUT, or the connection broke): 504 `unknown_outcome`; it may have been
  applied. A read through a follower (`consistency=manager`) is always safe to retry: 503.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from kvstore.cluster.node import Node
from kvstore.errors import ManagerUnavailable, UnknownOutcome
from kvstore.server.httputil import bool_param, float_param
from kvstore.server.keys import METRICS

log = logging.getLogger("kvstore.forward")
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Not hop-by-hop, but the connection's own: the length of the body as sent on, the host it is
# sent to, the framing of an expectation.
NOT_PASSED = HOP_BY_HOP | {"host", "content-length", "expect"}
# An answer is read whole and decoded; these described the bytes as they came.
NOT_RETURNED = NOT_PASSED | {"content-encoding", "date", "server"}
UNKNOWN = (
    "may have been applied: read the key, or retry with If-Match / If-None-Match to make the "
    "retry safe"
)


def end_to_end(headers: Mapping[str, str], drop: frozenset[str]) -> CIMultiDict[str]:
    """The headers that belong to the message: without `drop` and without every header the
    Connection header names (each may repeat, so a multidict)."""
    named = {
        token.strip().lower()
        for value in _all(headers, "Connection")
        for token in value.split(",")
        if token.strip()
    }
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        lower = name.lower()
        if lower not in drop and lower not in named and not lower.startswith("proxy-"):
            out.add(name, value)
    return out


def _all(headers: Mapping[str, str], name: str) -> Iterable[str]:
    getall = getattr(headers, "getall", None)
    if getall is not None:
        values: list[str] = getall(name, [])
        return values
    value = headers.get(name)
    return [] if value is None else [value]


def raw_query_without_redirect(raw_query: str) -> str:
    """The raw query minus its `redirect` parameter(s), every other byte kept in its place."""
    if not raw_query:
        return ""
    kept = [part for part in raw_query.split("&") if part.split("=", 1)[0] != "redirect"]
    return "&".join(kept)


async def manager_url(node: Node) -> str:
    """The address of the live stream's connection if there is one, else DNS now."""
    if node.link.connected and node.link.manager_url:
        return node.link.manager_url
    return await node.discovery.manager_url()


async def forward(node: Node, request: web.Request, body: bytes) -> web.StreamResponse:
    target = request.rel_url.raw_path
    query = raw_query_without_redirect(request.rel_url.raw_query_string)
    if query:
        target += "?" + query
    base = await manager_url(node)  # ManagerUnavailable (503) when DNS has no manager
    if bool_param(request, "redirect"):
        raise web.HTTPTemporaryRedirect(URL(base + target, encoded=True))
    write = request.method not in ("GET", "HEAD")  # a GET here is a read with consistency=manager
    if write:
        request.app[METRICS].forwarded.inc()
    headers = end_to_end(request.headers, NOT_PASSED)
    timeout = node.settings.forward_timeout + float_param(request, "timeout", 0.0)
    try:
        answer = await node.peers.forward(
            request.method, URL(base + target, encoded=True), body, headers, timeout
        )
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
        node.link.manager_url = None
        raise ManagerUnavailable(
            f"the manager {node.settings.manager_name} cannot be reached ({type(exc).__name__});"
            " the request was not sent, so the write was not applied; retry shortly",
            retry_after=1,
        ) from None
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        node.link.manager_url = None
        what = f"no answer from the manager {node.settings.manager_name} ({type(exc).__name__})"
        if not write:
            raise ManagerUnavailable(f"{what}; retry shortly", retry_after=1) from None
        log.warning("forwarded %s %s: %s", request.method, request.rel_url.raw_path, what)
        raise UnknownOutcome(
            f"the write was sent to the manager, with {what} within {timeout:g}s: it {UNKNOWN}"
        ) from None
    out = end_to_end(answer.headers, NOT_RETURNED)
    return web.Response(status=answer.status, body=answer.body, headers=out)
