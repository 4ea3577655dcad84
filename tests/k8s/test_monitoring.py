"""k8s/components/monitoring: the ServiceMonitor scrapes the set through its headless Service
only, the alerts and the dashboard ask for metrics kvstore exposes (the README's table, which
tests/test_metrics.py keeps equal to what the pods expose)."""

from __future__ import annotations

import json
import os
import re

import kubernetes_validate
import pytest

from .conftest import K8S, REPO
from .kustomize import kubectl, render_kubectl
from .objects import Obj, of_kind, one, pod_labels, selects

ALERTS = {
    "KvstoreFollowerLagHigh",
    "KvstoreFollowerDisconnected",
    "KvstoreManagerDown",
    "KvstoreReplicationDiverged",
    "KvstoreEpochMismatch",
}
METRIC = re.compile(r"\bkvstore_[a-z_]+")
CRDS = ("ServiceMonitor", "PrometheusRule")

pytestmark = pytest.mark.skipif(
    kubectl() is None, reason="kubectl is not installed (the component uses configMapGenerator)"
)


@pytest.fixture(scope="module")
def objs(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    """The kind overlay with the monitoring component switched on."""
    tmp = tmp_path_factory.mktemp("kind-monitoring")
    kind, component = (
        os.path.relpath(K8S / p, tmp) for p in ("overlays/kind", "components/monitoring")
    )
    (tmp / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{kind}]\ncomponents: [{component}]\n"
    )
    exe = kubectl()
    assert exe is not None
    return render_kubectl(exe, tmp)


def exposed() -> set[str]:
    """The metric names of the README's table, as they appear in PromQL."""
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("<!-- metrics:begin -->") : readme.index("<!-- metrics:end -->")]
    names: set[str] = set()
    for name, kind in re.findall(r"^\| `(kvstore_[a-z_]+)` \| (\w+) \|", section, re.MULTILINE):
        names.add(name)
        if kind == "histogram":
            names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
    return names


def test_the_servicemonitor_scrapes_every_pod_through_the_headless_service(
    objs: list[Obj],
) -> None:
    monitor = one(objs, "ServiceMonitor", "kv")["spec"]
    sts = one(objs, "StatefulSet", "kv")
    chosen = [
        s
        for s in of_kind(objs, "Service")
        if selects(monitor["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert [s["metadata"]["name"] for s in chosen] == [sts["spec"]["serviceName"]]
    service = chosen[0]["spec"]
    assert service["publishNotReadyAddresses"] is True and selects(
        service["selector"], pod_labels(sts)
    )
    ports = {p["name"] for p in service["ports"]}
    assert [(e["port"], e["path"]) for e in monitor["endpoints"]] == [("http", "/metrics")]
    assert {e["port"] for e in monitor["endpoints"]} <= ports


def test_alerts_and_dashboard_ask_for_exposed_metrics(objs: list[Obj]) -> None:
    rules = [r for g in one(objs, "PrometheusRule", "kv")["spec"]["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    config_map = one(objs, "ConfigMap", "kv-grafana-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(config_map["data"]["kvstore-dashboard.json"])
    assert dashboard["uid"] == "kvstore" and dashboard["panels"]
    queries = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    queries += [r["expr"] for r in rules]
    used = {name for q in queries for name in METRIC.findall(q)}
    assert used and used <= exposed(), f"not exposed: {sorted(used - exposed())}"


def test_the_other_objects_are_valid(objs: list[Obj]) -> None:
    for obj in objs:
        if obj["kind"] not in CRDS:  # no schema for the Prometheus Operator's kinds here
            kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)
