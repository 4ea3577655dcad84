"""`kvstore chaos`: delete pods under load, then a verdict on what users rely on.

Writers put unique keys (and overwrite some) on the manager and record every acknowledged write
(key, version, seq, value hash). Readers ask followers for recently acknowledged writes with
`min_seq` (read-your-writes) and check that the seq each follower reports never goes down for
them (monotonic reads). A disruptor deletes a pod every interval, the manager included, graceful
and forced mixed. A sampler watches every pod's applied seq. Then, with every pod ready again:
every acknowledged write must be on every replica at its version or a later one, every replica at
one seq with one digest, and no applied seq may have gone backwards. Exit 1 on any violation.

Two more faults mix with the deletions on request. `--wipe-manager`: two of the manager's turns
in three delete its volume with it, while a follower is held stopped (SIGSTOP) past the pods'
KV_RESTORE_WAIT, so that the manager restores without it; writes then ask for ack=1, so that
every acknowledged write is on a follower. `--pause`: every fourth turn freezes a pod (SIGSTOP)
for 1 to 40 s, longer than the heartbeat and forwarding timeouts. The verdict then also checks,
on every look at the pods, that no two ready replicas stand at one seq with two digests; a
follower left diverged is not a violation but a repair: what it holds past the fork is read (as
`kvstore repair export` does), each acknowledged write found there counts as recoverable, and it
is resynced. Writes whose outcome is unknown (a broken connection, 504) are counted apart: each
must be present or absent, never applied twice.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import aiohttp

from kvstore.cli.connection import add_token_argument, token_of
from kvstore.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from kvstore.client import ClientError, ConnectionFailed, KeyNotFound, KVClient
from kvstore.local.targets import (
    DEFAULT_SELECTOR,
    KubectlTarget,
    LocalTarget,
    PodInfo,
    Target,
    TargetError,
)
from kvstore.wire import decode_changes

Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
RECENT = 2000  # acknowledged writes the readers choose from
READ_WAIT = 3.0  # seconds a follower may take to reach a read's min_seq
VIOLATION_KINDS = (
    "lost write",
    "diverged",
    "read-your-writes",
    "monotonic reads",
    "seq went backwards",
    "unreachable",
    "two digests at one seq",
    "applied twice",
)


def digest_of(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()[:16]


@dataclass(frozen=True)
class Ack:
    key: str
    version: int
    seq: int
    value: str  # digest_of(value)


@dataclass
class Deletion:
    at: float  # seconds since the start
    pod: str
    force: bool
    failed_writes: int = 0
    # seconds from the deletion until writes succeed again after its last failed write
    writes_ok_after: float | None = None
    error: str | None = None
    kind: str = "delete"  # "delete", "wipe" (the volume too), or "pause"
    held: str | None = None  # a wipe: the follower held stopped meanwhile
    seconds: float | None = None  # a pause, or how long the follower was held


@dataclass
class Result:
    target: str
    duration: float
    writers: int
    readers: int
    interval: float
    acked: int = 0
    failed_writes: int = 0
    keys: int = 0
    reads: int = 0
    reads_unavailable: int = 0
    unknown_outcome: int = 0  # writes that may or may not have been applied
    unknown_present: int = 0
    recoverable: int = 0  # acknowledged writes found only on a diverged follower
    repaired: list[str] = field(default_factory=list)  # diverged followers resynced at the end
    deletions: list[Deletion] = field(default_factory=list)
    replicas: dict[str, dict[str, Any]] = field(default_factory=dict)
    violations: list[dict[str, str]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.violations


class Chaos:
    """One chaos run against `target`; `run()` returns the Result."""

    def __init__(self, target: Target, args: argparse.Namespace, token: str | None) -> None:
        self.target, self.args, self.token = target, args, token
        self.prefix = f"chaos/{uuid.uuid4().hex[:8]}/"
        self.result = Result(target.name, args.duration, args.writers, args.readers, args.interval)
        self.pods: list[PodInfo] = []
        self.acks: dict[str, list[Ack]] = {}
        self.attempted: dict[str, set[str]] = {}
        self.attempts: dict[str, int] = {}
        self.unknown: dict[str, set[str]] = {}
        self.recoverable: set[tuple[str, str]] = set()  # (key, value digest) past a fork
        self.paused: dict[str, float] = {}  # pod -> when it goes on (chaos time)
        self.manager_turns = 0
        self.wipes = 0  # volume losses so far: reads across one are not compared
        self.restoring = False  # a wiped manager is not ready again yet
        self.wipe_due = False  # the manager's turn came for a wipe: done once the set is whole
        self.seq_resets = 0  # a sample that spans a reset is not compared
        self.repairing: set[str] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.http: aiohttp.ClientSession | None = None
        self.recent: list[Ack] = []
        self.highest_seq: dict[str, int] = {}
        self.timeline: list[tuple[float, bool]] = []
        self.clients: dict[str, KVClient] = {}
        self.start = time.monotonic()
        self.stopping = asyncio.Event()

    # --- helpers ---------------------------------------------------------------------------
    def now(self) -> float:
        return time.monotonic() - self.start

    def violation(self, kind: str, message: str) -> None:
        self.result.violations.append({"kind": kind, "message": message})

    async def client(self, url: str) -> KVClient:
        if url not in self.clients:
            self.clients[url] = await KVClient(url, self.token, timeout=5.0).__aenter__()
        return self.clients[url]

    def manager(self) -> PodInfo | None:
        return next((p for p in self.pods if p.ordinal == 0 and p.url), None)

    async def refresh(self) -> None:
        with contextlib.suppress(TargetError):
            self.pods = await self.target.pods()

    async def pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), seconds)

    # --- load ------------------------------------------------------------------------------
    async def writer(self, number: int) -> None:
        n = 0
        while not self.stopping.is_set():
            index = n - 1 if n % 4 == 0 and n > 0 else n  # every 4th write overwrites
            key = f"{self.prefix}w{number:02d}/{index:06d}"
            value = f"{key} {n} {random.getrandbits(64):016x}".encode()
            ok = await self.write(key, value)
            self.timeline.append((self.now(), ok))
            n += 1
            if not ok:
                await self.pause(0.05)

    async def write(self, key: str, value: bytes) -> bool:
        manager = self.manager()
        if manager is None or manager.url is None:
            self.result.failed_writes += 1
            return False
        self.attempted.setdefault(key, set()).add(digest_of(value))
        self.attempts[key] = self.attempts.get(key, 0) + 1
        want = 1 if self.args.wipe_manager else None
        try:
            kv = await self.client(manager.url)
            written = await kv.put(key, value, ack=want, timeout=2.0 if want else None)
        except ConnectionFailed as exc:
            self.result.failed_writes += 1
            if not isinstance(exc.__cause__, aiohttp.ClientConnectorError):
                self.unknown.setdefault(key, set()).add(digest_of(value))  # sent, no answer
            return False
        except ClientError as exc:
            self.result.failed_writes += 1
            if exc.status == 504:  # committed without its ack, or unknown_outcome
                self.unknown.setdefault(key, set()).add(digest_of(value))
            return False
        ack = Ack(key, written.version, written.seq, digest_of(value))
        self.acks.setdefault(key, []).append(ack)
        self.recent.append(ack)
        del self.recent[:-RECENT]
        self.result.acked += 1
        return True

    async def reader(self, number: int) -> None:
        seen: dict[str, int] = {}
        wipes = self.wipes
        while not self.stopping.is_set():
            if wipes != self.wipes:  # a new history from the restore: start over
                seen.clear()
                wipes = self.wipes
            followers = [p for p in self.pods if p.ordinal != 0 and p.url and p.ready]
            if not followers or not self.recent:
                await self.pause(0.05)
                continue
            await self.read(random.choice(followers), random.choice(self.recent), seen)

    async def read(self, pod: PodInfo, ack: Ack, seen: dict[str, int]) -> None:
        assert pod.url is not None
        wipes = self.wipes
        try:
            kv = await self.client(pod.url)
            item = await kv.get(ack.key, min_seq=ack.seq, timeout=READ_WAIT)
            if wipes != self.wipes:
                return  # the manager lost its volume meanwhile: its seqs were given again
        except KeyNotFound:
            if wipes != self.wipes:
                return
            self.result.reads += 1
            self.violation(
                "read-your-writes",
                f"{pod.name}: {ack.key} not found at seq >= "
                f"{ack.seq} (acknowledged version {ack.version})",
            )
            return
        except (ClientError, ConnectionFailed):
            self.result.reads_unavailable += 1
            return
        self.result.reads += 1
        if item.version < ack.version:
            self.violation(
                "read-your-writes",
                f"{pod.name}: {ack.key} at version {item.version}"
                f" after version {ack.version} was acknowledged at seq {ack.seq}",
            )
        previous = seen.get(item.served_by or pod.name, 0)
        if item.seq < previous:
            self.violation("monotonic reads", f"{pod.name}: seq {item.seq} after {previous}")
        seen[item.served_by or pod.name] = max(previous, item.seq)

    # --- disruption and watching -----------------------------------------------------------
    async def disruptor(self) -> None:
        """Every interval, delete the next pod of a shuffled round of all of them (so each pod,
        the manager included, goes once a round), graceful and forced in turn."""
        queue: list[str] = []
        force = random.random() < 0.5
        tick = 1
        while not self.stopping.is_set():
            await self.pause(tick * self.args.interval - self.now())
            if self.stopping.is_set() or self.now() >= self.args.duration:
                return
            tick += 1
            if self.restoring:  # no other fault while the wiped manager restores: it needs a
                manager = self.manager()  # follower to restore from (an operator's rule too)
                if manager is None or not manager.ready:
                    continue
                self.restoring = False
            if self.wipe_due:  # waits for a whole set: a follower to hold, one to restore from
                if self.whole():
                    self.wipe_due = False
                    manager = self.manager()
                    if manager is not None:
                        await self.wipe(manager.name, force)
                        force = not force
                continue
            if self.args.pause and tick % 4 == 0:
                await self.pause_one()
                continue
            paused = self.paused_now()
            running = sorted(p.name for p in self.pods if p.url and p.name not in paused)
            fresh = not queue
            queue = [q for q in queue if q in running] or random.sample(running, len(running))
            manager = self.manager()
            if fresh and tick == 2 and self.args.wipe_manager and manager is not None:
                # The first turn is the manager's (a wipe), while the set is still whole.
                queue = [manager.name] + [q for q in queue if q != manager.name]
            if queue:
                pod = queue.pop(0)
                manager = self.manager()
                if self.args.wipe_manager and manager is not None and pod == manager.name:
                    self.manager_turns += 1
                    if self.manager_turns % 3 != 0:  # two manager turns in three
                        self.wipe_due = True
                        continue
                await self.delete(pod, force)
                force = not force

    def whole(self) -> bool:
        paused = self.paused_now()
        ready = [p for p in self.pods if p.url and p.ready and p.name not in paused]
        return len(ready) == len(self.pods) >= 3 and not self.repairing

    def paused_now(self) -> set[str]:
        return {pod for pod, until in self.paused.items() if until > self.now()}

    async def pause_one(self) -> None:
        paused = self.paused_now()
        running = [p.name for p in self.pods if p.url and p.name not in paused]
        if not running:
            return
        pod, seconds = random.choice(running), round(random.uniform(1.0, 40.0), 1)
        event = Deletion(round(self.now(), 2), pod, False, kind="pause", seconds=seconds)
        self.result.deletions.append(event)
        try:
            await self.target.pause(pod, seconds)
            self.paused[pod] = self.now() + seconds
        except TargetError as exc:
            event.error = str(exc)

    async def wipe(self, manager: str, force: bool) -> None:
        """Delete the manager with its volume while a follower is held stopped past the
        restore's wait: the restore goes on without it."""
        followers = [p.name for p in self.pods if p.ordinal != 0]
        held, hold = random.choice(followers), self.args.restore_wait + 3.0
        event = Deletion(round(self.now(), 2), manager, force, kind="wipe", held=held, seconds=hold)
        self.result.deletions.append(event)
        try:
            await self.target.pause(held, hold)
            self.paused[held] = self.now() + hold
            await self.pause(0.3)
            # From here the manager's seqs may be handed out again, on another history: reads
            # and seqs are compared within one history only. The acknowledged writes are all
            # checked at the end (on a follower each, since they were acked by one).
            self.wipes += 1
            self.recent.clear()
            self.restoring = True
            await self.target.delete(manager, force, wipe=True)
        except TargetError as exc:
            event.error = str(exc)
        finally:  # the old process is gone: the new one starts from what it restores
            self.highest_seq.pop(manager, None)
            self.seq_resets += 1
        await self.refresh()

    async def delete(self, pod: str, force: bool) -> None:
        deletion = Deletion(round(self.now(), 2), pod, force)
        self.result.deletions.append(deletion)
        try:
            await self.target.delete(pod, force)
        except TargetError as exc:
            deletion.error = str(exc)
        await self.refresh()

    async def sampler(self) -> None:
        while not self.stopping.is_set():
            await self.refresh()
            live = [p for p in self.pods if p.url]
            statuses = await asyncio.gather(*(self.sample(p) for p in live))
            self.one_digest_per_seq([s for s in statuses if s is not None])
            for pod, st in zip(live, statuses, strict=True):
                if st is not None and st.get("diverged"):
                    self.repair_soon(pod, st)
            await self.pause(self.target.poll)

    def one_digest_per_seq(self, statuses: list[dict[str, Any]]) -> None:
        """No two ready replicas at one seq with two digests (one look at every pod)."""
        seen: dict[int, tuple[str, str]] = {}
        for st in statuses:
            if not st.get("ready") or st.get("digest") is None:
                continue
            seq, digest, pod = int(st["applied_seq"]), str(st["digest"]), str(st.get("pod"))
            if seq in seen and seen[seq][0] != digest:
                self.violation(
                    "two digests at one seq",
                    f"{seen[seq][1]} and {pod} are both ready at seq {seq} with digests "
                    f"{seen[seq][0]} and {digest}",
                )
            seen[seq] = (digest, pod)

    async def sample(self, pod: PodInfo) -> dict[str, Any] | None:
        assert pod.url is not None
        resets = self.seq_resets
        try:
            status: dict[str, Any] = dict(await (await self.client(pod.url)).status())
        except (ClientError, ConnectionFailed):
            return None
        if resets != self.seq_resets:
            return status
        seq, before = int(status.get("applied_seq", 0)), self.highest_seq.get(pod.name, 0)
        if seq < before:
            self.violation("seq went backwards", f"{pod.name}: applied seq {seq} after {before}")
        self.highest_seq[pod.name] = max(seq, before)
        return status

    async def progress(self) -> None:
        tty = sys.stderr.isatty()
        while not self.stopping.is_set():
            await self.pause(1.0 if tty else 10.0)
            r = self.result
            line = (
                f"[{self.now():5.1f}s/{self.args.duration:g}s] writes {r.acked} ok "
                f"{r.failed_writes} failed | reads {r.reads} | deletions "
                f"{len(r.deletions)} | violations {len(r.violations)}"
            )
            print(("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr)
        if tty:
            print(file=sys.stderr)

    # --- the run ---------------------------------------------------------------------------
    async def run(self) -> Result:
        await self.wait(self.all_ready, self.args.ready_timeout, "every pod to be ready")
        self.start = time.monotonic()
        tasks = [asyncio.create_task(self.writer(i)) for i in range(self.args.writers)]
        tasks += [asyncio.create_task(self.reader(i)) for i in range(self.args.readers)]
        tasks += [asyncio.create_task(f()) for f in (self.disruptor, self.sampler, self.progress)]
        try:
            await self.pause(self.args.duration)
        finally:
            self.stopping.set()
            await asyncio.gather(*tasks)
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.availability()
        await self.wait(self.ready_or_diverged, self.args.ready_timeout, "every pod to settle")
        await self.repair()
        await self.wait(self.all_ready, self.args.ready_timeout, "every pod to be ready again")
        await self.verify()
        return self.result

    async def close(self) -> None:
        for kv in self.clients.values():
            await kv.close()
        if self.http is not None:
            await self.http.close()

    async def statuses(self) -> list[tuple[PodInfo, dict[str, Any]]]:
        await self.refresh()
        out = []
        for pod in self.pods:
            if pod.url:
                with contextlib.suppress(ClientError, ConnectionFailed):
                    out.append((pod, dict(await (await self.client(pod.url)).status())))
        return out

    async def ready_or_diverged(self) -> bool:
        expected = await self.target.replicas()
        found = await self.statuses()
        return len(found) == expected and all(
            st.get("ready") or st.get("diverged") for _, st in found
        )

    async def repair(self) -> None:
        """Each diverged follower: read what it holds past the fork (as `kvstore repair export`
        does), then resync it from the manager (as `kvstore repair resync` does)."""
        for pod, st in await self.statuses():
            if isinstance(st.get("diverged"), dict) and pod.name not in self.repairing:
                await self.repair_pod(pod, st)

    def repair_soon(self, pod: PodInfo, st: dict[str, Any]) -> None:
        """During the run: an operator repairs a diverged follower as soon as it is seen."""
        manager = self.manager()
        if manager is None or not manager.ready:
            return  # a resync needs the manager's snapshot
        if pod.name in self.repairing or not isinstance(st.get("diverged"), dict):
            return
        self.repairing.add(pod.name)

        async def work() -> None:
            try:
                await self.repair_pod(pod, st)
            except (TargetError, aiohttp.ClientError, OSError, TimeoutError, ValueError):
                pass  # tried again at the end
            finally:
                self.repairing.discard(pod.name)

        self.tasks.add(task := asyncio.create_task(work()))
        task.add_done_callback(self.tasks.discard)

    async def repair_pod(self, pod: PodInfo, st: dict[str, Any]) -> None:
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        diverged = st.get("diverged")
        if isinstance(diverged, dict) and pod.url is not None:
            fork = int(diverged.get("seq") or 1)
            url = f"{pod.url}/v1/replication/log"
            async with self.http.get(url, params={"from": str(fork)}, headers=headers) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise TargetError(
                        f"{pod.name}: its log past seq {fork}: {resp.status} {body[:200]!r}"
                    )
            for line in body.splitlines():
                msg = json.loads(line)
                for change in decode_changes(msg) if msg.get("t") == "c" else []:
                    if change.value is not None:
                        self.recoverable.add((change.key, digest_of(change.value)))
            async with self.http.post(
                f"{pod.url}/v1/repair/resync", json={}, headers=headers
            ) as resp:
                if resp.status != 200:
                    raise TargetError(
                        f"{pod.name}: resync: {resp.status} {(await resp.text())[:200]}"
                    )
            self.result.repaired.append(f"{pod.name} (diverged at seq {fork})")
            self.highest_seq.pop(pod.name, None)  # resynced: its seq follows the manager now
            self.seq_resets += 1

    async def wait(self, check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise TargetError(f"timed out after {timeout:g}s waiting for {what}")
            await asyncio.sleep(0.2)

    async def all_ready(self) -> bool:
        await self.refresh()
        expected = await self.target.replicas()
        return len(self.pods) == expected and all(p.ready and p.url for p in self.pods)

    def availability(self) -> None:
        """For each deletion: the writes that failed until the next deletion, and how long
        after the deletion writes succeeded again, once the last of those failures was over."""
        ends = [d.at for d in self.result.deletions[1:]] + [float("inf")]
        for deletion, end in zip(self.result.deletions, ends, strict=True):
            window = [(t, ok) for t, ok in self.timeline if deletion.at <= t < end]
            failed = [t for t, ok in window if not ok]
            deletion.failed_writes = len(failed)
            if failed:
                back = next((t for t, ok in window if ok and t > failed[-1]), None)
                deletion.writes_ok_after = None if back is None else round(back - deletion.at, 2)
        self.result.keys = len(self.acks)

    # --- the verdict -----------------------------------------------------------------------
    async def verify(self) -> None:
        manager = self.manager()
        assert manager is not None and manager.url is not None
        target_seq = (await (await self.client(manager.url)).digest()).seq
        await self.wait(
            lambda: self.converged(target_seq),
            self.args.ready_timeout,
            f"every replica to reach seq {target_seq}",
        )
        digests = {r["digest"] for r in self.result.replicas.values()}
        if len(digests) != 1:
            self.violation(
                "diverged",
                "replicas at seq "
                f"{target_seq} disagree: "
                + ", ".join(f"{n} {r['digest']}" for n, r in self.result.replicas.items()),
            )
        for pod in self.pods:
            await self.check_writes(pod)
        for pod in self.pods:
            if pod.url and await self.sample(pod) is None:
                self.violation("unreachable", f"{pod.name} did not answer /v1/status at the end")

    async def converged(self, seq: int) -> bool:
        await self.refresh()
        for pod in self.pods:
            if pod.url is None:
                return False
            try:
                digest = await (await self.client(pod.url)).digest()
            except (ClientError, ConnectionFailed):
                return False
            self.result.replicas[pod.name] = {"seq": digest.seq, "digest": digest.digest}
        return all(r["seq"] >= seq for r in self.result.replicas.values())

    async def check_writes(self, pod: PodInfo) -> None:
        assert pod.url is not None
        found: dict[str, tuple[int, str]] = {}
        async for page in (await self.client(pod.url)).list_all(self.prefix, values=True):
            found.update((i.key, (i.version, digest_of(i.value or b""))) for i in page.items)
        lost = recoverable = 0
        for key, acks in self.acks.items():
            last = max(acks, key=lambda a: a.version)
            version, value = found.get(key, (0, ""))
            ok = (version == last.version and value == last.value) or (
                version > last.version and value in self.attempted.get(key, set())
            )
            if not ok and (key, last.value) in self.recoverable:
                recoverable += 1  # on a diverged follower: `kvstore repair export` has it
                continue
            if not ok:
                lost += 1
                if lost <= 10:
                    self.violation(
                        "lost write",
                        f"{pod.name}: {key} acknowledged at version "
                        f"{last.version} (seq {last.seq}); replica has "
                        f"{'nothing' if not version else f'version {version}'}",
                    )
        if lost > 10:
            self.violation("lost write", f"{pod.name}: {lost - 10} more keys lost")
        self.result.replicas.setdefault(pod.name, {})["lost"] = lost
        if pod.ordinal == 0:
            self.result.recoverable = recoverable
            self.check_unknown(found)

    def check_unknown(self, found: dict[str, tuple[int, str]]) -> None:
        """Writes of unknown outcome: present or absent, never applied twice (a key's version
        never exceeds the writes attempted on it)."""
        self.result.unknown_outcome = len(self.unknown)
        for key in self.unknown:
            version = found.get(key, (0, ""))[0]
            if version:
                self.result.unknown_present += 1
            if version > self.attempts.get(key, 0):
                self.violation(
                    "applied twice",
                    f"{key}: version {version} after {self.attempts.get(key, 0)} writes",
                )


# --- the report ------------------------------------------------------------------------------
def render(r: Result) -> str:
    """The report a person reads at a glance."""
    by_pod: dict[str, int] = {}
    for d in r.deletions:
        by_pod[d.pod] = by_pod.get(d.pod, 0) + 1
    forced = sum(d.force for d in r.deletions if d.kind != "pause")
    wipes = sum(d.kind == "wipe" for d in r.deletions)
    pauses = sum(d.kind == "pause" for d in r.deletions)
    lines = [
        f"kvstore chaos: target {r.target}, {r.duration:g}s, {r.writers} writers, "
        f"{r.readers} readers, a deletion every {r.interval:g}s",
        f"deletions   {len(r.deletions)} ("
        + ", ".join(f"{p} x{n}" for p, n in sorted(by_pod.items()))
        + f"; {len(r.deletions) - pauses - forced} graceful, {forced} forced; "
        f"{wipes} with the volume, {pauses} pauses)",
        f"writes      {r.acked} acknowledged ({r.acked / max(r.duration, 1e-9):.0f}/s) on "
        f"{r.keys} keys, {r.failed_writes} failed",
        f"reads       {r.reads} checked on followers, {r.reads_unavailable} unavailable",
        f"unknown     {r.unknown_outcome} writes of unknown outcome ({r.unknown_present} "
        f"present, {r.unknown_outcome - r.unknown_present} absent, none applied twice unless "
        "said below)",
        f"repair      {r.recoverable} acknowledged writes recoverable by `kvstore repair "
        f"export`; resynced: {', '.join(r.repaired) or 'none'}",
        *_availability(r),
        "replicas:",
        *(
            f"  {name:<6} seq {rep.get('seq', '?')}  digest {rep.get('digest', '?')}  "
            f"lost writes {rep.get('lost', '?')}"
            for name, rep in sorted(r.replicas.items())
        ),
    ]
    counts = {k: sum(v["kind"] == k for v in r.violations) for k in VIOLATION_KINDS}
    lines.append("checks:     " + ", ".join(f"{k} {n}" for k, n in counts.items()))
    lines += [f"  VIOLATION {v['kind']}: {v['message']}" for v in r.violations[:30]]
    verdict = "PASS" if r.passed else f"FAIL ({len(r.violations)} violations)"
    return "\n".join([*lines, f"verdict:    {verdict}"])


def _availability(r: Result) -> list[str]:
    lines = [
        "availability:",
        "   #  at       pod    mode      failed writes  writes ok again after",
    ]
    for i, d in enumerate(r.deletions, 1):
        back = "-" if not d.failed_writes else "not in the run"
        back = back if d.writes_ok_after is None else f"{d.writes_ok_after:.2f}s"
        mode = "forced" if d.force else "graceful"
        if d.kind == "wipe":
            mode += f" +volume, {d.held} held {d.seconds:g}s"
        elif d.kind == "pause":
            mode = f"paused {d.seconds:g}s"
        note = f"  ({d.error})" if d.error else ""
        lines.append(
            f"  {i:>2}  {d.at:>6.1f}s  {d.pod:<6} {mode:<9} {d.failed_writes:>13}  {back}{note}"
        )
    return lines


# --- the command -----------------------------------------------------------------------------
def make_target(args: argparse.Namespace) -> Target:
    if args.target == "local":
        return LocalTarget(Path(args.dir).resolve())
    namespace = args.namespace or os.environ.get("POD_NAMESPACE") or None
    return KubectlTarget(namespace, args.statefulset, args.selector, args.port, args.kubectl)


async def _run(args: argparse.Namespace) -> int:
    target = make_target(args)
    chaos = Chaos(target, args, token_of(args))
    try:
        result = await chaos.run()
    except TargetError as exc:
        print(f"kvstore chaos: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await chaos.close()
        await target.close()
    if args.json:
        print(json.dumps({**asdict(result), "passed": result.passed}, indent=2))
    else:
        print(render(result))
    return EXIT_OK if result.passed else EXIT_FAILED


def _chaos(args: argparse.Namespace) -> int:
    if args.duration <= 0 or args.interval <= 0 or args.writers < 1 or args.readers < 0:
        print(
            "kvstore chaos: --duration, --interval and --writers must be positive", file=sys.stderr
        )
        return EXIT_USAGE
    return asyncio.run(_run(args))


EXAMPLES = """\
The run exits 0 when every check holds, 1 on any violation (each one is listed).

examples:
  kvstore local up --detach && kvstore chaos --duration 30
  kvstore chaos --duration 120 --interval 3 --writers 32 --json > chaos.json
  kvstore --token "$KV_AUTH_TOKEN" chaos --target kubectl --namespace kv
"""


def register(sub: Sub) -> None:
    p = sub.add_parser(
        "chaos",
        help="delete pods under load, then a consistency verdict",
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--target",
        choices=("local", "kubectl"),
        default="local",
        help="local: the cluster of `kvstore local up` in --dir; kubectl: a StatefulSet in "
        "Kubernetes, through kubectl (default: local)",
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    p.add_argument("--interval", type=float, default=5.0, help="seconds between deletions (5)")
    p.add_argument("--writers", type=int, default=16, help="concurrent writers (16)")
    p.add_argument("--readers", type=int, default=4, help="concurrent readers (4)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--wipe-manager",
        action="store_true",
        help="two manager deletions in three take its volume too, with a follower held stopped",
    )
    p.add_argument(
        "--pause", action="store_true", help="some turns freeze a pod (SIGSTOP) for 1-40 s"
    )
    p.add_argument(
        "--restore-wait",
        type=float,
        default=30.0,
        help="the pods' KV_RESTORE_WAIT: how long a follower is held stopped past (30)",
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the pods to be ready and to converge (120)",
    )
    add_token_argument(p)
    p.add_argument("--dir", default=".kvstore", help="local: the cluster directory (.kvstore)")
    p.add_argument(
        "--namespace",
        help="kubectl: the namespace (default: $POD_NAMESPACE or kubectl's current one)",
    )
    p.add_argument("--statefulset", default="kv", help="kubectl: the StatefulSet (kv)")
    p.add_argument("--selector", default=DEFAULT_SELECTOR, help="kubectl: its pods' labels")
    p.add_argument("--port", type=int, default=8080, help="kubectl: the pods' port (8080)")
    p.add_argument("--kubectl", default="kubectl", help="kubectl: the command (kubectl)")
    p.set_defaults(func=_chaos)
