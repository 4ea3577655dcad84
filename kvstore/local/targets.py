"""The pod controllers `kvstore chaos` can drive: the local supervisor (`--target local`) or a
Kubernetes StatefulSet through `kubectl` (`--target kubectl`).

A target lists the set's pods (name, ordinal, url, ready), says how many replicas it wants,
and deletes a pod gracefully or by force. It never waits for the pod to come back: that is the
controller's job, and what chaos measures.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kvstore.local.control import ControlClient, NoCluster
from kvstore.local.supervisor import PodError

KUBECTL_TIMEOUT = 30.0
DEFAULT_SELECTOR = "app.kubernetes.io/name=kvstore,app.kubernetes.io/instance=kv"


class TargetError(Exception):
    """The target could not do what was asked (the message says what and why)."""


@dataclass(frozen=True)
class PodInfo:
    name: str
    ordinal: int
    url: str | None  # None while the pod has no address
    ready: bool


class Target(Protocol):
    name: str
    poll: float  # seconds between looks at the pods

    async def pods(self) -> list[PodInfo]: ...

    async def replicas(self) -> int: ...

    async def delete(self, pod: str, force: bool, wipe: bool = False) -> None: ...

    async def pause(self, pod: str, seconds: float) -> None: ...

    async def close(self) -> None: ...


class LocalTarget:
    """The local cluster whose supervisor runs in `root` (`kvstore local up --dir root`)."""

    name = "local"
    poll = 0.3

    def __init__(self, root: Path) -> None:
        self.root = root
        self._control: ControlClient | None = None

    async def _client(self) -> ControlClient:
        if self._control is None:
            try:
                self._control = ControlClient(self.root, timeout=60.0)
            except NoCluster as exc:
                raise TargetError(str(exc)) from exc
        return self._control

    async def _cluster(self) -> dict[str, Any]:
        try:
            return await (await self._client()).cluster()
        except (NoCluster, PodError) as exc:
            raise TargetError(str(exc)) from exc

    async def pods(self) -> list[PodInfo]:
        return [
            PodInfo(p["name"], p["ordinal"], p["url"], bool(p["ready"]))
            for p in (await self._cluster())["pods"]
        ]

    async def replicas(self) -> int:
        return int((await self._cluster())["replicas"])

    async def delete(self, pod: str, force: bool, wipe: bool = False) -> None:
        try:
            await (await self._client()).delete_pod(pod, force, wipe)
        except (NoCluster, PodError) as exc:
            raise TargetError(str(exc)) from exc

    async def pause(self, pod: str, seconds: float) -> None:
        try:
            await (await self._client()).pause_pod(pod, seconds)
        except (NoCluster, PodError) as exc:
            raise TargetError(str(exc)) from exc

    async def close(self) -> None:
        if self._control is not None:
            await self._control.__aexit__(None, None, None)
            self._control = None


class KubectlTarget:
    """A StatefulSet reached with `kubectl`: pods by label, addressed by their pod IP (run
    chaos inside the cluster, as the Job in k8s/chaos does, or where pod IPs are routable)."""

    name = "kubectl"
    poll = 1.0

    def __init__(
        self,
        namespace: str | None,
        statefulset: str = "kv",
        selector: str = DEFAULT_SELECTOR,
        port: int = 8080,
        kubectl: str = "kubectl",
    ) -> None:
        self.namespace, self.statefulset, self.selector = namespace, statefulset, selector
        self.port, self.kubectl = port, kubectl
        self._resumes: set[asyncio.Task[None]] = set()

    async def run(self, args: Sequence[str]) -> str:
        """Run kubectl with `args` (and the namespace); its stdout, or TargetError."""
        argv = [self.kubectl, *args] + (["--namespace", self.namespace] if self.namespace else [])
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
        except OSError as exc:
            raise TargetError(f"cannot run {self.kubectl}: {exc}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), KUBECTL_TIMEOUT)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise TargetError(f"{' '.join(argv)}: no answer in {KUBECTL_TIMEOUT:g}s") from None
        if proc.returncode != 0:
            raise TargetError(f"{' '.join(argv)}: {err.decode(errors='replace').strip()}")
        return out.decode()

    async def pods(self) -> list[PodInfo]:
        data = json.loads(await self.run(["get", "pods", "-l", self.selector, "-o", "json"]))
        found = [self._pod(item) for item in data.get("items", [])]
        return sorted((p for p in found if p is not None), key=lambda p: p.ordinal)

    def _pod(self, item: dict[str, Any]) -> PodInfo | None:
        name = item.get("metadata", {}).get("name", "")
        prefix, _, number = name.rpartition("-")
        if prefix != self.statefulset or not number.isdigit():
            return None
        status = item.get("status", {})
        ip = status.get("podIP")
        conditions = status.get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        deleting = bool(item.get("metadata", {}).get("deletionTimestamp"))
        url = f"http://{ip}:{self.port}" if ip and not deleting else None
        return PodInfo(name, int(number), url, ready and not deleting)

    async def replicas(self) -> int:
        data = json.loads(await self.run(["get", "statefulset", self.statefulset, "-o", "json"]))
        return int(data.get("spec", {}).get("replicas", 1))

    async def delete(self, pod: str, force: bool, wipe: bool = False) -> None:
        if wipe:  # the volume claim goes once its pod does; the StatefulSet makes a new one
            await self.run(["delete", "pvc", f"data-{pod}", "--wait=false"])
        args = ["delete", "pod", pod, "--wait=false"]
        if force:
            args += ["--grace-period=0", "--force"]
        await self.run(args)

    async def pause(self, pod: str, seconds: float) -> None:
        """SIGSTOP the pod's server (its PID 1) for `seconds`, through kubectl exec."""
        await self.run(["exec", pod, "--", "kill", "-STOP", "1"])

        async def resume() -> None:
            await asyncio.sleep(seconds)
            with contextlib.suppress(TargetError):
                await self.run(["exec", pod, "--", "kill", "-CONT", "1"])

        self._resumes.add(task := asyncio.create_task(resume()))
        task.add_done_callback(self._resumes.discard)

    async def close(self) -> None:
        await asyncio.gather(*self._resumes, return_exceptions=True)
