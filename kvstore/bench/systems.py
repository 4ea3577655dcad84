"""The systems under test, each started by the suite in its own directory and stopped by it:
a kvstore local cluster (`kvstore local up --detach`, then `kvstore local down`) here, and etcd
members on loopback ports nobody else uses (kvstore.bench.etcd).

Both offer what the scenarios need: where to write and where to read, each member's applied
position, stopping and restarting a follower, adding a new one, and each member's peak RSS.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from kvstore.bench.children import BenchError
from kvstore.local.control import ControlClient
from kvstore.local.pod import free_port

POLL = 0.01
START_TIMEOUT = 120.0
STOP_GRACE = 20.0
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=30)


class SuiteError(BenchError):
    """The suite could not run a step (a system did not start, converge or answer)."""


async def wait_until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Poll `check` (connection errors count as "not yet"); the seconds it took."""
    start = time.monotonic()
    last: BaseException | None = None
    while True:
        try:
            if await check():
                return time.monotonic() - start
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            last = exc
        if time.monotonic() - start > timeout:
            detail = f" (last error: {last!r})" if last is not None else ""
            raise SuiteError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        await asyncio.sleep(POLL)


def log_tails(paths: Sequence[Path], lines: int = 15) -> dict[str, str]:
    """The last lines of each log file that exists, by file name."""
    out = {}
    for path in paths:
        if path.exists():
            out[path.name] = "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return out


def now() -> float:
    """Seconds since boot: the clock /proc gives process start times on."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def process_start(pid: int) -> float:
    """When the process started, in seconds since boot (`now()`), to 1/CLK_TCK (10 ms)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19]) / os.sysconf("SC_CLK_TCK")


def peak_rss(pid: int) -> int | None:
    """The process's peak resident set size in bytes (VmHWM), None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


class System(Protocol):
    """What the scenarios use of a running system; members are numbered 0 (the writer) .. n-1."""

    name: str

    @property
    def write_url(self) -> str: ...

    @property
    def size(self) -> int: ...

    def read_url(self, member: int) -> str: ...

    async def position(self, session: aiohttp.ClientSession, member: int) -> int: ...

    async def stop_member(self, member: int) -> None: ...

    async def start_member(self, member: int) -> float:
        """Start the member again on its data; when its process started (`now()` clock)."""
        ...

    async def add_member(self) -> tuple[int, float]:
        """A new member joining with no data: its index, and when its process started."""
        ...

    def peak_rss(self) -> dict[str, int]: ...

    def log_tails(self) -> dict[str, str]: ...


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url, timeout=CLIENT_TIMEOUT) as resp:
        resp.raise_for_status()
        return await resp.json(content_type=None)


async def post_json(session: aiohttp.ClientSession, url: str, body: Any) -> Any:
    async with session.post(url, json=body, timeout=CLIENT_TIMEOUT) as resp:
        if resp.status >= 300:
            raise SuiteError(f"POST {url}: HTTP {resp.status}: {(await resp.text())[:300]}")
        return await resp.json()


# --- kvstore -----------------------------------------------------------------------------------
class KvCluster:
    """`kvstore local up --replicas N --detach` in `root`; `down()` stops it."""

    name = "kvstore"

    def __init__(self, root: Path, replicas: int, env: Sequence[str] = ()) -> None:
        self.root = root
        self.replicas = replicas
        self.env = list(env)
        self.port = free_port()
        self.pods: dict[str, dict[str, Any]] = {}
        self.started = False

    def _cli(self, *args: str, timeout: float = START_TIMEOUT + 30) -> None:
        cmd = [sys.executable, "-m", "kvstore", "local", *args, "--dir", str(self.root)]
        clean = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=clean)
        if done.returncode != 0:
            raise SuiteError(f"kvstore local {args[0]}: {(done.stderr or done.stdout).strip()}")

    async def up(self) -> None:
        args = ["up", "--replicas", str(self.replicas), "--port", str(self.port), "--detach"]
        for item in self.env:
            args += ["--env", item]
        self.started = True
        await asyncio.to_thread(self._cli, *args)
        await self.refresh()

    async def down(self) -> None:
        if self.started:
            self.started = False
            await asyncio.to_thread(self._cli, "down")

    async def refresh(self) -> None:
        async with ControlClient(self.root) as control:
            cluster = await control.cluster()
        self.pods = {p["name"]: p for p in cluster["pods"]}

    @property
    def write_url(self) -> str:
        return str(self.pods["kv-0"]["url"])

    @property
    def size(self) -> int:
        return len(self.pods) or self.replicas

    def read_url(self, member: int) -> str:
        return str(self.pods[f"kv-{member}"]["url"])

    async def position(self, session: aiohttp.ClientSession, member: int) -> int:
        """The pod's applied seq."""
        status = await get_json(session, self.read_url(member) + "/v1/status")
        return int(status["applied_seq"])

    async def _scale(self, replicas: int) -> None:
        async with ControlClient(self.root) as control:
            await control.scale(replicas)

    async def stop_member(self, member: int) -> None:
        """Scale down to `member` pods (the highest ordinal goes first; its volume stays)."""
        if member != len(self.pods) - 1:
            raise SuiteError("kvstore local scales down from the highest ordinal only")
        await self._scale(member)
        name = f"kv-{member}"

        async def gone() -> bool:
            await self.refresh()
            return name not in self.pods

        await wait_until(gone, START_TIMEOUT, f"{name} to stop")

    async def start_member(self, member: int) -> float:
        """Scale up to include `member` again; returns once its process runs."""
        await self._scale(member + 1)
        await self._listening(f"kv-{member}")
        return process_start(int(self.pods[f"kv-{member}"]["pid"]))

    async def add_member(self) -> tuple[int, float]:
        member = len(self.pods)
        return member, await self.start_member(member)

    async def _listening(self, name: str) -> None:
        async def started() -> bool:
            await self.refresh()
            pod = self.pods.get(name)
            return pod is not None and pod.get("url") is not None and pod.get("pid") is not None

        await wait_until(started, START_TIMEOUT, f"{name} to start")

    def peak_rss(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for name, pod in sorted(self.pods.items()):
            rss = peak_rss(int(pod["pid"])) if pod.get("pid") else None
            if rss is not None:
                out[name] = rss
        return out

    def log_tails(self) -> dict[str, str]:
        logs = sorted((self.root / "logs").glob("*.log"))
        return log_tails([self.root / "supervisor.log", *logs])
