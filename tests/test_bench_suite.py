"""kvstore bench --suite: the requests, the figures and the table, then tiny runs of the whole
suite (kvstore alone; with wrk; against etcd). No timing thresholds: only the report's shape."""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstore.bench import cli as suite_cli
from kvstore.bench import load as ld
from kvstore.bench.options import SCENARIOS
from kvstore.bench.report import HIGHER, LOWER, Figure, Results, render
from kvstore.bench.suite import parse_levels, parse_only
from tests.test_client import Server, running_server

HAVE_WRK = shutil.which("wrk") is not None
HAVE_ETCD = shutil.which("etcd") is not None
TINY = ["--duration", "1", "--levels", "1,2", "--catchup-writes", "300", "--snapshot-keys", "500"]
TINY += ["--rate", "100"]


# --- requests -----------------------------------------------------------------------------------
def test_keys_are_padded_for_base64_in_pieces() -> None:
    assert ld.aligned("bench/") == "bench/" and ld.aligned("bench/put/") == "bench/put/00"
    assert ld.key("bench/", 42) == "bench/00000042"
    # base64 of the whole key is base64 of the prefix followed by that of the digits
    k = ld.key("bench/put/", 12345678)
    assert ld.b64(k) == ld.b64(ld.aligned("bench/put/")) + ld.b64("123456")[:8] + ld.b64("78")


def test_kvstore_and_etcd_requests_name_the_same_keys() -> None:
    def load(kind: str, **kw: Any) -> ld.Load:
        return ld.Load("http://x", kind, 1, 1.0, prefix="p/", keyspace=10, **kw)

    assert ld.requests_for(load("kv_put"))(13)[:2] == ("PUT", "/v1/kv/p/000000003")
    assert ld.requests_for(load("kv_get"))(3)[:3] == ("GET", "/v1/kv/p/000000003", b"")
    method, path, body, headers = ld.requests_for(load("etcd_range"))(13)
    assert (method, path, headers["Content-Type"]) == ("POST", "/v3/kv/range", "application/json")
    doc = json.loads(body)
    assert base64.b64decode(doc["key"]) == b"p/000000003" and doc["serializable"] is True
    _, _, body, _ = ld.requests_for(load("kv_txn", ops=3))(1)
    assert [op["key"] for op in json.loads(body)["ops"]] == [ld.key("p/", n) for n in (3, 4, 5)]
    _, _, body, _ = ld.requests_for(load("etcd_txn", ops=3))(1)
    puts = [p["requestPut"] for p in json.loads(body)["success"]]
    assert [base64.b64decode(p["key"]).decode() for p in puts] == [
        ld.key("p/", n) for n in (3, 4, 5)
    ]
    assert base64.b64decode(puts[0]["value"]) == ld.value_of(100)
    with pytest.raises(ValueError):
        load("nope")


@pytest.mark.parametrize("kind", ld.KINDS)
def test_lua_script_sends_the_kind_and_reports_json(kind: str) -> None:
    script = ld.lua_script(ld.Load("http://x", kind, 4, 1.0, token="t0k"))
    assert "request = function()" in script and ld.WRK_MARK in script
    assert '["Authorization"] = "Bearer t0k"' in script
    path = {"kv_put": "/v1/kv/", "kv_get": "/v1/kv/", "kv_txn": "/v1/txn"}.get(kind, "/v3/kv/")
    assert path in script


def test_parse_wrk_counts_status_errors_apart() -> None:
    out = 'Running 1s test\nWRKJSON {"requests":100,"duration_us":2000000,"socket_errors":1,'
    out += '"status_errors":4,"p50_us":1500,"p99_us":9000,"max_us":12000}\n'
    r = ld.parse_wrk(out)
    assert (r.requests, r.errors, r.seconds, r.per_second) == (96, 5, 2.0, 48.0)
    assert (r.p50_ms, r.p99_ms, r.max_ms) == (1.5, 9.0, 12.0)
    assert r.generator.startswith("wrk")
    with pytest.raises(RuntimeError, match="without figures"):
        ld.parse_wrk("garbage", "wrk: bad script", 1)


def test_python_result_percentiles() -> None:
    r = ld.python_result([0.001 * n for n in range(1, 101)], ["e1"], 2.0, 8)
    assert (r.requests, r.errors, r.p50_ms, r.p99_ms, r.max_ms) == (100, 1, 50.0, 99.0, 100.0)
    assert r.per_second == 50.0 and "8 connections" in r.generator
    assert ld.python_result([], [], 1.0, 1).p50_ms is None


# --- figures and the table ----------------------------------------------------------------------
def _results() -> Results:
    res = Results(setup={"summary": "2 cores", "notes": ["a note"]})
    for system, rate, p99, lag in (("kvstore", 6000.0, 10.0, 1.5), ("etcd", 3000.0, 20.0, 3.0)):
        res.add(system, Figure("put_1n_c64", "PUT, 1 node", "req/s", rate, HIGHER, "wrk"))
        res.add(system, Figure("put_1n_c64", "PUT, 1 node", "p99 ms", p99, LOWER, "wrk"))
        res.add(system, Figure("lag", "lag", "p50 ms", lag, LOWER, "python"))
    res.add("kvstore", Figure("rss", "peak RSS", "MiB (max pod)", 120.0, LOWER, "/proc"))
    return res


def test_rows_pair_the_systems_with_their_ratio() -> None:
    rows = {(r["scenario"], r["metric"]): r for r in _results().rows()}
    put = rows[("put_1n_c64", "req/s")]
    assert put["values"] == {"kvstore": 6000.0, "etcd": 3000.0} and put["ratio"] == 2.0
    assert rows[("put_1n_c64", "p99 ms")]["ratio"] == 0.5
    assert rows[("rss", "MiB (max pod)")]["ratio"] is None


def test_targets_say_met_or_not() -> None:
    verdicts = {t["target"]: t for t in _results().targets()}
    put = verdicts["durable PUT/s, 1 node, 64 conns >= 1.5x etcd"]
    assert (put["ratio"], put["met"]) == (2.0, True)
    assert verdicts["PUT p99, 1 node, 64 conns <= etcd's"]["met"] is True
    assert verdicts["replication lag p50 <= 2 ms"]["met"] is True
    assert verdicts["peak RSS per pod <= 100 MiB"]["met"] is False
    # no figure for a scenario: no verdict on it
    assert not any("catch-up" in name for name in verdicts)


def test_render_is_one_markdown_table_and_the_targets() -> None:
    text = render(_results())
    lines = text.splitlines()
    assert lines[0] == "kvstore bench --suite: 2 cores"
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["scenario", "metric", "kvstore", "etcd", "kvstore/etcd", "better", "load"]
    assert lines[3].startswith("|---") and "---:|" in lines[3]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines[4:7]]
    assert cells[0][:5] == ["PUT, 1 node", "req/s", "6,000", "3,000", "2.00x"]
    assert "| peak RSS per pod <= 100 MiB" in text and "NOT met" in text
    assert lines[-1] == "- a note"
    doc = json.loads(json.dumps(_results().to_json()))
    assert set(doc) == {"setup", "rows", "targets", "figures", "details"}


# --- options ----------------------------------------------------------------------------------
def _args(**over: Any) -> argparse.Namespace:
    base: dict[str, Any] = dict(compare=None, duration=None, levels="1,16", only="put,lag")
    base |= dict(catchup_writes=10, snapshot_keys=10, value_size=100, rate=None, workdir=None)
    base |= dict(load_generator="python")
    return argparse.Namespace(**(base | over))


def test_suite_options_defaults_and_checks(tmp_path: Path) -> None:
    opts = suite_cli.suite_options(_args())
    assert (opts.duration, opts.lag_rate, opts.concurrency) == (10.0, 1000.0, (1, 16))
    assert (opts.only, opts.use_wrk, opts.compare_etcd) == (("put", "lag"), False, False)
    assert parse_only(",".join(SCENARIOS)) == SCENARIOS
    for bad in ("", "put,nope"):
        with pytest.raises(ValueError):
            parse_only(bad)
    with pytest.raises(ValueError):
        parse_levels("1,0")
    for over in (dict(rate=0.0), dict(catchup_writes=0), dict(workdir=tmp_path)):
        with pytest.raises(ValueError):
            suite_cli.suite_options(_args(**over))


def test_compare_etcd_needs_etcd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(suite_cli, "etcd_available", lambda: False)
    with pytest.raises(ValueError, match="etcd-server"):
        suite_cli.suite_options(_args(compare="etcd"))


# --- the Python load process against a real server ----------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("kv")) as srv:
        yield srv


def test_python_load_puts_then_gets(server: Server) -> None:
    put = ld.run_python(ld.Load(server.url, "kv_put", 2, 0.3, prefix="t/", keyspace=20))
    assert put.requests > 0 and put.errors == 0
    assert put.p50_ms is not None and put.p99_ms is not None and put.max_ms is not None
    assert 0 < put.p50_ms <= put.p99_ms <= put.max_ms
    get = ld.run_python(ld.Load(server.url, "kv_get", 2, 0.3, prefix="t/", keyspace=20))
    assert get.requests > 0 and get.errors == 0


# --- the whole suite, tiny ---------------------------------------------------------------------
def suite(*argv: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "kvstore", "bench", "--suite", "--json", *TINY, *argv]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-4000:]
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def _scenarios(doc: dict[str, Any], system: str) -> set[str]:
    return {f["scenario"] for f in doc["figures"][system]}


ALL = {"put_1n_c1", "put_1n_c2", "txn", "put_3n_c64", "get_follower", "lag", "catchup"}
ALL |= {"snapshot", "rss"}


@pytest.mark.e2e
def test_suite_runs_every_scenario_on_kvstore(tmp_path: Path) -> None:
    workdir = tmp_path / "run"
    doc = suite("--load-generator", "python", "--workdir", str(workdir))
    assert set(doc["figures"]) == {"kvstore"} and _scenarios(doc, "kvstore") == ALL
    assert doc["setup"]["load_generator"] == "a Python process (aiohttp)"
    rows = {(r["scenario"], r["metric"]): r for r in doc["rows"]}
    put = rows[("put_1n_c2", "req/s")]
    assert put["values"]["kvstore"] > 0 and put["generators"]["kvstore"].startswith("Python")
    assert rows[("txn", "keys/s")]["values"]["kvstore"] > 0
    assert doc["details"]["kvstore"]["lag"]["seen"] == doc["details"]["kvstore"]["lag"]["writes"]
    assert set(doc["details"]["kvstore"]["rss"]) == {"kv-0", "kv-1", "kv-2", "kv-3"}
    names = {t["target"] for t in doc["targets"]}
    assert "snapshot install <= 15 s" in names and not any("etcd" in n for n in names)
    assert not (workdir / "kvstore" / "three" / "cluster.json").exists()  # stopped


@pytest.mark.e2e
@pytest.mark.skipif(not HAVE_WRK, reason="wrk is not installed (apt-get install wrk)")
def test_suite_with_wrk() -> None:
    doc = suite("--load-generator", "wrk", "--only", "put,get", "--levels", "2")
    gens = {f["generator"] for f in doc["figures"]["kvstore"]}
    assert gens == {"wrk (Lua script), 1 thread"}
    assert _scenarios(doc, "kvstore") == {"put_1n_c2", "get_follower"}


@pytest.mark.e2e
@pytest.mark.skipif(not HAVE_ETCD, reason="etcd is not installed (apt-get install etcd-server)")
def test_suite_compares_with_etcd() -> None:
    doc = suite("--compare", "etcd", "--load-generator", "python")
    assert set(doc["figures"]) == {"kvstore", "etcd"}
    assert _scenarios(doc, "etcd") == ALL
    rows = {(r["scenario"], r["metric"]): r for r in doc["rows"]}
    get = rows[("get_follower", "req/s")]
    assert get["ratio"] == get["values"]["kvstore"] / get["values"]["etcd"]
    assert doc["setup"]["etcd"].startswith("etcd ")
    assert {t["target"] for t in doc["targets"]} >= {"GET/s on a follower >= 2x etcd serializable"}
