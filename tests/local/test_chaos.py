"""`kvstore chaos`: pod deletions under load against a real local cluster end in a verdict, the
checker sees a follower that skipped a change, and the kubectl target drives `kubectl`."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kvstore.local.targets import DEFAULT_SELECTOR
from tests.harness import LocalCluster

pytestmark = pytest.mark.e2e

# A kubectl that records each call and answers from the local cluster in $KUBECTL_CLUSTER:
# `get pods` lists its pods with their loopback addresses as pod IPs, `delete pod` deletes
# through the supervisor (forced with --force).
STAND_IN_KUBECTL = """#!{python}
import asyncio, json, os, sys
from pathlib import Path
from kvstore.local.control import ControlClient


def pod(p):
    ready = {{"type": "Ready", "status": "True" if p["ready"] else "False"}}
    return {{"metadata": {{"name": p["name"]}},
            "status": {{"podIP": p["address"], "conditions": [ready]}}}}


async def main(args):
    with open(os.environ["KUBECTL_CALLS"], "a") as calls:
        calls.write(json.dumps(args) + "\\n")
    async with ControlClient(Path(os.environ["KUBECTL_CLUSTER"])) as control:
        if args[:2] == ["get", "pods"]:
            cluster = await control.cluster()
            print(json.dumps({{"items": [pod(p) for p in cluster["pods"]]}}))
        elif args[:2] == ["get", "statefulset"]:
            cluster = await control.cluster()
            print(json.dumps({{"spec": {{"replicas": cluster["replicas"]}}}}))
        elif args[:2] == ["delete", "pod"]:
            await control.delete_pod(args[2], "--force" in args)
            print(f'pod "{{args[2]}}" deleted')
        else:
            print(f"stand-in kubectl: unexpected {{args}}", file=sys.stderr)
            return 1
    return 0


sys.exit(asyncio.run(main(sys.argv[1:])))
"""


def started(cluster: LocalCluster) -> Iterator[LocalCluster]:
    cluster.up()
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    yield from started(LocalCluster(tmp_path))


@pytest.fixture
def faulty_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    # The first three writes of every chaos writer create keys that are never overwritten, so
    # the change with seq 2 is the only version of its key: skipping it loses a write for good.
    yield from started(LocalCluster(tmp_path, extra=["--env", "kv-2:KV_FAULT_SKIP_SEQ=2"]))


def chaos_json(cluster: LocalCluster, *args: str) -> tuple[int, dict[str, Any]]:
    result = cluster.kvstore("chaos", "--json", *args, check=False)
    try:
        report: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        raise AssertionError(f"no JSON report:\n{result.stdout}{result.stderr}") from None
    return result.returncode, report


def test_chaos_run_passes(cluster: LocalCluster) -> None:
    code, report = chaos_json(cluster, "--duration", "20", "--interval", "4")
    assert code == 0, json.dumps(report["violations"], indent=2) + cluster.logs()
    assert report["passed"] and report["violations"] == []
    deletions = report["deletions"]
    assert len(deletions) >= 4
    assert {"kv-0", "kv-1", "kv-2"} <= {d["pod"] for d in deletions}
    assert {d["force"] for d in deletions} == {True, False}
    assert all(d["error"] is None for d in deletions)
    for d in deletions:  # writes came back after every deletion that stopped them
        assert d["failed_writes"] == 0 or d["writes_ok_after"] is not None, d
    assert report["acked"] > 500 and report["reads"] > 100
    replicas = report["replicas"]
    assert set(replicas) == {"kv-0", "kv-1", "kv-2"}
    assert len({(r["seq"], r["digest"]) for r in replicas.values()}) == 1
    assert all(r["lost"] == 0 for r in replicas.values())


def test_chaos_catches_a_follower_that_skipped_a_change(faulty_cluster: LocalCluster) -> None:
    code, report = chaos_json(faulty_cluster, "--duration", "6", "--interval", "2.5")
    assert code == 1 and not report["passed"]
    kinds = {v["kind"] for v in report["violations"]}
    assert {"lost write", "diverged"} <= kinds
    lost = [v["message"] for v in report["violations"] if v["kind"] == "lost write"]
    assert lost and all(m.startswith("kv-2: ") and "(seq 2)" in m for m in lost)
    assert report["replicas"]["kv-2"]["lost"] == 1
    assert report["replicas"]["kv-1"]["lost"] == 0
    assert report["replicas"]["kv-0"]["digest"] == report["replicas"]["kv-1"]["digest"]
    assert report["replicas"]["kv-2"]["digest"] != report["replicas"]["kv-0"]["digest"]


def test_kubectl_target_drives_kubectl(cluster: LocalCluster, tmp_path: Path) -> None:
    bin_dir, calls = tmp_path / "bin", tmp_path / "kubectl-calls.jsonl"
    bin_dir.mkdir()
    kubectl = bin_dir / "kubectl"
    kubectl.write_text(STAND_IN_KUBECTL.format(python=sys.executable))
    kubectl.chmod(0o755)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "KUBECTL_CALLS": str(calls),
        "KUBECTL_CLUSTER": str(cluster.root),
    }
    args = ["--target", "kubectl", "--namespace", "kvtest", "--port", str(cluster.port)]
    result = cluster.kvstore(
        "chaos", *args, "--duration", "10", "--interval", "2", check=False, env=env
    )
    assert result.returncode == 0, result.stdout + result.stderr + cluster.logs()
    assert "verdict:    PASS" in result.stdout

    recorded = [json.loads(line) for line in calls.read_text().splitlines()]
    assert all(call[-2:] == ["--namespace", "kvtest"] for call in recorded)
    assert ["get", "statefulset", "kv", "-o", "json"] in [c[:5] for c in recorded]
    assert ["get", "pods", "-l", DEFAULT_SELECTOR, "-o", "json"] in [c[:6] for c in recorded]
    deletes = [c[:-2] for c in recorded if c[:2] == ["delete", "pod"]]
    assert len(deletes) >= 2
    assert {c[2] for c in deletes} <= {"kv-0", "kv-1", "kv-2"}
    graceful = [c for c in deletes if c[3:] == ["--wait=false"]]
    forced = [c for c in deletes if c[3:] == ["--wait=false", "--grace-period=0", "--force"]]
    assert graceful and forced and len(graceful) + len(forced) == len(deletes)


@pytest.fixture
def quick_restore_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    yield from started(LocalCluster(tmp_path, extra=["--env", "KV_RESTORE_WAIT=1"]))


def test_chaos_wipes_the_managers_volume_and_pauses_pods(
    quick_restore_cluster: LocalCluster,
) -> None:
    cluster = quick_restore_cluster
    args = ["--duration", "24", "--interval", "2", "--wipe-manager", "--pause"]
    code, report = chaos_json(cluster, *args, "--restore-wait", "1")
    assert code == 0, json.dumps(report["violations"], indent=2) + cluster.logs()
    wipes = [d for d in report["deletions"] if d["kind"] == "wipe"]
    pauses = [d for d in report["deletions"] if d["kind"] == "pause"]
    assert wipes and pauses, report["deletions"]
    assert all(d["error"] is None for d in wipes + pauses)
    assert all(d["pod"] == "kv-0" and d["held"] in ("kv-1", "kv-2") for d in wipes)
    assert all(1 <= d["seconds"] <= 40 for d in pauses)
    log = (cluster.root / "supervisor.log").read_text()  # what the supervisor did
    assert "volume-deleted" in log and "reason=wipe" in log and "paused" in log, log[-2000:]
    assert len({r["digest"] for r in report["replicas"].values()}) == 1
