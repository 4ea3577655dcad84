"""The end-to-end harness: real `kvstore serve` processes kv-0..kv-N-1, each on its own loopback
address (127.0.0.x, never reused within one cluster) and one shared port, with its own data
directory, found through a DNS responder that runs inside the test.

    async with Cluster(tmp_path, replicas=3) as cluster:    # starts every pod, waits ready
        await cluster.kill(1)
        await cluster.restart(1)
        await cluster.wait_ready(1)

Everything waits by polling with a deadline; a timeout raises AssertionError with every pod's
log tail. Leaving the `async with` stops every pod (SIGKILL if SIGTERM is not enough) and the DNS.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from kvstore.local.dns import BackgroundDNSServer, RecordTable
from kvstore.local.pod import PodProcess, PodSpec, free_port, loopback_addresses, serve_command
from kvstore.local.state import read_cluster_file

POLL = 0.05
LOG_TAIL = 60

Predicate = Callable[[], Awaitable[bool]]

# Settings that keep the e2e runs quick and quiet unless a test overrides them.
DEFAULT_ENV = {"KV_SHUTDOWN_TIMEOUT": "5", "KV_LOG_LEVEL": "info"}


class Cluster:
    """A StatefulSet of `replicas` pods named kv-0..kv-N-1 (see the module docstring).

    `env` goes to every pod; `pod_env` adds per-ordinal settings (e.g. a fault on one follower).
    With `autostart=False` entering starts only the DNS; call `start(ordinal)` yourself.
    """

    def __init__(
        self,
        tmp_path: Path,
        replicas: int = 3,
        env: Mapping[str, str] | None = None,
        pod_env: Mapping[int, Mapping[str, str]] | None = None,
        autostart: bool = True,
        command: Sequence[str] | None = None,
        grace: float = 15.0,
    ) -> None:
        self.root = tmp_path
        self.replicas = replicas
        self.env = {**DEFAULT_ENV, **(env or {})}
        self.pod_env = {o: dict(e) for o, e in (pod_env or {}).items()}
        self.autostart = autostart
        self.command = list(command or serve_command())
        self.grace = grace
        self.port = free_port()
        self.table = RecordTable(port=self.port)
        self.dns = BackgroundDNSServer(self.table)
        self._addresses: Iterator[str] = loopback_addresses()
        self._assigned: dict[int, str] = {}
        self.pods: dict[int, PodProcess] = {}
        self._session: aiohttp.ClientSession | None = None

    # --- lifecycle ------------------------------------------------------------------------
    async def __aenter__(self) -> Cluster:
        self.dns.start()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        try:
            if self.autostart:
                await self.start_all()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop every pod (in parallel; SIGKILL after the grace period), the session, the DNS."""
        await asyncio.gather(*(self.stop(o) for o in list(self.pods)))
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.dns.stop()

    async def start_all(self) -> None:
        """Start every pod at once and wait until all are ready."""
        for ordinal in range(self.replicas):
            await self.start(ordinal)
        await asyncio.gather(*(self.wait_ready(o) for o in range(self.replicas)))

    @property
    def session(self) -> aiohttp.ClientSession:
        """An HTTP session for the test's own requests, closed with the cluster."""
        if self._session is None:
            raise RuntimeError("use the cluster inside `async with`")
        return self._session

    # --- identity ------------------------------------------------------------------------
    def name(self, ordinal: int) -> str:
        return f"kv-{ordinal}"

    def address(self, ordinal: int) -> str:
        """The pod's current loopback address (assigned at its first start)."""
        if ordinal not in self._assigned:
            self._assigned[ordinal] = next(self._addresses)
        return self._assigned[ordinal]

    def url(self, ordinal: int) -> str:
        return f"http://{self.address(ordinal)}:{self.port}"

    def data_dir(self, ordinal: int) -> Path:
        return self.root / "data" / self.name(ordinal)

    def log_path(self, ordinal: int) -> Path:
        return self.root / "logs" / f"{self.name(ordinal)}.log"

    def running(self, ordinal: int) -> bool:
        pod = self.pods.get(ordinal)
        return pod is not None and pod.running

    # --- pod control ---------------------------------------------------------------------
    async def start(self, ordinal: int, env: Mapping[str, str] | None = None) -> PodProcess:
        """Start the pod on its current address; `env` is kept for its later starts too."""
        if self.running(ordinal):
            raise RuntimeError(f"{self.name(ordinal)} is already running")
        if env:
            self.pod_env.setdefault(ordinal, {}).update(env)
        spec = PodSpec(
            name=self.name(ordinal),
            address=self.address(ordinal),
            port=self.port,
            data_dir=self.data_dir(ordinal),
            log_path=self.log_path(ordinal),
            dns_server=self.dns.address,
            env={**self.env, **self.pod_env.get(ordinal, {})},
            command=self.command,
        )
        self.table.set_pod(spec.name, spec.address)
        self.pods[ordinal] = await PodProcess.start(spec)
        return self.pods[ordinal]

    async def kill(self, ordinal: int) -> int:
        """SIGKILL the pod and wait for it to be gone; returns its exit code."""
        return await self.pods[ordinal].kill()

    async def stop(self, ordinal: int) -> int:
        """SIGTERM the pod; SIGKILL if it is still there after the grace period."""
        return await self.pods[ordinal].terminate(self.grace)

    async def restart(
        self, ordinal: int, new_address: bool = False, env: Mapping[str, str] | None = None
    ) -> PodProcess:
        """Start the pod again on the same data directory (stopping it first if it runs).

        With `new_address` it gets a fresh loopback address and its DNS record moves there.
        """
        if self.running(ordinal):
            await self.stop(ordinal)
        if new_address:
            self._assigned[ordinal] = next(self._addresses)
        return await self.start(ordinal, env)

    def wipe(self, ordinal: int) -> None:
        """Delete the pod's data directory (its volume); the pod must not be running."""
        if self.running(ordinal):
            raise RuntimeError(f"stop {self.name(ordinal)} before wiping its data")
        shutil.rmtree(self.data_dir(ordinal), ignore_errors=True)

    # --- HTTP helpers --------------------------------------------------------------------
    async def get_json(self, ordinal: int, path: str) -> Any:
        """GET a JSON document from the pod; raises for a non-2xx status."""
        async with self.session.get(self.url(ordinal) + path) as response:
            response.raise_for_status()
            return await response.json()

    async def status(self, ordinal: int) -> dict[str, Any]:
        """The pod's `/v1/status`."""
        status: dict[str, Any] = await self.get_json(ordinal, "/v1/status")
        return status

    async def digest(self, ordinal: int) -> dict[str, Any]:
        """The pod's `/v1/digest`: `{"seq", "digest"}`."""
        digest: dict[str, Any] = await self.get_json(ordinal, "/v1/digest")
        return digest

    async def is_ready(self, ordinal: int) -> bool:
        try:
            async with self.session.get(self.url(ordinal) + "/readyz") as response:
                return response.status == 200
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False

    # --- waiting -------------------------------------------------------------------------
    async def wait_ready(self, ordinal: int, timeout: float = 30) -> None:
        """Poll the pod's `/readyz` until it answers 200; fail at once if the process exits."""

        async def ready() -> bool:
            pod = self.pods.get(ordinal)
            if pod is None or not pod.running:
                code = None if pod is None else pod.returncode
                raise AssertionError(f"{self.name(ordinal)} is not running (exit code {code})")
            return await self.is_ready(ordinal)

        await self.wait_until(ready, timeout, f"{self.name(ordinal)} to be ready")

    async def wait_until(self, predicate: Predicate, timeout: float, what: str) -> None:
        """Poll `predicate` until it returns True. Connection errors count as "not yet".

        On timeout, or if the predicate raises AssertionError, fail with `what`, the last error
        seen and every pod's log tail.
        """
        deadline = time.monotonic() + timeout
        last_error: BaseException | None = None
        while True:
            try:
                if await predicate():
                    return
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last_error = exc
            except AssertionError as exc:
                raise AssertionError(f"waiting for {what}: {exc}\n{self.logs()}") from exc
            if time.monotonic() >= deadline:
                detail = f" (last error: {last_error!r})" if last_error else ""
                message = f"timed out after {timeout:g}s waiting for {what}{detail}"
                raise AssertionError(f"{message}\n{self.logs()}")
            await asyncio.sleep(POLL)

    # --- logs ----------------------------------------------------------------------------
    def log(self, ordinal: int) -> str:
        """The whole log of the pod (every start appends to it)."""
        path = self.log_path(ordinal)
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self, tail: int = LOG_TAIL) -> str:
        """The last `tail` lines of every pod's log, under a header per pod."""
        parts = []
        for ordinal in sorted(set(self.pods) | set(range(self.replicas))):
            lines = self.log(ordinal).splitlines()[-tail:]
            parts.append(f"----- {self.name(ordinal)} ({self.log_path(ordinal)}) -----")
            parts.extend(lines or ["(no log)"])
        return "\n".join(parts)


# --- a local cluster driven through its command line (`kvstore local ...`) ------------------
CLI_TIMEOUT = 60.0


class LocalCluster:
    """`kvstore local up --detach` run in `cwd` (data in `cwd/.kvstore`), and the CLI run there,
    so that client commands find the cluster without flags. `up()`; always `down()` after."""

    def __init__(self, cwd: Path, replicas: int = 3, extra: Sequence[str] = ()) -> None:
        self.cwd, self.replicas, self.extra = cwd, replicas, list(extra)
        self.root = cwd / ".kvstore"
        self.port = free_port()

    def run(
        self, argv: Sequence[str], check: bool = True, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in `cwd`: no KV_* variables from the test's environment, `env` added."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
        result = subprocess.run(
            list(argv),
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT * 3,
            env={**base, **(env or {})},
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)}: exit {result.returncode}\n"
                f"{result.stdout}{result.stderr}\n{self.logs()}"
            )
        return result

    def kvstore(
        self, *args: str, check: bool = True, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return self.run([sys.executable, "-m", "kvstore", *args], check, env)

    def up(self) -> None:
        replicas, port = str(self.replicas), str(self.port)
        self.kvstore("local", "up", "--replicas", replicas, "--port", port, "--detach", *self.extra)

    def down(self) -> None:
        """`kvstore local down`; if that fails, SIGTERM the supervisor and wait for it."""
        info = read_cluster_file(self.root)
        if info is None:
            return
        if self.kvstore("local", "down", check=False).returncode != 0:
            os.kill(int(info["pid"]), signal.SIGTERM)
            wait_for(lambda: read_cluster_file(self.root) is None, "the supervisor to stop", self)

    def status(self) -> dict[str, Any]:
        """`kvstore local status --json`."""
        data: dict[str, Any] = json.loads(self.kvstore("local", "status", "--json").stdout)
        return data

    def pod(self, name: str) -> dict[str, Any]:
        return next(p for p in self.status()["pods"] if p["name"] == name)

    def logs(self) -> str:
        """The tail of the supervisor's log and of every pod's log."""
        parts = []
        for path in sorted([self.root / "supervisor.log", *self.root.glob("logs/*.log")]):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-LOG_TAIL:]
                parts.append(f"----- {path.name} -----\n" + "\n".join(tail))
        return "\n".join(parts)


def wait_for(
    check: Callable[[], bool], what: str, cluster: LocalCluster, timeout: float = CLI_TIMEOUT
) -> None:
    """Poll `check` until it holds; on timeout fail with `what` and the cluster's logs."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}\n{cluster.logs()}"
            )
        time.sleep(POLL)
