"""Prometheus metrics: one `Metrics` per app, owning its own registry.

Counters and histograms on the hot paths are updated as things happen; everything that is a
level (seqs, lag, sizes, followers) is read from the node when Prometheus scrapes, so it costs
nothing between scrapes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from .httputil import Handler

if TYPE_CHECKING:
    from .node import Node

LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "kvstore_http_requests_total",
            "HTTP requests by route, method and status code",
            ["route", "method", "code"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "kvstore_http_request_duration_seconds",
            "HTTP request duration",
            ["route", "method"],
            buckets=LATENCY,
            registry=r,
        )
        self.changes = Counter(
            "kvstore_changes_committed_total",
            "changes (puts and deletes) committed to this pod's store",
            registry=r,
        )
        self.commits = Histogram(
            "kvstore_commit_duration_seconds",
            "one group-commit or apply transaction, fsync included",
            buckets=LATENCY,
            registry=r,
        )
        self.batch = Histogram(
            "kvstore_commit_batch_changes",
            "changes per commit (group commit batch size)",
            buckets=BATCH,
            registry=r,
        )
        self.forwarded = Counter(
            "kvstore_forwarded_writes_total", "writes a follower sent on to the manager", registry=r
        )
        self.snapshot_bytes = Counter(
            "kvstore_snapshot_sent_bytes_total", "snapshot bytes sent", registry=r
        )
        self.snapshots_sent = Counter("kvstore_snapshots_sent_total", "snapshots sent", registry=r)

    def observe_commit(self, changes: int, seconds: float) -> None:
        self.changes.inc(changes)
        self.commits.observe(seconds)
        self.batch.observe(changes)

    def bind(self, node: Node) -> None:
        self.registry.register(_NodeCollector(node))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _NodeCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node, st, s = self.node, self.node.store.state, self.node.settings
        yield InfoMetricFamily(
            "kvstore_build",
            "this pod's identity",
            value={
                "pod": s.pod_name,
                "role": s.role,
                "ordinal": str(s.ordinal),
                "epoch": st.epoch or "",
            },
        )
        yield _gauge("kvstore_applied_seq", "the last seq applied to this pod's store", st.seq)
        yield _gauge(
            "kvstore_oldest_retained_seq", "the oldest seq in the change log", st.oldest_seq
        )
        yield _gauge("kvstore_keys", "keys in this pod's store", st.keys)
        yield _gauge("kvstore_ready", "1 when /readyz passes", _ready(node))
        for suffix, name in (("", "database"), ("-wal", "wal")):
            yield _gauge(
                f"kvstore_{name}_size_bytes",
                f"size of the SQLite {name} file",
                _size(node.store.path + suffix),
            )
        yield from (_manager(node) if node.is_manager else _follower(node))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _ready(node: Node) -> float:
    from .health import checks

    return float(all(ok for ok, _ in checks(node)))


def _size(path: str) -> float:
    try:
        return float(os.path.getsize(path))
    except OSError:
        return 0.0


def _manager(node: Node) -> Iterator[Metric]:
    seq = node.store.state.seq
    yield _gauge("kvstore_manager_seq", "the manager's seq", seq)
    followers = node.tracker.describe(seq)
    yield _gauge(
        "kvstore_followers_connected",
        "followers streaming from this manager",
        sum(1 for f in followers if f["connected"]),
    )
    acked = GaugeMetricFamily(
        "kvstore_follower_acked_seq", "each follower's acked seq", labels=["follower"]
    )
    lag = GaugeMetricFamily(
        "kvstore_follower_lag_entries", "each follower's lag in entries", labels=["follower"]
    )
    for f in followers:
        acked.add_metric([f["pod"]], f["acked_seq"])
        lag.add_metric([f["pod"]], f["lag_entries"])
    yield acked
    yield lag


def _follower(node: Node) -> Iterator[Metric]:
    p, lag = node.progress, node.lag()
    yield _gauge("kvstore_manager_seq", "the manager's seq as last heard", p.manager_seq)
    yield _gauge(
        "kvstore_replication_lag_entries",
        "changes the manager has that this pod has not applied",
        lag["entries"],
    )
    yield _gauge(
        "kvstore_replication_lag_seconds",
        "seconds since this pod was last caught up",
        lag["seconds"],
    )
    yield _gauge(
        "kvstore_replication_connected", "1 while streaming from the manager", float(p.connected)
    )
    yield _gauge(
        "kvstore_replication_epoch_mismatch",
        "1 when the manager's epoch is not ours",
        float(p.epoch_mismatch is not None),
    )
    reconnects = GaugeMetricFamily(
        "kvstore_replication_reconnects", "times the stream was lost", value=p.reconnects
    )
    yield reconnects
    yield _gauge(
        "kvstore_snapshots_installed", "snapshots installed since start", p.snapshots_installed
    )


METRICS = web.AppKey("metrics", Metrics)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    metrics = request.app[METRICS]
    route = request.match_info.route.resource
    name = route.canonical if route is not None else "unmatched"
    started = time.perf_counter()
    code = 500
    try:
        response = await handler(request)
        code = response.status
        return response
    except web.HTTPException as exc:
        code = exc.status
        raise
    finally:
        metrics.requests.labels(name, request.method, str(code)).inc()
        metrics.request_seconds.labels(name, request.method).observe(time.perf_counter() - started)


async def metrics_handler(request: web.Request) -> web.StreamResponse:
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})
