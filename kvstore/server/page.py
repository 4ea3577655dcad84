"""The page at `/`, served by every pod, and the view of the set behind it.

- `GET /` and `GET /web/{file}`: the page, plain HTML, CSS and JavaScript from
  `kvstore/server/web/` (no build step, nothing loaded from elsewhere; its
  Content-Security-Policy says so).
- `GET /v1/cluster`: the set as this pod sees it: the peers DNS lists (SRV records, else A
  records), each asked for its `/v1/status` at once with a short timeout. A pod that does not
  answer is listed with `"reachable": false` and why. The answer carries
  `Access-Control-Allow-Origin: *`, so that a page whose own pod went away can keep asking the
  others (it is read-only, and needs the client token like `/v1/status` when one is set).
- `GET /v1/cluster/kv/{key}`: one key as every pod holds it, side by side: each pod DNS lists
  is asked for the key at once (this pod reads its own store), and answers with the value's
  size, digest and first bytes, its version, the pod's applied seq and, on a follower, the
  manager's seq and the lag, or why it could not. Same token and CORS as `/v1/cluster`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from importlib import resources
from typing import Any
from urllib.parse import quote

import aiohttp
from aiohttp import web
from yarl import URL

from kvstore.cluster.discovery import Peer
from kvstore.cluster.node import Node
from kvstore.errors import KVError
from kvstore.model import validate_key
from kvstore.server import httputil as h
from kvstore.server import routes
from kvstore.server.keys import NODE
from kvstore.server.routes import CLIENT_CORS, CORS, OPEN

PEER_TIMEOUT = 1.5  # seconds for one peer's /v1/status: the page asks every second
PREVIEW_BYTES = 256  # of a value, in the key view: the page shows the start and the digest
KEY_VIEW_PREFIX = "/v1/cluster/kv/"
ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "chart.js": "text/javascript",
    "revisions.js": "text/javascript",
    "timeline.js": "text/javascript",
    "keyview.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src *; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
}


def _node(request: web.Request) -> Node:
    return request.app[NODE]


def _asset(name: str) -> web.Response:
    body = resources.files("kvstore.server").joinpath("web", name).read_bytes()
    return web.Response(body=body, content_type=ASSETS[name], charset="utf-8", headers=PAGE_HEADERS)


async def index(request: web.Request) -> web.StreamResponse:
    return _asset("index.html")


async def asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return _asset(name)


def _ordinal(name: str) -> int | None:
    _, _, tail = name.rpartition("-")
    return int(tail) if tail.isdigit() else None


async def _ask(node: Node, peer: Peer) -> dict[str, Any]:
    """One peer's entry: its `/v1/status`, or why it could not be had."""
    entry: dict[str, Any] = {"name": peer.name, "url": peer.url, "listed": True}
    if peer.name == node.settings.pod_name:
        return entry | _reachable(node.status(), 0.0) | {"self": True}
    started = time.monotonic()
    try:
        doc = await node.peers.status(peer.url, PEER_TIMEOUT)
    except KVError as exc:
        return entry | _unreachable(exc.message)
    except TimeoutError:
        return entry | _unreachable(f"no answer within {PEER_TIMEOUT:g}s")
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return entry | _unreachable(_reason(exc))
    return entry | _reachable(doc, time.monotonic() - started)


def _reachable(doc: dict[str, Any], seconds: float) -> dict[str, Any]:
    started_at = time.time() - float(doc.get("uptime_seconds", 0.0))
    return {
        "name": str(doc.get("pod")),
        "reachable": True,
        "ms": round(seconds * 1000, 1),
        "started_at": round(started_at, 3),
        "status": doc,
    }


def _unreachable(reason: str) -> dict[str, Any]:
    return {"reachable": False, "error": reason}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        return f"cannot connect ({os.strerror(error.errno) if error.errno else error})"
    return type(exc).__name__ + (f": {exc}" if str(exc) else "")


def _sort_key(entry: dict[str, Any]) -> tuple[bool, int, str]:
    ordinal = entry.get("ordinal")
    return (ordinal is None, ordinal if isinstance(ordinal, int) else 0, entry["name"])


async def cluster_view(node: Node) -> dict[str, Any]:
    """Every pod DNS lists, each with its status or why it has none, asked concurrently; this
    pod is always in it (`"listed": false` if DNS does not have it, e.g. while terminating)."""
    peers = await node.discovery.peers()
    entries = list(await asyncio.gather(*(_ask(node, p) for p in peers)))
    me = node.settings.pod_name
    if not any(e["name"] == me for e in entries):
        url = f"http://{node.settings.host}:{node.settings.port}"
        entries.append({"url": url, "listed": False, "self": True} | _reachable(node.status(), 0.0))
    for entry in entries:
        entry.setdefault("self", False)
        status = entry.get("status")
        entry["ordinal"] = status["ordinal"] if status else _ordinal(entry["name"])
    s = node.settings
    return {
        "pod": me,
        "time": round(time.time(), 3),
        "service": s.service_domain,
        "srv": s.srv_name,
        "pods": sorted(entries, key=_sort_key),
    }


async def cluster(request: web.Request) -> web.StreamResponse:
    return h.json_response(await cluster_view(_node(request)), headers=CORS)


async def cluster_preflight(request: web.Request) -> web.StreamResponse:
    """CORS preflight: a page sending its token to another pod asks this first."""
    return web.Response(status=204, headers=CORS)


# --- one key on every pod ---------------------------------------------------------------------
def _held(value: bytes, version: int) -> dict[str, Any]:
    return {
        "found": True,
        "version": version,
        "size": len(value),
        "digest": hashlib.sha256(value).hexdigest()[:16],
        "preview": base64.b64encode(value[:PREVIEW_BYTES]).decode("ascii"),
    }


def _own_key(node: Node, key: str) -> dict[str, Any]:
    """This pod's copy, from its own store: no request."""
    item = node.store.get(key) if node.has_data else None
    out: dict[str, Any] = {"reachable": True, "seq": node.store.state.seq}
    if not node.has_data:
        out |= {"found": False, "error": "no data yet"}
    else:
        out |= {"found": False} if item is None else _held(item.value, item.version)
    if not node.is_manager:
        out |= {"manager_seq": node.link.manager_seq, "lag_seconds": node.lag()["seconds"]}
    return out


def _number(raw: str | None, kind: type[int] | type[float]) -> Any:
    try:
        return None if raw is None else kind(raw)
    except ValueError:
        return None


async def _peer_key(node: Node, peer: Peer, key: str) -> dict[str, Any]:
    """A peer's copy: its GET /v1/kv/{key}, or why it could not be had."""
    url = URL(f"{peer.url}/v1/kv/{quote(key, safe='')}", encoded=True)
    token = node.settings.auth_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    wait = aiohttp.ClientTimeout(total=PEER_TIMEOUT)
    try:
        async with node.peers.session.get(url, headers=headers, timeout=wait) as resp:
            body = await resp.read()
            h_ = resp.headers
    except TimeoutError:
        return _unreachable(f"no answer within {PEER_TIMEOUT:g}s")
    except (aiohttp.ClientError, OSError) as exc:
        return _unreachable(_reason(exc))
    out: dict[str, Any] = {"reachable": True, "seq": _number(h_.get("X-KV-Seq"), int)}
    for name, field, kind in (
        ("X-KV-Manager-Seq", "manager_seq", int),
        ("X-KV-Lag-Seconds", "lag_seconds", float),
    ):
        number = _number(h_.get(name), kind)
        if number is not None:
            out[field] = number
    if resp.status == 200:
        version = _number(h_.get("ETag", "").strip('"'), int)
        return out | _held(body, version or 0)
    if resp.status == 404:
        return out | {"found": False}
    try:
        message = str((await resp.json())["error"]["message"])
    except (ValueError, KeyError, TypeError, aiohttp.ContentTypeError):
        message = f"HTTP {resp.status}"
    return out | {"found": False, "error": f"{message} ({resp.status})"}


async def key_view(node: Node, key: str) -> dict[str, Any]:
    """`key` on every pod DNS lists (and this one), asked concurrently, in ordinal order."""
    peers = await node.discovery.peers()
    me = node.settings.pod_name
    others = [p for p in peers if p.name != me]
    answers = await asyncio.gather(*(_peer_key(node, p, key) for p in others))
    pods = [{"name": p.name, "url": p.url} | a for p, a in zip(others, answers, strict=True)]
    url = f"http://{node.settings.host}:{node.settings.port}"
    mine = next((p.url for p in peers if p.name == me), url)
    pods.append({"name": me, "url": mine, "self": True} | _own_key(node, key))
    for pod in pods:
        pod.setdefault("self", False)
        pod["ordinal"] = _ordinal(pod["name"])
    pods.sort(key=_sort_key)
    return {"key": key, "pod": me, "time": round(time.time(), 3), "pods": pods}


async def cluster_key(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    key = h.key_from_path(request, KEY_VIEW_PREFIX)
    validate_key(key, node.settings.max_key_bytes)
    return h.json_response(await key_view(node, key), headers=CORS)


def add_routes(app: web.Application) -> None:
    routes.add(app, "GET", "/", index, OPEN)
    routes.add(app, "GET", "/web/{name}", asset, OPEN)
    routes.add(app, "GET", "/v1/cluster", cluster, CLIENT_CORS)
    routes.add(app, "OPTIONS", "/v1/cluster", cluster_preflight, OPEN)
    routes.add(app, "GET", KEY_VIEW_PREFIX + "{key:.+}", cluster_key, CLIENT_CORS)
    routes.add(app, "OPTIONS", KEY_VIEW_PREFIX + "{key:.+}", cluster_preflight, OPEN)
