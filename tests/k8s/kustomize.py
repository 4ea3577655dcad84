"""Render a kustomization: `kubectl kustomize` where kubectl exists, else a small renderer.

The fallback knows only what k8s/ uses (resources, components, JSON 6902 patches targeted by
kind and name, `images:` entries for pod templates) and refuses anything else, so it cannot
silently render something different.
Where kubectl exists, a test checks that both give the same objects.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
_KNOWN_KEYS = {"apiVersion", "kind", "resources", "components", "patches", "images"}
_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")


class UnsupportedKustomization(Exception):
    """The fallback renderer met a feature it does not implement."""


def kubectl() -> str | None:
    return shutil.which("kubectl")


def render(root: Path) -> list[Obj]:
    """The objects `kubectl apply -k root` would apply."""
    exe = kubectl()
    if exe is None:
        return render_fallback(root)
    return render_kubectl(exe, root)


def render_kubectl(exe: str, root: Path) -> list[Obj]:
    out = subprocess.run(
        [exe, "kustomize", str(root)], check=True, capture_output=True, text=True, timeout=120
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def render_fallback(root: Path) -> list[Obj]:
    return _build(root, [], "Kustomization")


def key(obj: Obj) -> tuple[str, str, str]:
    return (obj["apiVersion"], obj["kind"], obj["metadata"]["name"])


def _load(root: Path, kind: str) -> Obj:
    for name in _NAMES:
        if (root / name).is_file():
            data: Obj = yaml.safe_load((root / name).read_text()) or {}
            break
    else:
        raise FileNotFoundError(f"no kustomization in {root}")
    if data.get("kind", "Kustomization") != kind:
        raise UnsupportedKustomization(f"{root}: expected kind {kind}, found {data.get('kind')}")
    unknown = set(data) - _KNOWN_KEYS
    if unknown:
        raise UnsupportedKustomization(f"{root}: fields {sorted(unknown)} are not supported")
    return data


def _build(root: Path, objs: list[Obj], kind: str) -> list[Obj]:
    data = _load(root, kind)
    for entry in data.get("resources", []):
        path = root / entry
        if path.is_dir():
            objs.extend(_build(path, [], "Kustomization"))
        else:
            objs.extend(copy.deepcopy(d) for d in yaml.safe_load_all(path.read_text()) if d)
    for entry in data.get("components", []):
        objs = _build(root / entry, objs, "Component")
    for patch in data.get("patches", []):
        _apply_patch(root, patch, objs)
    for image in data.get("images", []):
        _set_image(root, image, objs)
    return objs


def _set_image(root: Path, entry: Obj, objs: list[Obj]) -> None:
    """kustomize's images transformer for the containers of pod templates and pods."""
    if set(entry) - {"name", "newName", "newTag"}:
        raise UnsupportedKustomization(f"{root}: image entry {entry} uses unsupported fields")
    for obj in objs:
        spec = obj.get("spec", {})
        pod = spec.get("template", {}).get("spec") if obj["kind"] != "Pod" else spec
        for container in (pod or {}).get("containers", []) + (pod or {}).get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            if "/" in tag or "@" in container["image"]:
                raise UnsupportedKustomization(f"{root}: image {container['image']!r}")
            if name == entry["name"]:
                new_tag = entry.get("newTag", tag)
                new = entry.get("newName", name) + (f":{new_tag}" if new_tag else "")
                container["image"] = new


def _apply_patch(root: Path, patch: Obj, objs: list[Obj]) -> None:
    if set(patch) - {"target", "patch", "path"} or set(patch["target"]) - {"kind", "name"}:
        raise UnsupportedKustomization(f"{root}: patch {patch} uses unsupported fields")
    text = patch["patch"] if "patch" in patch else (root / patch["path"]).read_text()
    ops = yaml.safe_load(text)
    if not isinstance(ops, list):
        raise UnsupportedKustomization(f"{root}: only JSON 6902 patches are supported")
    target = patch["target"]
    for obj in objs:
        if obj["kind"] == target["kind"] and obj["metadata"]["name"] == target["name"]:
            for op in ops:
                json_patch(obj, op)


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise UnsupportedKustomization(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(doc: Obj, op: Obj) -> None:
    """Apply one RFC 6902 operation (add, replace or remove) in place."""
    *parents, last = _pointer(op["path"])
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    kind = op["op"]
    if kind not in ("add", "replace", "remove"):
        raise UnsupportedKustomization(f"JSON patch op {kind!r} is not supported")
    if isinstance(node, list):
        index = len(node) if last == "-" else int(last)
        if kind == "add":
            node.insert(index, copy.deepcopy(op["value"]))
        elif kind == "replace":
            node[index] = copy.deepcopy(op["value"])
        else:
            del node[index]
        return
    if kind != "add" and last not in node:
        raise KeyError(f"JSON patch {kind} of missing {op['path']}")
    if kind == "remove":
        del node[last]
    else:
        node[last] = copy.deepcopy(op["value"])
