"""k8s/ renders, and every object is valid for Kubernetes (strict: no unknown fields)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest

from .conftest import TARGETS
from .kustomize import (
    UnsupportedKustomization,
    json_patch,
    key,
    kubectl,
    render_fallback,
    render_kubectl,
)
from .objects import Obj

# The oldest Kubernetes k8s/ is made for (preStop `sleep`, the pod-index label), and the newest
# this kubernetes-validate knows.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


@pytest.mark.parametrize("target", TARGETS)
def test_renders_unique_objects(rendered: dict[str, list[Obj]], target: str) -> None:
    objs = rendered[target]
    keys = [key(o) for o in objs]
    assert keys, f"{target} renders nothing"
    assert len(keys) == len(set(keys)), f"{target} renders duplicates: {sorted(keys)}"


def test_targets_hold_what_they_should(rendered: dict[str, list[Obj]]) -> None:
    kinds = {t: sorted({o["kind"] for o in objs}) for t, objs in rendered.items()}
    assert (
        kinds["k8s"]
        == kinds["base"]
        == kinds["kind"]
        == ["NetworkPolicy", "PodDisruptionBudget", "Service", "StatefulSet"]
    )
    assert kinds["chaos"] == ["Job", "Role", "RoleBinding", "ServiceAccount"]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_schema_strict(rendered: dict[str, list[Obj]], target: str, version: str) -> None:
    errors = []
    for obj in rendered[target]:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            errors.append(f"{obj['kind']}/{obj['metadata']['name']} at {path}: {exc.message}")
    assert not errors, "\n".join(errors)


@pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed")
def test_fallback_renders_as_kubectl(target_dirs: dict[str, Path]) -> None:
    exe = kubectl()
    assert exe is not None
    for name, path in target_dirs.items():
        ours = {key(o): o for o in render_fallback(path)}
        theirs = {key(o): o for o in render_kubectl(exe, path)}
        assert ours == theirs, f"the fallback renders {name} differently from kubectl"


def test_fallback_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: []\nnamePrefix: x-\n")
    with pytest.raises(UnsupportedKustomization, match="namePrefix"):
        render_fallback(tmp_path)


def test_json_patch_add_replace_remove() -> None:
    doc: Obj = {"a": {"list": [1, 2], "x~/y": 0}}
    json_patch(doc, {"op": "add", "path": "/a/list/-", "value": 3})
    json_patch(doc, {"op": "add", "path": "/a/list/0", "value": 0})
    json_patch(doc, {"op": "replace", "path": "/a/x~0~1y", "value": 5})
    json_patch(doc, {"op": "remove", "path": "/a/list/1"})
    assert doc == {"a": {"list": [0, 2, 3], "x~/y": 5}}
    with pytest.raises(KeyError):
        json_patch(doc, {"op": "replace", "path": "/a/missing", "value": 1})
