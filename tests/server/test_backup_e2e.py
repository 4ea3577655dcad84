"""`kvstore backup` from a follower, then pods started from the backup with KV_RESTORE_FROM."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from tests.e2e_util import check_acked, converged, write_load
from tests.harness import Cluster

pytestmark = pytest.mark.e2e


async def _backup(url: str, out: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "kvstore",
        "backup",
        "--url",
        url,
        "--out",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_backup_from_a_follower_and_start_pods_from_it(tmp_path: Path) -> None:
    out = tmp_path / "backup.db"
    async with Cluster(tmp_path / "a", replicas=2) as cluster:
        acked = await write_load(cluster, 800)
        await converged(cluster, [0, 1])
        original = await cluster.digest(1)
        report = await _backup(cluster.url(1), out)
    assert f"800 keys at seq 800, epoch {original['epoch']}" in report

    env = {"KV_RESTORE_FROM": str(out)}
    async with Cluster(tmp_path / "b", replicas=2, env=env) as restored:
        assert await restored.digest(0) == original  # same seq, digest, keys and epoch
        await converged(restored, [0, 1])
        status = await restored.status(1)
        assert status["replication"]["snapshots_installed"] == 0  # resumed from the backup's seq
        await check_acked(restored, 1, acked)
        more = await write_load(restored, 50, prefix="after")
        await converged(restored, [0, 1])
        await check_acked(restored, 1, more)
        assert "started from the backup" in restored.log(0)
