"""One real `kvstore serve`: SIGKILL in the middle of concurrent writes loses no acknowledged
write, and the seq goes on without a gap after the restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.e2e_util import check_acked, put, write_load
from tests.harness import Cluster

pytestmark = pytest.mark.e2e


async def _seqs_in_log(cluster: Cluster) -> list[int]:
    """Every seq in the change log, read through watch from 0 up to the current seq."""
    head = int((await cluster.digest(0))["seq"])
    seqs: list[int] = []
    async with cluster.session.get(f"{cluster.url(0)}/v1/watch?since=0") as resp:
        assert resp.status == 200
        async for line in resp.content:
            doc = json.loads(line)
            if "key" in doc:
                seqs.append(doc["seq"])
            if doc.get("seq", 0) >= head:
                break
    return seqs


async def test_sigkill_mid_load_loses_no_acknowledged_write(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=1) as cluster:
        load = asyncio.create_task(write_load(cluster, 2000, concurrency=50))

        async def halfway() -> bool:
            return int((await cluster.digest(0))["seq"]) >= 800

        await cluster.wait_until(halfway, 30, "kv-0 to pass seq 800")
        await cluster.kill(0)
        acked = await load
        # seq 800 was committed; some of those answers may not have reached the clients yet
        assert 0 < len(acked.writes) < 2000 and acked.failures > 0
        await cluster.restart(0)
        await cluster.wait_ready(0)
        await check_acked(cluster, 0, acked)

        before = int((await cluster.digest(0))["seq"])
        assert before >= max(seq for _, seq, _ in acked.writes.values())
        status, doc, _ = await put(cluster.session, cluster.url(0), "after-restart", b"x")
        assert status == 201 and doc["seq"] == before + 1
        assert await _seqs_in_log(cluster) == list(range(1, before + 2))
