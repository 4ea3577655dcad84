"""Small helpers shared by the end-to-end tests: a load of writes that records what was
acknowledged, and the convergence wait."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from tests.harness import Cluster


@dataclass
class Acked:
    """Every acknowledged write: key -> (version, seq, value)."""

    writes: dict[str, tuple[int, int, bytes]] = field(default_factory=dict)
    failures: int = 0

    def record(self, key: str, value: bytes, doc: dict[str, Any]) -> None:
        self.writes[key] = (int(doc["version"]), int(doc["seq"]), value)


async def put(
    session: aiohttp.ClientSession, url: str, key: str, value: bytes, **params: str
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with session.put(f"{url}/v1/kv/{key}", data=value, params=params) as resp:
        doc = await resp.json()
        return resp.status, doc, dict(resp.headers)


async def write_load(
    cluster: Cluster,
    count: int,
    *,
    ordinal: int = 0,
    concurrency: int = 50,
    prefix: str = "k",
    acked: Acked | None = None,
    stop: asyncio.Event | None = None,
) -> Acked:
    """`count` puts of distinct keys from `concurrency` clients; failures are counted, never
    retried, and only acknowledged writes are recorded."""
    acked = acked if acked is not None else Acked()
    keys = iter(range(count))

    async def worker() -> None:
        for i in keys:
            if stop is not None and stop.is_set():
                return
            key, value = f"{prefix}{i:06d}", f"value-{prefix}-{i}".encode()
            try:
                status, doc, _ = await put(cluster.session, cluster.url(ordinal), key, value)
            except (aiohttp.ClientError, OSError, TimeoutError):
                acked.failures += 1
                continue
            if status in (200, 201):
                acked.record(key, value, doc)
            else:
                acked.failures += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return acked


async def converged(cluster: Cluster, ordinals: list[int], timeout: float = 60) -> None:
    """Wait until every listed pod reports the manager's seq and digest."""

    async def same() -> bool:
        docs = [await cluster.digest(o) for o in ordinals]
        return len({(d["seq"], d["digest"]) for d in docs}) == 1

    await cluster.wait_until(same, timeout, f"pods {ordinals} to reach one seq and digest")


async def check_acked(cluster: Cluster, ordinal: int, acked: Acked) -> None:
    """Every acknowledged write is on the pod at its acknowledged version (or a later one)."""
    missing = []
    for key, (version, _, value) in acked.writes.items():
        async with cluster.session.get(f"{cluster.url(ordinal)}/v1/kv/{key}") as resp:
            body = await resp.read()
            got = int(resp.headers.get("ETag", '"0"').strip('"'))
            if resp.status != 200 or got < version or (got == version and body != value):
                missing.append((key, resp.status, got, version))
    assert not missing, f"{len(missing)} acknowledged writes missing on kv-{ordinal}: {missing[:5]}"
