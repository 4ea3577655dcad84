"""kvstore bench: the figures' maths and report shape, then tiny runs against a real server.
No timing thresholds: the runs only show that each scenario measures what it says."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from kvstore.bench.bench import (
    Latency,
    Report,
    UsageError,
    _put_specs,
    _share,
    options_from,
    percentile,
)
from kvstore.cli import exits
from tests.test_client import Server, running_server


# --- pure parts --------------------------------------------------------------------------------
def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert [percentile(values, p) for p in (0, 1, 50, 99, 100)] == [1, 1, 50, 99, 100]
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_latency_in_milliseconds() -> None:
    lat = Latency.of([0.003, 0.001, 0.002, 0.010])
    assert (lat.count, lat.p50_ms, lat.p99_ms, lat.max_ms) == (4, 2.0, 10.0, 10.0)
    assert lat.text() == "p50 2.00  p99 10.00  max 10.00"
    assert Latency.of([]) == Latency(0, None, None, None)
    assert Latency.of([]).text() == "none measured"


def test_share_splits_evenly() -> None:
    assert [_share(10, 3, i) for i in range(3)] == [4, 3, 3]
    assert sum(_share(64, 5, i) for i in range(5)) == 64


def test_put_specs_share_connections_and_requests() -> None:
    specs = _put_specs(options_from(_args(concurrency=5, workers=2, requests=9)))
    assert [(s.worker, s.concurrency, s.requests) for s in specs] == [(0, 3, 5), (1, 2, 4)]
    assert all(s.rate is None and s.duration is None for s in specs)


def test_report_table_and_json() -> None:
    report = Report(
        scenario="put",
        target="http://127.0.0.1:8080 (kv-0, manager)",
        load_generator="1 process (multiprocessing), 64 connections in all",
        seconds=2.0,
        ok=1000,
        failed=0,
        per_second=500.0,
        latency=Latency.of([0.001, 0.002]),
        latency_label="PUT latency",
        extra={"value_size": "100 B"},
    )
    lines = report.table().splitlines()
    assert lines[0] == "kvstore bench put"
    assert "  throughput        500 /s" in lines
    assert "  PUT latency (ms)  p50 1.00  p99 2.00  max 2.00" in lines
    assert "  value size        100 B" in lines
    doc = json.loads(json.dumps(report.to_json()))
    assert doc["latency"] == {"count": 2, "p50_ms": 1.0, "p99_ms": 2.0, "max_ms": 2.0}


def _args(**over: object) -> argparse.Namespace:
    base = dict(scenario="put", concurrency=64, workers=1, value_size=100, requests=None)
    base |= dict(duration=None, rate=200.0, follower_url=None, url="http://x:1", token=None)
    return argparse.Namespace(**(base | over))


def test_options_default_to_ten_seconds_and_check_ranges() -> None:
    opts = options_from(_args())
    assert (opts.duration, opts.requests, opts.url) == (10.0, None, "http://x:1")
    assert options_from(_args(requests=5)).duration is None
    for bad in (dict(concurrency=0), dict(workers=3, concurrency=2), dict(value_size=-1)):
        with pytest.raises(UsageError):
            options_from(_args(**bad))


# --- against a real server ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("kv")) as srv:
        yield srv


def bench(*argv: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kvstore", "bench", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_put_bench_report(server: Server) -> None:
    done = bench("--url", server.url, "--concurrency", "4", "--requests", "60", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["scenario"] == "put" and report["target"] == f"{server.url} (kv-0, manager)"
    assert (report["ok"], report["failed"]) == (60, 0)
    assert report["latency"]["count"] == 60
    assert 0 < report["latency"]["p50_ms"] <= report["latency"]["p99_ms"]
    assert report["latency"]["p99_ms"] <= report["latency"]["max_ms"]
    assert report["per_second"] > 0 and "multiprocessing" in report["load_generator"]


def test_put_bench_table_with_two_workers(server: Server) -> None:
    done = bench("--url", server.url, "--concurrency", "4", "--workers", "2", "--requests", "9")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "kvstore bench put"
    assert any(line.split()[:3] == ["load", "generator", "2"] for line in lines)
    assert any(line.split()[:4] == ["requests", "9", "ok,", "0"] for line in lines)


def test_lag_bench_report(server: Server) -> None:
    # One server plays both parts: the figure is then its own watch delivery time.
    argv = ["--scenario", "lag", "--url", server.url, "--follower-url", server.url]
    done = bench(*argv, "--rate", "100", "--requests", "30", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["scenario"] == "lag" and report["latency_label"] == "replication lag"
    assert (report["ok"], report["failed"], report["extra"]["not_seen"]) == (30, 0, 0)
    assert report["latency"]["count"] == 30 and report["latency"]["p50_ms"] >= 0


def test_unreachable_target_is_one_line(server: Server) -> None:
    done = bench("--url", "http://127.0.0.1:9", "--requests", "1")
    assert done.returncode == exits.EXIT_FAILED
    assert done.stderr == "kvstore bench: cannot reach http://127.0.0.1:9: connection refused\n"


def test_bad_options_exit_2() -> None:
    done = bench("--concurrency", "0", "--requests", "1")
    assert done.returncode == exits.EXIT_USAGE and "--concurrency" in done.stderr
