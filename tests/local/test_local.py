"""`kvstore local`: a StatefulSet on one machine, driven through its command line as a user would
(each test in its own directory, so the client commands find the cluster without flags)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvstore.local.cli import parse_env
from kvstore.local.pod import free_port
from kvstore.local.revisions import Policies, Revisions, SpecError, Template
from kvstore.local.rollout import parse_assignments
from kvstore.local.state import read_cluster_file, read_events
from kvstore.local.status import age, summary, table
from tests.harness import LocalCluster, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    local = LocalCluster(tmp_path)
    local.up()
    try:
        yield local
    finally:
        local.down()


def all_ready_at(cluster: LocalCluster, seq: int) -> Callable[[], bool]:
    def check() -> bool:
        pods = cluster.status()["pods"]
        return len(pods) == cluster.replicas and all(
            p["ready"] and p["status"] and p["status"]["applied_seq"] >= seq for p in pods
        )

    return check


def test_up_put_get_and_status(cluster: LocalCluster) -> None:
    events = read_events(cluster.root)
    order = [(e["pod"], e["event"]) for e in events if e["event"] in ("created", "ready")]
    assert order == [(f"kv-{n}", ev) for n in range(3) for ev in ("created", "ready")]

    put = cluster.kvstore("put", "greeting", "hello")
    assert "version 1" in put.stdout
    assert cluster.kvstore("get", "greeting").stdout == "hello"
    wait_for(all_ready_at(cluster, 1), "every pod at seq 1", cluster)

    status = cluster.status()
    roles = {p["name"]: p["status"]["role"] for p in status["pods"]}
    assert roles == {"kv-0": "manager", "kv-1": "follower", "kv-2": "follower"}
    addresses = [p["address"] for p in status["pods"]]
    assert len(set(addresses)) == 3 and all(a.startswith("127.0.0.") for a in addresses)
    info = read_cluster_file(cluster.root)
    assert info is not None and info["url"] == status["pods"][0]["url"]

    lines = cluster.kvstore("local", "status").stdout.splitlines()
    assert lines[0].split() == [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "PORT",
        "ROLE",
        "SEQ",
        "LAG",
        "REVISION",
    ]
    assert [line.split()[:3] for line in lines[1:4]] == [
        [f"kv-{n}", "1/1", "Running"] for n in range(3)
    ]
    assert [line.split()[7:9] for line in lines[1:4]] == [
        ["manager", "1"],
        ["follower", "1"],
        ["follower", "1"],
    ]
    for n in range(3):
        assert (cluster.root / "data" / f"kv-{n}").is_dir()
        assert (cluster.root / "logs" / f"kv-{n}.log").stat().st_size > 0

    again = cluster.kvstore("local", "up", "--port", str(free_port()), check=False)
    assert again.returncode == 1 and "already running" in again.stderr


def test_deleted_pods_come_back_on_new_addresses(cluster: LocalCluster) -> None:
    cluster.kvstore("put", "k", "v1")
    before = {p["name"]: p["address"] for p in cluster.status()["pods"]}

    deleted = cluster.kvstore("local", "delete-pod", "kv-1")
    assert 'pod "kv-1" deleted' in deleted.stdout
    wait_for(lambda: cluster.pod("kv-1")["ready"], "kv-1 to be ready again", cluster)
    kv1 = cluster.pod("kv-1")
    assert kv1["address"] not in before.values()
    assert kv1["status"]["applied_seq"] >= 1  # its volume came back with it
    got = cluster.kvstore("get", "k", "--url", kv1["url"])
    assert got.stdout == "v1"

    cluster.kvstore("local", "delete-pod", "kv-0", "--force")
    wait_for(lambda: cluster.pod("kv-0")["ready"], "kv-0 to be ready again", cluster)
    assert cluster.pod("kv-0")["address"] not in before.values()
    assert "version 2" in cluster.kvstore("put", "k", "v2").stdout  # found without flags
    wait_for(all_ready_at(cluster, 2), "every pod at seq 2", cluster)

    kinds = [(e["pod"], e["event"]) for e in read_events(cluster.root)]
    for pod in ("kv-1", "kv-0"):
        assert kinds.index((pod, "deleting")) < kinds.index((pod, "deleted"))
    missing = cluster.kvstore("local", "delete-pod", "kv-9", check=False)
    assert missing.returncode == 1 and "kv-9" in missing.stderr


def test_a_crashed_pod_restarts_with_backoff(cluster: LocalCluster) -> None:
    kv2 = cluster.pod("kv-2")
    os.kill(kv2["pid"], signal.SIGKILL)
    wait_for(lambda: cluster.pod("kv-2")["restarts"] == 1, "kv-2 to count a restart", cluster)
    wait_for(lambda: cluster.pod("kv-2")["ready"], "kv-2 to be ready again", cluster)
    again = cluster.pod("kv-2")
    assert again["pid"] != kv2["pid"] and again["address"] != kv2["address"]
    exited = [e for e in read_events(cluster.root) if e["event"] == "exited"]
    assert exited[-1]["pod"] == "kv-2" and exited[-1]["exit_code"] == -signal.SIGKILL
    assert exited[-1]["backoff"] > 0


def test_scale_down_keeps_the_volume_and_down_stops_in_reverse(cluster: LocalCluster) -> None:
    cluster.kvstore("put", "k", "v")
    wait_for(all_ready_at(cluster, 1), "every pod at seq 1", cluster)
    assert "1/1 pods ready" in cluster.kvstore("local", "scale", "1").stdout
    assert [p["name"] for p in cluster.status()["pods"]] == ["kv-0"]
    assert (cluster.root / "data" / "kv-2").is_dir()
    cluster.kvstore("local", "scale", "3")
    wait_for(all_ready_at(cluster, 1), "kv-1 and kv-2 back at seq 1", cluster)

    cluster.kvstore("local", "down")
    assert read_cluster_file(cluster.root) is None
    events = read_events(cluster.root)
    removed = [e["pod"] for e in events if e["event"] == "deleted"]
    assert removed == ["kv-2", "kv-1", "kv-2", "kv-1", "kv-0"]  # scale 1, then down
    assert [e.get("reason") for e in events if e["event"] == "deleted"][-3:] == ["down"] * 3
    assert (cluster.root / "data" / "kv-0").is_dir()
    assert cluster.kvstore("local", "status", check=False).returncode == 1


def test_parse_env() -> None:
    assert parse_env(["A=1", "kv-2:KV_FAULT_SKIP_SEQ=5", "B=x:y"]) == (
        {"A": "1", "B": "x:y"},
        {"kv-2": {"KV_FAULT_SKIP_SEQ": "5"}},
    )
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_env(["novalue"])


def test_status_table_and_ages() -> None:
    assert [age(s) for s in (5, 192, 7500, 3 * 86400 + 3600)] == ["5s", "3m12s", "2h5m", "3d1h"]
    pods = [
        {
            "name": "kv-0",
            "ready": True,
            "phase": "Running",
            "restarts": 0,
            "pid": 1,
            "created_at": 100.0,
            "address": "127.0.0.2",
            "url": "http://127.0.0.2:8080",
        },
        {
            "name": "kv-1",
            "ready": False,
            "phase": "CrashLoopBackOff",
            "restarts": 2,
            "pid": None,
            "created_at": 90.0,
            "address": None,
            "url": None,
        },
    ]
    statuses = [{"role": "manager", "applied_seq": 7}, None]
    lines = table(pods, statuses, now=130.0).splitlines()
    assert lines[1].split() == [
        "kv-0",
        "1/1",
        "Running",
        "0",
        "30s",
        "127.0.0.2",
        "8080",
        "manager",
        "7",
        "-",
    ]
    assert lines[2].split() == [
        "kv-1",
        "0/1",
        "CrashLoopBackOff",
        "2",
        "-",
        "<none>",
        "-",
        "-",
        "-",
        "-",
    ]


def test_template_revisions_and_the_rollout_order() -> None:
    base = Template({"KV_LOG_LEVEL": "info"})
    assert base.revision == Template({"KV_LOG_LEVEL": "info"}).revision  # content, not identity
    assert base.revision.startswith("kv-") and len(base.revision) == 13
    debug = base.changed({"KV_LOG_LEVEL": "debug"})
    assert debug.revision != base.revision
    assert debug.changed({}, unset=["KV_LOG_LEVEL"]).env == {}
    assert base.changed({}, restart=True).revision != base.revision

    revisions = Revisions(base, partition=2)
    rolling, on_delete = Policies(), Policies(update_strategy="OnDelete")
    assert revisions.apply(debug) and not revisions.apply(debug)
    assert (revisions.current, revisions.update) == (base.revision, debug.revision)
    # A pod created now: below the partition the current revision, at or above it the new one.
    assert [revisions.revision_for(o, rolling) for o in range(3)] == [base.revision] * 2 + [
        debug.revision
    ]
    assert {revisions.revision_for(o, on_delete) for o in range(3)} == {debug.revision}
    pods: dict[int, str | None] = {o: base.revision for o in range(3)}
    assert revisions.next_to_roll(pods, 3) == 2
    pods[2] = debug.revision
    assert revisions.next_to_roll(pods, 3) is None  # the rest is below the partition
    assert not revisions.settle(pods, 3)
    revisions.partition = 0
    assert revisions.next_to_roll(pods, 3) == 1
    pods[1] = pods[0] = debug.revision
    assert revisions.settle(pods, 3) and revisions.current == debug.revision


def test_policies_and_secrets_in_the_template() -> None:
    with pytest.raises(SpecError, match="expected one of OrderedReady, Parallel"):
        Policies(pod_management_policy="Sometimes")
    with pytest.raises(SpecError, match="whenScaled"):
        Policies(when_scaled="Keep")
    shown = Template({"KV_AUTH_TOKEN": "s3cret", "KV_LOG_LEVEL": "debug"}).describe()
    assert shown["env"] == {"KV_AUTH_TOKEN": "***", "KV_LOG_LEVEL": "debug"}
    assert parse_assignments(["A=1", "B=x=y"]) == {"A": "1", "B": "x=y"}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        parse_assignments(["A"])


def test_status_summary_names_the_pods_not_yet_rolled() -> None:
    pods = [
        {"name": f"kv-{o}", "ordinal": o, "revision": rev}
        for o, rev in enumerate(["kv-old", "kv-old", "kv-new"])
    ]
    cluster = {
        "replicas": 3,
        "pod_management_policy": "OrderedReady",
        "update_strategy": "RollingUpdate",
        "partition": 1,
        "when_scaled": "Retain",
        "when_deleted": "Delete",
        "current_revision": "kv-old",
        "update_revision": "kv-new",
        "rolling": "kv-1",
        "volumes": ["kv-0", "kv-1", "kv-2", "kv-3"],
        "dns": "127.0.0.1:5353",
        "pods": pods,
    }
    assert summary(cluster) == [
        "statefulset kv: 3 replicas, OrderedReady, RollingUpdate (partition 1), "
        "volumes whenScaled Retain, whenDeleted Delete",
        "update revision kv-new: 1/3 pods (current revision kv-old); not yet: kv-1, kv-0; "
        "rolling kv-1",
        "volumes: kv-0, kv-1, kv-2, kv-3",
        "dns: 127.0.0.1:5353 answers for kv-N.kv.default.svc.cluster.local",
    ]
    assert table(pods, [None] * 3, now=1.0).splitlines()[0].split()[-1] == "REVISION"
