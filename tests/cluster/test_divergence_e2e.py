"""No silent divergence, end to end: real `kvstore serve` processes.

- the silent merge: a manager restored while the most advanced follower was down takes more
  writes; that follower returns: it is reported diverged, not ready, its extra acknowledged
  writes are exported by `kvstore repair export` and replayed, and `repair resync` makes every
  replica hold one digest;
- the restore across epochs: a peer of an older epoch at a higher seq never wins; peers of two
  epochs block the restore until `kvstore repair restore-from`;
- a broken peer during the restore (a stand-in that cuts its snapshot, repeats a key, drops a
  field): the manager keeps trying, says why, and restores from a good peer once there is one;
- readiness through a manager outage: followers stay ready and answer reads with growing
  X-KV-Lag-Seconds.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp import web

from tests.e2e_util import Acked, check_acked, converged, put, write_load
from tests.harness import Cluster

pytestmark = pytest.mark.e2e
WAIT = {"KV_RESTORE_WAIT": "2"}


def kvstore(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    return subprocess.run(
        [sys.executable, "-m", "kvstore", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


async def readyz(cluster: Cluster, ordinal: int) -> tuple[int, str]:
    async with cluster.session.get(cluster.url(ordinal) + "/readyz") as resp:
        return resp.status, await resp.text()


async def acked_puts(cluster: Cluster, prefix: str, count: int, **params: str) -> Acked:
    acked = Acked()
    for i in range(count):
        key, value = f"{prefix}{i}", f"{prefix}-value-{i}".encode()
        status, doc, _ = await put(cluster.session, cluster.url(0), key, value, **params)
        assert status in (200, 201), doc
        acked.record(key, value, doc)
    return acked


async def test_a_follower_ahead_of_a_restored_manager_is_diverged_then_exported_and_resynced(
    tmp_path: Path,
) -> None:
    async with Cluster(tmp_path, replicas=3, env=WAIT) as cluster:
        await acked_puts(cluster, "base", 10)
        await converged(cluster, [0, 1, 2])
        await cluster.stop(1)
        extra = await acked_puts(cluster, "a", 5, ack="1")  # applied on kv-2 only: seq 11..15
        await cluster.stop(2)
        await cluster.stop(0)
        cluster.wipe(0)
        await cluster.start(1)
        await cluster.start(0)  # kv-2 is down: after KV_RESTORE_WAIT it restores from kv-1
        await cluster.wait_ready(0)
        assert (await cluster.status(0))["applied_seq"] == 10
        later = await acked_puts(cluster, "b", 10)  # seq 11..20: past kv-2's 15
        await cluster.start(2)

        async def decided() -> bool:
            st = await cluster.status(2)
            return st.get("diverged") is not None or st["applied_seq"] >= 20

        await cluster.wait_until(decided, 30, "kv-2 to be diverged (or merged)")
        st2 = await cluster.status(2)
        assert st2.get("diverged") is not None, f"kv-2 merged silently: {st2}"
        assert st2["diverged"]["seq"] == 11 and st2["applied_seq"] == 15
        status, text = await readyz(cluster, 2)
        assert status == 503 and "[-]replication: diverged at seq 11" in text, text
        await check_acked(cluster, 2, extra)  # it kept its data
        async with cluster.session.get(cluster.url(2) + "/metrics") as resp:
            metrics = await resp.text()
        assert "kvstore_replication_diverged 1.0" in metrics
        assert "kvstore_replication_diverged_seq 11.0" in metrics

        repair = kvstore("repair", "status", "--json", "--url", cluster.url(0))
        assert repair.returncode == 0, repair.stderr
        rows = {r["pod"]: r for r in json.loads(repair.stdout)}
        assert rows["kv-2"]["diverged_from"] == 11 and rows["kv-0"]["diverged_from"] is None
        assert rows["kv-0"]["terms"] != rows["kv-2"]["terms"]
        table = kvstore("repair", "status", "--url", cluster.url(0)).stdout
        assert "DIVERGED from seq 11" in table

        out = tmp_path / "kv-2.txn.json"
        export = kvstore(
            "repair", "export", "--pod", "kv-2", "--out", str(out), "--url", cluster.url(0)
        )
        assert export.returncode == 0, export.stderr
        ops = json.loads(out.read_text())["ops"]
        assert {op["key"] for op in ops} == set(extra.writes)
        replay = kvstore("txn", str(out), "--url", cluster.url(0))
        assert replay.returncode == 0, replay.stderr + replay.stdout
        for key, (_, _, value) in extra.writes.items():
            async with cluster.session.get(f"{cluster.url(0)}/v1/kv/{key}") as resp:
                assert resp.status == 200 and await resp.read() == value

        resync = kvstore("repair", "resync", "--pod", "kv-2", "--url", cluster.url(0))
        assert resync.returncode == 0, resync.stderr
        await cluster.wait_ready(2)
        await converged(cluster, [0, 1, 2])
        backups = list(cluster.data_dir(2).glob("resync-backup-*.db"))
        assert len(backups) == 1
        await check_acked(cluster, 2, later)
        await check_acked(cluster, 2, extra)
        st1 = await cluster.status(1)
        assert st1["manager"]["seq"] == (await cluster.status(0))["applied_seq"]


async def _data_of_another_epoch(root: Path, keys: int) -> Path:
    """A data directory holding `keys` writes of an epoch of its own."""
    async with Cluster(root, replicas=1) as other:
        await acked_puts(other, "old", keys)
        await other.stop(0)
        return other.data_dir(0)


async def test_restore_never_picks_a_stale_epoch_and_stops_between_two(tmp_path: Path) -> None:
    stale = await _data_of_another_epoch(tmp_path / "other", 40)
    async with Cluster(tmp_path / "main", replicas=3, env=WAIT, autostart=False) as cluster:
        for ordinal in (0, 1):
            await cluster.start(ordinal)
        await cluster.wait_ready(0)
        await cluster.wait_ready(1)
        acked = await acked_puts(cluster, "cur", 10, ack="1")
        shutil.copytree(stale, cluster.data_dir(2))  # more changes, of an older data set
        await cluster.start(2)
        epoch = (await cluster.status(0))["epoch"]

        async def mismatch() -> bool:
            return bool((await cluster.status(2))["replication"]["epoch_mismatch"])

        await cluster.wait_until(mismatch, 30, "kv-2 to report its epoch mismatch")
        await cluster.stop(0)
        cluster.wipe(0)
        await cluster.start(0)
        await cluster.wait_ready(0)
        st0 = await cluster.status(0)
        assert st0["epoch"] == epoch and st0["applied_seq"] == 10, st0
        await check_acked(cluster, 0, acked)

        # kv-2, with the other epoch, comes back while kv-0 is down: it cannot tell.
        await cluster.stop(2)
        await cluster.stop(0)
        cluster.wipe(0)
        shutil.rmtree(cluster.data_dir(2))
        shutil.copytree(stale, cluster.data_dir(2))
        await cluster.start(2)
        await cluster.wait_ready(2)
        await cluster.start(0)

        async def blocked() -> bool:
            status, text = await readyz(cluster, 0)
            return status == 503 and "blocked: peers hold different epochs" in text

        await cluster.wait_until(blocked, 30, "kv-0 to wait for an operator")
        _, text = await readyz(cluster, 0)
        assert "kv-1: epoch " + epoch in text and "kv-2: epoch" in text, text
        assert "peers hold different epochs" in cluster.log(0)
        choose = kvstore("repair", "restore-from", "--pod", "kv-1", "--url", cluster.url(1))
        assert choose.returncode == 0, choose.stderr
        await cluster.wait_ready(0)
        assert (await cluster.status(0))["epoch"] == epoch
        await check_acked(cluster, 0, acked)
        await cluster.wait_until(mismatch, 30, "kv-2 to report its epoch mismatch again")


class BrokenPeer:
    """A stand-in pod on its own address: its status claims the most up to date data of the
    cluster's epoch; each snapshot answer is broken another way."""

    KINDS = ("cut before the header", "a repeated key", "a row without its fields")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.snapshots = 0

    async def status(self, request: web.Request) -> web.Response:
        doc = {
            "pod": "kv-2",
            "ordinal": 2,
            "role": "follower",
            "epoch": self.epoch,
            "applied_seq": 10_000,
            "last_term": 1 << 50,
            "term": 1 << 50,
            "diverged": None,
            "epoch_mismatch": None,
        }
        return web.json_response(doc)

    async def snapshot(self, request: web.Request) -> web.StreamResponse:
        kind = self.KINDS[self.snapshots % len(self.KINDS)]
        self.snapshots += 1
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await resp.prepare(request)
        v = base64.b64encode(b"v").decode()
        header = {"type": "header", "epoch": self.epoch, "seq": 10_000, "digest": "0" * 32}
        if kind == "cut before the header":
            await resp.write(b'{"type": "header", "epo')
        elif kind == "a repeated key":
            await resp.write(json.dumps(header | {"keys": 2}).encode() + b"\n")
            rows = [["k", v, 1, 1, 1], ["k", v, 1, 1, 1]]
            await resp.write(json.dumps({"type": "rows", "rows": rows}).encode() + b"\n")
        else:
            await resp.write(json.dumps(header | {"keys": 1}).encode() + b"\n")
            await resp.write(json.dumps({"type": "rows", "rows": [["k", v]]}).encode() + b"\n")
        assert request.transport is not None
        request.transport.close()
        return resp


@asynccontextmanager
async def broken_peer(cluster: Cluster, peer: BrokenPeer) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/v1/status", peer.status)
    app.router.add_get("/v1/replication/snapshot", peer.snapshot)
    runner = web.AppRunner(app)
    await runner.setup()
    address = cluster.address(2)  # the address kv-2 would have: the cluster has kv-0, kv-1
    site = web.TCPSite(runner, address, cluster.port)
    await site.start()
    cluster.table.set_pod("kv-2", address)
    try:
        yield address
    finally:
        cluster.table.remove_pod("kv-2")
        await runner.cleanup()


async def test_a_broken_peer_during_the_restore_is_logged_and_the_restore_goes_on(
    tmp_path: Path,
) -> None:
    async with Cluster(tmp_path, replicas=2, env=WAIT) as cluster:
        acked = await acked_puts(cluster, "k", 20, ack="1")
        epoch = (await cluster.status(0))["epoch"]
        await cluster.stop(1)
        cluster.table.remove_pod("kv-1")  # gone from DNS: the stand-in is the only peer
        await cluster.stop(0)
        cluster.wipe(0)
        peer = BrokenPeer(epoch)
        async with broken_peer(cluster, peer):
            await cluster.start(0)

            async def tried_each_way() -> bool:
                return (
                    peer.snapshots >= 4 and cluster.log(0).count("restore: from kv-2 failed") >= 3
                )

            await cluster.wait_until(tried_each_way, 60, "kv-0 to try the broken peer again")
            status, text = await readyz(cluster, 0)
            assert status == 503 and "[-]restore:" in text, text
            log = cluster.log(0)
            failures = [line for line in log.splitlines() if "restore: from kv-2 failed" in line]
            assert len({line.split("failed: ", 1)[1] for line in failures}) >= 2, failures
            await cluster.start(1)  # a good peer: the restore goes on to it
            await cluster.wait_ready(0, timeout=60)
        st0 = await cluster.status(0)
        assert st0["epoch"] == epoch and st0["applied_seq"] == 20
        await check_acked(cluster, 0, acked)


async def test_followers_stay_ready_and_serve_reads_through_a_manager_outage(
    tmp_path: Path,
) -> None:
    async with Cluster(tmp_path, replicas=3) as cluster:
        await write_load(cluster, 20)
        await converged(cluster, [0, 1, 2])
        await cluster.stop(0)
        seen: dict[int, list[float]] = {1: [], 2: []}

        async def served_past_the_old_grace() -> bool:
            for ordinal in (1, 2):
                status, text = await readyz(cluster, ordinal)
                assert status == 200, f"kv-{ordinal} not ready without its manager:\n{text}"
                url = f"{cluster.url(ordinal)}/v1/kv/k000003"
                async with cluster.session.get(url) as resp:
                    assert resp.status == 200 and await resp.read() == b"value-k-3"
                    assert resp.headers["X-KV-Manager-Seq"] == "20"
                    seen[ordinal].append(float(resp.headers["X-KV-Lag-Seconds"]))
            return min(seen[1][-1], seen[2][-1]) > 13  # the old rule failed them after 10 s

        await cluster.wait_until(served_past_the_old_grace, 40, "13 s of stale reads")
        for values in seen.values():
            assert values == sorted(values) and values[-1] > values[0]
        await cluster.start(0)
        await cluster.wait_ready(0)

        async def caught_up() -> bool:
            async with cluster.session.get(f"{cluster.url(1)}/v1/kv/k000003") as resp:
                return resp.headers["X-KV-Lag-Seconds"] == "0.000"

        await cluster.wait_until(caught_up, 30, "kv-1's lag to fall back to 0")
