"""The kind overlay as a person applies it: its NodePort Services reach the manager and the
readers through the node's address, and keep doing so across the deletion of kv-0 (where a
`kubectl port-forward` ends). On kind, kind-config.yaml maps these node ports to 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from .conftest import ENABLED, REPO, SKIP_REASON, Kube, http, new_namespace, ready

pytestmark = [pytest.mark.k8s_cluster, pytest.mark.skipif(not ENABLED, reason=SKIP_REASON)]


@pytest.fixture(scope="module")
def kube(cluster: ModuleType) -> Iterator[Kube]:
    yield from new_namespace(cluster, "kv-kind")


def test_node_ports_survive_the_deletion_of_kv_0(kube: Kube, cluster: ModuleType) -> None:
    kube("apply", "-k", str(REPO / "k8s/overlays/kind"))
    kube.wait_ready(3)
    write = f"http://{cluster.NODE_IP}:30080"
    read = f"http://{cluster.NODE_IP}:30081"
    code, headers, body = http("PUT", f"{write}/v1/kv/greeting", b"hello")
    assert code == 201 and headers["X-KV-Served-By"] == "kv-0", body
    code, _, body = http("GET", f"{read}/v1/kv/greeting?min_seq=1&timeout=5")
    assert (code, body) == (200, b"hello")
    old = kube.pods()["kv-0"]["metadata"]["uid"]
    kube("delete", "pod", "kv-0", "--grace-period=0", "--force")

    def back() -> bool:
        p = kube.pods().get("kv-0")
        return bool(p and p["metadata"]["uid"] != old and ready(p))

    kube.wait("kv-0 re-created and Ready", back, 180)

    def write_again() -> bool:
        code, headers, _ = http("PUT", f"{write}/v1/kv/greeting", b"hello again")
        return code == 200 and headers["X-KV-Served-By"] == "kv-0"

    kube.wait("a write through the write node port to the new kv-0", write_again, 60)
    code, _, body = http("GET", f"{read}/v1/kv/greeting?min_seq=2&timeout=5")
    assert (code, body) == (200, b"hello again")
