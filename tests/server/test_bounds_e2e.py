"""Bounded in bytes, against real `kvstore serve` processes: readers that stop reading are cut
off and let go of their read transaction; a backup finishes under steady writes and writes
nothing outside the data volume; bodies are bounded before they are parsed; abandoned min_seq
waits are freed; watches are capped; a quiet watch gets heartbeats while other keys are
written."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from kvstore.store.backup import describe
from tests.harness import Cluster

MIB = 1 << 20


async def metric(cluster: Cluster, name: str, labels: dict[str, str] | None = None) -> float:
    async with cluster.session.get(cluster.url(0) + "/metrics") as resp:
        text = await resp.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and (labels or {}).items() <= sample.labels.items():
                return float(sample.value)
    return -1.0


async def fill(cluster: Cluster, prefix: str, count: int, size: int = MIB) -> None:
    for i in range(count):
        async with cluster.session.put(
            f"{cluster.url(0)}/v1/kv/{prefix}{i:04d}", data=os.urandom(size)
        ) as resp:
            assert resp.status in (200, 201), await resp.text()


def stalled_get(cluster: Cluster, path: str) -> socket.socket:
    """A client that sends a request and then never reads (a tiny receive window)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((cluster.address(0), cluster.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: kv-0\r\n\r\n".encode())
    return sock


def read_to_the_end(sock: socket.socket) -> bool:
    """Read what the server sent; True if it then closed the connection (EOF or reset)."""
    sock.settimeout(30)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    finally:
        sock.close()
    return True


def checkpoint(db: Path) -> bool:
    """True if the whole WAL could be checkpointed and reset to nothing."""
    conn = sqlite3.connect(db)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    return busy == 0 and os.path.getsize(str(db) + "-wal") == 0


async def test_readers_that_stop_reading_are_cut_off_and_let_go(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=1, env={"KV_WRITE_TIMEOUT": "1"}) as cluster:
        watch = stalled_get(cluster, "/v1/watch?prefix=w/&since=0")
        await fill(cluster, "w/", 16)
        stalled = {
            "watch": watch,
            "snapshot": stalled_get(cluster, "/v1/replication/snapshot"),
            "stream": stalled_get(cluster, "/v1/replication/stream?from=1&pod=kv-9"),
            "backup": stalled_get(cluster, "/v1/backup"),
        }
        try:
            for kind in stalled:

                async def cut(kind: str = kind) -> bool:
                    return await metric(cluster, "kvstore_streams_cut_total", {"kind": kind}) == 1

                await cluster.wait_until(cut, 60, f"the stalled {kind} reader to be cut off")
            for kind, sock in stalled.items():
                assert await asyncio.to_thread(read_to_the_end, sock), kind
        finally:
            for sock in stalled.values():
                sock.close()
        log = cluster.log(0)
        for kind in ("watch", "snapshot", "stream", "backup"):
            assert f"{kind} " in log and "cut off" in log
        # Nothing holds a read transaction any more: the WAL can be reset.
        await fill(cluster, "after/", 1, 10)
        db = cluster.data_dir(0) / "kv.db"

        async def reset() -> bool:
            return await asyncio.to_thread(checkpoint, db)

        await cluster.wait_until(reset, 30, "the WAL to be checkpointed to the end")
        assert not [n for n in os.listdir(cluster.data_dir(0)) if ".backup-" in n]


async def test_a_backup_finishes_under_steady_writes_and_writes_nothing_outside_the_volume(
    tmp_path: Path,
) -> None:
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp), "KV_DURABILITY": "normal"}
    async with Cluster(tmp_path, replicas=1, env=env) as cluster:
        await fill(cluster, "big/", 40)  # over the 4096 pages a backup step copied
        stop = asyncio.Event()
        written = 0
        seen_in_tmp: set[str] = set()

        async def writer() -> None:
            nonlocal written
            while not stop.is_set():
                async with cluster.session.put(
                    f"{cluster.url(0)}/v1/kv/live/{written % 50}", data=b"x" * 100
                ) as resp:
                    assert resp.status in (200, 201)
                written += 1

        async def watch_tmp() -> None:
            while not stop.is_set():
                seen_in_tmp.update(os.listdir(tmp))
                await asyncio.sleep(0.01)

        tasks = [asyncio.create_task(writer()) for _ in range(4)]
        tasks.append(asyncio.create_task(watch_tmp()))
        out = tmp_path / "backup.db"
        try:
            timeout = aiohttp.ClientTimeout(total=120)
            async with cluster.session.get(cluster.url(0) + "/v1/backup", timeout=timeout) as resp:
                assert resp.status == 200
                out.write_bytes(await resp.read())
            before = written
            await cluster.wait_until(
                _more(lambda: written > before), 30, "writes to go on after the backup"
            )
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        held = describe(str(out))
        assert int(str(held["keys"])) >= 40 and held["epoch"]
        assert seen_in_tmp == set()
        assert not [n for n in os.listdir(cluster.data_dir(0)) if ".backup-" in n]

        # A client that leaves while the copy is made: the copy is stopped and removed.
        sock = socket.create_connection((cluster.address(0), cluster.port))
        sock.sendall(b"GET /v1/backup HTTP/1.1\r\nHost: kv-0\r\n\r\n")
        sock.close()

        async def removed() -> bool:
            return not [n for n in os.listdir(cluster.data_dir(0)) if ".backup-" in n]

        await cluster.wait_until(removed, 30, "the abandoned copy to be removed")


def _more(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def pred() -> bool:
        return check()

    return pred


async def test_bodies_are_refused_by_their_size_before_they_are_parsed(tmp_path: Path) -> None:
    env = {"KV_MAX_TXN_BYTES": "65536"}
    async with Cluster(tmp_path, replicas=1, env=env) as cluster:
        url = cluster.url(0)
        one_op = {"ops": [{"op": "put", "key": "k", "value": "QUFB" * 20_000}]}
        async with cluster.session.post(url + "/v1/txn", json=one_op) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == "too_large"
        small = {"ops": [{"op": "put", "key": "k", "value": "QUFB"}]}
        async with cluster.session.post(url + "/v1/txn", json=small) as resp:
            assert resp.status == 200
        tiny_ops = b'{"ops":[' + b",".join([b'{"op":"delete","key":"k"}'] * 2500) + b"]}"
        nested = b"[" * 60_000
        for body in (tiny_ops, nested):
            async with cluster.session.post(url + "/v1/txn", data=body) as resp:
                assert resp.status == 413, await resp.text()
                assert (await resp.json())["error"]["code"] == "too_large"
        ack = json.dumps({"pod": "kv-1" * 100_000, "seq": 1}).encode()
        async with cluster.session.post(url + "/v1/replication/ack", data=ack) as resp:
            assert resp.status == 413
        async with cluster.session.get(url + "/livez") as resp:
            assert resp.status == 200


async def test_a_min_seq_wait_ends_with_its_connection(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=1) as cluster:
        url = cluster.url(0) + "/v1/kv/a?min_seq=1000000&timeout=3600"
        timeout = aiohttp.ClientTimeout(total=None)
        requests = [
            asyncio.create_task(cluster.session.get(url, timeout=timeout)) for _ in range(20)
        ]

        async def waiting(n: int) -> bool:
            return await metric(cluster, "kvstore_seq_waiters") == n

        try:
            await cluster.wait_until(lambda: waiting(20), 30, "20 reads to wait for their seq")
        finally:
            for task in requests:
                task.cancel()
            await asyncio.gather(*requests, return_exceptions=True)
        await cluster.wait_until(lambda: waiting(0), 30, "the waits to end with their clients")


@contextlib.contextmanager
def watching(cluster: Cluster, prefix: str) -> Iterator[socket.socket]:
    sock = socket.create_connection((cluster.address(0), cluster.port))
    sock.sendall(f"GET /v1/watch?prefix={prefix} HTTP/1.1\r\nHost: kv-0\r\n\r\n".encode())
    try:
        yield sock
    finally:
        sock.close()


async def test_watches_are_capped(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=1, env={"KV_MAX_WATCHES": "3"}) as cluster:
        url = cluster.url(0) + "/v1/watch?prefix=x/"
        with watching(cluster, "a/"), watching(cluster, "b/"), watching(cluster, "c/"):

            async def open_watches(n: int) -> bool:
                return await metric(cluster, "kvstore_watches") == n

            await cluster.wait_until(lambda: open_watches(3), 30, "3 watches to be open")
            async with cluster.session.get(url) as resp:
                assert resp.status == 429
                assert (await resp.json())["error"]["code"] == "too_many_watches"
        await cluster.wait_until(lambda: open_watches(0), 30, "the watches to be closed")
        async with cluster.session.get(url) as resp:
            assert resp.status == 200
            assert json.loads(await resp.content.readline())["heartbeat"] is True


async def test_a_quiet_watch_gets_heartbeats_while_other_keys_are_written(
    tmp_path: Path,
) -> None:
    async with Cluster(tmp_path, replicas=1) as cluster:
        stop = asyncio.Event()
        writes = 0

        async def noise() -> None:
            nonlocal writes
            while not stop.is_set():
                async with cluster.session.put(
                    f"{cluster.url(0)}/v1/kv/noisy/{writes % 10}", data=b"x"
                ) as resp:
                    assert resp.status in (200, 201)
                writes += 1

        writer = asyncio.create_task(noise())
        try:
            timeout = aiohttp.ClientTimeout(total=60)
            async with cluster.session.get(
                cluster.url(0) + "/v1/watch?prefix=quiet/", timeout=timeout
            ) as resp:
                assert resp.status == 200
                started, beats = writes, 0
                while beats < 2:
                    line = json.loads(await resp.content.readline())
                    assert line.get("heartbeat") is True and "key" not in line
                    beats += 1
                assert writes > started and not writer.done()
        finally:
            stop.set()
            await writer
