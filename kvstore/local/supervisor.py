"""The local StatefulSet controller: keeps kv-0..kv-N-1 running as `kvstore serve` processes.

What it does for these pods is what the StatefulSet controller and kubelet do:
- OrderedReady: kv-(n+1) is created only once kv-0..kv-n are ready;
- a deleted or crashed pod comes back with the same name and data directory on a new loopback
  address (its DNS record moves with it); a crash waits out a backoff that doubles, capped;
- scale down removes the highest ordinal first and keeps its data directory;
- shutdown stops the pods in reverse order, each with SIGTERM, then SIGKILL after the grace period;
- its DNS server answers for the pods and the headless Service (not-ready pods included).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from .dns import DNSServer, RecordTable
from .pod import PodProcess, PodSpec, loopback_addresses
from .state import EventLog, Layout, pod_name, write_json_atomic

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
PROBE_PERIOD = 0.5
PROBE_TIMEOUT = 2.0

Emit = Callable[[dict[str, Any]], None]


class PodError(Exception):
    """A request about a pod that cannot be done now (unknown, not running, terminating)."""


@dataclass
class Pod:
    """One ordinal's state, across the processes that have been that pod."""

    ordinal: int
    process: PodProcess | None = None
    ready: bool = False
    terminating: bool = False
    restarts: int = 0
    crashes: int = 0
    not_before: float = 0.0
    created_at: float | None = None
    last_exit: int | None = None

    @property
    def name(self) -> str:
        return pod_name(self.ordinal)

    @property
    def phase(self) -> str:
        if self.terminating:
            return "Terminating"
        if self.process is not None:
            return "Running"
        if self.crashes and time.monotonic() < self.not_before:
            return "CrashLoopBackOff"
        return "Pending"

    def describe(self) -> dict[str, Any]:
        proc = self.process
        return {
            "name": self.name,
            "ordinal": self.ordinal,
            "phase": self.phase,
            "ready": self.ready,
            "restarts": self.restarts,
            "address": proc.spec.address if proc else None,
            "url": proc.url if proc else None,
            "pid": proc.pid if proc else None,
            "created_at": self.created_at,
            "last_exit": self.last_exit,
        }


class Supervisor:
    """Runs one local cluster in `root` until `request_down()`; see the module docstring."""

    def __init__(
        self,
        root: Path,
        replicas: int,
        port: int,
        *,
        grace: float = 15.0,
        env: Mapping[str, str] | None = None,
        pod_env: Mapping[str, Mapping[str, str]] | None = None,
        emit: Emit | None = None,
    ) -> None:
        self.layout = Layout(root)
        self.replicas = replicas
        self.port = port
        self.grace = grace
        self.env = dict(env or {})
        self.pod_env = {name: dict(e) for name, e in (pod_env or {}).items()}
        self.table = RecordTable(port=port)
        self.dns = DNSServer(self.table)
        self.events = EventLog(self.layout.events_file)
        self.pods: dict[int, Pod] = {}
        self.control_url: str | None = None
        self.token: str | None = None
        self._emit = emit
        self._addresses: Iterator[str] = loopback_addresses()
        self._wake = asyncio.Event()
        self._down = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._session: aiohttp.ClientSession | None = None

    # --- the public face (control channel and CLI) ---------------------------------------
    def describe(self) -> dict[str, Any]:
        manager = self.pods.get(0)
        return {
            "dir": str(self.layout.root),
            "pid": os.getpid(),
            "port": self.port,
            "dns": self.dns.address,
            "replicas": self.replicas,
            "url": manager.process.url if manager and manager.process else None,
            "pods": [self.pods[o].describe() for o in sorted(self.pods)],
        }

    def scale(self, replicas: int) -> None:
        if replicas < 0:
            raise PodError("replicas must be 0 or more")
        self.record("kv", "scaled", replicas=replicas, previous=self.replicas)
        self.replicas = replicas
        self._wake.set()

    def request_down(self) -> None:
        self._down = True
        self._wake.set()

    async def delete_pod(self, name: str, force: bool = False) -> int:
        """Delete a pod (SIGTERM and grace period, or SIGKILL with `force`) and return once its
        process is gone, with its exit code; the controller then creates it again."""
        pod = next((p for p in self.pods.values() if p.name == name), None)
        if pod is None or pod.process is None:
            raise PodError(f"pod {name} is not running")
        if pod.terminating:
            raise PodError(f"pod {name} is already terminating")
        # Shielded: a caller that goes away does not leave the pod half deleted.
        return int(await asyncio.shield(self._spawn(self._terminate(pod, force, "delete-pod"))))

    def record(self, pod: str, event: str, **details: Any) -> None:
        entry = self.events.record(pod, event, **details)
        if self._emit is not None:
            self._emit(entry)

    # --- running -------------------------------------------------------------------------
    async def run(self, serve_control: Callable[[Supervisor], Any] | None = None) -> None:
        """Serve DNS (and the control channel), reconcile until `request_down()`, then stop
        every pod in reverse order and remove cluster.json."""
        await self.dns.start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT))
        control = await serve_control(self) if serve_control else None
        try:
            self.write_cluster_file()
            self.record("kv", "up", replicas=self.replicas, port=self.port, dns=self.dns.address)
            while not self._down:
                await self._reconcile()
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), PROBE_PERIOD)
        finally:
            await self._shutdown()
            if control is not None:
                await control.cleanup()
            await self._session.close()
            await self.dns.stop()
            self.layout.cluster_file.unlink(missing_ok=True)
            self.record("kv", "down")

    def write_cluster_file(self) -> None:
        data = self.describe()
        data["control"] = self.control_url
        data["token"] = self.token
        data["pods"] = {p["name"]: p["url"] for p in data["pods"]}
        write_json_atomic(self.layout.cluster_file, data)

    async def _shutdown(self) -> None:
        """Stop the pods, highest ordinal first; a pod already terminating (a deletion in
        flight) is waited for too, so that no process outlives the supervisor."""
        for ordinal in sorted(self.pods, reverse=True):
            pod = self.pods[ordinal]
            if pod.process is not None and not pod.terminating:
                await self._terminate(pod, False, "down")
            elif pod.process is not None:
                await pod.process.terminate(self.grace)
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- the control loop ----------------------------------------------------------------
    async def _reconcile(self) -> None:
        await self._probe()
        if self._down or self._scale_down():
            return
        for ordinal in range(self.replicas):
            pod = self.pods.setdefault(ordinal, Pod(ordinal))
            if pod.process is None and not pod.terminating:
                if time.monotonic() >= pod.not_before:
                    await self._create(pod)
                return
            if not pod.ready:
                return

    def _scale_down(self) -> bool:
        """Remove the highest ordinal beyond `replicas`, one at a time; True while any is left."""
        extra = sorted((o for o in self.pods if o >= self.replicas), reverse=True)
        if not extra:
            return False
        pod = self.pods[extra[0]]
        if pod.process is None and not pod.terminating:
            del self.pods[pod.ordinal]
            self.write_cluster_file()
        elif not pod.terminating:
            self._spawn(self._terminate(pod, False, "scale"))
        return True

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `work` as a task the supervisor waits for before it exits."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _create(self, pod: Pod) -> None:
        spec = PodSpec(
            name=pod.name,
            address=next(self._addresses),
            port=self.port,
            data_dir=self.layout.data_dir(pod.name),
            log_path=self.layout.log_path(pod.name),
            dns_server=self.dns.address,
            env={**self.env, **self.pod_env.get(pod.name, {})},
        )
        self.table.set_pod(pod.name, spec.address)
        try:
            pod.process = await PodProcess.start(spec)
        except OSError as exc:
            self.table.remove_pod(pod.name)
            self._crashed(pod, None, str(exc))
            return
        pod.ready, pod.created_at = False, time.time()
        self.record(pod.name, "created", address=spec.address, pid=pod.process.pid)
        self.write_cluster_file()
        self._spawn(self._watch(pod, pod.process))

    async def _watch(self, pod: Pod, process: PodProcess) -> None:
        code = await process.wait()
        if pod.process is process and not pod.terminating:
            pod.process = None
            self.table.remove_pod(pod.name)
            self._crashed(pod, code, None)

    def _crashed(self, pod: Pod, code: int | None, error: str | None) -> None:
        pod.ready, pod.last_exit = False, code
        pod.crashes += 1
        pod.restarts += 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (pod.crashes - 1))
        pod.not_before = time.monotonic() + delay
        self.record(pod.name, "exited", exit_code=code, error=error, backoff=delay)
        self._wake.set()

    async def _terminate(self, pod: Pod, force: bool, reason: str) -> int:
        process = pod.process
        assert process is not None
        pod.terminating, pod.ready = True, False
        self.table.remove_pod(pod.name)
        self.record(pod.name, "deleting", force=force, reason=reason)
        try:
            code = await (process.kill() if force else process.terminate(self.grace))
        finally:
            pod.process, pod.terminating = None, False
            pod.crashes, pod.not_before = 0, 0.0
            self._wake.set()
        pod.last_exit = code
        self.record(pod.name, "deleted", reason=reason, exit_code=code)
        return code

    async def _probe(self) -> None:
        live = [p for p in self.pods.values() if p.process is not None and not p.terminating]
        results = await asyncio.gather(*(self._ready(p) for p in live))
        for pod, ready in zip(live, results, strict=True):
            if pod.process is None or pod.terminating or ready == pod.ready:
                continue
            pod.ready = ready
            if ready:
                pod.crashes = 0
            self.record(pod.name, "ready" if ready else "unready")

    async def _ready(self, pod: Pod) -> bool:
        assert self._session is not None and pod.process is not None
        try:
            async with self._session.get(pod.process.url + "/readyz") as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
