"""The one-node cluster of hack/k8s/cluster.py (`make k8s-up`): kubectl against it, a namespace
per test module, polling with deadlines, and the pods' logs and events when a wait fails."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
OVERLAY = REPO / "k8s" / "overlays" / "local"
SELECTOR = "app.kubernetes.io/name=kvstore"
ENABLED = os.environ.get("KV_K8S_TEST") == "1"
SKIP_REASON = "the Kubernetes suite is opt-in: make k8s-up && make k8s-test (KV_K8S_TEST=1)"


def cluster_module() -> ModuleType:
    """hack/k8s/cluster.py: where the cluster keeps its kubeconfig and its kubectl."""
    spec = importlib.util.spec_from_file_location("k8s_cluster", REPO / "hack/k8s/cluster.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Kube:
    """kubectl in one namespace, with waits that dump what the cluster shows on timeout."""

    def __init__(self, kubectl: str, kubeconfig: str, namespace: str) -> None:
        self.kubectl, self.kubeconfig, self.namespace = kubectl, kubeconfig, namespace
        self.env = {**os.environ, "KUBECONFIG": kubeconfig}

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120, stdin: str | None = None
    ) -> str:
        argv = [self.kubectl, "--namespace", self.namespace, *args]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, input=stdin, env=self.env
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}"
            )
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))

    def pods(self) -> dict[str, dict[str, Any]]:
        """The set's pods by name (those not being deleted)."""
        items = self.json("get", "pods", "-l", SELECTOR)["items"]
        return {
            p["metadata"]["name"]: p for p in items if not p["metadata"].get("deletionTimestamp")
        }

    def pod(self, name: str) -> dict[str, Any] | None:
        out = self("get", "pod", name, "-o", "json", "--ignore-not-found")
        return json.loads(out) if out.strip() else None

    def ready_pods(self) -> list[str]:
        return sorted(n for n, p in self.pods().items() if ready(p))

    def wait(self, what: str, check: Callable[[], Any], timeout: float = 180) -> Any:
        """Poll `check` until it returns something true; on timeout fail with the dump."""
        deadline = time.monotonic() + timeout
        last_error = ""
        while True:
            try:
                value = check()
                if value:
                    return value
            except (AssertionError, OSError, KeyError, ValueError, subprocess.SubprocessError) as e:
                last_error = f"{type(e).__name__}: {e}"
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout:g}s waiting for {what}\n"
                    f"last error: {last_error}\n{self.dump()}"
                )
            time.sleep(0.5)

    def wait_ready(self, count: int, timeout: float = 240) -> dict[str, dict[str, Any]]:
        want = [f"kv-{i}" for i in range(count)]

        def done() -> dict[str, dict[str, Any]] | None:
            pods = self.pods()
            return pods if sorted(pods) == want and all(ready(p) for p in pods.values()) else None

        result: dict[str, dict[str, Any]] = self.wait(f"pods {want} Ready", done, timeout)
        return result

    def dump(self) -> str:
        parts = [
            self("get", "pods,pvc,statefulset,endpointslices", "-o", "wide", check=False),
            self("get", "events", "--sort-by=.metadata.creationTimestamp", check=False)[-6000:],
        ]
        for name in sorted(self.pods()):
            for previous in ([], ["--previous"]):
                out = self("logs", name, *previous, "--tail=60", check=False)
                if out:
                    parts.append(f"--- logs {name} {' '.join(previous)} ---\n{out}")
        return "\n".join(parts)

    def revision(self, pod: dict[str, Any]) -> str:
        return str(pod["metadata"]["labels"].get("controller-revision-hash", ""))


def ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def ready_since(pod: dict[str, Any]) -> str:
    for c in pod.get("status", {}).get("conditions") or []:
        if c["type"] == "Ready" and c["status"] == "True":
            return str(c["lastTransitionTime"])
    return ""


def http(
    method: str, url: str, body: bytes | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def pod_url(pod: dict[str, Any]) -> str:
    return f"http://{pod['status']['podIP']}:8080"


@pytest.fixture(scope="session")
def cluster() -> ModuleType:
    if not ENABLED:
        pytest.skip(SKIP_REASON)
    module = cluster_module()
    if not module.KUBECONFIG.exists():
        pytest.fail(f"no cluster: {module.KUBECONFIG} is missing (run make k8s-up)")
    return module


def new_namespace(cluster: ModuleType, prefix: str) -> Iterator[Kube]:
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kube = Kube(str(cluster.BIN / "kubectl"), str(cluster.KUBECONFIG), name)
    kube("create", "namespace", name)
    kube.wait("the namespace's default ServiceAccount", lambda: kube("get", "sa", "default"))
    try:
        yield kube
    finally:
        if os.environ.get("KV_K8S_KEEP") != "1":
            kube("delete", "namespace", name, "--wait=false", check=False)


def apply_set(kube: Kube, overlay: Path = OVERLAY) -> None:
    kube("apply", "-k", str(overlay))


CLIENT_POD = "kv-client"


def client_pod(kube: Kube) -> str:
    """The in-cluster client of docs/kubernetes.md: a pod from the kvstore image that stays."""
    kube(
        "run", CLIENT_POD, "--image=kvstore:0.1.0", "--image-pull-policy=Never",
        "--labels=kvstore/client=true", "--restart=Never", "--command", "--", "sleep", "infinity",
    )  # fmt: skip
    kube("wait", "--for=condition=Ready", f"pod/{CLIENT_POD}", "--timeout=120s")
    return CLIENT_POD
