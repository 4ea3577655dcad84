"""etcd as a system under test: `members` etcd processes (Debian's etcd-server) on loopback ports
nobody else uses, their data in the suite's directory, reached through etcd's HTTP gateway."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from kvstore.bench.systems import (
    START_TIMEOUT,
    STOP_GRACE,
    SuiteError,
    get_json,
    log_tails,
    peak_rss,
    post_json,
    process_start,
    wait_until,
)
from kvstore.local.pod import free_port


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
