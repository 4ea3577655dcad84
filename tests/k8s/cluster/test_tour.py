"""docs/tour.md's kubectl side, and kubernetes.md's, on a real StatefulSet controller, kubelet and
CoreDNS: each step run in order in one namespace, asserting what the tour says to look for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .conftest import (
    CLIENT_POD,
    ENABLED,
    OVERLAY,
    SKIP_REASON,
    Kube,
    apply_set,
    client_pod,
    http,
    new_namespace,
    pod_url,
    ready,
    ready_since,
)

pytestmark = [pytest.mark.k8s_cluster, pytest.mark.skipif(not ENABLED, reason=SKIP_REASON)]


@pytest.fixture(scope="module")
def kube(cluster: ModuleType) -> Iterator[Kube]:
    yield from new_namespace(cluster, "kv-tour")


def service_url(kube: Kube, name: str) -> str:
    """A Service's ClusterIP: the node routes to it through kube-proxy, like a pod would."""
    ip = kube("get", "service", name, "-o", "jsonpath={.spec.clusterIP}")
    return f"http://{ip}:8080"


def put(kube: Kube, key: str, value: bytes) -> dict[str, Any]:
    def attempt() -> dict[str, Any] | None:
        status, _, body = http("PUT", f"{service_url(kube, 'kv-write')}/v1/kv/{key}", value)
        return json.loads(body) if status in (200, 201) else None

    result: dict[str, Any] = kube.wait(f"PUT {key} through kv-write", attempt, 90)
    return result


def get(kube: Kube, pod: str, key: str, min_seq: int = 0) -> tuple[int, dict[str, str], bytes]:
    url = f"{pod_url(kube.pods()[pod])}/v1/kv/{key}?min_seq={min_seq}&timeout=10"
    return http("GET", url, timeout=15)


def status(kube: Kube, pod: str) -> dict[str, Any]:
    code, _, body = http("GET", f"{pod_url(kube.pods()[pod])}/v1/status")
    assert code == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def in_pod(kube: Kube, *argv: str) -> str:
    return kube("exec", CLIENT_POD, "--", *argv, timeout=60)


def resolve(kube: Kube, name: str, kind: str = "A") -> list[str]:
    """An answer of the cluster's DNS, asked from a pod (dnspython is in the kvstore image)."""
    script = (
        "import sys, dns.resolver\n"
        "r = dns.resolver.Resolver()\n"
        "r.cache = None\n"
        "print('\\n'.join(sorted(a.to_text() for a in r.resolve(sys.argv[1], sys.argv[2]))))"
    )
    return in_pod(kube, "python3", "-c", script, name, kind).splitlines()


def fqdn(kube: Kube, name: str) -> str:
    return f"{name}.{kube.namespace}.svc.cluster.local"


def logs(kube: Kube, pod: str) -> str:
    return kube("logs", pod, check=False)


def deleted_and_back(kube: Kube, pod: str, old_uid: str, timeout: float = 180) -> dict[str, Any]:
    def back() -> dict[str, Any] | None:
        p = kube.pods().get(pod)
        return p if p and p["metadata"]["uid"] != old_uid and ready(p) else None

    result: dict[str, Any] = kube.wait(f"{pod} re-created and Ready", back, timeout)
    return result


def test_ordered_creation(kube: Kube) -> None:
    """kv-0, kv-1, kv-2 created in that order, each once the one before is Ready."""
    apply_set(kube, OVERLAY)
    pods = kube.wait_ready(3)
    for n in (1, 2):
        created = pods[f"kv-{n}"]["metadata"]["creationTimestamp"]
        before = ready_since(pods[f"kv-{n - 1}"])
        assert before and created >= before, (n, created, before)
    events = kube.json("get", "events", "--field-selector", "involvedObject.kind=StatefulSet")
    creates = [
        e["message"]
        for e in sorted(events["items"], key=lambda e: int(e["metadata"]["resourceVersion"]))
        if e["reason"] == "SuccessfulCreate" and "create Pod" in e["message"]
    ]
    assert [m.split()[2] for m in creates][:3] == ["kv-0", "kv-1", "kv-2"], creates
    claims = kube.json("get", "pvc")["items"]
    assert sorted((c["metadata"]["name"], c["status"]["phase"]) for c in claims) == [
        ("data-kv-0", "Bound"),
        ("data-kv-1", "Bound"),
        ("data-kv-2", "Bound"),
    ]


def test_write_on_manager_read_on_follower(kube: Kube) -> None:
    client_pod(kube)
    out = in_pod(kube, "kvstore", "--url", "http://kv-write:8080", "put", "greeting", "hello")
    assert "seq 1" in out, out
    seq = 1
    code, headers, body = get(kube, "kv-2", "greeting", seq)
    assert (code, body) == (200, b"hello")
    assert headers["X-KV-Served-By"] == "kv-2"
    # A write sent to a follower is forwarded to the manager.
    code, headers, body = http("PUT", f"{pod_url(kube.pods()['kv-1'])}/v1/kv/forwarded", b"x")
    assert code == 201 and headers["X-KV-Served-By"] == "kv-0", body
    # The read Service answers from any ready pod.
    assert (
        in_pod(kube, "kvstore", "--url", "http://kv-read:8080", "get", "greeting").strip()
        == "hello"
    )


def test_names_kept_across_deletion(kube: Kube) -> None:
    """Tour 1: `kubectl delete pod kv-1`: kv-1 again, a new pod, following kv-0."""
    old = kube.pods()["kv-1"]
    kube("delete", "pod", "kv-1")
    new = deleted_and_back(kube, "kv-1", old["metadata"]["uid"])
    assert new["metadata"]["name"] == "kv-1"
    assert new["spec"]["hostname"] == "kv-1" and new["spec"]["subdomain"] == "kv"
    kube.wait("kv-1 connected to kv-0", lambda: status(kube, "kv-1")["manager"]["connected"])


def test_volume_reattached_with_its_data(kube: Kube) -> None:
    """Tour 2: kv-2 SIGKILLed comes back to data-kv-2 and resumes where its data was."""
    volume = kube.json("get", "pvc", "data-kv-2")["spec"]["volumeName"]
    old = kube.pods()["kv-2"]
    kube("delete", "pod", "kv-2", "--grace-period=0", "--force")
    deleted_and_back(kube, "kv-2", old["metadata"]["uid"])
    assert kube.json("get", "pvc", "data-kv-2")["spec"]["volumeName"] == volume
    code, _, body = get(kube, "kv-2", "greeting")
    assert (code, body) == (200, b"hello")
    assert "connected to the manager" in logs(kube, "kv-2")
    doc = status(kube, "kv-2")
    assert doc["replication"]["snapshots_installed"] == 0, doc


def test_dns_name_follows_the_manager(kube: Kube) -> None:
    """Tour 3: kv-0.kv.<ns>.svc.cluster.local answers kv-0's new IP after it is re-created, and
    the read Service keeps its endpoints while kv-0 is gone."""
    old = kube.pods()["kv-0"]
    name = fqdn(kube, "kv-0.kv")
    assert resolve(kube, name) == [old["status"]["podIP"]]
    kube("delete", "pod", "kv-0", "--grace-period=0", "--force")

    new = deleted_and_back(kube, "kv-0", old["metadata"]["uid"])
    assert new["status"]["podIP"] != old["status"]["podIP"]
    kube.wait(
        f"{name} answering {new['status']['podIP']}",
        lambda: resolve(kube, name) == [new["status"]["podIP"]],
        60,
    )
    kube.wait(
        "kv-1 reconnected to the new kv-0",
        lambda: "reconnected to the manager" in logs(kube, "kv-1"),
        60,
    )
    after = put(kube, "greeting", b"hello again")
    assert after["seq"] == 3, after  # greeting (1), forwarded (2), this one
    srv = resolve(kube, f"_http._tcp.{fqdn(kube, 'kv')}", "SRV")
    assert sorted(line.split()[-1] for line in srv) == [
        f"{fqdn(kube, f'kv-{i}.kv')}." for i in range(3)
    ]


def read_endpoints(kube: Kube) -> list[str]:
    slices = kube.json("get", "endpointslices", "-l", "kubernetes.io/service-name=kv-read")
    return sorted(
        e["targetRef"]["name"]
        for s in slices["items"]
        for e in s.get("endpoints") or []
        if e.get("conditions", {}).get("ready")
    )


def test_read_service_keeps_endpoints_without_the_manager(kube: Kube, cluster: ModuleType) -> None:
    """kv-0 gone for 20 s (the node cordoned, so its replacement stays Pending): kv-read keeps
    kv-1 and kv-2 all along, since followers that cannot reach the manager stay ready; that is
    longer than a follower's 5 s of silence and several readiness periods."""
    old = kube.pods()["kv-0"]
    kube("cordon", cluster.NODE)
    try:
        kube("delete", "pod", "kv-0", "--grace-period=0", "--force")
        kube.wait("kv-0 Pending", lambda: "kv-0" not in kube.ready_pods(), 60)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            endpoints = read_endpoints(kube)
            gone_for = 20 - (deadline - time.monotonic())
            assert endpoints == ["kv-1", "kv-2"], (f"after {gone_for:.0f}s", endpoints)
            code, _, body = get(kube, "kv-1", "greeting")
            assert (code, body) == (200, b"hello again"), body
            time.sleep(1)
        code, headers, _ = http("PUT", f"{pod_url(kube.pods()['kv-1'])}/v1/kv/x", b"x")
        assert code == 503 and "Retry-After" in headers
    finally:
        kube("uncordon", cluster.NODE)
        deleted_and_back(kube, "kv-0", old["metadata"]["uid"])
        kube.wait_ready(3)


def order_of(kube: Kube, what: str, done: set[str], event: str, timeout: float = 240) -> list[str]:
    """The order in which pods in `done` reach `event` ("gone", "ready")."""
    seen: list[str] = []

    def step() -> bool:
        pods = kube.pods()
        for name in sorted(done - set(seen)):
            p = pods.get(name)
            if (event == "gone" and p is None) or (event == "ready" and p and ready(p)):
                seen.append(name)
        return len(seen) == len(done)

    kube.wait(what, step, timeout)
    return seen


def test_ordered_deletion_and_creation(kube: Kube) -> None:
    """Tour 4: scale to 0 removes kv-2, kv-1, kv-0 in that order; back to 3 in the reverse."""
    kube("scale", "statefulset", "kv", "--replicas=0")
    gone = order_of(kube, "scale to 0", {"kv-0", "kv-1", "kv-2"}, "gone")
    assert gone == ["kv-2", "kv-1", "kv-0"]
    kube("scale", "statefulset", "kv", "--replicas=3")
    back = order_of(kube, "scale to 3", {"kv-0", "kv-1", "kv-2"}, "ready")
    assert back == ["kv-0", "kv-1", "kv-2"]
    code, _, body = get(kube, "kv-2", "greeting", 3)
    assert (code, body) == (200, b"hello again")


def claims(kube: Kube) -> list[str]:
    return sorted(
        c["metadata"]["name"]
        for c in kube.json("get", "pvc")["items"]
        if not c["metadata"].get("deletionTimestamp")
    )


def test_scale_down_with_both_retention_policies(kube: Kube) -> None:
    """Tour 5: whenScaled Retain keeps data-kv-1/2 (kv-2 resumes, no snapshot); Delete drops
    them and the new kv-2 starts from a snapshot."""
    kube("scale", "statefulset", "kv", "--replicas=1")
    assert order_of(kube, "scale to 1", {"kv-1", "kv-2"}, "gone") == ["kv-2", "kv-1"]
    assert claims(kube) == ["data-kv-0", "data-kv-1", "data-kv-2"]
    kube("scale", "statefulset", "kv", "--replicas=3")
    kube.wait_ready(3)
    assert status(kube, "kv-2")["replication"]["snapshots_installed"] == 0
    kube(
        "patch", "statefulset", "kv", "--type", "merge", "-p",
        '{"spec":{"persistentVolumeClaimRetentionPolicy":{"whenScaled":"Delete"}}}',
    )  # fmt: skip
    kube("scale", "statefulset", "kv", "--replicas=1")
    order_of(kube, "scale to 1", {"kv-1", "kv-2"}, "gone")
    kube.wait("only data-kv-0 left", lambda: claims(kube) == ["data-kv-0"], 120)
    kube("scale", "statefulset", "kv", "--replicas=3")
    kube.wait_ready(3)
    assert status(kube, "kv-2")["replication"]["snapshots_installed"] == 1
    kube.wait("kv-2 logging its snapshot", lambda: "snapshot" in logs(kube, "kv-2"), 30)
    code, _, body = get(kube, "kv-2", "greeting", 3)
    assert (code, body) == (200, b"hello again")
    kube(
        "patch", "statefulset", "kv", "--type", "merge", "-p",
        '{"spec":{"persistentVolumeClaimRetentionPolicy":{"whenScaled":"Retain"}}}',
    )  # fmt: skip


def revisions(kube: Kube) -> dict[str, str]:
    return {name: kube.revision(p) for name, p in kube.pods().items()}


def test_partitioned_rollout_from_the_highest_ordinal(kube: Kube) -> None:
    """Tour 6: with partition 2 only kv-2 moves to the new revision; at partition 0 kv-1, then
    kv-0 (the manager last)."""
    kube("patch", "statefulset", "kv", "-p", PARTITION % 2)
    kube("set", "env", "statefulset/kv", "KV_LOG_LEVEL=debug")
    sts = kube.wait(
        "a new update revision",
        lambda: (
            (s := kube.json("get", "statefulset", "kv"))["status"].get("updateRevision")
            != s["status"].get("currentRevision")
            and s
        ),
    )
    new = sts["status"]["updateRevision"]
    old = sts["status"]["currentRevision"]
    kube.wait(
        "kv-2 at the new revision, Ready",
        lambda: revisions(kube).get("kv-2") == new and ready(kube.pods()["kv-2"]),
        180,
    )
    assert revisions(kube) == {"kv-0": old, "kv-1": old, "kv-2": new}
    kube("patch", "statefulset", "kv", "-p", PARTITION % 0)
    order: list[str] = []

    def step() -> bool:
        pods = kube.pods()
        for name in ("kv-1", "kv-0"):
            p = pods.get(name)
            if name not in order and p and kube.revision(p) == new and ready(p):
                order.append(name)
        return len(order) == 2

    kube.wait("kv-1 and kv-0 at the new revision", step, 240)
    assert order == ["kv-1", "kv-0"]
    out = kube("rollout", "status", "statefulset/kv", "--timeout=120s")
    assert "partitioned roll out complete" in out or "roll out complete" in out, out


PARTITION = '{"spec":{"updateStrategy":{"rollingUpdate":{"partition":%d}}}}'


def test_on_delete_waits_for_a_deletion(kube: Kube) -> None:
    """Tour 7: with OnDelete a template change moves no pod until that pod is deleted."""
    kube(
        "patch", "statefulset", "kv", "--type", "merge", "-p",
        '{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}',
    )  # fmt: skip
    before = revisions(kube)
    kube("set", "env", "statefulset/kv", "KV_LOG_LEVEL=warning")
    sts = kube.wait(
        "the controller to see the change",
        lambda: (
            (s := kube.json("get", "statefulset", "kv"))["status"].get("observedGeneration")
            == s["metadata"]["generation"]
            and s["status"]["updateRevision"] != s["status"]["currentRevision"]
            and s
        ),
    )
    new = sts["status"]["updateRevision"]
    assert revisions(kube) == before
    old_uid = kube.pods()["kv-2"]["metadata"]["uid"]
    kube("delete", "pod", "kv-2")
    deleted_and_back(kube, "kv-2", old_uid)
    after = revisions(kube)
    assert after["kv-2"] == new and after["kv-0"] == before["kv-0"] == after["kv-1"]


def test_parallel_creation(kube: Kube) -> None:
    """Tour 4, the other policy: podManagementPolicy cannot change on a live set; deleted (its
    volumes stay) and applied again with Parallel, all three pods are created at once."""
    kube("delete", "statefulset", "kv")
    kube.wait("the set's pods gone", lambda: not kube.pods(), 120)
    rendered = kube("kustomize", str(OVERLAY))
    assert "podManagementPolicy: OrderedReady" in rendered
    kube("apply", "-f", "-", stdin=rendered.replace("OrderedReady", "Parallel"))
    pods = kube.wait_ready(3)
    created = sorted(p["metadata"]["creationTimestamp"] for p in pods.values())
    first_ready = min(ready_since(p) for p in pods.values())
    assert created[-1] <= first_ready, (created, first_ready)
    assert claims(kube) == ["data-kv-0", "data-kv-1", "data-kv-2"]


def test_backup_and_restore(kube: Kube, tmp_path: Path) -> None:
    """Tour 8: a backup from a follower, put on a claim, and a new set started from it keeps the
    backup's epoch, seq and digest."""
    kvstore = os.environ.get("KVSTORE", str(Path(sys.executable).parent / "kvstore"))
    backup = tmp_path / "backup.db"
    url = pod_url(kube.pods()["kv-1"])
    subprocess.run([kvstore, "backup", "--url", url, "--out", str(backup)], check=True, timeout=120)
    source = digest(kube, "kv-0")
    epoch = status(kube, "kv-0")["epoch"]

    restore = tmp_path / "restore"
    restore.mkdir()
    (restore / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{os.path.relpath(OVERLAY, restore)}, backup-pvc.yaml]\n"
        "patches: [{path: restore.yaml}]\n"
    )
    (restore / "backup-pvc.yaml").write_text(TOUR_BACKUP_PVC)
    (restore / "restore.yaml").write_text(TOUR_RESTORE)
    kube("apply", "-f", str(restore / "backup-pvc.yaml"))
    loader = {
        "spec": {
            "volumes": [{"name": "b", "persistentVolumeClaim": {"claimName": "kv-backup"}}],
            "containers": [
                {
                    "name": "loader",
                    "image": "kvstore:0.1.0",
                    "imagePullPolicy": "Never",
                    "command": ["sleep", "3600"],
                    "volumeMounts": [{"name": "b", "mountPath": "/backup"}],
                }
            ],
        }
    }
    kube(
        "run", "kv-backup-loader", "--restart=Never", "--image=kvstore:0.1.0",
        f"--overrides={json.dumps(loader)}",
    )  # fmt: skip
    kube("wait", "--for=condition=Ready", "pod/kv-backup-loader", "--timeout=120s")
    kube("cp", str(backup), "kv-backup-loader:/backup/backup.db")
    kube("delete", "pod", "kv-backup-loader")
    kube("delete", "statefulset", "kv")
    kube.wait("the set's pods gone", lambda: not kube.pods(), 120)
    kube("delete", "pvc", "-l", "app.kubernetes.io/name=kvstore")
    kube.wait("the set's claims gone", lambda: claims(kube) == ["kv-backup"], 120)
    kube("apply", "-k", str(restore))
    kube.wait_ready(3)
    assert "started from the backup" in logs(kube, "kv-0")
    assert status(kube, "kv-0")["epoch"] == epoch
    for pod in ("kv-0", "kv-1", "kv-2"):

        def at_source(pod: str = pod) -> bool:
            return bool(digest(kube, pod) == source)

        kube.wait(f"{pod} at the backup's seq and digest", at_source, 60)


def digest(kube: Kube, pod: str) -> Any:
    return json.loads(http("GET", f"{pod_url(kube.pods()[pod])}/v1/digest")[2])


TOUR_BACKUP_PVC = """\
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: kv-backup
spec:
  accessModes: ["ReadWriteOnce"]
  storageClassName: standard
  resources:
    requests:
      storage: 256Mi
"""
TOUR_RESTORE = """\
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: kv
spec:
  template:
    spec:
      containers:
        - name: kvstore
          env:
            - name: KV_RESTORE_FROM
              value: /backup/backup.db
          volumeMounts:
            - name: backup
              mountPath: /backup
              readOnly: true
      volumes:
        - name: backup
          persistentVolumeClaim:
            claimName: kv-backup
            readOnly: true
"""
