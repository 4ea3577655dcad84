"""`kvstore bench`: its options and help, then tiny runs of each scenario against a real server.
No timing thresholds: the runs only show that each scenario measures what it says."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstore.bench import command
from kvstore.bench.command import UsageError, options_from, suite_options
from kvstore.bench.scenarios import put_loads, share
from kvstore.bench.suite import SUITE_SCENARIOS, parse_levels, parse_only
from kvstore.cli import exits
from tests.test_client import Server, running_server


# --- options -----------------------------------------------------------------------------------
def test_share_splits_evenly() -> None:
    assert [share(10, 3, i) for i in range(3)] == [4, 3, 3]
    assert sum(share(64, 5, i) for i in range(5)) == 64


def _args(**over: object) -> argparse.Namespace:
    base = dict(scenario="put", concurrency=64, workers=1, value_size=100, requests=None)
    base |= dict(duration=None, rate=200.0, follower_url=None, url="http://x:1", token=None)
    return argparse.Namespace(**(base | over))


def test_put_loads_share_connections_and_requests() -> None:
    loads = put_loads(options_from(_args(concurrency=5, workers=2, requests=9)))
    assert [(x.connections, x.requests) for x in loads] == [(3, 5), (2, 4)]
    assert all(x.rate is None and x.duration is None and x.kind == "kv_put" for x in loads)
    assert loads[0].prefix != loads[1].prefix  # each worker its own keys


def test_options_default_to_ten_seconds_and_check_ranges() -> None:
    opts = options_from(_args())
    assert (opts.duration, opts.requests, opts.url) == (10.0, None, "http://x:1")
    assert options_from(_args(requests=5)).duration is None
    for bad in (dict(concurrency=0), dict(workers=3, concurrency=2), dict(value_size=-1)):
        with pytest.raises(UsageError):
            options_from(_args(**bad))


def _suite_args(**over: Any) -> argparse.Namespace:
    base: dict[str, Any] = dict(compare=None, duration=None, levels="1,16", only="put,lag")
    base |= dict(catchup_writes=10, snapshot_keys=10, value_size=100, rate=None, workdir=None)
    base |= dict(load_generator="python")
    return argparse.Namespace(**(base | over))


def test_suite_options_defaults_and_checks(tmp_path: Path) -> None:
    opts = suite_options(_suite_args())
    assert (opts.duration, opts.lag_rate, opts.concurrency) == (10.0, 1000.0, (1, 16))
    assert (opts.only, opts.use_wrk, opts.compare_etcd) == (("put", "lag"), False, False)
    assert parse_only(",".join(SUITE_SCENARIOS)) == SUITE_SCENARIOS
    for bad in ("", "put,nope"):
        with pytest.raises(ValueError):
            parse_only(bad)
    with pytest.raises(ValueError):
        parse_levels("1,0")
    for over in (
        dict(rate=0.0),
        dict(catchup_writes=0),
        dict(workdir=tmp_path),
        dict(levels="1,x"),
        dict(only="put,nope"),
    ):
        with pytest.raises(UsageError):
            suite_options(_suite_args(**over))


def test_compare_etcd_needs_etcd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command, "etcd_available", lambda: False)
    with pytest.raises(UsageError, match="etcd-server"):
        suite_options(_suite_args(compare="etcd"))


# --- the command line --------------------------------------------------------------------------
def bench(*argv: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "kvstore", "bench", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_help_is_for_users() -> None:
    done = bench("--help")
    assert done.returncode == 0
    out = done.stdout
    assert "Measure a running kvstore" in out and "examples:" in out
    assert "kvstore bench --suite --compare etcd" in out
    for internal in ("BenchOptions", "SCENARIOS", "Report", "Console", "multiprocessing"):
        assert internal not in out
    for option in ("--scenario", "--requests", "--rate", "--suite", "--compare", "--workdir"):
        assert option in out


def test_bad_options_exit_2() -> None:
    done = bench("--concurrency", "0", "--requests", "1")
    assert done.returncode == exits.EXIT_USAGE and "--concurrency" in done.stderr
    done = bench("--suite", "--levels", "1,zero")
    assert done.returncode == exits.EXIT_USAGE
    assert done.stderr.startswith("kvstore bench: --levels 1,zero: ")


# --- against a real server ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("kv")) as srv:
        yield srv


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


def test_the_token_goes_with_the_load(tmp_path: Path) -> None:
    token = "bench-token"
    with running_server(tmp_path, {"KV_AUTH_TOKEN": token}) as srv:
        done = bench("--url", srv.url, "--token", token, "--requests", "5", "--json")
        assert done.returncode == 0, done.stderr
        assert (json.loads(done.stdout)["ok"], json.loads(done.stdout)["failed"]) == (5, 0)


def test_failed_writes_exit_1_with_samples(tmp_path: Path) -> None:
    with running_server(tmp_path, {"KV_MAX_VALUE_BYTES": "10"}) as srv:
        done = bench("--url", srv.url, "--value-size", "11", "--requests", "4", "--json")
    assert done.returncode == exits.EXIT_FAILED, done.stderr
    report = json.loads(done.stdout)
    assert (report["ok"], report["failed"], report["latency"]["count"]) == (0, 4, 0)
    assert len(report["error_samples"]) == 3 and "HTTP 413" in report["error_samples"][0]
