"""`kvstore local status`: the supervisor's view of each pod joined with the pod's own
`/v1/status`, printed like `kubectl get pods -o wide` with ROLE, SEQ, LAG and the pod's template
REVISION added, then a summary of the set: its policies, its revisions and how far a rollout
went, and its volumes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import aiohttp

COLUMNS = ("NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "PORT", "ROLE", "SEQ", "LAG")


async def pod_statuses(
    pods: Sequence[dict[str, Any]], token: str | None = None, timeout: float = 2.0
) -> list[dict[str, Any] | None]:
    """Each pod's `/v1/status` (None where the pod does not answer), in the order given.
    `token`: the client token of a cluster started with KV_AUTH_TOKEN."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=deadline, headers=headers) as session:
        return list(await asyncio.gather(*(_status(session, pod.get("url")) for pod in pods)))


async def _status(session: aiohttp.ClientSession, url: str | None) -> dict[str, Any] | None:
    if not url:
        return None
    try:
        async with session.get(url + "/v1/status") as response:
            if response.status != 200:
                return None
            data: dict[str, Any] = await response.json()
            return data
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return None


def age(seconds: float) -> str:
    """kubectl's short ages: 42s, 3m12s, 2h5m, 3d4h."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def lag_text(status: dict[str, Any] | None) -> str:
    if not status or status.get("role") != "follower":
        return "-"
    lag = status.get("lag") or {}
    entries, seconds = lag.get("entries"), lag.get("seconds")
    text = "?" if entries is None else str(entries)
    return text if seconds is None else f"{text} ({float(seconds):.1f}s)"


def row(pod: dict[str, Any], status: dict[str, Any] | None, now: float) -> list[str]:
    created = pod.get("created_at")
    seq = status.get("applied_seq") if status else None
    revision = [str(pod.get("revision") or "-")] if "revision" in pod else []
    return [
        pod["name"],
        "1/1" if pod.get("ready") else "0/1",
        pod.get("phase", "?"),
        str(pod.get("restarts", 0)),
        age(now - created) if created and pod.get("pid") else "-",
        pod.get("address") or "<none>",
        str(pod["url"].rsplit(":", 1)[1]) if pod.get("url") else "-",
        str(status.get("role", "?")) if status else "-",
        "-" if seq is None else str(seq),
        lag_text(status),
        *revision,
    ]


def table(
    pods: Sequence[dict[str, Any]], statuses: Sequence[dict[str, Any] | None], now: float = 0
) -> str:
    """The status table, columns aligned as kubectl aligns them (three spaces apart)."""
    now = now or time.time()
    header = [*COLUMNS, "REVISION"] if any("revision" in p for p in pods) else list(COLUMNS)
    rows = [header] + [row(p, s, now) for p, s in zip(pods, statuses, strict=True)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def summary(cluster: dict[str, Any]) -> list[str]:
    """The set below the table: policies, revisions and the rollout's progress, volumes."""
    if "update_revision" not in cluster:
        return []
    pods = cluster["pods"]
    update, current = cluster["update_revision"], cluster["current_revision"]
    strategy = cluster["update_strategy"]
    if strategy == "RollingUpdate":
        strategy += f" (partition {cluster['partition']})"
    lines = [
        f"statefulset kv: {cluster['replicas']} replicas, {cluster['pod_management_policy']}, "
        f"{strategy}, volumes whenScaled {cluster['when_scaled']}, "
        f"whenDeleted {cluster['when_deleted']}"
    ]
    updated = [p["name"] for p in pods if p.get("revision") == update]
    old = [p["name"] for p in reversed(pods) if p.get("revision") not in (None, update)]
    text = f"update revision {update}: {len(updated)}/{len(pods)} pods"
    if current != update:
        text += f" (current revision {current})"
    if old:
        text += f"; not yet: {', '.join(old)}"
    if cluster.get("rolling"):
        text += f"; rolling {cluster['rolling']}"
    lines.append(text)
    lines.append(f"volumes: {', '.join(cluster.get('volumes') or []) or 'none'}")
    if cluster.get("dns"):
        lines.append(f"dns: {cluster['dns']} answers for kv-N.kv.default.svc.cluster.local")
    return lines
