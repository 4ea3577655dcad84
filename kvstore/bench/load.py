"""The load runner: a `Load` (kvstore.bench.workload) sent by Python processes of its own, and
the one `LoadResult` every load generator reports (wrk's too: kvstore.bench.wrk).

`drive` sends a load from the process it runs in and tallies what came back; `run_python` runs
one `drive` per load in child processes and combines their tallies. The lag measurement drives
its paced writes with `drive` too, in its own child process next to the watch.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import aiohttp

from kvstore.bench.children import Counter, in_children
from kvstore.bench.console import Console
from kvstore.bench.stats import Latency
from kvstore.bench.workload import Load, Request, position, requests_for

REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30)
ERROR_SAMPLES = 3
CHILD_GRACE = 120.0  # seconds a load process may take beyond its duration before it is late


@dataclass
class LoadResult:
    """What one load did, whichever generator made it."""

    generator: str  # which tool made the load, for the reader
    ok: int  # answered with 2xx
    failed: int  # error statuses, socket errors, timeouts
    seconds: float
    latency: Latency  # of the answered requests
    error_samples: list[str] = field(default_factory=list)
    acks: list[tuple[int, float]] = field(default_factory=list)  # (position, monotonic time)

    @property
    def per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


@dataclass
class Tally:
    """One process's raw figures, combined into a LoadResult by the parent."""

    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, one per answered request
    acks: list[tuple[int, float]] = field(default_factory=list)
    failed: int = 0
    error_samples: list[str] = field(default_factory=list)

    def fail(self, text: str) -> None:
        self.failed += 1
        if len(self.error_samples) < ERROR_SAMPLES:
            self.error_samples.append(text)


def combine(generator: str, tallies: Sequence[Tally]) -> LoadResult:
    latencies = [x for t in tallies for x in t.latencies]
    return LoadResult(
        generator=generator,
        ok=len(latencies),
        failed=sum(t.failed for t in tallies),
        seconds=max((t.seconds for t in tallies), default=0.0),
        latency=Latency.of(latencies),
        error_samples=[e for t in tallies for e in t.error_samples][:ERROR_SAMPLES],
        acks=[a for t in tallies for a in t.acks],
    )


def python_generator(loads: Sequence[Load]) -> str:
    connections = sum(load.connections for load in loads)
    if len(loads) == 1:
        return f"Python process (aiohttp), {connections} connections"
    return f"{len(loads)} Python processes (aiohttp), {connections} connections in all"


async def run_python(
    loads: Sequence[Load], what: str, console: Console | None = None
) -> LoadResult:
    """Each load from a Python process of its own; progress on the console as `what`."""
    timeout = None
    if all(load.duration is not None for load in loads):
        timeout = max(load.duration or 0.0 for load in loads) + CHILD_GRACE
    tallies = await in_children(drive, loads, what, console, timeout)
    return combine(python_generator(loads), tallies)


async def drive(load: Load, counter: Counter | None = None) -> Tally:
    """Send the load from this process; `counter` (if any) counts the requests sent."""
    connector = aiohttp.TCPConnector(limit=load.connections)
    async with aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT) as session:
        sender = _Sender(session, load, counter)
        if load.rate is None:
            await asyncio.gather(*(sender.closed_loop() for _ in range(load.connections)))
        else:
            await sender.paced(load.rate)
    sender.tally.seconds = time.monotonic() - sender.start
    return sender.tally


class _Sender:
    """The requests of one process, numbered 0, 1, ... until `requests` or `duration`."""

    def __init__(self, session: aiohttp.ClientSession, load: Load, counter: Counter | None):
        self.session, self.load, self.counter = session, load, counter
        self.base = load.url.rstrip("/")
        self.make = requests_for(load)
        self.tally = Tally()
        self.start = time.monotonic()
        self.numbers = _numbers(load, self.start)

    async def closed_loop(self) -> None:
        """One connection's worth: the next request as soon as the last one is answered."""
        for n in self.numbers:
            await self.send(self.make(n))

    async def paced(self, rate: float) -> None:
        """Request n at start + n / rate, at most `connections` in flight."""
        slots = asyncio.Semaphore(self.load.connections)
        tasks: set[asyncio.Task[None]] = set()

        async def one(request: Request) -> None:
            async with slots:
                await self.send(request)

        for n in self.numbers:
            await asyncio.sleep(max(0.0, self.start + n / rate - time.monotonic()))
            task = asyncio.create_task(one(self.make(n)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)

    async def send(self, request: Request) -> None:
        try:
            await self._send(request)
        finally:
            if self.counter is not None:
                self.counter.value += 1

    async def _send(self, request: Request) -> None:
        method, path, body, headers = request
        t0 = time.monotonic()
        try:
            async with self.session.request(
                method, self.base + path, data=body, headers=headers
            ) as resp:
                answer = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.tally.fail(f"{method} {path}: {exc!r}")
            return
        t1 = time.monotonic()
        if resp.status >= 300:
            self.tally.fail(
                f"{method} {path}: HTTP {resp.status} {answer[:200].decode(errors='replace')}"
            )
        elif not self.load.acks:
            self.tally.latencies.append(t1 - t0)
        else:
            self._ack(answer, t1 - t0, t1)

    def _ack(self, answer: bytes, latency: float, at: float) -> None:
        try:
            where = position(self.load.kind, json.loads(answer))
        except (ValueError, KeyError, TypeError) as exc:
            self.tally.fail(f"an answer without a position: {exc!r}")
            return
        self.tally.latencies.append(latency)
        self.tally.acks.append((where, at))


def _numbers(load: Load, start: float) -> Iterator[int]:
    """0, 1, ... until `requests` numbers were taken or `duration` seconds passed."""
    deadline = start + load.duration if load.duration is not None else math.inf
    numbers = itertools.count() if load.requests is None else iter(range(load.requests))
    for n in numbers:
        if time.monotonic() >= deadline:
            return
        yield n
