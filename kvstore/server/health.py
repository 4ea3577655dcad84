"""/livez, /readyz, /v1/status and /v1/digest (SPEC §4)."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from kvstore.cluster.node import Node
from kvstore.model import digest_hex
from kvstore.server import httputil as h

NEVER_CONNECTED_GRACE = 10.0  # seconds a follower may be without its manager and stay ready


def node_of(request: web.Request) -> Node:
    from kvstore.server.api import NODE

    return request.app[NODE]


async def livez(request: web.Request) -> web.StreamResponse:
    """Alive while the process serves; never depends on another pod."""
    return web.Response(text="ok\n")


def checks(node: Node) -> list[tuple[bool, str]]:
    """Each readiness check as (passed, line)."""
    out: list[tuple[bool, str]] = [(not node.store.closed, "db ok")]
    if node.shutting_down:
        out.append((False, "shutdown: in progress"))
    if node.is_manager:
        out.append((not node.restoring, "restore: " + ("running" if node.restoring else "done")))
        return out
    p = node.progress
    out.append((node.has_data, "data: " + ("installed" if node.has_data else "no snapshot yet")))
    if p.epoch_mismatch:
        out.append((False, f"epoch: ours {node.store.state.epoch}, manager's {p.epoch_mismatch}"))
    if p.diverged:
        out.append((False, f"history: {p.diverged}"))
    out.append(_link_check(node))
    lag = node.lag()["entries"]
    out.append(
        (
            lag <= node.settings.ready_max_lag,
            f"lag: {lag} entries (max {node.settings.ready_max_lag})",
        )
    )
    return out


def _link_check(node: Node) -> tuple[bool, str]:
    p = node.progress
    if p.connected:
        return True, "replication: connected"
    lost = time.monotonic() - (p.lost_at if p.lost_at is not None else p.started)
    return lost < NEVER_CONNECTED_GRACE, f"replication: no manager for {lost:.0f}s"


async def readyz(request: web.Request) -> web.StreamResponse:
    results = checks(node_of(request))
    ok = all(passed for passed, _ in results)
    lines = [("[+]" if passed else "[-]") + line for passed, line in results]
    lines.append("readyz check " + ("passed" if ok else "failed"))
    return web.Response(text="\n".join(lines) + "\n", status=200 if ok else 503)


def status_doc(node: Node) -> dict[str, Any]:
    st, s, p = node.store.state, node.settings, node.progress
    doc: dict[str, Any] = {
        "pod": s.pod_name,
        "ordinal": s.ordinal,
        "role": s.role,
        "revision": s.revision,
        "epoch": st.epoch,
        "applied_seq": st.seq,
        "oldest_seq": st.oldest_seq,
        "keys": st.keys,
        "digest": digest_hex(st.digest),
        "ready": all(ok for ok, _ in checks(node)),
        "uptime_seconds": round(time.time() - node.started_at, 3),
        "lag": node.lag(),
    }
    if node.is_manager:
        doc["manager"] = {"url": f"http://{s.host}:{s.port}", "seq": st.seq, "connected": True}
        doc["followers"] = node.tracker.describe(st.seq)
        doc["restoring"] = node.restoring
    else:
        doc["manager"] = {"url": p.manager_url, "seq": p.manager_seq, "connected": p.connected}
        doc["replication"] = {
            "reconnects": p.reconnects,
            "snapshots_installed": p.snapshots_installed,
            "snapshot_progress": p.snapshot_progress,
            "last_error": p.last_error,
            "epoch_mismatch": p.epoch_mismatch,
            "diverged": p.diverged,
        }
    return doc


async def status(request: web.Request) -> web.StreamResponse:
    node = node_of(request)
    h.check_token(request, node.settings.auth_token, "the client API")
    return h.json_response(status_doc(node))


async def digest(request: web.Request) -> web.StreamResponse:
    node = node_of(request)
    h.check_token(request, node.settings.auth_token, "the client API")
    st = node.store.state
    return h.json_response(
        {"seq": st.seq, "digest": digest_hex(st.digest), "keys": st.keys, "epoch": st.epoch}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/v1/digest", digest)
