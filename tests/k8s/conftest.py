from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import pytest
from aiohttp import web

from kvstore import config

from .kustomize import render
from .objects import Obj

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
# What a person applies: the base (`kubectl apply -k k8s/`), the kind overlay, the chaos Job,
# and the kind overlay with the optional token component switched on.
TARGETS = ("k8s", "base", "kind", "chaos", "kind+auth")


def _auth_overlay(tmp: Path) -> Path:
    def rel(p: Path) -> str:
        return os.path.relpath(p, tmp)

    (tmp / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{rel(K8S / 'overlays/kind')}, {rel(K8S / 'chaos')}]\n"
        f"components: [{rel(K8S / 'components/auth')}]\n"
    )
    return tmp


@pytest.fixture(scope="session")
def target_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {
        "k8s": K8S,
        "base": K8S / "base",
        "kind": K8S / "overlays/kind",
        "chaos": K8S / "chaos",
        "kind+auth": _auth_overlay(tmp_path_factory.mktemp("kind-auth")),
    }


@pytest.fixture(scope="session")
def rendered(target_dirs: dict[str, Path]) -> dict[str, list[Obj]]:
    return {name: render(path) for name, path in target_dirs.items()}


@pytest.fixture
async def app_get_paths(tmp_path: Path) -> set[str]:
    """The paths the app answers GET on, from the router of `kvstore.server.app.create_app`."""
    if importlib.util.find_spec("kvstore.server.app") is None:
        pytest.skip("kvstore.server.app does not exist yet")
    create_app = importlib.import_module("kvstore.server.app").create_app
    settings = config.load(env={"KV_POD_NAME": "kv-0", "KV_DATA_DIR": str(tmp_path)})
    app: web.Application = create_app(settings)
    return {
        r.resource.canonical
        for r in app.router.routes()
        if r.method in ("GET", "*") and r.resource is not None
    }
