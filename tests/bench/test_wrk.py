"""kvstore.bench.wrk: the Lua script and the figures read back from wrk's output."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvstore.bench import wrk
from kvstore.bench.workload import KINDS, Load


@pytest.mark.parametrize("kind", KINDS)
def test_lua_script_sends_the_kind_and_reports_json(kind: str) -> None:
    script = wrk.lua_script(Load("http://x", kind, 4, 1.0, token="t0k"))
    assert "request = function()" in script and wrk.WRK_MARK in script
    assert '["Authorization"] = "Bearer t0k"' in script
    path = {"kv_put": "/v1/kv/", "kv_get": "/v1/kv/", "kv_txn": "/v1/txn"}.get(kind, "/v3/kv/")
    assert path in script


def test_parse_wrk_counts_status_errors_apart() -> None:
    out = 'Running 1s test\nWRKJSON {"requests":100,"duration_us":2000000,"socket_errors":1,'
    out += '"status_errors":4,"p50_us":1500,"p99_us":9000,"max_us":12000}\n'
    r = wrk.parse_wrk(out)
    assert (r.ok, r.failed, r.seconds, r.per_second) == (96, 5, 2.0, 48.0)
    assert (r.latency.count, r.latency.p50_ms, r.latency.p99_ms, r.latency.max_ms) == (
        96,
        1.5,
        9.0,
        12.0,
    )
    assert r.generator.startswith("wrk")
    with pytest.raises(RuntimeError, match="without figures"):
        wrk.parse_wrk("garbage", "wrk: bad script", 1)


def test_wrk_runs_closed_loops_of_a_duration_only(tmp_path: Path) -> None:
    paced = Load("http://x", "kv_put", 4, 1.0, rate=10.0)
    with pytest.raises(ValueError, match="closed-loop"):
        wrk.run_wrk(paced, tmp_path)
