"""Replication end to end: three real `kvstore serve` processes, kv-0..kv-2, each on its own
loopback address with its own data directory, finding the manager through a DNS responder."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from tests.e2e_util import Acked, check_acked, converged, put, write_load
from tests.harness import Cluster

pytestmark = pytest.mark.e2e


async def test_followers_reach_the_managers_seq_and_digest(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=3) as cluster:
        acked = await write_load(cluster, 10_000, concurrency=64)
        assert acked.failures == 0 and len(acked.writes) == 10_000
        await converged(cluster, [0, 1, 2])
        manager = await cluster.digest(0)
        assert manager["seq"] == 10_000
        await check_acked(cluster, 2, acked)


async def test_killed_follower_resumes_from_its_applied_seq(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=3) as cluster:
        stop = asyncio.Event()
        load = asyncio.create_task(write_load(cluster, 6000, concurrency=16, stop=stop))
        await cluster.wait_until(_past(cluster, 0, 1500), 30, "kv-0 to pass seq 1500")
        await cluster.kill(1)
        await cluster.wait_until(_past(cluster, 0, 3000), 30, "kv-0 to pass seq 3000")
        log_before = len(cluster.log(1))
        await cluster.restart(1)
        acked = await load
        await cluster.wait_ready(1)
        await converged(cluster, [0, 1, 2])
        status = await cluster.status(1)
        assert status["replication"]["snapshots_installed"] == 0
        assert "snapshot: installing" not in cluster.log(1)[log_before:]
        await check_acked(cluster, 1, acked)


async def test_follower_behind_the_log_takes_a_snapshot_and_survives_a_kill_mid_install(
    tmp_path: Path,
) -> None:
    env = {"KV_LOG_RETENTION": "500"}
    async with Cluster(tmp_path, replicas=3, env=env) as cluster:
        await cluster.kill(2)
        await _bulk(cluster, 60_000, 300)
        offset = len(cluster.log(2))
        await cluster.restart(2)
        await cluster.wait_until(
            _logged(cluster, 2, "snapshot: installing", offset), 30, "snapshot"
        )
        await cluster.kill(2)
        assert "snapshot: installed" not in cluster.log(2)[offset:], "it finished before the kill"
        await cluster.restart(2)
        await cluster.wait_ready(2, timeout=60)
        await converged(cluster, [0, 1, 2], timeout=90)
        status = await cluster.status(2)
        assert status["replication"]["snapshots_installed"] == 1
        acked = await write_load(cluster, 200, prefix="after")
        await converged(cluster, [0, 2])
        await check_acked(cluster, 2, acked)


async def test_manager_back_on_a_new_address_is_found_by_dns(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=3) as cluster:
        acked = await write_load(cluster, 500)
        await converged(cluster, [0, 1, 2])
        old = cluster.address(0)
        await cluster.kill(0)
        async with cluster.session.get(f"{cluster.url(1)}/v1/kv/k000001") as resp:
            assert resp.status == 200 and await resp.read() == b"value-k-1"
        status, doc, headers = await put(cluster.session, cluster.url(1), "during", b"x")
        assert status == 503 and doc["error"]["code"] == "manager_unavailable"
        assert "Retry-After" in headers
        await cluster.restart(0, new_address=True)
        assert cluster.address(0) != old
        await cluster.wait_ready(0)

        async def write_via_follower() -> bool:
            status, _, _ = await put(cluster.session, cluster.url(1), "after", b"y")
            return status in (200, 201)

        await cluster.wait_until(write_via_follower, 30, "a write through kv-1 to succeed")
        acked.writes.update((await write_load(cluster, 300, prefix="new")).writes)
        await converged(cluster, [0, 1, 2])
        for ordinal in (1, 2):
            await check_acked(cluster, ordinal, acked)


async def test_manager_with_a_wiped_volume_restores_from_the_most_advanced_follower(
    tmp_path: Path,
) -> None:
    async with Cluster(tmp_path, replicas=3) as cluster:
        acked = await write_load(cluster, 1500)
        await converged(cluster, [0, 1, 2])
        before = await cluster.status(0)
        await cluster.stop(0)
        cluster.wipe(0)
        await cluster.restart(0)
        await cluster.wait_ready(0)
        after = await cluster.status(0)
        assert after["epoch"] == before["epoch"]
        assert after["applied_seq"] == before["applied_seq"]
        assert "restore: took" in cluster.log(0)
        await check_acked(cluster, 0, acked)
        more = await write_load(cluster, 100, prefix="post")
        await converged(cluster, [0, 1, 2])
        await check_acked(cluster, 1, more)


async def test_write_to_a_follower_is_forwarded_and_read_your_writes_on_another(
    tmp_path: Path,
) -> None:
    async with Cluster(tmp_path, replicas=3) as cluster:
        status, doc, headers = await put(cluster.session, cluster.url(1), "fwd", b"hello")
        assert status == 201 and headers["X-KV-Served-By"] == "kv-0"
        params = {"min_seq": str(doc["seq"]), "timeout": "10"}
        async with cluster.session.get(f"{cluster.url(2)}/v1/kv/fwd", params=params) as resp:
            assert resp.status == 200 and await resp.read() == b"hello"
            assert resp.headers["X-KV-Served-By"] == "kv-2"
            assert int(resp.headers["X-KV-Seq"]) >= doc["seq"]
        url = f"{cluster.url(1)}/v1/kv/redir?redirect=true"
        async with cluster.session.put(url, data=b"r", allow_redirects=False) as resp:
            assert resp.status == 307
            assert resp.headers["Location"].startswith(cluster.url(0))


async def test_ack_waits_for_the_followers(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=3) as cluster:
        for i in range(20):
            status, doc, _ = await put(cluster.session, cluster.url(0), f"a{i}", b"v", ack="2")
            assert status == 201, doc
            for ordinal in (1, 2):  # no min_seq: applied already, since both acked
                async with cluster.session.get(f"{cluster.url(ordinal)}/v1/kv/a{i}") as resp:
                    assert resp.status == 200
        params = {"ack": "3", "timeout": "0.5"}
        status, doc, _ = await put(cluster.session, cluster.url(0), "three", b"v", **params)
        assert status == 504 and doc["error"]["acked"] == 2
        async with cluster.session.get(f"{cluster.url(0)}/v1/kv/three") as resp:
            assert resp.status == 200  # the write itself stays committed


async def test_watch_from_a_follower(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=2) as cluster:
        await write_load(cluster, 5, prefix="w")
        await converged(cluster, [0, 1])
        url = f"{cluster.url(1)}/v1/watch?since=2&prefix=w"
        async with cluster.session.get(url) as resp:
            assert resp.status == 200
            await write_load(cluster, 1, prefix="x")  # filtered out by the prefix
            await put(cluster.session, cluster.url(0), "w-live", b"L")
            events = []
            async for line in resp.content:
                doc = json.loads(line)
                if "key" in doc:
                    events.append(doc)
                if doc.get("key") == "w-live":
                    break
        assert [e["seq"] for e in events] == [3, 4, 5, 7]
        assert base64.b64decode(events[-1]["value"]) == b"L"


def _past(cluster: Cluster, ordinal: int, seq: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return int((await cluster.digest(ordinal))["seq"]) >= seq

    return check


def _logged(cluster: Cluster, ordinal: int, text: str, offset: int):  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return text in cluster.log(ordinal)[offset:]

    return check


async def _bulk(cluster: Cluster, keys: int, value_size: int) -> Acked:
    """Many keys quickly, 1000 to a txn."""
    acked = Acked()
    value = base64.b64encode(b"x" * value_size).decode()
    for start in range(0, keys, 1000):
        ops = [
            {"op": "put", "key": f"bulk{i:07d}", "value": value} for i in range(start, start + 1000)
        ]
        async with cluster.session.post(f"{cluster.url(0)}/v1/txn", json={"ops": ops}) as resp:
            assert resp.status == 200, await resp.text()
    return acked
