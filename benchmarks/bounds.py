"""`python -m benchmarks.bounds`: what large values, stalled readers, big bodies and idle watches
cost a pod, each figure printed next to its bound.

    python -m benchmarks.bounds                       # every scenario at the full sizes
    python -m benchmarks.bounds --only watch,bodies   # some of them
    python -m benchmarks.bounds --scale 0.25          # smaller stores and loads (2 shared cores)

Scenarios (each on fresh `kvstore serve` processes in a temporary directory, with the local DNS
responder; peak RSS is the process's VmHWM from /proc/<pid>/status):
- snapshot: a manager holding 2,000 keys of 136 KiB (restarted once filled, so that its peak is
  the snapshot's), then a new follower joins: time to converge, both peaks. Bound: manager
  under 512 MiB.
- watch: a watcher that stops reading while 1 GiB of 1 MiB values is written under its prefix:
  the manager's peak RSS growth. Bound: under 64 MiB.
- backup: `GET /v1/backup` of a 200 MiB store while 200 writes/s go on: time, and the most bytes
  found in the pod's TMPDIR (outside the data volume) meanwhile. Bound: it finishes; 0 bytes.
- bodies: an 8 MiB txn body of tiny ops, and a 200 MiB ack body, each on a fresh manager: the
  peak RSS growth. Bound: under 100 MiB each.
- watches: PUT throughput (16 connections) with no watch, then with 1,000 idle watches on other
  prefixes: the ratio. Bound: under 10% slower.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from kvstore.local.dns import BackgroundDNSServer, RecordTable
from kvstore.local.pod import PodProcess, PodSpec, free_port, loopback_addresses

KIB, MIB = 1 << 10, 1 << 20
SCENARIOS = ("snapshot", "watch", "backup", "bodies", "watches")
DEADLINE = 300.0  # a scenario that has not finished by then is reported as such


def vm(pid: int, field: str) -> int:
    """VmHWM / VmRSS of a process, in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * KIB
    raise RuntimeError(f"no {field} for {pid}")


def tree_bytes(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, name))
    return total


class Pods:
    """kv-0..kv-N on loopback addresses and one port, found through a DNS responder."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.env = {"KV_LOG_LEVEL": "warning", **(env or {})}
        self.port = free_port()
        self.table = RecordTable(port=self.port)
        self.dns = BackgroundDNSServer(self.table)
        self.addresses = loopback_addresses()
        self.assigned: dict[int, str] = {}
        self.procs: dict[int, PodProcess] = {}
        self.session: aiohttp.ClientSession

    async def __aenter__(self) -> Pods:
        self.dns.start()
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
            connector=aiohttp.TCPConnector(limit=0),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for ordinal in list(self.procs):
            await self.stop(ordinal)
        await self.session.close()
        self.dns.stop()

    def url(self, ordinal: int) -> str:
        return f"http://{self.assigned[ordinal]}:{self.port}"

    def data_dir(self, ordinal: int) -> Path:
        return self.root / f"kv-{ordinal}" / "data"

    async def start(self, ordinal: int, env: dict[str, str] | None = None) -> PodProcess:
        if ordinal not in self.assigned:
            self.assigned[ordinal] = next(self.addresses)
        spec = PodSpec(
            name=f"kv-{ordinal}",
            address=self.assigned[ordinal],
            port=self.port,
            data_dir=self.data_dir(ordinal),
            log_path=self.root / f"kv-{ordinal}" / "log",
            dns_server=self.dns.address,
            env={**self.env, **(env or {})},
        )
        self.table.set_pod(spec.name, spec.address)
        proc = self.procs[ordinal] = await PodProcess.start(spec)
        await self.until(lambda: self.ready(ordinal), 60, f"kv-{ordinal} to be ready")
        return proc

    async def stop(self, ordinal: int) -> None:
        proc = self.procs.pop(ordinal)
        await proc.terminate(10)

    async def ready(self, ordinal: int) -> bool:
        try:
            async with self.session.get(self.url(ordinal) + "/readyz") as resp:
                return resp.status == 200
        except aiohttp.ClientError:
            return False

    async def until(self, pred: Callable[[], Awaitable[bool]], timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await pred():
                return True
            await asyncio.sleep(0.1)
        print(f"  (gave up waiting for {what} after {timeout:g}s)", file=sys.stderr)
        return False

    async def put(self, ordinal: int, key: str, value: bytes) -> None:
        async with self.session.put(f"{self.url(ordinal)}/v1/kv/{key}", data=value) as resp:
            if resp.status not in (200, 201):
                raise RuntimeError(f"PUT {key}: {resp.status} {await resp.text()}")

    async def fill(self, prefix: str, count: int, size: int, concurrency: int = 4) -> None:
        keys = iter(range(count))

        async def worker() -> None:
            for i in keys:
                await self.put(0, f"{prefix}{i:06d}", os.urandom(size))

        await asyncio.gather(*(worker() for _ in range(concurrency)))

    async def digest(self, ordinal: int) -> Any:
        async with self.session.get(self.url(ordinal) + "/v1/digest") as resp:
            return await resp.json()


def stalled_socket(pods: Pods, path: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((pods.assigned[0], pods.port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: kv-0\r\n\r\n".encode())
    return sock


Row = tuple[str, str, str, bool | None]  # (figure, value, bound, met)


def mib(n: float) -> str:
    return f"{n / MIB:.0f} MiB"


async def snapshot(root: Path, scale: float) -> list[Row]:
    keys = max(10, int(2000 * scale))
    async with Pods(root) as pods:
        await pods.start(0)
        await pods.fill("big/", keys, 136 * KIB)
        await pods.stop(0)
        manager = await pods.start(0)  # its peak is now the snapshot's, not the fill's
        want = await pods.digest(0)
        started = time.monotonic()
        pods.assigned[1] = next(pods.addresses)
        proc = await _start_no_wait(pods, 1, {})
        peak_follower = 0

        async def joined() -> bool:
            nonlocal peak_follower
            with contextlib.suppress(OSError, RuntimeError):
                peak_follower = max(peak_follower, vm(proc.pid, "VmHWM"))
            try:
                return bool(await pods.digest(1) == want)
            except (aiohttp.ClientError, json.JSONDecodeError):
                return False

        ok = await pods.until(joined, DEADLINE, "the new follower to converge")
        seconds = time.monotonic() - started
        peak_manager = vm(manager.pid, "VmHWM")
        with contextlib.suppress(OSError, RuntimeError):
            peak_follower = max(peak_follower, vm(proc.pid, "VmHWM"))
    data = keys * 136 * KIB
    return [
        (
            f"snapshot of {keys} x 136 KiB ({mib(data)}): follower converged",
            f"{seconds:.1f} s" if ok else f"not in {DEADLINE:g} s",
            "converges",
            ok,
        ),
        ("snapshot: manager peak RSS", mib(peak_manager), "< 512 MiB", peak_manager < 512 * MIB),
        ("snapshot: follower peak RSS", mib(peak_follower), "-", None),
    ]


async def _start_no_wait(pods: Pods, ordinal: int, env: dict[str, str]) -> PodProcess:
    spec = PodSpec(
        name=f"kv-{ordinal}",
        address=pods.assigned[ordinal],
        port=pods.port,
        data_dir=pods.data_dir(ordinal),
        log_path=pods.root / f"kv-{ordinal}" / "log",
        dns_server=pods.dns.address,
        env={**pods.env, **env},
    )
    pods.table.set_pod(spec.name, spec.address)
    proc = pods.procs[ordinal] = await PodProcess.start(spec)
    return proc


async def stalled_watch(root: Path, scale: float) -> list[Row]:
    total = max(16, int(1024 * scale))  # MiB written
    async with Pods(root, {"KV_DURABILITY": "normal"}) as pods:
        manager = await pods.start(0)
        await pods.put(0, "warm/0", b"x")
        before = vm(manager.pid, "VmRSS")
        sock = stalled_socket(pods, "/v1/watch?prefix=w/")
        try:
            await pods.fill("w/", total, MIB)
            growth = vm(manager.pid, "VmHWM") - before
        finally:
            sock.close()
    return [
        (
            f"stalled watcher during {total} MiB of writes: manager peak RSS growth",
            mib(growth),
            "< 64 MiB",
            growth < 64 * MIB,
        )
    ]


async def backup(root: Path, scale: float) -> list[Row]:
    size = max(16, int(200 * scale))  # MiB
    tmp = root / "pod-tmp"
    tmp.mkdir(parents=True)
    async with Pods(root, {"TMPDIR": str(tmp)}) as pods:
        await pods.start(0)
        await pods.fill("big/", size, MIB)
        stop = asyncio.Event()
        most_in_tmp = 0
        writes = done = 0  # writes paced, writes answered

        paced_from = time.monotonic()

        async def writer() -> None:  # 8 clients sharing one pace of 200 writes/s
            nonlocal writes, done
            while not stop.is_set():
                slot = writes
                writes += 1
                ahead = paced_from + slot / 200 - time.monotonic()
                if ahead > 0:
                    await asyncio.sleep(ahead)
                await pods.put(0, f"live/{slot % 1000}", b"x" * 100)
                done += 1

        async def watch_tmp() -> None:
            nonlocal most_in_tmp
            while not stop.is_set():
                most_in_tmp = max(most_in_tmp, await asyncio.to_thread(tree_bytes, tmp))
                await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(writer()) for _ in range(8)]
        tasks.append(asyncio.create_task(watch_tmp()))
        await asyncio.sleep(1)
        started, first = time.monotonic(), done
        got, ok = 0, False
        try:
            async with asyncio.timeout(DEADLINE):
                async with pods.session.get(pods.url(0) + "/v1/backup") as resp:
                    async for chunk in resp.content.iter_chunked(MIB):
                        got += len(chunk)
                    ok = resp.status == 200
        except TimeoutError:
            pass
        seconds = time.monotonic() - started
        rate = (done - first) / max(0.001, time.monotonic() - started)
        stop.set()
        await asyncio.gather(*tasks)
    return [
        (
            f"backup of a {size} MiB store under {rate:.0f} writes/s",
            f"{seconds:.1f} s, {mib(got)}" if ok else f"not in {DEADLINE:g} s",
            "finishes",
            ok,
        ),
        ("backup: bytes written outside the data volume", str(most_in_tmp), "0", most_in_tmp == 0),
    ]


async def bodies(root: Path, scale: float) -> list[Row]:
    rows: list[Row] = []
    txn_size = 8 * MIB
    ops = b",".join([b'{"op":"delete","key":"k"}'] * (txn_size // 26))
    txn = b'{"ops":[' + ops + b"]}"
    ack_size = max(8 * MIB, int(200 * MIB * scale))
    for name, path, body in (
        (f"txn body of {mib(len(txn))} (tiny ops)", "/v1/txn", txn),
        (f"ack body of {mib(ack_size)}", "/v1/replication/ack", None),
    ):
        async with Pods(root / name.split()[0]) as pods:
            manager = await pods.start(0)
            before = vm(manager.pid, "VmRSS")
            status: object = "?"

            async def chunks() -> AsyncIterator[bytes]:
                piece = b'{"pod":"' + b"x" * MIB
                yield piece
                for _ in range(ack_size // MIB - 1):
                    yield b"x" * MIB
                yield b'","seq":1}'

            try:
                data: Any = body if body is not None else chunks()
                async with pods.session.post(pods.url(0) + path, data=data) as resp:
                    status = resp.status
                    await resp.read()
            except (aiohttp.ClientError, OSError) as exc:
                status = type(exc).__name__
            await asyncio.sleep(0.5)
            growth = vm(manager.pid, "VmHWM") - before
            rows.append(
                (
                    f"{name}: answer {status}, peak RSS growth",
                    mib(growth),
                    "< 100 MiB",
                    growth < 100 * MIB,
                )
            )
    return rows


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def idle_watches(root: Path, scale: float) -> list[Row]:
    """Rounds of PUTs without and with the idle watches, interleaved (the machine's other load
    moves both alike); the best round of each, and the manager's CPU time per PUT."""
    puts = max(500, int(2000 * scale))
    watches, rounds = 1000, 3
    async with Pods(root, {"KV_DURABILITY": "normal", "KV_MAX_WATCHES": str(watches)}) as pods:
        manager = await pods.start(0)

        async def run(tag: str) -> tuple[float, float]:
            keys = iter(range(puts))

            async def worker() -> None:
                for i in keys:
                    await pods.put(0, f"busy/{tag}/{i % 500}", b"x" * 100)

            cpu, started = cpu_seconds(manager.pid), time.monotonic()
            await asyncio.gather(*(worker() for _ in range(16)))
            seconds = time.monotonic() - started
            return puts / seconds, (cpu_seconds(manager.pid) - cpu) / puts

        await run("warm")
        without: list[tuple[float, float]] = []
        with_watches: list[tuple[float, float]] = []
        for r in range(rounds):
            without.append(await run(f"a{r}"))
            socks = []
            for i in range(watches):
                sock = socket.create_connection((pods.assigned[0], pods.port))
                path = f"/v1/watch?prefix=idle-{i:04d}/"
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: kv-0\r\n\r\n".encode())
                socks.append(sock)
            await asyncio.sleep(2)
            try:
                with_watches.append(await run(f"b{r}"))
            finally:
                for sock in socks:
                    sock.close()
            await asyncio.sleep(1)
    rate_0, rate_w = max(r for r, _ in without), max(r for r, _ in with_watches)
    cpu_0, cpu_w = min(c for _, c in without), min(c for _, c in with_watches)
    cost = 1 - rate_w / rate_0
    return [
        (
            f"PUT/s, 16 connections, best of {rounds}: none vs {watches} idle watches on "
            "other prefixes",
            f"{rate_0:.0f} vs {rate_w:.0f} ({cost:+.0%})",
            "< 10% cost",
            cost < 0.10,
        ),
        (
            "manager CPU per PUT: none vs 1000 idle watches",
            f"{cpu_0 * 1e6:.0f} vs {cpu_w * 1e6:.0f} us ({cpu_w / cpu_0 - 1:+.0%})",
            "< 10% cost",
            cpu_w / cpu_0 - 1 < 0.10,
        ),
    ]


RUNNERS = {
    "snapshot": snapshot,
    "watch": stalled_watch,
    "backup": backup,
    "bodies": bodies,
    "watches": idle_watches,
}


async def main_async(only: list[str], scale: float, keep: Path | None) -> list[Row]:
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="kvstore-bounds-"))
    rows: list[Row] = []
    try:
        for name in only:
            print(f"running {name} ...", file=sys.stderr, flush=True)
            rows += await RUNNERS[name](root / name, scale)
            print(_table(rows[-3:]) if rows else "", file=sys.stderr, flush=True)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def _table(rows: list[Row]) -> str:
    out = ["| figure | value | bound | met |", "| --- | --- | --- | --- |"]
    for figure, value, bound, met in rows:
        out.append(
            f"| {figure} | {value} | {bound} | {'-' if met is None else 'yes' if met else 'NO'} |"
        )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    global DEADLINE
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.bounds", description=__doc__.split("\n")[0]
    )
    p.add_argument("--only", default=",".join(SCENARIOS), help=f"of {','.join(SCENARIOS)}")
    p.add_argument("--scale", type=float, default=1.0, help="store and load sizes (default 1)")
    p.add_argument("--workdir", type=Path, help="keep the pods' files here")
    p.add_argument(
        "--deadline", type=float, default=DEADLINE, help="seconds a scenario may take (300)"
    )
    args = p.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    bad = [s for s in only if s not in RUNNERS]
    if bad:
        p.error(f"unknown scenario(s): {', '.join(bad)}")
    DEADLINE = args.deadline
    rows = asyncio.run(main_async(only, args.scale, args.workdir))
    print(_table(rows))
    return 0 if all(met is not False for *_, met in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
