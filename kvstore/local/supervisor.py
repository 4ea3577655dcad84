"""The local StatefulSet controller: keeps kv-0..kv-N-1 running as `kvstore serve` processes.

What it does for these pods is what the StatefulSet controller and kubelet do:
- OrderedReady: kv-(n+1) is created only once kv-0..kv-n are ready; Parallel: all at once;
- a deleted or crashed pod comes back with the same name and data directory on a new loopback
  address (its DNS record moves with it); a crash waits out a backoff that doubles, capped;
- scale down removes the highest ordinal first (Parallel: every extra pod at once); whenScaled
  decides whether its data directory stays (Retain) or goes (Delete);
- a template change (`rollout`) replaces the pods from the highest ordinal down, one at a time,
  each once every pod is ready, only ordinals >= the partition (RollingUpdate); with OnDelete a
  pod takes the new template only when it is deleted; each pod runs with KV_REVISION set;
- shutdown stops the pods in reverse order (Parallel: all at once), each with SIGTERM, then
  SIGKILL after the grace period; whenDeleted decides whether the data directories stay;
- its DNS server answers for the pods and the headless Service (not-ready pods included).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from kvstore.local.dns import DNSServer, RecordTable
from kvstore.local.pod import CONTROLLED, Pod, PodProcess, PodSpec, loopback_addresses
from kvstore.local.revisions import DELETE, Policies, Revisions, Template
from kvstore.local.state import EventLog, Layout, pod_name, write_json_atomic

BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
PROBE_PERIOD = 0.5
PROBE_TIMEOUT = 2.0

Emit = Callable[[dict[str, Any]], None]


class PodError(Exception):
    """A request about a pod that cannot be done now (unknown, not running, terminating)."""


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
        policies: Policies | None = None,
        partition: int = 0,
    ) -> None:
        self.layout = Layout(root)
        self.replicas = replicas
        self.port = port
        self.grace = grace
        self.policies = policies or Policies()
        self.revisions = Revisions(Template(env=dict(env or {})), partition)
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
        self._rolling: int | None = None  # the ordinal a RollingUpdate is replacing
        self._rollout_pending = False  # a rollout-done event is still to be recorded

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
            **self.policies.describe(),
            **self.revisions.describe(),
            "rolling": None if self._rolling is None else pod_name(self._rolling),
            "volumes": self.layout.volumes(),
            "pods": [self._describe_pod(self.pods[o]) for o in sorted(self.pods)],
        }

    def _describe_pod(self, pod: Pod) -> dict[str, Any]:
        doc = pod.describe()
        doc["updated"] = pod.revision == self.revisions.update
        return doc

    def scale(self, replicas: int) -> None:
        if replicas < 0:
            raise PodError("replicas must be 0 or more")
        self.record("kv", "scaled", replicas=replicas, previous=self.replicas)
        self.replicas = replicas
        self._wake.set()

    def rollout(
        self,
        set_env: Mapping[str, str],
        unset: Iterable[str] = (),
        partition: int | None = None,
        restart: bool = False,
    ) -> dict[str, Any]:
        """Change the template (a new update revision) and/or the partition; the control loop
        then rolls the pods (RollingUpdate), or leaves them until deleted (OnDelete)."""
        unset = list(unset)
        reserved = sorted({*set_env, *unset} & {*CONTROLLED, "KV_REVISION"})
        if reserved:
            raise PodError(f"{', '.join(reserved)}: set by the supervisor for each pod")
        if partition is not None and partition < 0:
            raise PodError("partition must be 0 or more")
        previous = self.revisions.update
        changed = self.revisions.apply(self.revisions.template.changed(set_env, unset, restart))
        if partition is not None:
            self.revisions.partition = partition
        self._rollout_pending = True
        self.record(
            "kv",
            "rollout",
            revision=self.revisions.update,
            previous=previous if changed else None,
            partition=self.revisions.partition,
            strategy=self.policies.update_strategy,
        )
        self._wake.set()
        return self.describe()

    def request_down(self) -> None:
        self._down = True
        self._wake.set()

    async def delete_pod(self, name: str, force: bool = False, wipe: bool = False) -> int:
        """Delete a pod (SIGTERM and grace period, or SIGKILL with `force`) and return once its
        process is gone, with its exit code; the controller then creates it again. With `wipe`
        its volume goes too (a lost disk): the pod comes back on an empty data directory."""
        pod = self._running(name)
        # Shielded: a caller that goes away does not leave the pod half deleted.
        work = self._terminate(pod, force, "delete-pod", wipe)
        return int(await asyncio.shield(self._spawn(work)))

    def pause_pod(self, name: str, seconds: float) -> None:
        """Freeze a pod's process (SIGSTOP) for `seconds`, then let it go on (SIGCONT): a
        stalled node, which neither answers nor dies."""
        pod = self._running(name)
        process = pod.process
        assert process is not None
        process.pause()
        self.record(name, "paused", seconds=seconds)

        async def resume() -> None:
            await asyncio.sleep(seconds)
            process.resume()
            self.record(name, "resumed")

        self._spawn(resume())

    def _running(self, name: str) -> Pod:
        pod = next((p for p in self.pods.values() if p.name == name), None)
        if pod is None or pod.process is None:
            raise PodError(f"pod {name} is not running")
        if pod.terminating:
            raise PodError(f"pod {name} is already terminating")
        return pod

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
        del data["template"]
        write_json_atomic(self.layout.cluster_file, data)

    async def _shutdown(self) -> None:
        """Stop the pods, highest ordinal first (Parallel: all at once); a pod already
        terminating (a deletion in flight) is waited for too, so that no process outlives the
        supervisor. Then whenDeleted: Delete removes every pod's data directory."""
        pods = [self.pods[o] for o in sorted(self.pods, reverse=True)]
        if self.policies.ordered:
            for pod in pods:
                await self._stop(pod)
        else:
            await asyncio.gather(*(self._stop(pod) for pod in pods))
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for name in self.layout.volumes():
            self._release_volume(name, self.policies.when_deleted, "down")

    async def _stop(self, pod: Pod) -> None:
        if pod.process is not None and not pod.terminating:
            await self._terminate(pod, False, "down")
        elif pod.process is not None:
            await pod.process.terminate(self.grace)

    def _release_volume(self, name: str, policy: str, reason: str) -> None:
        """What becomes of a removed pod's data directory: kept (Retain) or deleted (Delete)."""
        path = self.layout.data_dir(name)
        if policy == DELETE:
            shutil.rmtree(path, ignore_errors=True)
            self.record(name, "volume-deleted", reason=reason, path=str(path))
        else:
            self.record(name, "volume-retained", reason=reason, path=str(path))

    # --- the control loop ----------------------------------------------------------------
    async def _reconcile(self) -> None:
        await self._probe()
        if self._down or self._scale_down():
            return
        if await self._create_pods():
            self._roll()

    async def _create_pods(self) -> bool:
        """Create the missing pods: OrderedReady, the lowest missing one once all below it are
        ready; Parallel, all of them. True once every pod runs and is ready."""
        all_ready = True
        for ordinal in range(self.replicas):
            pod = self.pods.setdefault(ordinal, Pod(ordinal))
            if pod.process is None and not pod.terminating and time.monotonic() >= pod.not_before:
                await self._create(pod)
            if not pod.ready:
                all_ready = False
                if self.policies.ordered:
                    return False
        return all_ready

    def _scale_down(self) -> bool:
        """Remove the highest ordinal beyond `replicas`, one at a time (Parallel: all at once);
        True while any is left."""
        extra = sorted((o for o in self.pods if o >= self.replicas), reverse=True)
        if not extra:
            return False
        for ordinal in extra if not self.policies.ordered else extra[:1]:
            pod = self.pods[ordinal]
            if pod.process is None and not pod.terminating:
                del self.pods[pod.ordinal]
                self._release_volume(pod.name, self.policies.when_scaled, "scale")
                self.write_cluster_file()
            elif not pod.terminating:
                self._spawn(self._terminate(pod, False, "scale"))
        return True

    def _roll(self) -> None:
        """Every pod runs and is ready. RollingUpdate: replace the highest ordinal at or above
        the partition that is not at the update revision. Record when the rollout is done."""
        self._rolling = None
        revisions = {o: p.revision for o, p in self.pods.items()}
        if self.policies.rolling:
            ordinal = self.revisions.next_to_roll(revisions, self.replicas)
            if ordinal is not None:
                self._rolling = ordinal
                self._spawn(self._terminate(self.pods[ordinal], False, "rollout"))
                return
        self.revisions.settle(revisions, self.replicas)
        floor = self.revisions.partition if self.policies.rolling else 0
        update = self.revisions.update
        if self._rollout_pending and all(
            revisions.get(o) == update for o in range(floor, self.replicas)
        ):
            self._rollout_pending = False
            self.record(
                "kv",
                "rollout-done",
                revision=update,
                partition=self.revisions.partition,
                current=self.revisions.current,
            )

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `work` as a task the supervisor waits for before it exits."""
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _create(self, pod: Pod) -> None:
        revision = self.revisions.revision_for(pod.ordinal, self.policies)
        template = self.revisions.templates[revision]
        env = {**template.env, **self.pod_env.get(pod.name, {}), "KV_REVISION": revision}
        spec = PodSpec(
            name=pod.name,
            address=next(self._addresses),
            port=self.port,
            data_dir=self.layout.data_dir(pod.name),
            log_path=self.layout.log_path(pod.name),
            dns_server=self.dns.address,
            env=env,
        )
        self.table.set_pod(pod.name, spec.address)
        try:
            pod.process = await PodProcess.start(spec)
        except OSError as exc:
            self.table.remove_pod(pod.name)
            self._crashed(pod, None, str(exc))
            return
        pod.ready, pod.created_at = False, time.time()
        previous, pod.revision = pod.revision, revision
        self.record(
            pod.name, "created", address=spec.address, pid=pod.process.pid, revision=revision
        )
        if previous is not None and previous != revision:
            self.record(pod.name, "updated", revision=revision, previous=previous)
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

    async def _terminate(self, pod: Pod, force: bool, reason: str, wipe: bool = False) -> int:
        process = pod.process
        assert process is not None
        pod.terminating, pod.ready = True, False
        self.table.remove_pod(pod.name)
        self.record(pod.name, "deleting", force=force, reason=reason, revision=pod.revision)
        try:
            code = await (process.kill() if force else process.terminate(self.grace))
            if wipe:  # before the pod is created again
                path = self.layout.data_dir(pod.name)
                shutil.rmtree(path, ignore_errors=True)
                self.record(pod.name, "volume-deleted", reason="wipe", path=str(path))
        finally:
            pod.process, pod.terminating = None, False
            pod.crashes, pod.not_before = 0, 0.0
            self._wake.set()
        pod.last_exit = code
        self.record(pod.name, "deleted", reason=reason, exit_code=code, revision=pod.revision)
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
            self.record(pod.name, "ready" if ready else "unready", revision=pod.revision)

    async def _ready(self, pod: Pod) -> bool:
        assert self._session is not None and pod.process is not None
        try:
            async with self._session.get(pod.process.url + "/readyz") as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
