"""Prometheus metrics: one `Metrics` per app, owning its own registry.

Counters and histograms on the hot paths are updated as things happen (an increment, or one
pass over a committed batch); everything that is a level (seqs, lag, sizes, followers) or a count
the node keeps anyway (reconnects) is read from the node when Prometheus scrapes, so it costs
nothing between scrapes. The README's table of metrics is checked against what a manager and a
follower expose (tests/test_metrics.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from operator import attrgetter

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from kvstore import __version__
from kvstore.cluster.node import Node
from kvstore.cluster.peer import SnapshotTaken
from kvstore.model import DELETE, PUT, Change
from kvstore.server.httputil import Handler
from kvstore.store.feed import feed_of

LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
MANAGER_SEQ = "the manager's seq (on a follower: as last heard from it)"
_OP = attrgetter("op")
CUT_KINDS = ("watch", "stream", "snapshot", "backup")


class Metrics:
    def __init__(self) -> None:
        # No `*_created` series: one line per counter is what dashboards and alerts use.
        disable_created_metrics()  # type: ignore[no-untyped-call]
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
        changes = Counter(
            "kvstore_changes_committed_total",
            "changes committed to this pod's store (taken by the manager, applied by a "
            "follower), by op: put or delete",
            ["op"],
            registry=r,
        )
        self.puts, self.deletes = changes.labels(PUT), changes.labels(DELETE)
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
        # Registered by `bind` on the role they belong to.
        self.txns = Counter("kvstore_txns_committed_total", "transactions committed", registry=None)
        self.txn_ops = Counter(
            "kvstore_txn_ops_committed_total",
            "ops of committed transactions that took a seq (a delete of a missing key takes none)",
            registry=None,
        )
        self.forwarded = Counter(
            "kvstore_forwarded_writes_total", "writes sent on to the manager", registry=None
        )
        self.snapshots_sent = Counter(
            "kvstore_snapshots_sent_total", "snapshots sent to another pod", registry=r
        )
        self.snapshot_sent_bytes = Counter(
            "kvstore_snapshot_sent_bytes_total", "bytes of the snapshots sent", registry=r
        )
        self.snapshot_send_seconds = Counter(
            "kvstore_snapshot_send_seconds_total", "time spent sending snapshots", registry=r
        )
        self.snapshots_installed = Counter(
            "kvstore_snapshots_installed_total",
            "snapshots taken from the manager and installed",
            registry=None,
        )
        self.snapshot_installed_bytes = Counter(
            "kvstore_snapshot_installed_bytes_total",
            "bytes of the snapshots installed",
            registry=None,
        )
        self.snapshot_install_seconds = Counter(
            "kvstore_snapshot_install_seconds_total",
            "time spent taking and installing snapshots",
            registry=None,
        )
        self.streams_cut = Counter(
            "kvstore_streams_cut_total",
            "long responses cut off because their reader took no byte for KV_WRITE_TIMEOUT, "
            "by kind (watch, stream, snapshot, backup)",
            ["kind"],
            registry=r,
        )
        for kind in CUT_KINDS:
            self.streams_cut.labels(kind)
        self.manager_only = (self.txns, self.txn_ops)
        self.follower_only = (
            self.forwarded,
            self.snapshots_installed,
            self.snapshot_installed_bytes,
            self.snapshot_install_seconds,
        )
        self.is_manager = False

    def observe_commit(self, changes: int, seconds: float) -> None:
        """`Store.on_commit`: one group commit (manager) or one applied batch (follower)."""
        self.commits.observe(seconds)
        self.batch.observe(changes)

    def count_changes(self, changes: list[Change]) -> None:
        """A store listener: the committed changes by op, one pass over the batch."""
        deletes = list(map(_OP, changes)).count(DELETE)
        if deletes:
            self.deletes.inc(deletes)
        if deletes < len(changes):
            self.puts.inc(len(changes) - deletes)

    def count_txn(self, ops: int) -> None:
        """A txn the manager committed, and how many of its ops took a seq."""
        self.txns.inc()
        self.txn_ops.inc(ops)

    def snapshot_sent(self, size: int, seconds: float) -> None:
        self.snapshots_sent.inc()
        self.snapshot_sent_bytes.inc(size)
        self.snapshot_send_seconds.inc(seconds)

    def snapshot_installed(self, taken: SnapshotTaken) -> None:
        self.snapshots_installed.inc()
        self.snapshot_installed_bytes.inc(taken.bytes)
        self.snapshot_install_seconds.inc(taken.seconds)

    def stream_cut(self, kind: str) -> None:
        self.streams_cut.labels(kind).inc()

    def bind(self, node: Node) -> None:
        """Expose the role's counters, count the node's changes, and read its levels at scrape
        time."""
        for counter in self.manager_only if node.is_manager else self.follower_only:
            self.registry.register(counter)
        node.store.add_listener(self.count_changes)
        self.registry.register(_NodeCollector(node))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _NodeCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node, st, s = self.node, self.node.store.state, self.node.settings
        yield InfoMetricFamily(
            "kvstore",
            "this pod's identity: pod, role, ordinal, epoch and kvstore version",
            value={
                "pod": s.pod_name,
                "role": s.role,
                "ordinal": str(s.ordinal),
                "epoch": st.epoch or "",
                "version": __version__,
            },
        )
        yield _gauge(
            "kvstore_start_time_seconds", "when this process started (unix time)", node.started_at
        )
        yield _gauge("kvstore_applied_seq", "the last seq applied to this pod's store", st.seq)
        yield _gauge(
            "kvstore_term",
            "the term of this pod's last applied change (the manager: of its last write)",
            st.last_term,
        )
        yield _gauge(
            "kvstore_oldest_retained_seq", "the oldest seq in the change log", st.oldest_seq
        )
        yield _gauge("kvstore_keys", "keys in this pod's store", st.keys)
        yield _gauge("kvstore_ready", "1 when /readyz passes, else 0", float(node.ready))
        for suffix, name, what in (("", "database", "database"), ("-wal", "wal", "WAL")):
            yield _gauge(
                f"kvstore_{name}_size_bytes",
                f"size of the SQLite {what} file",
                _size(node.store.path + suffix),
            )
        yield _gauge(
            "kvstore_watches", "watches open on this pod", feed_of(node.store).count("watch")
        )
        yield _gauge(
            "kvstore_seq_waiters", "reads waiting for a min_seq right now", node.store.waiting
        )
        yield from (_manager(node) if node.is_manager else _follower(node))


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _size(path: str) -> float:
    try:
        return float(os.path.getsize(path))
    except OSError:
        return 0.0


def _manager(node: Node) -> Iterator[Metric]:
    seq = node.store.state.seq
    yield _gauge("kvstore_manager_seq", MANAGER_SEQ, seq)
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
        "kvstore_follower_lag_entries",
        "each follower's lag: the manager's seq minus its acked seq",
        labels=["follower"],
    )
    for f in followers:
        acked.add_metric([f["pod"]], f["acked_seq"])
        lag.add_metric([f["pod"]], f["lag_entries"])
    yield acked
    yield lag


def _follower(node: Node) -> Iterator[Metric]:
    p, lag = node.link, node.lag()
    yield _gauge("kvstore_manager_seq", MANAGER_SEQ, p.manager_seq)
    yield _gauge(
        "kvstore_replication_lag_entries",
        "changes the manager has that this pod has not applied",
        lag["entries"],
    )
    yield _gauge(
        "kvstore_replication_lag_seconds",
        "seconds since this pod was last caught up (0 while it is)",
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
    yield _gauge(
        "kvstore_replication_diverged",
        "1 while the manager refuses our history (409 diverged): nothing is applied until "
        "`kvstore repair`",
        float(p.diverged is not None),
    )
    yield _gauge(
        "kvstore_replication_diverged_seq",
        "the first seq where our history and the manager's part (0 when not diverged)",
        float(p.diverged_seq or 0),
    )
    yield CounterMetricFamily(
        "kvstore_replication_reconnects",
        "times the stream from the manager was lost (each loss is followed by a reconnect)",
        value=p.reconnects,
    )


def middleware(metrics: Metrics) -> Middleware:
    """Count each request by route, method and status, and time it."""

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        return await _counted(metrics, request, handler)

    return count


async def _counted(metrics: Metrics, request: web.Request, handler: Handler) -> web.StreamResponse:
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


def handler(metrics: Metrics) -> Handler:
    """GET /metrics."""

    async def scrape(request: web.Request) -> web.StreamResponse:
        body = metrics.render()
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})

    return scrape
