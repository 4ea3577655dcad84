"""The follower loop: find the manager by DNS, stream its change log, apply it, report back.

Shape: connect (DNS resolved on every attempt) -> snapshot if we have no data or fell behind
the retained log -> stream from applied_seq+1, sending the term of our last change: the manager
checks that it is in its history (409 diverged otherwise: we apply nothing, take no snapshot
over our data, keep it, and say so until an operator runs `kvstore repair`). A snapshot we take
while holding data is checked the same way, by the manager and again here on its header.
`resync` (POST /v1/repair/resync) is the one way past a divergence: a backup of our data
first, then the manager's snapshot. Three tasks run while connected: the reader
parses lines (no line for 5 s means the link is dead), the applier applies whatever has arrived
as one transaction, the acker tells the manager how far we are. Any failure ends the session;
the loop waits with capped, jittered exponential backoff, reset once a session connects, and
logs "recovered" once when it does. Cancellation always propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from kvstore import wire
from kvstore.cluster.node import Node
from kvstore.cluster.peer import AcksUnsupported, PeerError, SnapshotTaken, decode_line
from kvstore.errors import (
    Compacted,
    Diverged,
    EpochMismatch,
    InvalidRequest,
    KVError,
    ManagerUnavailable,
    TooLarge,
)
from kvstore.model import Change
from kvstore.store.backup import copy_database
from kvstore.store.snapshot import Header
from kvstore.store.terms import fork_point, normalize
from kvstore.wire import ROW_FRAMING

log = logging.getLogger("kvstore.follower")
APPLY_CHUNK = 5000
MAX_PENDING_BYTES = 16 << 20  # read-ahead: bytes of keys and values received, not yet applied
SnapshotHook = Callable[[SnapshotTaken], None]  # metrics: a snapshot was installed


class Backoff:
    def __init__(self, base: float = 0.05, cap: float = 2.0) -> None:
        self.base, self.cap, self.attempt = base, cap, 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self.attempt = 0


async def first_error(*coros: Coroutine[Any, Any, None]) -> None:
    """Run the coroutines together until one fails; cancel the rest; raise its error."""
    tasks = [asyncio.create_task(c) for c in coros]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@dataclass
class _Resync:
    backup: str | None  # where to write the backup of our data (None: in the data directory)
    done: asyncio.Future[dict[str, Any]]


class Follower:
    def __init__(self, node: Node, on_snapshot: SnapshotHook | None = None) -> None:
        self.node, self.on_snapshot = node, on_snapshot
        self.store = node.store
        self.progress = node.link
        self.peers = node.peers
        self.pod = node.settings.pod_name
        self.backoff = Backoff()
        self.need_snapshot = False
        self.failing = False
        self._resync: _Resync | None = None
        self._session_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    async def run(self) -> None:
        while True:
            if self._resync is not None:
                await self._run_resync(self._resync)
                continue
            try:
                await self._one_session()
            except Compacted:
                log.info("behind the manager's retained log: taking a snapshot")
                self.need_snapshot = True
            except (EpochMismatch, Diverged) as exc:
                self._report(exc)
            except Exception as exc:  # any failure ends this session only; cancellation passes
                self._failed(f"{type(exc).__name__}: {exc}", _is_refusal(exc))
            finally:
                self._disconnected()
            await self._pause(self.backoff.next())

    async def _one_session(self) -> None:
        """A session as a task of its own, so that a resync request can end it."""
        task = asyncio.create_task(self._session(), name="kv-follower-session")
        self._session_task = task
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self._resync is None or (current is not None and current.cancelling()):
                raise
        finally:
            self._session_task = None

    async def _pause(self, seconds: float) -> None:
        self._wake.clear()
        if self._resync is None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._wake.wait()

    def _report(self, exc: KVError) -> None:
        p = self.progress
        if isinstance(exc, EpochMismatch):
            # The manager's epoch: `ours` in its answer, `theirs` when raised here.
            side = "ours" if exc.wire_status is not None else "theirs"
            manager = exc.details.get(side) or exc.details.get("epoch") or exc.message
            p.epoch_mismatch = str(manager)
        else:
            seq = self._fork_of(exc)
            if p.diverged_seq != seq:
                st = self.store.state
                log.error(
                    "DIVERGED at seq %s: our history (seq %d, term %d) is not the manager's; "
                    "applying nothing and keeping our data. `kvstore repair status` shows it, "
                    "`kvstore repair export` saves what we hold past the fork: %s",
                    seq,
                    st.seq,
                    st.last_term,
                    exc.message,
                )
            p.diverged, p.diverged_seq = exc.message, seq
        self._failed(exc.message, True)

    def _fork_of(self, exc: KVError) -> int | None:
        """The first seq where our history and the manager's part: exact when the manager's
        answer carries its term table, else the manager's figure."""
        seq = exc.details.get("seq")
        st = self.store.state
        try:
            theirs = normalize(exc.details.get("terms") or ())
            manager_seq = int(exc.details["manager_seq"])
        except (KeyError, TypeError, ValueError):
            return int(seq) if isinstance(seq, int) else None
        exact = fork_point(st.terms, st.seq, theirs, manager_seq)
        return exact if exact is not None else (int(seq) if isinstance(seq, int) else None)

    def _failed(self, reason: str, refusal: bool = False) -> None:
        # A failure that ends a connected session is said by `_disconnected`, with this reason.
        # A refusal (the manager answered, but not with a stream we can follow) makes us not
        # ready; a manager we cannot reach at all does not (we serve stale reads meanwhile).
        self.progress.refused = reason if refusal else None
        repeated = self.failing and reason == self.progress.last_error
        if not self.progress.connected and not repeated:
            log.warning("replication from the manager failed: %s", reason)
        self.failing = True
        self.progress.last_error = reason

    def _disconnected(self) -> None:
        p = self.progress
        if p.connected:
            p.connected = False
            p.lost_at = time.monotonic()
            p.reconnects += 1
            level = logging.WARNING if p.last_error else logging.INFO
            why = p.last_error or "this pod is stopping"
            log.log(level, "disconnected from the manager at seq %d: %s", self.store.state.seq, why)
        p.manager_url = None

    async def _session(self) -> None:
        url = await self.node.discovery.manager_url()
        if self.store.state.epoch is None or self.need_snapshot:
            await self._snapshot(url)
        params = {**self._held(), "pod": self.pod}
        async with self.peers.stream(url, params) as lines:
            hello = decode_line(await anext(lines, b"{}"))
            if hello.get("t") not in ("hello", None) or "seq" not in hello:
                raise PeerError("the replication stream did not start with a hello line")
            try:
                terms = wire.hello_terms(hello)
                manager_seq = int(hello["seq"])
            except (ValueError, TypeError) as exc:
                raise PeerError(f"a bad hello line from the manager: {exc}") from None
            await self.store.adopt_terms(terms)
            self._connected(url, manager_seq)
            await first_error(self._pump(lines), self._acker(url))

    def _held(self) -> dict[str, str]:
        """What we hold, for the manager's history check: the seq after our last change, our
        epoch, and the term of that change."""
        st = self.store.state
        held = {"from": str(st.seq + 1), "epoch": st.epoch or ""}
        if st.seq > 0:
            held["term"] = str(st.last_term)
        return held

    def _connected(self, url: str, manager_seq: int) -> None:
        p = self.progress
        p.connected, p.manager_url, p.lost_at = True, url, None
        p.manager_seq = manager_seq  # the manager's own figure, even below the last one heard
        p.last_heard = time.monotonic()
        p.epoch_mismatch = p.diverged = p.diverged_seq = p.refused = None
        self.backoff.reset()
        word = "reconnected" if p.reconnects else "connected"
        word = "recovered: " + word if self.failing else word
        log.info(
            "%s to the manager %s at seq %d (manager at %d)",
            word,
            url,
            self.store.state.seq,
            p.manager_seq,
        )
        self.failing = False
        p.last_error = None

    async def _pump(self, lines: AsyncIterator[bytes]) -> None:
        pending = _ReadAhead()
        await first_error(self._read(lines, pending), self._apply(pending))

    async def _read(self, lines: AsyncIterator[bytes], pending: _ReadAhead) -> None:
        p = self.progress
        async for line in lines:
            msg = decode_line(line)
            p.last_heard = time.monotonic()
            p.manager_seq = max(p.manager_seq, int(msg.get("seq", 0)))
            if msg.get("t") == "c":
                pending.add(wire.decode_changes(msg))
                while pending.bytes > MAX_PENDING_BYTES:
                    pending.drained.clear()
                    await pending.drained.wait()
            elif self.store.state.seq >= p.manager_seq:
                p.caught_up_at = time.monotonic()
        raise ManagerUnavailable("the manager closed the replication stream")

    async def _apply(self, pending: _ReadAhead) -> None:
        epoch = self.store.state.epoch
        assert epoch is not None
        while True:
            await pending.arrived.wait()
            pending.arrived.clear()
            while pending.changes:
                batch = pending.take(APPLY_CHUNK)
                await self.store.apply(batch, epoch)
                if self.store.state.seq >= self.progress.manager_seq:
                    self.progress.caught_up_at = time.monotonic()

    async def _acker(self, url: str) -> None:
        """Report the applied seq after each apply and every second: over one long request
        when the manager offers it, else a request per report (one in flight)."""
        try:
            await self._stream_acks(url)
        except AcksUnsupported:
            log.info("the manager takes acks one request at a time")
            await self._post_acks(url)

    async def _stream_acks(self, url: str) -> None:
        await self.peers.post_acks(url, self.pod, self._ack_lines())
        raise ManagerUnavailable("the manager ended the acks request")

    async def _ack_lines(self) -> AsyncIterator[bytes]:
        """A line with the applied seq each time it moves (what moved while the last line was
        being sent goes in the next one), and every second."""
        async for seq in self._applied():
            yield wire.ack_line(seq)

    async def _applied(self) -> AsyncIterator[int]:
        changed = asyncio.Event()

        def listener(_: list[Change]) -> None:
            changed.set()

        self.store.add_listener(listener)
        try:
            while True:
                changed.clear()
                yield self.store.state.seq
                if not changed.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await changed.wait()
        finally:
            self.store.remove_listener(listener)

    async def _post_acks(self, url: str) -> None:
        async for seq in self._applied():
            await self.peers.post_ack(url, self.pod, seq)

    async def _snapshot(self, url: str, resync: bool = False) -> None:
        st = self.store.state
        held = self._held() if st.epoch is not None and not resync else None
        check = self._check_resync if resync else self._check_snapshot
        taken = await self.peers.take_snapshot(
            url, self.store, check, self._snapshot_progress, held
        )
        p, header = self.progress, taken.header
        p.snapshots_installed += 1
        p.snapshot_progress = None
        p.manager_seq = header.seq
        self.need_snapshot = False
        if self.on_snapshot is not None:
            self.on_snapshot(taken)
        log.info(
            "snapshot: installed %d keys at seq %d in %.2fs", header.keys, header.seq, taken.seconds
        )

    def _check_snapshot(self, header: Header) -> None:
        st = self.store.state
        ours = st.epoch
        if ours is not None and header.epoch != ours:
            raise EpochMismatch(
                f"the manager's epoch is {header.epoch}, ours is {ours}",
                ours=ours,
                theirs=header.epoch,
            )
        if ours is not None and st.seq > 0:
            # Never over a history of our own: the snapshot must contain our last change.
            fork = fork_point(st.terms, st.seq, header.terms, header.seq) if header.terms else None
            if fork is None and header.seq < st.seq:
                fork = header.seq + 1
            if fork is not None:
                raise Diverged(
                    f"the manager's snapshot (seq {header.seq}) does not hold our history "
                    f"(seq {st.seq}, term {st.last_term}): they part at seq {fork}",
                    seq=fork,
                )
        log.info("snapshot: installing %d keys at seq %d", header.keys, header.seq)

    def _check_resync(self, header: Header) -> None:
        log.warning(
            "resync: replacing our data (seq %d, epoch %s) with the manager's snapshot "
            "(seq %d, epoch %s, %d keys)",
            self.store.state.seq,
            self.store.state.epoch,
            header.seq,
            header.epoch,
            header.keys,
        )

    # --- kvstore repair resync -----------------------------------------------------------------
    async def resync(self, backup: str | None) -> dict[str, Any]:
        """Write a backup of our data, then replace it with a snapshot from the manager. Ends a
        running session first; returns what was done."""
        if self._resync is not None:
            raise InvalidRequest("a resync is already running on this pod")
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._resync = _Resync(backup, done)
        if self._session_task is not None:
            self._session_task.cancel()
        self._wake.set()
        return await asyncio.shield(done)

    async def _run_resync(self, job: _Resync) -> None:
        try:
            before = self.store.state
            name = job.backup or f"resync-backup-seq{before.seq}-{int(time.time())}.db"
            path = os.path.join(self.store.data_dir, name)  # a plain name, checked by the API
            size = await asyncio.to_thread(_backup, self.store.path, path)
            log.warning(
                "resync: our data (seq %d) backed up to %s (%d bytes)", before.seq, path, size
            )
            url = await self.node.discovery.manager_url()
            await self._snapshot(url, resync=True)
            p, after = self.progress, self.store.state
            p.diverged = p.diverged_seq = p.epoch_mismatch = p.refused = None
            result = {
                "pod": self.pod,
                "backup": path,
                "backup_bytes": size,
                "before": {"epoch": before.epoch, "seq": before.seq},
                "after": {"epoch": after.epoch, "seq": after.seq, "keys": after.keys},
            }
            log.warning("resync: done; now at seq %d of epoch %s", after.seq, after.epoch)
            if not job.done.done():
                job.done.set_result(result)
        except Exception as exc:
            log.warning("resync failed: %s: %s", type(exc).__name__, exc)
            if not job.done.done():
                job.done.set_exception(exc)
        finally:
            self._resync = None

    def _snapshot_progress(self, done: int, total: int) -> None:
        before = self.progress.snapshot_progress
        self.progress.snapshot_progress = (done, total)
        if total and (before is None or done * 10 // total > before[0] * 10 // max(total, 1)):
            log.info("snapshot: %d of %d keys (%d%%)", done, total, done * 100 // total)


class _ReadAhead:
    """Changes received and not yet applied, counted in bytes of keys and values: the reader
    stops reading the stream while they are over MAX_PENDING_BYTES."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.sizes: list[int] = []
        self.bytes = 0
        self.arrived = asyncio.Event()
        self.drained = asyncio.Event()

    def add(self, changes: list[Change]) -> None:
        sizes = [len(c.key) + len(c.value or b"") + ROW_FRAMING for c in changes]
        self.changes.extend(changes)
        self.sizes.extend(sizes)
        self.bytes += sum(sizes)
        self.arrived.set()

    def take(self, most: int) -> list[Change]:
        """Up to `most` changes, and no more once 1/4 of MAX_PENDING_BYTES is taken."""
        n, size = 0, 0
        while n < min(most, len(self.changes)) and (n == 0 or size < MAX_PENDING_BYTES // 4):
            size += self.sizes[n]
            n += 1
        batch = self.changes[:n]
        del self.changes[:n]
        del self.sizes[:n]
        self.bytes -= size
        self.drained.set()
        return batch


def _is_refusal(exc: Exception) -> bool:
    """The manager answered, but with a refusal or something we cannot follow (as opposed to
    not answering at all)."""
    if isinstance(exc, PeerError | InvalidRequest | TooLarge):
        return True
    return isinstance(exc, KVError) and exc.wire_status is not None and 400 <= exc.wire_status < 500


def _backup(db: str, path: str) -> int:
    """A consistent copy of our database at `path`, which must not exist yet."""
    if os.path.exists(path):
        raise InvalidRequest(f"{path} exists already: name another backup file")
    return copy_database(db, path)
