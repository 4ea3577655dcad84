"""The systems under test, each started by the suite in its own directory and stopped by it:
a kvstore local cluster (`kvstore local up --detach`, then `kvstore local down`), and etcd
members on loopback ports nobody else uses.

Both offer what the scenarios need: where to write and where to read, each member's applied
position, stopping and restarting a follower, adding a new one, and each member's peak RSS.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from kvstore.local.control import ControlClient
from kvstore.local.pod import free_port

POLL = 0.01
START_TIMEOUT = 120.0
STOP_GRACE = 20.0
CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=30)


class SuiteError(RuntimeError):
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


# --- etcd --------------------------------------------------------------------------------------
def etcd_available() -> bool:
    return shutil.which("etcd") is not None


def etcd_version() -> str:
    done = subprocess.run(["etcd", "--version"], capture_output=True, text=True, timeout=30)
    first = done.stdout.splitlines()[0] if done.stdout else "etcd"
    return first.replace("etcd Version: ", "etcd ")


@dataclass
class EtcdMember:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    member_id: str | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"


class EtcdCluster:
    """`members` etcd processes on 127.0.0.1, data under `root`; `down()` stops them all.
    Once they run, `members[0]` is the leader."""

    name = "etcd"

    def __init__(self, root: Path, members: int) -> None:
        self.root = root
        self.token = f"bench-{os.getpid()}-{time.monotonic_ns()}"
        self.members = [self._new_member(i) for i in range(members)]

    def _new_member(self, index: int) -> EtcdMember:
        name = f"etcd-{index}"
        return EtcdMember(name, free_port(), free_port(), self.root / name)

    def _initial_cluster(self, members: Sequence[EtcdMember]) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in members)

    def _spawn(self, m: EtcdMember, initial: str, state: str) -> None:
        m.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        cmd = [
            "etcd",
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={m.client_url}",
            f"--advertise-client-urls={m.client_url}",
            f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-state={state}",
            f"--initial-cluster-token={self.token}",
            "--logger=zap",
            "--log-level=warn",
            "--quota-backend-bytes=8589934592",
        ]
        with (self.root / f"{m.name}.log").open("ab") as log:
            m.process = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
            )

    async def up(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        initial = self._initial_cluster(self.members)
        for m in self.members:
            self._spawn(m, initial, "new")
        async with aiohttp.ClientSession() as session:
            for i in range(len(self.members)):
                await self._wait_healthy(session, i)
            for i, m in enumerate(self.members):
                m.member_id = (await self._status(session, i))["header"]["member_id"]
            await self._leader_first(session)

    async def _status(self, session: aiohttp.ClientSession, member: int) -> dict[str, Any]:
        url = self.members[member].client_url + "/v3/maintenance/status"
        status: dict[str, Any] = await post_json(session, url, {})
        return status

    async def _wait_healthy(self, session: aiohttp.ClientSession, member: int) -> None:
        async def healthy() -> bool:
            self._check_running(member)
            doc = await get_json(session, self.members[member].client_url + "/health")
            return str(doc.get("health")) == "true"

        await wait_until(healthy, START_TIMEOUT, f"{self.members[member].name} to be healthy")

    def _check_running(self, member: int) -> None:
        proc = self.members[member].process
        if proc is None or proc.poll() is not None:
            log = self.root / f"{self.members[member].name}.log"
            tail = log.read_text(errors="replace").splitlines()[-5:] if log.exists() else []
            raise SuiteError(f"{self.members[member].name} is not running: " + " | ".join(tail))

    async def _leader_first(self, session: aiohttp.ClientSession) -> None:
        """Put the leader at index 0 (writes go there, as kvstore's go to its manager)."""
        leader = (await self._status(session, 0))["leader"]
        index = next(i for i, m in enumerate(self.members) if m.member_id == leader)
        self.members.insert(0, self.members.pop(index))

    async def down(self) -> None:
        await asyncio.gather(*(self._stop(m) for m in self.members))

    async def _stop(self, m: EtcdMember) -> None:
        proc, m.process = m.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)

    @property
    def write_url(self) -> str:
        return self.members[0].client_url

    @property
    def size(self) -> int:
        return len(self.members)

    def read_url(self, member: int) -> str:
        return self.members[member].client_url

    async def position(self, session: aiohttp.ClientSession, member: int) -> int:
        """The member's applied store revision."""
        status = await self._status(session, member)
        return int(status["header"]["revision"])

    async def stop_member(self, member: int) -> None:
        await self._stop(self.members[member])

    async def start_member(self, member: int) -> float:
        m = self.members[member]
        self._spawn(m, self._initial_cluster(self.members), "existing")
        async with aiohttp.ClientSession() as session:
            await self._wait_listening(session, member)
        assert m.process is not None
        return process_start(m.process.pid)

    async def _wait_listening(self, session: aiohttp.ClientSession, member: int) -> None:
        async def listening() -> bool:
            self._check_running(member)
            async with session.get(self.members[member].client_url + "/version") as resp:
                return resp.status == 200

        await wait_until(listening, START_TIMEOUT, f"{self.members[member].name} to listen")

    async def add_member(self) -> tuple[int, float]:
        """`member add` on the leader, then start the new member, joining the cluster; its
        index, and the monotonic time its process started."""
        m = self._new_member(len(self.members))
        async with aiohttp.ClientSession() as session:
            added = await self._member_add(session, m.peer_url)
            m.member_id = added["member"]["ID"]
            self.members.append(m)
            self._spawn(m, self._initial_cluster(self.members), "existing")
            await self._wait_listening(session, len(self.members) - 1)
        assert m.process is not None
        return len(self.members) - 1, process_start(m.process.pid)

    async def _member_add(self, session: aiohttp.ClientSession, peer_url: str) -> dict[str, Any]:
        """etcd refuses a member add until every member has been connected for a while (after
        a restart): ask again until it accepts."""
        url = self.write_url + "/v3/cluster/member/add"
        answer: dict[str, Any] = {}

        async def accepted() -> bool:
            nonlocal answer
            async with session.post(url, json={"peerURLs": [peer_url]}) as resp:
                if resp.status == 503:
                    return False
                if resp.status >= 300:
                    raise SuiteError(f"etcd member add: HTTP {resp.status} {await resp.text()}")
                answer = await resp.json()
                return True

        await wait_until(accepted, START_TIMEOUT, "etcd to accept a new member")
        return answer

    def peak_rss(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for m in self.members:
            rss = peak_rss(m.process.pid) if m.process is not None else None
            if rss is not None:
                out[m.name] = rss
        return out

    def log_tails(self) -> dict[str, str]:
        return log_tails(sorted(self.root.glob("*.log")))
