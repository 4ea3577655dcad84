"""`kvstore bench`: throughput, latency and replication-lag figures against running servers.

A scenario is a function `(BenchOptions, Progress) -> Report` in `SCENARIOS`:

- `put`: PUT throughput and latency at a chosen concurrency.
- `lag`: writes on the manager at a stated rate, each timed from the manager's answer until the
  follower's watch stream shows it.

The load runs in child processes (multiprocessing, spawn), not in the process that measures and
prints: on a 2-core machine one Python load process already takes a whole core, so by default
there is one (`--workers 1`), and the report names the load generator it used. Keys written
live under `bench/` and are rewritten by the next run rather than piling up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any, TypeAlias, cast

from kvstore.cli.connection import add_connection_arguments, resolve_url
from kvstore.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from kvstore.cli.tables import format_pairs, human_size
from kvstore.client import ClientError, KVClient

Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Counter: TypeAlias = "Synchronized[int]"
DEFAULT_DURATION = 10.0
KEYSPACE = 10_000  # distinct keys per PUT worker; later requests overwrite them
DEFAULT_RATE = 200.0  # lag: writes per second
CATCH_UP_GRACE = 10.0  # seconds the lag scenario waits for the last writes to show


# --- figures (pure) ----------------------------------------------------------------------------
def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence: the smallest value with at least p% of
    the values at or below it."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class Latency:
    """Milliseconds; None when nothing was measured."""

    count: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        if not seconds:
            return cls(0, None, None, None)
        ms = sorted(s * 1000 for s in seconds)
        return cls(len(ms), percentile(ms, 50), percentile(ms, 99), ms[-1])

    def text(self) -> str:
        if self.count == 0:
            return "none measured"
        return f"p50 {self.p50_ms:.2f}  p99 {self.p99_ms:.2f}  max {self.max_ms:.2f}"


@dataclass
class Report:
    scenario: str
    target: str  # what was measured: URL and pod
    load_generator: str
    seconds: float
    ok: int
    failed: int
    per_second: float
    latency: Latency
    latency_label: str  # what `latency` measures
    extra: dict[str, Any] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        pairs = [
            ("target", self.target),
            ("load generator", self.load_generator),
            ("requests", f"{self.ok} ok, {self.failed} failed, in {self.seconds:.2f} s"),
            ("throughput", f"{self.per_second:.0f} /s"),
            (f"{self.latency_label} (ms)", self.latency.text()),
            *((k.replace("_", " "), str(v)) for k, v in self.extra.items()),
            *(("error", e) for e in self.error_samples),
        ]
        return f"kvstore bench {self.scenario}\n" + _indent(format_pairs(pairs))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


class Progress:
    """One live line on stderr, redrawn with a carriage return; silent when stderr is not a
    terminal unless forced."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._width = 0

    def show(self, text: str) -> None:
        if self.enabled:
            self._width = max(self._width, len(text))
            sys.stderr.write("\r" + text.ljust(self._width))
            sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()


# --- options -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchOptions:
    url: str
    token: str | None
    concurrency: int
    requests: int | None
    duration: float | None
    value_size: int
    workers: int
    follower_url: str | None
    rate: float


@dataclass(frozen=True)
class LoadSpec:
    """What one load process does; picklable, sent to the child."""

    url: str
    token: str | None
    worker: int
    concurrency: int
    requests: int | None  # this worker's share; None: until `duration`
    duration: float | None
    value_size: int
    rate: float | None = None  # writes per second in total (lag); None: as fast as it goes
    key_prefix: str = "bench/put/"


@dataclass
class LoadResult:
    worker: int
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    acks: list[tuple[int, float]] = field(default_factory=list)  # (seq, monotonic time)
    failed: int = 0
    error_samples: list[str] = field(default_factory=list)
    crashed: str | None = None

    def fail(self, exc: Exception) -> None:
        self.failed += 1
        if len(self.error_samples) < 3:
            self.error_samples.append(str(exc))


# --- the load process --------------------------------------------------------------------------
def _load_main(spec: LoadSpec, done: Counter, conn: Connection) -> None:
    """Entry point of a load process: run the load, send back a LoadResult. Ctrl-C is the
    parent's to handle: it stops this process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = asyncio.run(_run_load(spec, done))
    except Exception as exc:  # reported by the parent, which owns the terminal
        result = LoadResult(spec.worker, crashed=f"{type(exc).__name__}: {exc}")
    conn.send(result)
    conn.close()


async def _run_load(spec: LoadSpec, done: Counter) -> LoadResult:
    async with KVClient(spec.url, spec.token, connections=spec.concurrency) as kv:
        load = _Load(kv, spec, done)
        if spec.rate is None:
            await asyncio.gather(*(load.closed_loop() for _ in range(spec.concurrency)))
        else:
            await load.paced(spec.rate)
    load.result.seconds = time.monotonic() - load.start
    return load.result


class _Load:
    """The PUTs of one load process, numbered 0, 1, ... until `requests` or `duration`."""

    def __init__(self, kv: KVClient, spec: LoadSpec, done: Counter) -> None:
        self.kv, self.spec, self.done = kv, spec, done
        self.result = LoadResult(spec.worker)
        self.value = os.urandom(spec.value_size)
        self.start = time.monotonic()
        self.deadline = self.start + spec.duration if spec.duration is not None else math.inf
        self._numbers = itertools.count()

    def next_number(self) -> int | None:
        n = next(self._numbers)
        if self.spec.requests is not None and n >= self.spec.requests:
            return None
        return None if time.monotonic() >= self.deadline else n

    async def put(self, key: str) -> None:
        t0 = time.monotonic()
        try:
            res = await self.kv.put(key, self.value)
        except ClientError as exc:
            self.result.fail(exc)
        else:
            t1 = time.monotonic()
            self.result.latencies.append(t1 - t0)
            self.result.acks.append((res.seq, t1))
        self.done.value += 1

    async def closed_loop(self) -> None:
        """One connection's worth: the next PUT as soon as the previous one is answered."""
        prefix = f"{self.spec.key_prefix}w{self.spec.worker}/"
        while (n := self.next_number()) is not None:
            await self.put(f"{prefix}{n % KEYSPACE:05d}")

    async def paced(self, rate: float) -> None:
        """Open loop: PUT number n goes out at start + n / rate whatever the answers do, with at
        most `concurrency` in flight."""
        slots = asyncio.Semaphore(self.spec.concurrency)
        tasks: set[asyncio.Task[None]] = set()

        async def one(key: str) -> None:
            async with slots:
                await self.put(key)

        while (n := self.next_number()) is not None:
            await asyncio.sleep(max(0.0, self.start + n / rate - time.monotonic()))
            task = asyncio.create_task(one(f"{self.spec.key_prefix}{n:07d}"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)


# --- the measuring process -----------------------------------------------------------------
class LoadGroup:
    """Load processes, one per spec (spawned, so nothing of this process leaks into them).
    Leaving the `with` block stops any still running."""

    def __init__(self, specs: Sequence[LoadSpec]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.counters: list[Counter] = [ctx.Value("q", 0) for _ in specs]
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.pending: dict[Connection, int] = {}
        self.results: dict[int, LoadResult] = {}
        self.start = time.monotonic()
        for worker, (spec, counter) in enumerate(zip(specs, self.counters, strict=True)):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_load_main, args=(spec, counter, send), daemon=True)
            proc.start()
            send.close()
            self.procs.append(proc)
            self.pending[recv] = worker

    def __enter__(self) -> LoadGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()

    def collect(self, timeout: float) -> bool:
        """Take the results that arrive within `timeout` s; True once every process reported."""
        for ready in multiprocessing.connection.wait(list(self.pending), timeout=timeout):
            conn = cast(Connection, ready)
            worker = self.pending.pop(conn)
            self.results[worker] = _receive(conn, worker)
        return not self.pending

    def progress_text(self, what: str) -> str:
        n, elapsed = sum(c.value for c in self.counters), time.monotonic() - self.start
        return f"{what}: {n} requests in {elapsed:.1f} s, {n / elapsed:.0f}/s"

    def ordered(self) -> list[LoadResult]:
        return [self.results[w] for w in range(len(self.procs))]


def run_load(specs: Sequence[LoadSpec], progress: Progress, what: str) -> list[LoadResult]:
    """Run each spec in its own process, showing progress until all have reported."""
    with LoadGroup(specs) as group:
        while not group.collect(timeout=0.25):
            progress.show(group.progress_text(what))
    progress.done()
    return group.ordered()


async def run_load_async(spec: LoadSpec, progress: Progress, what: str) -> LoadResult:
    """`run_load` for one spec inside an event loop, which keeps running (and can cancel)."""
    with LoadGroup([spec]) as group:
        while not group.collect(timeout=0):
            progress.show(group.progress_text(what))
            await asyncio.sleep(0.25)
    progress.done()
    return group.ordered()[0]


def _receive(conn: Connection, worker: int) -> LoadResult:
    try:
        return cast(LoadResult, conn.recv())
    except EOFError:
        return LoadResult(worker, crashed="the load process ended without a result")


async def describe(kv: KVClient) -> str:
    """`URL (pod, role)`, and a first request that fails clearly if the server is not there."""
    st = await kv.status()
    return f"{kv.url} ({st['pod']}, {st['role']})"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def _share(total: int, parts: int, index: int) -> int:
    """Part `index` of `total` split as evenly as possible into `parts`."""
    return total // parts + (1 if index < total % parts else 0)


def _crashes(results: Sequence[LoadResult]) -> None:
    for r in results:
        if r.crashed:
            raise ClientError(0, "bench_failed", f"load process {r.worker}: {r.crashed}")


# --- scenarios ---------------------------------------------------------------------------------
def scenario_put(opts: BenchOptions, progress: Progress) -> Report:
    """PUT throughput and latency: `workers` processes, `concurrency` connections in all, each
    sending its next PUT as soon as the last one is answered."""
    target = asyncio.run(_describe_url(opts.url, opts.token))
    results = run_load(_put_specs(opts), progress, "put")
    _crashes(results)
    ok = sum(len(r.latencies) for r in results)
    seconds = max(r.seconds for r in results)
    return Report(
        scenario="put",
        target=target,
        load_generator=f"{_plural(opts.workers, 'process')} (multiprocessing), "
        f"{_plural(opts.concurrency, 'connection')} in all, python aiohttp; "
        "measured apart from the load",
        seconds=seconds,
        ok=ok,
        failed=sum(r.failed for r in results),
        per_second=ok / seconds if seconds else 0.0,
        latency=Latency.of([x for r in results for x in r.latencies]),
        latency_label="PUT latency",
        extra={"concurrency": opts.concurrency, "value_size": human_size(opts.value_size)},
        error_samples=[e for r in results for e in r.error_samples][:3],
    )


def _put_specs(opts: BenchOptions) -> list[LoadSpec]:
    """The connections, and any request count, shared out among the workers."""
    return [
        LoadSpec(
            opts.url,
            opts.token,
            worker=w,
            concurrency=_share(opts.concurrency, opts.workers, w),
            requests=None if opts.requests is None else _share(opts.requests, opts.workers, w),
            duration=opts.duration,
            value_size=opts.value_size,
        )
        for w in range(opts.workers)
    ]


async def _describe_url(url: str, token: str | None) -> str:
    async with KVClient(url, token) as kv:
        return await describe(kv)


class _Seen:
    """When each seq showed up on the follower's watch stream (monotonic clock)."""

    def __init__(self) -> None:
        self.times: dict[int, float] = {}
        self._changed = asyncio.Condition()

    async def follow(self, kv: KVClient, prefix: str, since: int) -> None:
        async with contextlib.aclosing(kv.watch(prefix, since=since)) as events:
            async for ev in events:
                self.times[ev.seq] = time.monotonic()
                async with self._changed:
                    self._changed.notify_all()

    async def wait_for(self, seqs: set[int], within: float) -> bool:
        """True once every seq in `seqs` was seen; False if `within` seconds passed first."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: seqs <= self.times.keys()), within
                )
            except TimeoutError:
                return False
        return True


def scenario_lag(opts: BenchOptions, progress: Progress) -> Report:
    """Replication lag: writes on the manager (`--url`) at `--rate` per second from a writer
    process; this process watches the follower (`--follower-url`) and times each write from the
    manager's answer to its event on the follower (0 when it showed up first)."""
    return asyncio.run(_lag(opts, progress))


async def _lag(opts: BenchOptions, progress: Progress) -> Report:
    prefix = "bench/lag/"
    async with (
        KVClient(opts.url, opts.token) as manager,
        KVClient(opts.follower_url or opts.url, opts.token) as follower,
    ):
        target = f"writes on {await describe(manager)}, seen on {await describe(follower)}"
        seen = _Seen()
        since = (await follower.status())["applied_seq"]
        watcher = asyncio.create_task(seen.follow(follower, prefix, since))
        try:
            marker = await manager.put(prefix + "start", b"")
            if not await seen.wait_for({marker.seq}, CATCH_UP_GRACE):
                raise ClientError(0, "bench_failed", _watch_failure(watcher, follower.url))
            spec = LoadSpec(
                opts.url,
                opts.token,
                0,
                opts.concurrency,
                opts.requests,
                opts.duration,
                opts.value_size,
                rate=opts.rate,
                key_prefix=prefix,
            )
            result = await run_load_async(spec, progress, "lag")
            _crashes([result])
            await seen.wait_for({seq for seq, _ in result.acks}, CATCH_UP_GRACE)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, ClientError):
                await watcher
    return _lag_report(opts, target, result, seen.times)


def _watch_failure(watcher: asyncio.Task[None], url: str) -> str:
    if watcher.done() and not watcher.cancelled() and watcher.exception():
        return f"the watch on {url} failed: {watcher.exception()}"
    return f"a write did not show on the watch of {url} within {CATCH_UP_GRACE:g} s"


def _lag_report(
    opts: BenchOptions, target: str, result: LoadResult, seen: dict[int, float]
) -> Report:
    lags = [max(0.0, seen[seq] - acked) for seq, acked in result.acks if seq in seen]
    ok = len(result.acks)
    return Report(
        scenario="lag",
        target=target,
        load_generator=f"1 writer process (multiprocessing, python aiohttp) at {opts.rate:g} "
        f"writes/s, at most {opts.concurrency} in flight; the watch runs in this process",
        seconds=result.seconds,
        ok=ok,
        failed=result.failed,
        per_second=ok / result.seconds if result.seconds else 0.0,
        latency=Latency.of(lags),
        latency_label="replication lag",
        extra={
            "lag measured": "from the manager's answer to the follower's watch event",
            "seen on follower": f"{len(lags)} of {ok}",
            "not_seen": ok - len(lags),
        },
        error_samples=result.error_samples,
    )


Scenario = Callable[[BenchOptions, Progress], Report]
SCENARIOS: dict[str, Scenario] = {"put": scenario_put, "lag": scenario_lag}


# --- command line --------------------------------------------------------------------------
class UsageError(ValueError):
    pass


def options_from(args: argparse.Namespace) -> BenchOptions:
    if args.concurrency < 1 or args.workers < 1 or args.workers > args.concurrency:
        raise UsageError("--concurrency and --workers must be at least 1, workers <= concurrency")
    if args.value_size < 0 or (args.requests is not None and args.requests < 1):
        raise UsageError("--value-size must be >= 0 and --requests >= 1")
    rate = DEFAULT_RATE if args.rate is None else args.rate
    if args.scenario == "lag" and rate <= 0:
        raise UsageError("--rate must be above 0")
    duration = args.duration
    if duration is None and args.requests is None:
        duration = DEFAULT_DURATION
    token = getattr(args, "token", None) or os.environ.get("KV_AUTH_TOKEN") or None
    return BenchOptions(
        url=resolve_url(getattr(args, "url", None)),
        token=token,
        concurrency=args.concurrency,
        requests=args.requests,
        duration=duration,
        value_size=args.value_size,
        workers=args.workers,
        follower_url=args.follower_url,
        rate=rate,
    )


def run(args: argparse.Namespace) -> int:
    if args.suite or args.compare:
        from kvstore.bench.cli import run_suite_command

        return run_suite_command(args)
    try:
        opts = options_from(args)
    except UsageError as exc:
        print(f"kvstore bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        report = SCENARIOS[args.scenario](opts, Progress(sys.stderr.isatty()))
    except ClientError as exc:
        print(f"kvstore bench: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(report.to_json()) if args.json else report.table())
    return EXIT_OK if report.failed == 0 and not report.extra.get("not_seen") else EXIT_FAILED


BENCH_DESCRIPTION = """\
Measure a running cluster: --scenario put (PUT throughput and latency at --concurrency) or
lag (writes on the manager at --rate per second, each timed until a follower's watch shows it).
--suite starts clusters of its own and runs every scenario. Keys written live under bench/."""
BENCH_EXAMPLES = """\
examples:
  kvstore bench --duration 10 --concurrency 64
  kvstore bench --scenario lag --rate 500 --follower-url http://127.0.0.3:8080
  kvstore bench --suite --only put,get,lag --duration 5
  kvstore bench --suite --compare etcd --json > results.json
"""


def register(sub: Sub) -> None:
    p = sub.add_parser(
        "bench",
        help="throughput, latency and replication-lag figures",
        description=BENCH_DESCRIPTION,
        epilog=BENCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(p)
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="put", help="default: put")
    p.add_argument("--concurrency", type=int, default=64, help="connections in all (default 64)")
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--requests", type=int, metavar="N", help="stop after N requests")
    amount.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help=f"stop after S seconds (default {DEFAULT_DURATION:g})",
    )
    p.add_argument("--value-size", type=int, default=100, metavar="BYTES", help="default 100")
    p.add_argument("--workers", type=int, default=1, help="load processes (default 1)")
    p.add_argument("--follower-url", help="lag: the follower to watch (default: --url itself)")
    p.add_argument(
        "--rate", type=float, help=f"lag: writes per second (default {DEFAULT_RATE:g}; suite 1000)"
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")
    from kvstore.bench.options import add_suite_arguments

    add_suite_arguments(p)
    p.set_defaults(func=run)
