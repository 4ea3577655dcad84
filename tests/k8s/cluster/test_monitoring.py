"""k8s/components/monitoring applies once the Prometheus Operator's CRDs are installed (the CRDs
are vendored next to this file), and the API server accepts every object of it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from .conftest import ENABLED, OVERLAY, REPO, SKIP_REASON, Kube, new_namespace

pytestmark = [pytest.mark.k8s_cluster, pytest.mark.skipif(not ENABLED, reason=SKIP_REASON)]
CRDS = Path(__file__).parent / "crds"


@pytest.fixture(scope="module")
def kube(cluster: ModuleType) -> Iterator[Kube]:
    yield from new_namespace(cluster, "kv-monitoring")


def test_monitoring_component_applies(kube: Kube, tmp_path: Path) -> None:
    for crd in sorted(CRDS.glob("*.yaml")):
        kube("apply", "--server-side", "-f", str(crd))
    for name in ("servicemonitors", "prometheusrules"):
        kube(
            "wait", "--for=condition=Established", f"crd/{name}.monitoring.coreos.com",
            "--timeout=60s",
        )  # fmt: skip
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{os.path.relpath(OVERLAY, tmp_path)}]\n"
        f"components: [{os.path.relpath(REPO / 'k8s/components/monitoring', tmp_path)}]\n"
    )
    kube("apply", "--dry-run=server", "-k", str(tmp_path))
    kube("apply", "-k", str(tmp_path))
    monitor = kube.json("get", "servicemonitor", "kv")
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    rules = kube.json("get", "prometheusrule")["items"]
    assert rules and rules[0]["spec"]["groups"]
    service = kube.json("get", "service", "kv")
    assert service["metadata"]["labels"]["kvstore/scrape"] == "true"
    assert kube("get", "configmap", "kv-grafana-dashboard", "-o", "name")
