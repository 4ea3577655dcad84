"""`kvstore chaos --target kubectl` from the node, and the in-cluster chaos Job of k8s/chaos,
against the set on the real cluster: both must end with PASS."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import ENABLED, OVERLAY, REPO, SKIP_REASON, Kube, apply_set, new_namespace

pytestmark = [pytest.mark.k8s_cluster, pytest.mark.skipif(not ENABLED, reason=SKIP_REASON)]
REPORTS = Path(os.environ.get("KV_K8S_REPORTS", REPO / ".kvstore" / "k8s-reports"))


@pytest.fixture(scope="module")
def kube(cluster: ModuleType) -> Iterator[Kube]:
    yield from new_namespace(cluster, "kv-chaos")


def test_chaos_from_the_node(kube: Kube) -> None:
    """Graceful and forced deletions, kv-0 among them, for 120 s under load: PASS."""
    apply_set(kube, OVERLAY)
    kube.wait_ready(3)
    argv = [
        os.environ.get("KVSTORE", str(Path(sys.executable).parent / "kvstore")),
        "chaos", "--target", "kubectl", "--namespace", kube.namespace,
        "--kubectl", kube.kubectl, "--duration", "120",
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=kube.env)
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "chaos-kubectl.txt").write_text(result.stdout + result.stderr)
    print(result.stdout)
    assert result.returncode == 0 and "PASS" in result.stdout, (
        f"{result.stdout}{result.stderr}\n{kube.dump()}"
    )


def test_chaos_job_in_the_cluster(kube: Kube, cluster: ModuleType, tmp_path: Path) -> None:
    """k8s/chaos as a person applies it; the kubectl image is this cluster's own (no registry)."""
    kube.wait_ready(3)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{os.path.relpath(REPO / 'k8s/chaos', tmp_path)}]\n"
        "images:\n"
        f"  - name: registry.k8s.io/kubectl\n    newTag: {cluster.RELEASE}\n"
    )
    kube("apply", "-k", str(tmp_path))

    def finished() -> str | None:
        job = kube.json("get", "job", "kv-chaos")
        for c in job.get("status", {}).get("conditions") or []:
            if c["type"] in ("Complete", "Failed") and c["status"] == "True":
                return str(c["type"])
        return None

    outcome = kube.wait("the chaos Job to finish", finished, 900)
    out = kube("logs", "job/kv-chaos", check=False)
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / "chaos-job.txt").write_text(out)
    print(out)
    assert outcome == "Complete" and "PASS" in out, f"{out}\n{kube.dump()}"
