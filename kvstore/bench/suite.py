"""The benchmark suite: start each system in a temporary directory, run every scenario on it,
stop it, and collect one set of figures per system.

Phases, the same for kvstore and etcd (etcd only with `--compare etcd`):
1. one node: durable PUT at each concurrency, then txn ingest;
2. three nodes: durable PUT on the writer; GET on a follower; replication lag at a fixed write
   rate; catch-up of a follower that was stopped while `catchup_writes` keys were written;
   a new follower joining once `snapshot_keys` more keys are stored (kvstore installs a
   snapshot); the peak RSS of every member.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from kvstore.bench import workload as wl
from kvstore.bench.console import Console
from kvstore.bench.etcd import EtcdCluster, etcd_version
from kvstore.bench.lag import LagSpec, run_lag
from kvstore.bench.load import LoadResult, run_python
from kvstore.bench.report import HIGHER, LOWER, Figure, Results
from kvstore.bench.systems import KvCluster, SuiteError, System, now, wait_until
from kvstore.bench.wrk import GENERATOR as WRK
from kvstore.bench.wrk import run_wrk

SUITE_SCENARIOS = ("put", "txn", "put3", "get", "lag", "catchup", "snapshot", "rss")
ONE_NODE = ("put", "txn")
TXN_OPS = 100  # puts per txn (etcd's default limit is 128)
TXN_CONNECTIONS = 16
CONNECTIONS = 64  # PUT on three nodes, GET on a follower
GET_KEYS = 10_000
BULK_CONCURRENCY = 4
BULK_OPS = {"kvstore": 1000, "etcd": 100}  # keys per txn when loading (each one's limit)
CONVERGE_TIMEOUT = 300.0
MIB = 1 << 20
JSON = {"Content-Type": "application/json"}
KINDS = {
    "kvstore": {"put": "kv_put", "get": "kv_get", "txn": "kv_txn"},
    "etcd": {"put": "etcd_put", "get": "etcd_range", "txn": "etcd_txn"},
}


@dataclass(frozen=True)
class SuiteOptions:
    compare_etcd: bool = False
    duration: float = 10.0
    concurrency: tuple[int, ...] = (1, 16, 64, 256)
    lag_rate: float = 1000.0
    catchup_writes: int = 100_000
    snapshot_keys: int = 1_000_000
    value_size: int = 100
    use_wrk: bool = True
    only: tuple[str, ...] = SUITE_SCENARIOS
    workdir: Path | None = None  # kept after the run; None: a temporary directory


@dataclass
class Run:
    """One system's part of the suite: where it writes its files, and where its figures go."""

    opts: SuiteOptions
    results: Results
    console: Console
    workdir: Path

    def log(self, text: str) -> None:
        self.console.step(text)

    def add(self, system: System, figure: Figure) -> None:
        self.results.add(system.name, figure)

    def wants(self, scenario: str) -> bool:
        return scenario in self.opts.only

    def load(self, system: System, what: str, url: str, connections: int, **kw: Any) -> wl.Load:
        kind = KINDS[system.name][what]
        kw.setdefault("value_size", self.opts.value_size)
        return wl.Load(url, kind, connections, self.opts.duration, **kw)

    async def measure(self, system: System, scenario: str, load: wl.Load) -> LoadResult:
        """The load, by wrk or a Python process of its own."""
        if self.opts.use_wrk:
            return await asyncio.to_thread(run_wrk, load, self.workdir)
        return await run_python([load], f"{system.name} {scenario}", self.console)


def run_suite(opts: SuiteOptions, console: Console) -> Results:
    results = Results(setup=setup_info(opts))
    with contextlib.ExitStack() as stack:
        if opts.workdir is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kvstore-bench-")))
        else:
            root = opts.workdir
        for name in ["kvstore", *(["etcd"] if opts.compare_etcd else [])]:
            workdir = root / name
            workdir.mkdir(parents=True)
            asyncio.run(_run_system(name, Run(opts, results, console, workdir)))
    return results


def setup_info(opts: SuiteOptions) -> dict[str, Any]:
    generator = WRK if opts.use_wrk else "a Python process (aiohttp)"
    info: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_generator": generator,
        "options": {
            "duration_s": opts.duration,
            "concurrency": list(opts.concurrency),
            "lag_rate": opts.lag_rate,
            "catchup_writes": opts.catchup_writes,
            "snapshot_keys": opts.snapshot_keys,
            "value_size": opts.value_size,
            "scenarios": list(opts.only),
        },
    }
    if opts.compare_etcd:
        info["etcd"] = etcd_version()
    compared = f"; compared with {info['etcd']}" if opts.compare_etcd else ""
    info["summary"] = f"{info['machine']}; closed-loop load by {generator}{compared}"
    info["notes"] = [
        f"each closed-loop run lasts {opts.duration:g} s with {opts.value_size}-byte values; "
        "kvstore with KV_DURABILITY=full and etcd with its defaults: both fsync before they answer",
        "kvstore writes go to kv-0, the manager, etcd's to the leader; follower reads go to one "
        "follower (etcd: serializable range)",
        f"replication lag: one client process writes {opts.lag_rate:g} keys/s to the writer and "
        "watches a follower; a write's lag runs from the writer's answer to the follower's event",
        "catch-up and new-follower times run from the start of the follower's process (its "
        "start time in /proc) until it has applied everything the writer had",
    ]
    return info


async def _run_system(name: str, run: Run) -> None:
    if any(run.wants(s) for s in ONE_NODE):
        single = _make(name, run.workdir / "one", 1, run.opts)
        await _with(single, run, lambda: _one_node(single, run))
    if any(run.wants(s) for s in SUITE_SCENARIOS if s not in ONE_NODE):
        cluster = _make(name, run.workdir / "three", 3, run.opts)
        await _with(cluster, run, lambda: _three_nodes(cluster, run))


def _make(name: str, root: Path, members: int, opts: SuiteOptions) -> KvCluster | EtcdCluster:
    if name == "etcd":
        return EtcdCluster(root, members)
    # The follower that misses `catchup_writes` must find them in the manager's log.
    retention = max(100_000, 2 * opts.catchup_writes)
    return KvCluster(root, members, [f"KV_LOG_RETENTION={retention}", "KV_LOG_LEVEL=warning"])


async def _with(
    system: KvCluster | EtcdCluster, run: Run, work: Callable[[], Awaitable[None]]
) -> None:
    """Start the system, do the work, always stop the system."""
    run.log(f"{system.name}: starting {system.size} node(s)")
    try:
        await system.up()
        await work()
    except BaseException:
        for name, tail in system.log_tails().items():
            run.log(f"{system.name}: the end of {name}:\n{tail}")
        raise
    finally:
        run.log(f"{system.name}: stopping")
        await system.down()


# --- closed-loop runs ---------------------------------------------------------------------------
async def _closed_loop(
    system: System, run: Run, scenario: str, title: str, load: wl.Load, per_request: int = 1
) -> None:
    result = await run.measure(system, scenario, load)
    unit = "keys/s" if per_request > 1 else "req/s"
    figures = (
        (unit, result.per_second * per_request, HIGHER),
        ("p50 ms", result.latency.p50_ms, LOWER),
        ("p99 ms", result.latency.p99_ms, LOWER),
        ("max ms", result.latency.max_ms, LOWER),
    )
    for metric, value, better in figures:
        run.add(system, Figure(scenario, title, metric, value, better, result.generator))
    info = {"requests": result.ok, "seconds": result.seconds, "url": load.url}
    errors = {"errors": result.failed, "error_samples": result.error_samples}
    run.results.detail(system.name, scenario, info | errors)
    if result.ok == 0:
        raise SuiteError(f"{system.name} {scenario}: no request succeeded {result.error_samples}")


async def _one_node(system: System, run: Run) -> None:
    if run.wants("put"):
        for c in run.opts.concurrency:
            run.log(f"{system.name}: durable PUT, 1 node, {c} connections")
            load = run.load(system, "put", system.write_url, c, prefix="bench/put/")
            await _closed_loop(system, run, f"put_1n_c{c}", f"PUT, 1 node, {c} conns", load)
    if run.wants("txn"):
        run.log(f"{system.name}: txn ingest, {TXN_OPS} keys per txn")
        load = run.load(
            system, "txn", system.write_url, TXN_CONNECTIONS, prefix="bench/txn/",
            keyspace=1_000_000, ops=TXN_OPS,
        )  # fmt: skip
        title = f"txn ingest, {TXN_OPS} keys/txn, {TXN_CONNECTIONS} conns"
        await _closed_loop(system, run, "txn", title, load, per_request=TXN_OPS)


async def _three_nodes(system: System, run: Run) -> None:
    async with aiohttp.ClientSession() as session:
        if run.wants("put3"):
            run.log(f"{system.name}: durable PUT, 3 nodes, {CONNECTIONS} connections")
            load = run.load(system, "put", system.write_url, CONNECTIONS, prefix="bench/put/")
            title = f"PUT, 3 nodes, {CONNECTIONS} conns"
            await _closed_loop(system, run, f"put_3n_c{CONNECTIONS}", title, load)
        if run.wants("get"):
            await _get_follower(system, session, run)
        if run.wants("lag"):
            await _lag(system, run)
        if run.wants("catchup"):
            await _catchup(system, session, run)
        if run.wants("snapshot"):
            await _new_follower(system, session, run)
        if run.wants("rss"):
            _rss(system, run)


async def _get_follower(system: System, session: aiohttp.ClientSession, run: Run) -> None:
    run.log(f"{system.name}: loading {GET_KEYS} keys to read")
    await bulk_load(system, session, "bench/get/", GET_KEYS, run.opts.value_size)
    await converged(system, session, 1)
    run.log(f"{system.name}: GET on a follower, {CONNECTIONS} connections")
    load = run.load(system, "get", system.read_url(1), CONNECTIONS, prefix="bench/get/",
                    keyspace=GET_KEYS)  # fmt: skip
    await _closed_loop(system, run, "get_follower", f"GET on a follower, {CONNECTIONS} conns", load)


async def _lag(system: System, run: Run) -> None:
    rate = run.opts.lag_rate
    run.log(f"{system.name}: replication lag at {rate:g} writes/s")
    spec = LagSpec(system.name, system.write_url, system.read_url(1), rate, run.opts.duration,
                   value_size=run.opts.value_size)  # fmt: skip
    result = await run_lag(spec, f"{system.name} lag", run.console)
    writes, lat, title = result.writes, result.latency, f"lag at {rate:g} writes/s"
    for metric, value in (("p50 ms", lat.p50_ms), ("p99 ms", lat.p99_ms), ("max ms", lat.max_ms)):
        run.add(system, Figure("lag", title, metric, value, LOWER, writes.generator))
    info = {"writes": writes.ok + writes.failed, "seen": result.seen}
    run.results.detail(system.name, "lag", info | {"errors": writes.error_samples})
    if result.not_seen or writes.failed:
        raise SuiteError(
            f"{system.name} lag: {result.not_seen} writes not seen on the follower, "
            f"{writes.failed} failed {writes.error_samples}"
        )


async def _catchup(system: System, session: aiohttp.ClientSession, run: Run) -> None:
    member, writes = 2, run.opts.catchup_writes
    run.log(f"{system.name}: follower stopped, writing {writes} keys")
    await converged(system, session, member)
    await system.stop_member(member)
    await bulk_load(system, session, "bench/catchup/", writes, run.opts.value_size)
    target = await system.position(session, 0)
    run.log(f"{system.name}: follower restarted")
    started = await system.start_member(member)
    await converged(system, session, member, target)
    seconds = now() - started
    title = f"catch-up, {writes:,} missed writes"
    run.add(system, Figure("catchup", title, "s", seconds, LOWER, "Python client (loading)"))
    run.results.detail(system.name, "catchup", {"writes": writes, "position": target})


async def _new_follower(system: System, session: aiohttp.ClientSession, run: Run) -> None:
    keys = run.opts.snapshot_keys
    run.log(f"{system.name}: loading {keys} keys")
    await bulk_load(system, session, "bench/snap/", keys, run.opts.value_size)
    target = await system.position(session, 0)
    run.log(f"{system.name}: a new follower joins")
    member, started = await system.add_member()
    await converged(system, session, member, target)
    seconds = now() - started
    title = f"new follower, {keys:,} keys (+ earlier)"
    run.add(system, Figure("snapshot", title, "s", seconds, LOWER, "Python client (loading)"))
    run.results.detail(system.name, "snapshot", {"keys_loaded": keys, "position": target})


def _rss(system: System, run: Run) -> None:
    rss = system.peak_rss()
    run.log(
        f"{system.name}: peak RSS " + ", ".join(f"{k} {v / MIB:.0f} MiB" for k, v in rss.items())
    )
    top = max(rss.values()) / MIB if rss else None
    title = "peak RSS per member"
    run.add(system, Figure("rss", title, "MiB (max pod)", top, LOWER, "/proc/<pid>/status VmHWM"))
    run.results.detail(system.name, "rss", {k: round(v / MIB, 1) for k, v in rss.items()})


# --- loading and convergence --------------------------------------------------------------------
async def bulk_load(
    system: System, session: aiohttp.ClientSession, prefix: str, count: int, value_size: int
) -> None:
    """Write keys prefix+0 .. prefix+count-1 to the writer in txns, BULK_CONCURRENCY at once."""
    per_txn = BULK_OPS[system.name]
    body = wl.kv_txn_body if system.name == "kvstore" else wl.etcd_txn_body
    path = "/v1/txn" if system.name == "kvstore" else "/v3/kv/txn"
    value = wl.value_of(value_size)
    starts = iter(range(0, count, per_txn))

    async def worker() -> None:
        for first in starts:
            keys = [wl.key(prefix, n) for n in range(first, min(first + per_txn, count))]
            data = body(keys, value)
            async with session.post(system.write_url + path, data=data, headers=JSON) as resp:
                if resp.status >= 300:
                    text = (await resp.text())[:200]
                    raise SuiteError(f"loading {prefix}: HTTP {resp.status} {text}")
                await resp.read()

    await asyncio.gather(*(worker() for _ in range(BULK_CONCURRENCY)))


async def converged(
    system: System, session: aiohttp.ClientSession, member: int, target: int | None = None
) -> None:
    """Wait until `member` has applied everything the writer had (or `target`)."""
    goal = await system.position(session, 0) if target is None else target

    async def caught_up() -> bool:
        return await system.position(session, member) >= goal

    await wait_until(caught_up, CONVERGE_TIMEOUT, f"{system.name} member {member} to converge")


def parse_levels(text: str) -> tuple[int, ...]:
    levels = tuple(int(x) for x in text.split(",") if x.strip())
    if not levels or min(levels) < 1:
        raise ValueError("expected whole numbers >= 1, comma-separated")
    return levels


def parse_only(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    if not names or set(names) - set(SUITE_SCENARIOS):
        raise ValueError(f"choose from {', '.join(SUITE_SCENARIOS)}")
    return names
