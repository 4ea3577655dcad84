"""`kvstore local` and `kvstore chaos` with the global flags, `local logs`, `local status --watch`,
and get -v on a real follower: against a real local cluster started with a client token."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.cli import exits
from kvstore.local.cli import tail_of
from tests.cli.test_kv import read_lines
from tests.harness import LocalCluster

pytestmark = pytest.mark.e2e
TOKEN = "sekret-token"
KVSTORE = [sys.executable, "-m", "kvstore"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    local = LocalCluster(
        tmp_path_factory.mktemp("local"), replicas=2, extra=["--env", f"KV_AUTH_TOKEN={TOKEN}"]
    )
    local.up()
    try:
        yield local
    finally:
        local.down()


def roles(cluster: LocalCluster, *argv: str) -> list[str | None]:
    doc = json.loads(cluster.kvstore(*argv).stdout)
    return [(p["status"] or {}).get("role") for p in doc["pods"]]


def test_local_status_takes_the_token_wherever_it_stands(cluster: LocalCluster) -> None:
    assert roles(cluster, "local", "status", "--json") == [None, None]  # 401 without a token
    assert roles(cluster, "--token", TOKEN, "local", "status", "--json") == [
        "manager",
        "follower",
    ]
    assert roles(cluster, "local", "status", "--json", "--token", TOKEN) == [
        "manager",
        "follower",
    ]
    env = {"KV_AUTH_TOKEN": TOKEN}
    doc = json.loads(cluster.kvstore("local", "status", "--json", env=env).stdout)
    assert [p["status"]["role"] for p in doc["pods"]] == ["manager", "follower"]


def test_url_is_refused_where_it_would_be_ignored(cluster: LocalCluster) -> None:
    for argv in (["--url", "http://127.0.0.1:1", "local", "status"], ["--url", "x", "chaos"]):
        result = cluster.kvstore(*argv, check=False)
        assert result.returncode == exits.EXIT_USAGE, result
        assert "--url does not apply to this command" in result.stderr


def test_chaos_takes_the_global_token(cluster: LocalCluster) -> None:
    argv = ["chaos", "--json", "--duration", "2", "--interval", "1", "--writers", "2"]
    argv += ["--readers", "1", "--ready-timeout", "60"]
    denied = cluster.kvstore(*argv, check=False)
    assert denied.returncode == exits.EXIT_FAILED
    result = cluster.kvstore("--token", TOKEN, *argv, check=False)
    report = json.loads(result.stdout)
    assert result.returncode == 0 and report["passed"], result.stdout + result.stderr
    assert report["acked"] > 0


def test_get_verbose_on_a_follower_names_it(cluster: LocalCluster) -> None:
    env = {"KV_AUTH_TOKEN": TOKEN}
    put = json.loads(cluster.kvstore("put", "hello", "world", "--json", env=env).stdout)
    follower = cluster.pod("kv-1")["url"]
    got = cluster.kvstore(
        "get", "hello", "--url", follower, "--min-seq", str(put["seq"]), "-v", env=env
    )
    assert got.stdout == "world"
    assert got.stderr.startswith(f"kvstore get: served by kv-1: version {put['version']}, seq ")
    doc = json.loads(
        cluster.kvstore(
            "get", "hello", "--url", follower, "--min-seq", str(put["seq"]), "--json", env=env
        ).stdout
    )
    assert doc["served_by"] == "kv-1" and doc["seq"] >= put["seq"]


def test_local_logs(cluster: LocalCluster) -> None:
    whole = cluster.kvstore("local", "logs", "kv-0").stdout
    log = (cluster.root / "logs" / "kv-0.log").read_text()
    assert whole and log.startswith(whole)
    last = cluster.kvstore("local", "logs", "kv-1", "--tail", "2").stdout.splitlines()
    assert len(last) == 2
    missing = cluster.kvstore("local", "logs", "kv-7", check=False)
    assert missing.returncode == exits.EXIT_FAILED
    assert "no log for 'kv-7'" in missing.stderr and "kv-0, kv-1" in missing.stderr


def read_until(proc: subprocess.Popen[bytes], marker: bytes, deadline: float = 20.0) -> bytes:
    """What a process prints up to and with `marker`, waiting at most `deadline` seconds."""
    assert proc.stdout is not None
    fd, buf, end = proc.stdout.fileno(), b"", time.monotonic() + deadline
    while marker not in buf:
        ready, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        if not chunk:
            raise AssertionError(f"no {marker!r} in {buf[-500:]!r} (exit {proc.poll()})")
        buf += chunk
    return buf


def test_local_logs_follow_prints_new_lines(cluster: LocalCluster) -> None:
    log = cluster.root / "logs" / "kv-0.log"
    with log.open("a") as f:
        f.write("first marker\n")
    follow = subprocess.Popen(
        [*KVSTORE, "local", "logs", "kv-0", "-f"],
        cwd=cluster.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        read_until(follow, b"first marker\n")  # the log so far: read in one go
        with log.open("a") as f:  # appended as a pod's next line would be
            f.write("second marker\n")
        read_until(follow, b"second marker\n")
    finally:
        follow.terminate()
        follow.communicate(timeout=10)


def test_local_status_watch_prints_again_and_again(cluster: LocalCluster) -> None:
    watch = subprocess.Popen(
        [*KVSTORE, "--token", TOKEN, "local", "status", "--watch", "--json", "--interval", "0.2"],
        cwd=cluster.cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        frames = [json.loads(line) for line in read_lines(watch, 3)]
    finally:
        watch.terminate()
        watch.communicate(timeout=10)
    assert [[p["name"] for p in f["pods"]] for f in frames] == [["kv-0", "kv-1"]] * 3
    assert all(f["pods"][0]["status"]["role"] == "manager" for f in frames)


def test_tail_of() -> None:
    assert tail_of(b"a\nb\nc\n", 2) == b"b\nc\n"
    assert tail_of(b"a\nb", None) == b"a\nb"
    assert tail_of(b"a\nb\n", 0) == b""


def test_local_help_has_logs(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kvstore", "local", "logs", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "-f, --follow" in out and "examples:" in out
