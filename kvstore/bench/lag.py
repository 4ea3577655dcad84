"""Replication lag, measured the same way on kvstore and etcd by one client process of its own:
writes go to the writer (kvstore's manager, etcd's leader) at a fixed rate, a watch on one
follower reports each change, and a write's lag is the time from the writer's answer to the
follower's event (0 when the event came first). Both ends run in that one process, on one clock.

- kvstore: `PUT /v1/kv/{key}` (its answer carries the seq), `GET /v1/watch` on the follower.
- etcd: `POST /v3/kv/put` (the answer carries the revision), `POST /v3/watch` on the follower
  member through the same HTTP gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kvstore.bench.load import b64, in_process, key, value_of

STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)
MAX_IN_FLIGHT = 64
GRACE = 10.0  # seconds to wait for the last writes to show on the follower


@dataclass(frozen=True)
class LagSpec:
    system: str  # "kvstore" or "etcd"
    write_url: str
    watch_url: str
    rate: float  # writes per second
    duration: float
    value_size: int = 100
    prefix: str = "bench/lag/"


@dataclass
class LagResult:
    writes: int = 0
    lags: list[float] = field(default_factory=list)  # seconds, one per write seen
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def not_seen(self) -> int:
        return self.writes - len(self.lags)


def run_lag(spec: LagSpec) -> LagResult:
    """Measure in a spawned process of its own; this one only waits for the result."""
    result = in_process(measure, spec, spec.duration + GRACE + 120, "the lag process")
    assert isinstance(result, LagResult)
    return result


class _Seen:
    """When each position (seq or revision) showed up on the follower."""

    def __init__(self) -> None:
        self.times: dict[int, float] = {}
        self.changed = asyncio.Event()

    def add(self, position: int) -> None:
        self.times[position] = time.monotonic()
        self.changed.set()

    async def wait_all(self, positions: set[int], within: float) -> None:
        deadline = time.monotonic() + within
        while not positions <= self.times.keys() and time.monotonic() < deadline:
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), deadline - time.monotonic())


async def measure(spec: LagSpec) -> LagResult:
    seen, result = _Seen(), LagResult()
    acks: dict[int, float] = {}
    async with aiohttp.ClientSession(timeout=STREAM_TIMEOUT) as session:
        ready = asyncio.Event()
        watcher = asyncio.create_task(_watch(session, spec, seen, ready))
        try:
            await _until_ready(ready, watcher)
            await _write(session, spec, acks, result)
            await seen.wait_all(set(acks), GRACE)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await watcher
    result.lags = [max(0.0, seen.times[p] - t) for p, t in acks.items() if p in seen.times]
    return result


async def _until_ready(ready: asyncio.Event, watcher: asyncio.Task[None]) -> None:
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({waiter, watcher}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
    waiter.cancel()
    if watcher.done():
        watcher.result()  # raises the watch's error
        raise RuntimeError("the watch ended before it started")
    if not ready.is_set():
        raise RuntimeError("the watch did not start within 30 s")


async def _write(
    session: aiohttp.ClientSession, spec: LagSpec, acks: dict[int, float], result: LagResult
) -> None:
    """Open loop: write n goes out at start + n / rate, at most MAX_IN_FLIGHT at once."""
    value = value_of(spec.value_size)
    slots = asyncio.Semaphore(MAX_IN_FLIGHT)
    tasks: set[asyncio.Task[None]] = set()

    async def one(n: int) -> None:
        async with slots:
            try:
                position = await _put(session, spec, key(spec.prefix, n), value)
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError) as exc:
                result.errors.append(repr(exc))
                return
            acks[position] = time.monotonic()

    start = time.monotonic()
    n = 0
    while (now := time.monotonic()) < start + spec.duration:
        await asyncio.sleep(max(0.0, start + n / spec.rate - now))
        task = asyncio.create_task(one(n))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    await asyncio.gather(*tasks)
    result.writes, result.seconds = n, time.monotonic() - start


async def _put(session: aiohttp.ClientSession, spec: LagSpec, k: str, value: bytes) -> int:
    """Write one key; the writer's position of the change (seq or revision)."""
    if spec.system == "kvstore":
        async with session.put(f"{spec.write_url}/v1/kv/{k}", data=value) as resp:
            resp.raise_for_status()
            return int((await resp.json())["seq"])
    body = {"key": b64(k), "value": b64(value)}
    async with session.post(f"{spec.write_url}/v3/kv/put", json=body) as resp:
        resp.raise_for_status()
        return int((await resp.json())["header"]["revision"])


async def _watch(
    session: aiohttp.ClientSession, spec: LagSpec, seen: _Seen, ready: asyncio.Event
) -> None:
    if spec.system == "kvstore":
        url = f"{spec.watch_url}/v1/watch"
        async with session.get(url, params={"prefix": spec.prefix}) as resp:
            resp.raise_for_status()
            ready.set()
            async for doc in _json_lines(resp.content):
                if "key" in doc:
                    seen.add(int(doc["seq"]))
        return
    prefix = spec.prefix.encode()
    end = prefix[:-1] + bytes([prefix[-1] + 1])
    body = {"create_request": {"key": b64(prefix), "range_end": b64(end)}}
    async with session.post(f"{spec.watch_url}/v3/watch", json=body) as resp:
        resp.raise_for_status()
        async for doc in _json_lines(resp.content):
            res = doc.get("result", {})
            if res.get("created"):
                ready.set()
            for event in res.get("events", []):
                seen.add(int(event["kv"]["mod_revision"]))


async def _json_lines(stream: aiohttp.StreamReader) -> AsyncIterator[dict[str, Any]]:
    """Newline-delimited JSON objects (kvstore's NDJSON; etcd's gateway ends each with \\n)."""
    buffer = b""
    while chunk := await stream.readany():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            if line.strip():
                yield json.loads(line)
