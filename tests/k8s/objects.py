"""Small helpers to look into rendered Kubernetes objects."""

from __future__ import annotations

from typing import Any

from kvstore import config

Obj = dict[str, Any]
WORKLOADS = ("StatefulSet", "Deployment", "DaemonSet", "Job")
# Labels the StatefulSet controller puts on each pod, beyond the template's.
CONTROLLER_LABELS = ("statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index")
# What the downward API gives a pod, for a pod such as kv-0 in `default`.
_FIELDS = {
    "metadata.name": "kv-0",
    "metadata.namespace": "default",
    "metadata.labels['apps.kubernetes.io/pod-index']": "0",
    "metadata.labels['controller-revision-hash']": "kv-7c9d5b6f48",
}


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in of_kind(objs, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Obj) -> dict[str, str]:
    labels: dict[str, str] = workload["spec"]["template"]["metadata"].get("labels", {})
    return labels


def containers(workload: Obj) -> list[Obj]:
    spec = pod_spec(workload)
    found: list[Obj] = spec.get("initContainers", []) + spec["containers"]
    return found


def runs_kvstore(container: Obj) -> bool:
    return str(container["image"]).split(":")[0].rsplit("/", 1)[-1] == "kvstore"


def env_values(container: Obj) -> dict[str, str]:
    """The container's environment as a pod kv-0 would see it (secrets as placeholders)."""
    values: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            values[var["name"]] = str(var["value"])
        elif "fieldRef" in var.get("valueFrom", {}):
            values[var["name"]] = _FIELDS[var["valueFrom"]["fieldRef"]["fieldPath"]]
        elif "secretKeyRef" in var.get("valueFrom", {}):
            values[var["name"]] = "secret-" + var["valueFrom"]["secretKeyRef"]["key"]
        else:
            raise AssertionError(f"unexpected env source {var}")
    return values


def settings_of(container: Obj) -> config.Settings:
    """The kvstore settings this container runs with: its env read by kvstore's own loader."""
    return config.load(env=env_values(container))


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def match_labels(selector: Obj) -> dict[str, str]:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels are used here: {selector}"
    labels: dict[str, str] = selector["matchLabels"]
    return labels


def set_pod_labels(sts: Obj, ordinal: int) -> dict[str, str]:
    """The labels of the StatefulSet's pod with this ordinal, controller labels included."""
    name = sts["metadata"]["name"]
    return {
        **pod_labels(sts),
        CONTROLLER_LABELS[0]: f"{name}-{ordinal}",
        CONTROLLER_LABELS[1]: str(ordinal),
    }
