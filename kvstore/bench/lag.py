"""Replication lag, measured the same way on kvstore and etcd by one child process: paced writes
go to the writer (kvstore's manager, etcd's leader) through the load runner, a watch on one
follower notes when each change shows, and a write's lag is the time from the writer's answer
to the follower's event (0 when the event came first). Both ends run in that one process, on
one clock.

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
from dataclasses import dataclass
from typing import Any

import aiohttp

from kvstore.bench.children import BenchError, Counter, in_children
from kvstore.bench.console import Console
from kvstore.bench.load import CHILD_GRACE, LoadResult, combine, drive
from kvstore.bench.stats import Latency
from kvstore.bench.workload import DIGITS, Load, b64

STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)
GRACE = 10.0  # seconds to wait for the last writes to show on the follower
READY_TIMEOUT = 30.0
PUT_KIND = {"kvstore": "kv_put", "etcd": "etcd_put"}


@dataclass(frozen=True)
class LagSpec:
    system: str  # "kvstore" or "etcd"
    write_url: str
    watch_url: str
    rate: float  # writes per second
    duration: float | None
    requests: int | None = None  # stop after this many writes (else at `duration`)
    in_flight: int = 64  # at most this many writes unanswered
    value_size: int = 100
    prefix: str = "bench/lag/"
    token: str | None = None

    def writes(self) -> Load:
        return Load(
            self.write_url, PUT_KIND[self.system], self.in_flight, self.duration,
            prefix=self.prefix, keyspace=10**DIGITS, value_size=self.value_size,
            token=self.token, requests=self.requests, rate=self.rate, acks=True,
        )  # fmt: skip


@dataclass
class LagResult:
    writes: LoadResult
    lags: list[float]  # seconds, one per acknowledged write seen on the follower

    @property
    def seen(self) -> int:
        return len(self.lags)

    @property
    def not_seen(self) -> int:
        return self.writes.ok - self.seen

    @property
    def latency(self) -> Latency:
        return Latency.of(self.lags)


async def run_lag(spec: LagSpec, what: str, console: Console | None) -> LagResult:
    """Measure in a child process of its own; this one only waits and shows progress."""
    timeout = None if spec.duration is None else spec.duration + GRACE + CHILD_GRACE
    return (await in_children(measure, [spec], what, console, timeout))[0]


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


async def measure(spec: LagSpec, counter: Counter | None = None) -> LagResult:
    seen = _Seen()
    headers = {"Authorization": f"Bearer {spec.token}"} if spec.token else {}
    async with aiohttp.ClientSession(timeout=STREAM_TIMEOUT, headers=headers) as session:
        ready = asyncio.Event()
        watcher = asyncio.create_task(_watch(session, spec, seen, ready))
        try:
            await _until_ready(ready, watcher, spec.watch_url)
            tally = await drive(spec.writes(), counter)
            await seen.wait_all({p for p, _ in tally.acks}, GRACE)
            _check_watch(watcher, spec.watch_url)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await watcher
    lags = [max(0.0, seen.times[p] - t) for p, t in tally.acks if p in seen.times]
    generator = "Python process: paced writer, watch on the follower"
    return LagResult(combine(generator, [tally]), lags)


async def _until_ready(ready: asyncio.Event, watcher: asyncio.Task[None], url: str) -> None:
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait(
        {waiter, watcher}, timeout=READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
    )
    waiter.cancel()
    _check_watch(watcher, url)
    if not ready.is_set():
        raise BenchError(f"the watch on {url} did not start within {READY_TIMEOUT:g} s")


def _check_watch(watcher: asyncio.Task[None], url: str) -> None:
    """BenchError if the watch has ended (it runs until cancelled)."""
    if not watcher.done():
        return
    exc = None if watcher.cancelled() else watcher.exception()
    raise BenchError(f"the watch on {url} failed: {exc!r}" if exc else f"the watch on {url} ended")


async def _watch(
    session: aiohttp.ClientSession, spec: LagSpec, seen: _Seen, ready: asyncio.Event
) -> None:
    if spec.system == "kvstore":
        await _watch_kvstore(session, spec, seen, ready)
    else:
        await _watch_etcd(session, spec, seen, ready)


async def _watch_kvstore(
    session: aiohttp.ClientSession, spec: LagSpec, seen: _Seen, ready: asyncio.Event
) -> None:
    url = f"{spec.watch_url.rstrip('/')}/v1/watch"
    async with session.get(url, params={"prefix": spec.prefix}) as resp:
        resp.raise_for_status()
        ready.set()
        async for doc in _json_lines(resp.content):
            if "key" in doc:
                seen.add(int(doc["seq"]))


async def _watch_etcd(
    session: aiohttp.ClientSession, spec: LagSpec, seen: _Seen, ready: asyncio.Event
) -> None:
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
