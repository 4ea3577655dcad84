"""One pod: a `kvstore serve` process with its identity, its own loopback address and volume
(`PodSpec`, `PodProcess`), and the supervisor's record of an ordinal across the processes that
have been that pod (`Pod`).

The process runs in its own session, so a Ctrl-C meant for the supervisor does not reach it:
only the supervisor decides when a pod stops, as the kubelet does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvstore.local.state import pod_name

# Settings the supervisor decides for each pod; anything else KV_* in its environment passes on.
CONTROLLED = ("KV_POD_NAME", "KV_HOST", "KV_PORT", "KV_DATA_DIR", "KV_DNS_SERVER", "KV_REVISION")


@dataclass
class PodSpec:
    """Everything a pod's process is started with."""

    name: str
    address: str
    port: int
    data_dir: Path
    log_path: Path
    dns_server: str
    env: Mapping[str, str] = field(default_factory=dict)
    command: Sequence[str] = field(default_factory=lambda: serve_command())

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def environment(self) -> dict[str, str]:
        """The process environment: ours without KV_* settings, then the pod's, then extras."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
        env.update(
            KV_POD_NAME=self.name,
            KV_HOST=self.address,
            KV_PORT=str(self.port),
            KV_DATA_DIR=str(self.data_dir),
            KV_DNS_SERVER=self.dns_server,
            PYTHONUNBUFFERED="1",
        )
        env.update(self.env)
        return env


def serve_command() -> list[str]:
    """The command line of one pod's server."""
    return [sys.executable, "-m", "kvstore", "serve"]


def free_port() -> int:
    """A TCP port nothing listens on, on any address, right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        port: int = sock.getsockname()[1]
        return port


def loopback_addresses(first: int = 2) -> Iterator[str]:
    """127.0.0.<first>, the next one, ...: each pod start takes a fresh one, as a rescheduled pod
    gets a new IP. Linux routes all of 127.0.0.0/8 to the loopback interface."""
    for last in range(first, 255):
        yield f"127.0.0.{last}"
    raise RuntimeError("no loopback address left in 127.0.0.0/24")


class PodProcess:
    """A running (or finished) pod process. Create it with `start`."""

    def __init__(self, spec: PodSpec, process: asyncio.subprocess.Process) -> None:
        self.spec = spec
        self.process = process
        self.started_at = time.time()

    @classmethod
    async def start(cls, spec: PodSpec) -> PodProcess:
        """Create the data and log directories and start the server, its output to the log."""
        spec.data_dir.mkdir(parents=True, exist_ok=True)
        spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with spec.log_path.open("ab") as log:
            header = f"# {spec.name}: starting on {spec.address}:{spec.port}\n"
            log.write(header.encode())
            log.flush()
            process = await asyncio.create_subprocess_exec(
                *spec.command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=spec.environment(),
                start_new_session=True,
            )
        return cls(spec, process)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def url(self) -> str:
        return self.spec.url

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    @property
    def running(self) -> bool:
        return self.process.returncode is None

    def pause(self) -> None:
        """SIGSTOP: the process stays, frozen (a stalled node), until `resume`."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    async def wait(self) -> int:
        """Wait for the process to end and return its exit code (negative: killed by signal)."""
        return await self.process.wait()

    async def kill(self) -> int:
        """SIGKILL, as `kubectl delete pod --grace-period=0 --force` ends up doing."""
        self._signal(signal.SIGKILL)
        return await self.process.wait()

    async def terminate(self, grace: float = 15.0) -> int:
        """SIGTERM, then SIGKILL if the process is still there after `grace` seconds."""
        self._signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(asyncio.shield(self.process.wait()), grace)
        except TimeoutError:
            return await self.kill()


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
    revision: str | None = None  # the template revision its (last) process was created with

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
            "revision": self.revision,
        }
