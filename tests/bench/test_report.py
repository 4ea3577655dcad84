"""kvstore.bench.report: one scenario's report (table and JSON), and the suite's table of
figures, ratios and targets."""

from __future__ import annotations

import json

from kvstore.bench.report import HIGHER, LOWER, Figure, Report, Results, render
from kvstore.bench.stats import Latency


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
