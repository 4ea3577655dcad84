"""What a schema cannot see: the objects of k8s/ agree with each other and with kvstore."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from kvstore import config

from .conftest import K8S
from .objects import (
    WORKLOADS,
    Obj,
    containers,
    match_labels,
    of_kind,
    one,
    pod_labels,
    pod_spec,
    runs_kvstore,
    selects,
    set_pod_labels,
    settings_of,
)

SET_TARGETS = ("k8s", "base", "kind", "kind+auth")
_QUANTITY = re.compile(
    r"^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)
_SCALE = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    **{s: Decimal(1000) ** (i + 1) for i, s in enumerate("kMGTPE")},
    **{s + "i": Decimal(1024) ** (i + 1) for i, s in enumerate("KMGTPE")},
}


def quantity(raw: object) -> Decimal:
    """A Kubernetes resource quantity (`250m`, `1Gi`, `1e3`) as a number; ValueError if bad."""
    m = _QUANTITY.match(str(raw))
    if not m:
        raise ValueError(f"not a Kubernetes quantity: {raw!r}")
    suffix = m.group(2) or ""
    if suffix[:1] in ("e", "E"):
        return Decimal(m.group(1) + suffix)
    return Decimal(m.group(1)) * _SCALE[suffix]


def the_set(objs: list[Obj]) -> tuple[Obj, Obj]:
    """The StatefulSet and its kvstore container."""
    sts = one(objs, "StatefulSet", "kv")
    return sts, next(c for c in containers(sts) if runs_kvstore(c))


def port_number(container: Obj, port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert numbers, f"container {container['name']} has no port named {port!r}"
    return int(numbers[0])


@pytest.mark.parametrize("target", SET_TARGETS)
def test_statefulset_selector_matches_its_pods(rendered: dict[str, list[Obj]], target: str) -> None:
    sts, _ = the_set(rendered[target])
    assert selects(match_labels(sts["spec"]["selector"]), pod_labels(sts))


@pytest.mark.parametrize("target", SET_TARGETS)
def test_service_name_is_the_headless_service(rendered: dict[str, list[Obj]], target: str) -> None:
    objs = rendered[target]
    sts, container = the_set(objs)
    svc = one(objs, "Service", sts["spec"]["serviceName"])["spec"]
    assert svc["clusterIP"] == "None"
    assert svc["publishNotReadyAddresses"] is True
    assert selects(svc["selector"], pod_labels(sts))
    http = [p for p in svc["ports"] if p["name"] == "http"]
    assert http, "the SRV records _http._tcp.<service> need a port named http"
    assert port_number(container, http[0]["targetPort"]) == http[0]["port"]
    assert settings_of(container).service == sts["spec"]["serviceName"]


@pytest.mark.parametrize("target", SET_TARGETS)
def test_client_services_select_the_right_pods(rendered: dict[str, list[Obj]], target: str) -> None:
    objs = rendered[target]
    sts, container = the_set(objs)
    pods = [set_pod_labels(sts, i) for i in range(sts["spec"]["replicas"])]
    manager = settings_of(container).manager_ordinal

    def selected(name: str) -> list[int]:
        svc = one(objs, "Service", name)["spec"]
        for port in svc["ports"]:
            port_number(container, port["targetPort"])
        return [i for i, labels in enumerate(pods) if selects(svc["selector"], labels)]

    assert selected("kv-read") == list(range(len(pods)))
    assert selected("kv-write") == [manager]


@pytest.mark.parametrize("target", SET_TARGETS)
def test_pdb_and_network_policy_cover_the_set(rendered: dict[str, list[Obj]], target: str) -> None:
    objs = rendered[target]
    sts, container = the_set(objs)
    pdb = one(objs, "PodDisruptionBudget", "kv")["spec"]
    assert pdb["maxUnavailable"] == 1
    assert selects(match_labels(pdb["selector"]), pod_labels(sts))
    policy = one(objs, "NetworkPolicy", "kv")["spec"]
    assert selects(match_labels(policy["podSelector"]), pod_labels(sts))
    peers = [
        match_labels(p["podSelector"])
        for rule in policy["ingress"]
        for p in rule["from"]
        if "podSelector" in p and "namespaceSelector" not in p
    ]
    assert any(selects(p, pod_labels(sts)) for p in peers), "followers must reach the manager"
    for rule in policy["ingress"]:
        for port in rule["ports"]:
            port_number(container, port["port"])


def test_chaos_pods_are_clients_not_members(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["kind+auth"]
    sts, _ = the_set(objs)
    job_labels = pod_labels(one(objs, "Job", "kv-chaos"))
    assert not selects(match_labels(sts["spec"]["selector"]), job_labels)
    for svc in of_kind(objs, "Service"):
        assert not selects(svc["spec"]["selector"], job_labels), svc["metadata"]["name"]
    peers = [
        match_labels(p["podSelector"])
        for rule in one(objs, "NetworkPolicy", "kv")["spec"]["ingress"]
        for p in rule["from"]
        if "podSelector" in p and "namespaceSelector" not in p
    ]
    assert any(selects(p, job_labels) for p in peers), "the NetworkPolicy shuts chaos out"


@pytest.mark.parametrize("target", SET_TARGETS)
def test_probes_use_the_kvstore_port(rendered: dict[str, list[Obj]], target: str) -> None:
    _, container = the_set(rendered[target])
    port = settings_of(container).port
    assert port_number(container, "http") == port
    paths = {
        name: container[name]["httpGet"]["path"]
        for name in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    for name in paths:
        assert port_number(container, container[name]["httpGet"]["port"]) == port, name
    # Liveness must never depend on another pod: /livez, not /readyz.
    assert paths == {
        "startupProbe": "/livez",
        "readinessProbe": "/readyz",
        "livenessProbe": "/livez",
    }


def test_probe_and_scrape_paths_exist_in_the_app(
    rendered: dict[str, list[Obj]], app_get_paths: set[str]
) -> None:
    sts, container = the_set(rendered["kind+auth"])
    probes = {
        container[p]["httpGet"]["path"] for p in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes <= app_get_paths
    scrape = sts["spec"]["template"]["metadata"]["annotations"]
    assert int(scrape["prometheus.io/port"]) == settings_of(container).port
    if scrape["prometheus.io/path"] not in app_get_paths:
        pytest.skip(f"the app serves no {scrape['prometheus.io/path']} yet")


@pytest.mark.parametrize("target", ("kind+auth", "k8s"))
def test_kv_variables_are_settings(rendered: dict[str, list[Obj]], target: str) -> None:
    for workload in [o for o in rendered[target] if o["kind"] in WORKLOADS]:
        for container in containers(workload):
            names = {v["name"] for v in container.get("env", [])}
            unknown = {n for n in names if n.startswith("KV_")} - set(config.BY_ENV)
            assert not unknown, f"{workload['metadata']['name']}: not settings: {unknown}"
            if runs_kvstore(container) and container.get("args", [])[:1] == ["serve"]:
                settings_of(container)  # every value is one kvstore accepts


def test_kv_names_in_k8s_files_are_settings() -> None:
    found = {m for p in K8S.rglob("*.yaml") for m in re.findall(r"\bKV_[A-Z0-9_]+", p.read_text())}
    assert found, "k8s/ sets no KV_ variable at all?"
    assert found <= set(config.BY_ENV), f"not settings: {found - set(config.BY_ENV)}"


@pytest.mark.parametrize("target", SET_TARGETS)
def test_volume_is_mounted_at_the_data_dir(rendered: dict[str, list[Obj]], target: str) -> None:
    sts, container = the_set(rendered[target])
    templates = [t["metadata"]["name"] for t in sts["spec"]["volumeClaimTemplates"]]
    assert templates == ["data"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == settings_of(container).data_dir
    declared = {v["name"] for v in pod_spec(sts).get("volumes", [])} | set(templates)
    assert set(mounts) <= declared


@pytest.mark.parametrize("target", SET_TARGETS)
def test_grace_period_covers_pause_and_shutdown(
    rendered: dict[str, list[Obj]], target: str
) -> None:
    sts, container = the_set(rendered[target])
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod_spec(sts)["terminationGracePeriodSeconds"]
    assert grace > pause + settings_of(container).shutdown_timeout


@pytest.mark.parametrize("target", ("kind+auth", "k8s"))
def test_quantities_parse_and_requests_fit_limits(
    rendered: dict[str, list[Obj]], target: str
) -> None:
    for workload in [o for o in rendered[target] if o["kind"] in WORKLOADS]:
        for container in containers(workload):
            res = container["resources"]
            requests = {k: quantity(v) for k, v in res.get("requests", {}).items()}
            limits = {k: quantity(v) for k, v in res.get("limits", {}).items()}
            assert requests and limits, f"{container['name']} has no requests or limits"
            for name, limit in limits.items():
                assert requests.get(name, limit) <= limit, f"{container['name']}: {name}"
        for volume in pod_spec(workload).get("volumes", []):
            if "sizeLimit" in volume.get("emptyDir", {}):
                assert quantity(volume["emptyDir"]["sizeLimit"]) > 0
        for claim in workload["spec"].get("volumeClaimTemplates", []):
            assert quantity(claim["spec"]["resources"]["requests"]["storage"]) > 0


def test_quantity_parser() -> None:
    assert quantity("250m") == Decimal("0.25")
    assert quantity("1Gi") == 1024**3
    assert quantity("1e3") == quantity("1k") == 1000
    assert quantity(2) == 2
    for bad in ("1GB", "Mi", "-1", "1.5.0", ""):
        with pytest.raises(ValueError):
            quantity(bad)


@pytest.mark.parametrize("target", ("kind+auth", "k8s"))
def test_pods_are_locked_down(rendered: dict[str, list[Obj]], target: str) -> None:
    for workload in [o for o in rendered[target] if o["kind"] in WORKLOADS]:
        pod = pod_spec(workload)
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        # Service links would put KV_*-looking variables next to kvstore's settings.
        assert pod["enableServiceLinks"] is False, name
        for container in containers(workload):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, container["name"]
            assert sc["readOnlyRootFilesystem"] is True, container["name"]
            assert sc["capabilities"] == {"drop": ["ALL"]}, container["name"]


@pytest.mark.parametrize("target", SET_TARGETS)
def test_statefulset_behaviour(rendered: dict[str, list[Obj]], target: str) -> None:
    sts, container = the_set(rendered[target])
    spec = sts["spec"]
    assert spec["replicas"] == 3
    assert spec["podManagementPolicy"] == "OrderedReady"
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert pod_spec(sts)["securityContext"]["fsGroup"] > 0
    anti = pod_spec(sts)["affinity"]["podAntiAffinity"]
    assert set(anti) == {"preferredDuringSchedulingIgnoredDuringExecution"}, "soft, not hard"
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert selects(match_labels(term["labelSelector"]), pod_labels(sts))
    env = {v["name"]: v for v in container["env"]}
    for var, field in (
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("KV_ORDINAL", "metadata.labels['apps.kubernetes.io/pod-index']"),
    ):
        assert env[var]["valueFrom"]["fieldRef"]["fieldPath"] == field
    assert container["args"] == ["serve"]


def test_auth_component_wires_the_tokens(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["kind+auth"]
    _, container = the_set(objs)
    settings = settings_of(container)
    assert settings.auth_token and settings.replication_token
    assert settings.auth_token != settings.replication_token
    chaos = next(c for c in containers(one(objs, "Job", "kv-chaos")) if c["name"] == "chaos")
    refs = {
        v["name"]: v["valueFrom"]["secretKeyRef"]
        for v in chaos["env"]
        if "valueFrom" in v and "secretKeyRef" in v["valueFrom"]
    }
    assert refs == {"KV_AUTH_TOKEN": {"name": "kv-tokens", "key": "auth-token"}}
    for target in ("k8s", "kind"):
        assert settings_of(the_set(rendered[target])[1]).auth_token is None


def test_docs_name_existing_paths() -> None:
    doc = (K8S.parent / "docs/kubernetes.md").read_text()
    paths = set(re.findall(r"(?<![\w/-])k8s/[\w./-]*\w", doc))
    assert "k8s/overlays/kind" in paths
    missing = sorted(p for p in paths if not (K8S.parent / p).exists())
    assert not missing, f"docs/kubernetes.md names paths that do not exist: {missing}"
