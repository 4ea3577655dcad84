"""The scenarios of `kvstore bench` against running servers, each `async (BenchOptions, Console)
-> Report` in `SCENARIOS`:

- `put`: PUT throughput and latency, `workers` load processes with `concurrency` connections in
  all, each sending its next PUT as soon as the last one is answered.
- `lag`: writes on the manager at a stated rate, each timed from the manager's answer until the
  follower's watch stream shows it (kvstore.bench.lag).

Keys written live under `bench/` and are rewritten by the next run rather than piling up.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from kvstore.bench.console import Console
from kvstore.bench.lag import LagSpec, run_lag
from kvstore.bench.load import run_python
from kvstore.bench.report import Report
from kvstore.bench.workload import Load
from kvstore.cli.tables import human_size
from kvstore.client import KVClient


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


async def describe(url: str, token: str | None) -> str:
    """`URL (pod, role)`, from a first request that fails clearly if the server is not there."""
    async with KVClient(url, token) as kv:
        st = await kv.status()
        return f"{kv.url} ({st['pod']}, {st['role']})"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("s") else "s")


def share(total: int, parts: int, index: int) -> int:
    """Part `index` of `total` split as evenly as possible into `parts`."""
    return total // parts + (1 if index < total % parts else 0)


# --- put ---------------------------------------------------------------------------------------
async def scenario_put(opts: BenchOptions, console: Console) -> Report:
    target = await describe(opts.url, opts.token)
    result = await run_python(put_loads(opts), "put", console)
    return Report(
        scenario="put",
        target=target,
        load_generator=f"{plural(opts.workers, 'process')} (multiprocessing), "
        f"{plural(opts.concurrency, 'connection')} in all, python aiohttp; "
        "measured apart from the load",
        seconds=result.seconds,
        ok=result.ok,
        failed=result.failed,
        per_second=result.per_second,
        latency=result.latency,
        latency_label="PUT latency",
        extra={"concurrency": opts.concurrency, "value_size": human_size(opts.value_size)},
        error_samples=result.error_samples,
    )


def put_loads(opts: BenchOptions) -> list[Load]:
    """The connections, and any request count, shared out among the workers; each worker
    writes keys of its own."""
    return [
        Load(
            opts.url,
            "kv_put",
            share(opts.concurrency, opts.workers, w),
            opts.duration,
            prefix=f"bench/put/w{w}/",
            value_size=opts.value_size,
            token=opts.token,
            requests=None if opts.requests is None else share(opts.requests, opts.workers, w),
        )
        for w in range(opts.workers)
    ]


# --- lag ---------------------------------------------------------------------------------------
async def scenario_lag(opts: BenchOptions, console: Console) -> Report:
    follower_url = opts.follower_url or opts.url
    target = f"writes on {await describe(opts.url, opts.token)}, "
    target += f"seen on {await describe(follower_url, opts.token)}"
    spec = LagSpec(
        "kvstore", opts.url, follower_url, opts.rate, opts.duration, requests=opts.requests,
        in_flight=opts.concurrency, value_size=opts.value_size, token=opts.token,
    )  # fmt: skip
    result = await run_lag(spec, "lag", console)
    writes = result.writes
    return Report(
        scenario="lag",
        target=target,
        load_generator=f"1 writer process (multiprocessing, python aiohttp) at {opts.rate:g} "
        f"writes/s, at most {opts.concurrency} in flight; the watch runs in that process too",
        seconds=writes.seconds,
        ok=writes.ok,
        failed=writes.failed,
        per_second=writes.per_second,
        latency=result.latency,
        latency_label="replication lag",
        extra={
            "lag measured": "from the manager's answer to the follower's watch event",
            "seen on follower": f"{result.seen} of {writes.ok}",
            "not_seen": result.not_seen,
        },
        error_samples=writes.error_samples,
    )


Scenario = Callable[[BenchOptions, Console], Coroutine[Any, Any, Report]]
SCENARIOS: dict[str, Scenario] = {"put": scenario_put, "lag": scenario_lag}
