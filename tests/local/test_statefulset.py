"""Every StatefulSet behaviour on `kvstore local`, driven through its command line as a person
would, and checked the way a person would look: the supervisor's event log, the status, the
local DNS server's answers, the data directories, each pod's /v1/status and /v1/digest.

Two clusters, each with a writer running throughout whose acknowledged writes must all be on
every replica at the end, the replicas at one seq and one digest:

1. OrderedReady, RollingUpdate, volumes retained: names, volumes and DNS names that follow the
   pod; ordered creation and deletion; scale down then up resuming from the old position; a
   partitioned rollout, then the rest of it, highest ordinal first.
2. Parallel, OnDelete, volumes deleted: all at once; a scale up that starts empty and takes a
   snapshot; a template change that waits for a deletion; the manager/worker split; a backup,
   the set deleted with its volumes, and a new set started from the backup.

Then the page (headless Chromium, skipped without it) through a partitioned rollout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype
import pytest

from kvstore.local.control import ControlClient
from kvstore.local.pod import free_port
from kvstore.local.state import read_cluster_file, read_events
from tests.harness import LocalCluster

pytestmark = pytest.mark.e2e

TIMEOUT = 60.0
POLL = 0.1
FQDN = "{}.kv.default.svc.cluster.local"


class Local:
    """`kvstore local` in its own directory: the CLI run as a subprocess (the event loop keeps
    running the writer meanwhile), the supervisor's view through its control channel."""

    def __init__(self, cwd: Path) -> None:
        self.cwd, self.root, self.port = cwd, cwd / ".kvstore", free_port()
        self.dns_server = ""
        cwd.mkdir(parents=True, exist_ok=True)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))

    async def kvstore(self, *args: str) -> str:
        """Run `kvstore ARGS` in the cluster's directory; its stdout, or fail with the logs."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "kvstore", *args),
            cwd=self.cwd,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT * 3)
        if proc.returncode != 0:
            raise AssertionError(
                f"kvstore {' '.join(args)}: exit {proc.returncode}\n"
                f"{out.decode()}{err.decode()}\n{self.logs()}"
            )
        return out.decode()

    async def up(self, *options: str) -> None:
        """`kvstore local up --replicas 3 --detach OPTIONS`: returns once all 3 are ready."""
        port = str(self.port)
        await self.kvstore("local", "up", "--replicas", "3", "--port", port, "--detach", *options)
        self.dns_server = (await self.cluster())["dns"]

    async def close(self) -> None:
        """`kvstore local down` if a cluster runs (SIGTERM if that fails); close the session."""
        info = read_cluster_file(self.root)
        try:
            if info is not None:
                try:
                    await self.kvstore("local", "down")
                except AssertionError:
                    os.kill(int(info["pid"]), signal.SIGTERM)
                    await self.wait(self._stopped, "the supervisor to stop")
        finally:
            await self.session.close()

    async def _stopped(self) -> bool:
        return read_cluster_file(self.root) is None

    # --- looking ---------------------------------------------------------------------------
    async def cluster(self) -> dict[str, Any]:
        async with ControlClient(self.root) as control:
            return await control.cluster()

    async def pods(self) -> dict[str, dict[str, Any]]:
        return {p["name"]: p for p in (await self.cluster())["pods"]}

    def mark(self) -> int:
        """The number of events recorded so far: pass it as `since` to see only newer ones."""
        return len(read_events(self.root))

    def events(
        self, *kinds: str, reason: str | None = None, since: int = 0
    ) -> list[tuple[str, str]]:
        """(pod, event) of the recorded events of these kinds (and this reason), in order."""
        return [
            (e["pod"], e["event"])
            for e in read_events(self.root)[since:]
            if e["event"] in kinds and (reason is None or e.get("reason") == reason)
        ]

    async def get(self, url: str, path: str, **params: str) -> Any:
        async with self.session.get(url + path, params=params) as response:
            response.raise_for_status()
            return await response.json()

    async def dns_a(self, name: str) -> list[str]:
        """The A records the cluster's DNS server gives for `name`."""
        host, port = self.dns_server.rsplit(":", 1)
        query = dns.message.make_query(name, dns.rdatatype.A)
        answer = await dns.asyncquery.udp(query, host, port=int(port), timeout=2)
        return sorted(rr.address for rrset in answer.answer for rr in rrset)

    async def wait(self, check: Callable[[], Awaitable[bool]], what: str) -> None:
        """Poll `check` until it holds; on timeout fail with `what` and every log's tail."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                if await check():
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")
            await asyncio.sleep(POLL)

    async def all_ready(self, replicas: int = 3) -> None:
        async def ready() -> bool:
            pods = (await self.cluster())["pods"]
            return len(pods) == replicas and all(p["ready"] for p in pods)

        await self.wait(ready, f"{replicas} pods ready")

    def logs(self) -> str:
        parts = []
        for path in sorted([self.root / "supervisor.log", *self.root.glob("logs/*.log")]):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-40:]
                parts.append(f"----- {path.name} -----\n" + "\n".join(tail))
        return "\n".join(parts)

    def data(self, pod: str) -> Path:
        return self.root / "data" / pod

    async def status(self, pod: str) -> dict[str, Any]:
        """The pod's own /v1/status."""
        status: dict[str, Any] = await self.get((await self.pods())[pod]["url"], "/v1/status")
        return status

    def resumed_at(self, pod: str) -> int:
        """The seq at which the pod's latest process first connected to the manager."""
        log = (self.root / "logs" / f"{pod}.log").read_text(errors="replace")
        latest = log.rsplit(f"# {pod}: starting", 1)[-1]
        found = re.search(r"connected to the manager \S+ at seq (\d+)", latest)
        assert found, f"{pod} never connected to its manager\n{latest[-3000:]}"
        return int(found.group(1))


@dataclass
class Writer:
    """Puts w/000000, w/000001, ... on the manager, found through the cluster's DNS as a client
    inside the cluster would (`kv-0.kv.default.svc.cluster.local`, looked up again after any
    failure), until stopped. Only acknowledged writes are recorded; failed ones (the manager
    going away, 503 while it comes back) are counted and never retried."""

    local: Local
    acked: dict[str, bytes] = field(default_factory=dict)
    failures: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def wait_for(self, count: int) -> None:
        async def enough() -> bool:
            return len(self.acked) >= count

        await self.local.wait(enough, f"{count} acknowledged writes")

    async def _manager(self) -> str | None:
        with contextlib.suppress(dns.exception.DNSException, OSError):
            addresses = await self.local.dns_a(FQDN.format("kv-0"))
            if addresses:
                return f"http://{addresses[0]}:{self.local.port}"
        return None

    async def _run(self) -> None:
        url: str | None = None
        number = 0
        while not self._stop.is_set():
            url = url or await self._manager()
            if url is None or not await self._put(url, f"w/{number:06d}", f"v{number}".encode()):
                url = None
                self.failures += 1
                await asyncio.sleep(POLL)
            number += 1
            await asyncio.sleep(0.01)  # a steady trickle, not a benchmark

    async def _put(self, url: str, key: str, value: bytes) -> bool:
        try:
            async with self.local.session.put(f"{url}/v1/kv/{key}", data=value) as response:
                if response.status in (200, 201):
                    self.acked[key] = value
                    return True
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        return False


@contextlib.asynccontextmanager
async def running(cwd: Path, *options: str) -> AsyncIterator[tuple[Local, Writer]]:
    """A 3-pod local cluster started with `options`, and a writer running against it."""
    local = Local(cwd)
    try:
        await local.up(*options)
        writer = Writer(local)
        writer.start()
        try:
            yield local, writer
        finally:
            await writer.stop()
    finally:
        await local.close()


async def stored(local: Local, url: str) -> dict[str, bytes]:
    """Every w/ key and value on the pod at `url`, page by page."""
    found: dict[str, bytes] = {}
    after = ""
    while True:
        page = await local.get(
            url, "/v1/kv", prefix="w/", limit="1000", values="true", start_after=after
        )
        found.update((i["key"], base64.b64decode(i["value"])) for i in page["items"])
        if page["next"] is None:
            return found
        after = page["next"]


async def check_writes(local: Local, acked: dict[str, bytes]) -> dict[str, Any]:
    """Every pod ready, at one seq and one digest, holding every acknowledged write; returns
    the manager's /v1/digest."""
    await local.all_ready()

    async def same() -> bool:
        docs = [await local.get(p["url"], "/v1/digest") for p in (await local.pods()).values()]
        return len({(d["seq"], d["digest"]) for d in docs}) == 1

    await local.wait(same, "every replica at one seq and digest")
    assert acked, "the writer got no write acknowledged"
    for name, pod in (await local.pods()).items():
        found = await stored(local, pod["url"])
        lost = sorted(k for k, v in acked.items() if found.get(k) != v)
        assert not lost, f"{name} lacks {len(lost)} acknowledged writes: {lost[:5]}"
    digest: dict[str, Any] = await local.get((await local.pods())["kv-0"]["url"], "/v1/digest")
    return digest


# --- 1. OrderedReady, RollingUpdate, Retain ---------------------------------------------------
async def test_ordered_set_keeps_identity_and_volumes_and_rolls_highest_first(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as (local, writer):
        # Behaviour 4: each pod is created only once the one before it is ready.
        assert local.events("created", "ready") == [
            (f"kv-{n}", event) for n in range(3) for event in ("created", "ready")
        ]
        await writer.wait_for(20)
        await deleted_pod_keeps_its_name_volume_and_dns_name(local)
        await scale_down_retains_volumes_and_scale_up_resumes(local)
        old, new = await canary_rollout_with_partition_2(local)
        await lowering_the_partition_continues(local, old, new)
        await writer.stop()
        await check_writes(local, writer.acked)

        await local.kvstore("local", "down")
        # Deleted in reverse order, one at a time; whenDeleted: Retain keeps every volume.
        assert local.events("deleting", "deleted", reason="down") == [
            (f"kv-{n}", event) for n in (2, 1, 0) for event in ("deleting", "deleted")
        ]
        assert local.events("volume-retained", reason="down") == [
            (f"kv-{n}", "volume-retained") for n in range(3)
        ]
        assert all((local.data(f"kv-{n}") / "kv.db").is_file() for n in range(3))


async def deleted_pod_keeps_its_name_volume_and_dns_name(local: Local) -> None:
    """Behaviours 1-3: kv-1 deleted comes back as kv-1, on its own data (same database file,
    same epoch, resumed without a snapshot), at a new address that its DNS name now gives."""
    before = (await local.pods())["kv-1"]
    assert await local.dns_a(FQDN.format("kv-1")) == [before["address"]]
    status = await local.status("kv-1")
    database = (local.data("kv-1") / "kv.db").stat().st_ino

    assert 'pod "kv-1" deleted' in await local.kvstore("local", "delete-pod", "kv-1")
    await local.all_ready()
    after = (await local.pods())["kv-1"]
    assert after["address"] != before["address"] and after["pid"] != before["pid"]
    assert await local.dns_a(FQDN.format("kv-1")) == [after["address"]]
    service = await local.dns_a("kv.default.svc.cluster.local")
    assert after["address"] in service and before["address"] not in service
    assert (local.data("kv-1") / "kv.db").stat().st_ino == database
    again = await local.status("kv-1")
    assert (again["pod"], again["epoch"]) == ("kv-1", status["epoch"])
    assert again["replication"]["snapshots_installed"] == 0
    assert local.resumed_at("kv-1") >= status["applied_seq"] > 0


async def scale_down_retains_volumes_and_scale_up_resumes(local: Local) -> None:
    """Behaviours 4-5: scale 3 -> 1 removes kv-2, then kv-1, keeping their volumes; scale
    1 -> 3 creates kv-1, then kv-2, each resuming from where it stopped (no snapshot)."""
    seqs = {pod: (await local.status(pod))["applied_seq"] for pod in ("kv-1", "kv-2")}
    since = local.mark()
    await local.kvstore("local", "scale", "1")
    assert local.events("deleting", "deleted", reason="scale", since=since) == [
        (pod, event) for pod in ("kv-2", "kv-1") for event in ("deleting", "deleted")
    ]
    assert local.events("volume-retained", since=since) == [
        ("kv-2", "volume-retained"),
        ("kv-1", "volume-retained"),
    ]
    assert list(await local.pods()) == ["kv-0"]
    assert (local.data("kv-1") / "kv.db").is_file() and (local.data("kv-2") / "kv.db").is_file()

    since = local.mark()
    await local.kvstore("local", "scale", "3")
    await local.all_ready()
    assert local.events("created", "ready", since=since) == [
        (pod, event) for pod in ("kv-1", "kv-2") for event in ("created", "ready")
    ]
    for pod, seq in seqs.items():
        assert (await local.status(pod))["replication"]["snapshots_installed"] == 0
        assert local.resumed_at(pod) >= seq > 0


def revisions(cluster: dict[str, Any]) -> dict[str, str]:
    return {p["name"]: p["revision"] for p in cluster["pods"]}


async def canary_rollout_with_partition_2(local: Local) -> tuple[str, str]:
    """Behaviour 6: a template change with partition 2 updates kv-2 only, and a pod below the
    partition deleted meanwhile comes back at the old revision. Every pod reports its revision.
    Returns the old and the new revision."""
    old = (await local.cluster())["update_revision"]
    await local.kvstore("local", "rollout", "--set", "KV_LOG_LEVEL=debug", "--partition", "2")
    cluster = await local.cluster()
    new = cluster["update_revision"]
    assert new != old and cluster["current_revision"] == old
    assert revisions(cluster) == {"kv-0": old, "kv-1": old, "kv-2": new}
    for pod, revision in revisions(cluster).items():
        assert (await local.status(pod))["revision"] == revision
    shown = await local.kvstore("local", "status")
    assert f"update revision {new}: 1/3 pods (current revision {old}); not yet: kv-1, kv-0" in shown

    await local.kvstore("local", "delete-pod", "kv-1")
    await local.all_ready()
    assert revisions(await local.cluster()) == {"kv-0": old, "kv-1": old, "kv-2": new}
    return old, new


async def lowering_the_partition_continues(local: Local, old: str, new: str) -> None:
    """Behaviour 6: partition 0 then updates kv-1, then kv-0 (the manager last), each once the
    one before is ready; the new revision becomes the current one."""
    assert revisions(await local.cluster()) == {"kv-0": old, "kv-1": old, "kv-2": new}
    since = local.mark()
    out = await local.kvstore("local", "rollout", "--partition", "0")
    assert "kv-1: ready at" in out and "rollout done: 3 pod(s)" in out
    steps = [e for e in local.events("deleting", "ready", since=since) if e[0] != "kv-2"]
    assert steps == [
        ("kv-1", "deleting"),
        ("kv-1", "ready"),
        ("kv-0", "deleting"),
        ("kv-0", "ready"),
    ]
    assert [pod for pod, _ in local.events("deleting", reason="rollout")] == [
        "kv-2",
        "kv-1",
        "kv-0",
    ]
    cluster = await local.cluster()
    assert cluster["current_revision"] == new
    assert revisions(cluster) == {"kv-0": new, "kv-1": new, "kv-2": new}
    assert (await local.status("kv-0"))["revision"] == new


# --- 2. Parallel, OnDelete, Delete; the manager/worker split and backup -----------------------
PARALLEL = (
    "--pod-management-policy",
    "Parallel",
    "--when-scaled",
    "Delete",
    "--when-deleted",
    "Delete",
    "--update-strategy",
    "OnDelete",
)


async def test_parallel_set_deletes_volumes_updates_on_delete_and_restores_a_backup(
    tmp_path: Path,
) -> None:
    async with running(tmp_path / "set", *PARALLEL) as (local, writer):
        # Behaviour 4, Parallel: every pod is created before any is ready.
        assert local.events("created", "ready")[:3] == [(f"kv-{n}", "created") for n in range(3)]
        await writer.wait_for(20)
        await scale_down_deletes_volumes_and_scale_up_takes_a_snapshot(local)
        await on_delete_waits_for_a_deletion(local)
        await only_the_manager_writes(local)
        await writer.stop()
        before = await check_writes(local, writer.acked)
        await backup_down_and_restore(local, tmp_path / "backup.db", before)
        await check_writes(local, writer.acked)


async def backup_down_and_restore(local: Local, backup: Path, before: dict[str, Any]) -> None:
    """Behaviours 4, 5 and 8: a backup from a follower; `down` stops every pod at once and
    deletes every volume (whenDeleted: Delete); a new set starts from the backup, every pod at
    the backup's seq and digest, the followers resuming from it without a snapshot."""
    kv1 = (await local.pods())["kv-1"]["url"]
    out = await local.kvstore("backup", "--url", kv1, "--out", str(backup))
    assert f"at seq {before['seq']}, epoch {before['epoch']}" in out

    since = local.mark()
    await local.kvstore("local", "down")
    # Parallel: every deletion starts before any ends; whenDeleted: Delete.
    stops = local.events("deleting", "deleted", reason="down", since=since)
    assert sorted(stops[:3]) == [(f"kv-{n}", "deleting") for n in range(3)]
    assert sorted(local.events("volume-deleted", since=since)) == [
        (f"kv-{n}", "volume-deleted") for n in range(3)
    ]
    assert not any(local.data(f"kv-{n}").exists() for n in range(3))

    # Behaviour 8: a new set on empty volumes, started from the backup.
    await local.up("--env", f"KV_RESTORE_FROM={backup}")
    for pod in ("kv-0", "kv-1", "kv-2"):
        digest = await local.get((await local.pods())[pod]["url"], "/v1/digest")
        assert digest == before, pod
    assert (await local.status("kv-2"))["replication"]["snapshots_installed"] == 0


async def scale_down_deletes_volumes_and_scale_up_takes_a_snapshot(local: Local) -> None:
    """Behaviours 4-5: Parallel scale 3 -> 1 deletes kv-2 and kv-1 at once, and their volumes
    (whenScaled: Delete); scale 1 -> 3 creates both at once, each empty, taking a snapshot."""
    since = local.mark()
    await local.kvstore("local", "scale", "1")
    stops = local.events("deleting", "deleted", reason="scale", since=since)
    assert sorted(stops[:2]) == [("kv-1", "deleting"), ("kv-2", "deleting")]
    assert sorted(local.events("volume-deleted", since=since)) == [
        ("kv-1", "volume-deleted"),
        ("kv-2", "volume-deleted"),
    ]
    assert not local.data("kv-1").exists() and not local.data("kv-2").exists()

    since = local.mark()
    await local.kvstore("local", "scale", "3")
    await local.all_ready()
    assert sorted(local.events("created", "ready", since=since)[:2]) == [
        ("kv-1", "created"),
        ("kv-2", "created"),
    ]
    for pod in ("kv-1", "kv-2"):
        status = await local.status(pod)
        assert status["replication"]["snapshots_installed"] == 1 and status["applied_seq"] > 0


async def on_delete_waits_for_a_deletion(local: Local) -> None:
    """Behaviour 7: with OnDelete a template change restarts nothing; kv-2, once deleted, comes
    back at the new revision (its log now JSON), while kv-0 and kv-1 run on untouched."""
    before = await local.pods()
    old = (await local.cluster())["update_revision"]
    out = await local.kvstore("local", "rollout", "--set", "KV_LOG_FORMAT=json")
    assert "OnDelete" in out
    new = (await local.cluster())["update_revision"]
    await local.kvstore("local", "delete-pod", "kv-2")
    await local.all_ready()

    after = await local.pods()
    assert after["kv-2"]["revision"] == new and after["kv-2"]["pid"] != before["kv-2"]["pid"]
    for pod in ("kv-0", "kv-1"):
        assert (after[pod]["revision"], after[pod]["pid"]) == (old, before[pod]["pid"])
    assert local.events("updated") == [("kv-2", "updated")]
    assert (await local.status("kv-2"))["revision"] == new
    log = (local.root / "logs" / "kv-2.log").read_text().rsplit("# kv-2: starting", 1)[-1]
    assert json.loads(log.splitlines()[1])["pod"] == "kv-2"


async def only_the_manager_writes(local: Local) -> None:
    """Behaviour 8: kv-0 is the manager, the others follow; a write sent to a follower is
    forwarded to kv-0."""
    roles = {pod: (await local.status(pod))["role"] for pod in ("kv-0", "kv-1", "kv-2")}
    assert roles == {"kv-0": "manager", "kv-1": "follower", "kv-2": "follower"}
    url = (await local.pods())["kv-2"]["url"]
    async with local.session.put(f"{url}/v1/kv/split", data=b"forwarded") as response:
        assert response.status == 201 and response.headers["X-KV-Served-By"] == "kv-0"


# --- the page ---------------------------------------------------------------------------------
CHROMIUM = os.environ.get("KV_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
PAGE_WAIT_MS = 30_000
# The page's "update" events, oldest first: [pod, text].
UPDATES = """() => [...document.querySelectorAll('#events li[data-kind="update"]')]
  .map((item) => [item.dataset.pod, item.textContent]).reverse()"""


@pytest.mark.browser
@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason=f"no Chromium at {CHROMIUM}")
def test_the_page_shows_revisions_the_rollout_and_a_timeline(tmp_path: Path) -> None:
    """The page, open on kv-2 through a partitioned rollout: each pod's revision, the pods still
    to be rolled, an event per pod updated, and a mark on each pod's timeline lane."""
    from playwright.sync_api import sync_playwright

    local = LocalCluster(tmp_path)
    local.up()
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page()
                errors: list[str] = []
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(local.pod("kv-2")["url"] + "/")
                page_follows_the_rollout(page, local)
                assert not errors, f"the page threw: {errors}"
            finally:
                browser.close()
    finally:
        local.down()


def page_follows_the_rollout(page: Any, local: LocalCluster) -> None:
    from playwright.sync_api import expect

    rows = {n: page.locator(f'#pods tbody tr[data-pod="{n}"]') for n in ("kv-0", "kv-1", "kv-2")}
    rollout = page.locator("#rollout")
    old = local.status()["update_revision"]
    for row in rows.values():
        expect(row).to_have_attribute("data-revision", old, timeout=PAGE_WAIT_MS)
    expect(rollout).to_have_text(f"All 3 pods at revision {old}")

    local.kvstore("local", "rollout", "--set", "KV_LOG_LEVEL=debug", "--partition", "2")
    new = local.status()["update_revision"]
    expect(rows["kv-2"]).to_have_attribute("data-revision", new, timeout=PAGE_WAIT_MS)
    expect(rows["kv-2"]).to_have_attribute("data-rolling", "false")
    for name in ("kv-1", "kv-0"):
        expect(rows[name]).to_have_attribute("data-rolling", "true", timeout=PAGE_WAIT_MS)
    expect(rollout).to_have_text(
        f"Rolling out {new}: 1 of 3 pods updated; still to roll: kv-1, kv-0"
    )

    local.kvstore("local", "rollout", "--partition", "0")
    for row in rows.values():
        expect(row).to_have_attribute("data-revision", new, timeout=PAGE_WAIT_MS)
    expect(rollout).to_have_text(f"All 3 pods at revision {new}")
    updated = [pod for pod, text in page.evaluate(UPDATES) if f"→ {new}" in text]
    assert updated[0] == "kv-2" and sorted(updated) == ["kv-0", "kv-1", "kv-2"], updated
    for name in rows:
        lane = page.locator(f'#timeline .lane[data-pod="{name}"]')
        expect(lane.locator(f'.mark[data-revision="{new}"]')).to_have_count(1)
