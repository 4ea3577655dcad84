"""kvstore bench --suite: tiny runs of the whole suite (kvstore alone; with wrk; against etcd).
No timing thresholds: only the report's shape."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

HAVE_WRK = shutil.which("wrk") is not None
HAVE_ETCD = shutil.which("etcd") is not None
TINY = ["--duration", "1", "--levels", "1,2", "--catchup-writes", "300", "--snapshot-keys", "500"]
TINY += ["--rate", "100"]


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
