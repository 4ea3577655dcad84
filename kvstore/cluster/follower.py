"""The follower loop: find the manager by DNS, stream its change log, apply it, report back.

Shape: connect (DNS resolved on every attempt) -> snapshot if we have no data or fell behind
the retained log -> stream from applied_seq+1. Three tasks run while connected: the reader
parses lines (no line for 5 s means the link is dead), the applier applies whatever has arrived
as one transaction, the acker tells the manager how far we are. Any failure ends the session;
the loop waits with capped, jittered exponential backoff, reset once a session connects, and
logs "recovered" once when it does. Cancellation always propagates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from kvstore import wire
from kvstore.cluster.node import Node
from kvstore.cluster.peer import AcksUnsupported, SnapshotTaken, decode_line
from kvstore.errors import Compacted, Diverged, EpochMismatch, KVError, ManagerUnavailable
from kvstore.model import Change
from kvstore.store.snapshot import Header
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

    async def run(self) -> None:
        while True:
            try:
                await self._session()
            except Compacted:
                log.info("behind the manager's retained log: taking a snapshot")
                self.need_snapshot = True
            except (EpochMismatch, Diverged) as exc:
                self._report(exc)
            except Exception as exc:  # any failure ends this session only; cancellation passes
                self._failed(f"{type(exc).__name__}: {exc}")
            finally:
                self._disconnected()
            await asyncio.sleep(self.backoff.next())

    def _report(self, exc: KVError) -> None:
        if isinstance(exc, EpochMismatch):
            # The manager's epoch: `ours` in its answer, `theirs` when raised here.
            side = "ours" if exc.wire_status is not None else "theirs"
            manager = exc.details.get(side) or exc.details.get("epoch") or exc.message
            self.progress.epoch_mismatch = str(manager)
        else:
            self.progress.diverged = exc.message
        self._failed(exc.message)

    def _failed(self, reason: str) -> None:
        # A failure that ends a connected session is said by `_disconnected`, with this reason.
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
        st = self.store.state
        params = {"from": str(st.seq + 1), "epoch": st.epoch or "", "pod": self.pod}
        async with self.peers.stream(url, params) as lines:
            hello = decode_line(await anext(lines, b"{}"))
            self._connected(url, hello)
            await first_error(self._pump(lines), self._acker(url))

    def _connected(self, url: str, hello: dict[str, Any]) -> None:
        p = self.progress
        p.connected, p.manager_url, p.lost_at = True, url, None
        p.manager_seq = max(p.manager_seq, int(hello.get("seq", 0)))
        p.last_heard = time.monotonic()
        p.epoch_mismatch = p.diverged = None
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

    async def _snapshot(self, url: str) -> None:
        taken = await self.peers.take_snapshot(
            url, self.store, self._check_snapshot, self._snapshot_progress
        )
        p, header = self.progress, taken.header
        p.snapshots_installed += 1
        p.snapshot_progress = None
        p.manager_seq = max(p.manager_seq, header.seq)
        self.need_snapshot = False
        if self.on_snapshot is not None:
            self.on_snapshot(taken)
        log.info(
            "snapshot: installed %d keys at seq %d in %.2fs", header.keys, header.seq, taken.seconds
        )

    def _check_snapshot(self, header: Header) -> None:
        ours = self.store.state.epoch
        if ours is not None and header.epoch != ours:
            raise EpochMismatch(
                f"the manager's epoch is {header.epoch}, ours is {ours}",
                ours=ours,
                theirs=header.epoch,
            )
        log.info("snapshot: installing %d keys at seq %d", header.keys, header.seq)

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
