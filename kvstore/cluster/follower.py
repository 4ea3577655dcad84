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
import json
import logging
import random
import time
from collections.abc import AsyncIterator, Coroutine
from typing import Any

import aiohttp

from kvstore.cluster.node import Node
from kvstore.errors import Compacted, Diverged, EpochMismatch, KVError, ManagerUnavailable
from kvstore.model import Change
from kvstore.server.metrics import Metrics
from kvstore.server.replication import ACKS_PATH, decode_changes
from kvstore.store import snapshot
from kvstore.wire import ROW_FRAMING, iter_lines

log = logging.getLogger("kvstore.follower")
HEARTBEAT_TIMEOUT = 5.0
APPLY_CHUNK = 5000
MAX_PENDING_BYTES = 16 << 20  # read-ahead: bytes of keys and values received, not yet applied
ERRORS = {"compacted": Compacted, "epoch_mismatch": EpochMismatch, "diverged": Diverged}


class AcksUnsupported(Exception):
    """The manager has no long acks request (an older version): acks go one at a time."""


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
    def __init__(self, node: Node, metrics: Metrics | None = None) -> None:
        self.node, self.metrics = node, metrics
        self.store = node.store
        self.progress = node.progress
        self.backoff = Backoff()
        self.need_snapshot = False
        self.failing = False

    def _headers(self) -> dict[str, str]:
        token = self.node.settings.replication_token
        return {"Authorization": f"Bearer {token}"} if token else {}

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
            self.progress.epoch_mismatch = str(exc.details.get("epoch") or exc.message)
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
        params = {
            "from": str(st.seq + 1),
            "epoch": st.epoch or "",
            "pod": self.node.settings.pod_name,
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=HEARTBEAT_TIMEOUT)
        async with self.node.session.get(
            f"{url}/v1/replication/stream", params=params, headers=self._headers(), timeout=timeout
        ) as resp:
            await _raise_for(resp)
            lines = iter_lines(resp.content)
            hello = json.loads(await anext(lines))
            self._connected(url, hello)
            await first_error(self._pump(lines), self._acker(url))

    def _connected(self, url: str, hello: dict[str, Any]) -> None:
        p = self.progress
        p.connected, p.manager_url, p.lost_at = True, url, None
        p.manager_seq = max(p.manager_seq, int(hello["seq"]))
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
            msg = json.loads(line)
            p.last_heard = time.monotonic()
            p.manager_seq = max(p.manager_seq, int(msg.get("seq", 0)))
            if msg.get("t") == "c":
                pending.add(decode_changes(msg))
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
        async with self.node.session.post(
            url + ACKS_PATH,
            params={"pod": self.node.settings.pod_name},
            data=self._ack_lines(),
            headers=self._headers() | {"Content-Type": "application/x-ndjson"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=3),
        ) as resp:
            if resp.status in (404, 405):
                raise AcksUnsupported()
            await _raise_for(resp)
        raise ManagerUnavailable("the manager ended the acks request")

    async def _ack_lines(self) -> AsyncIterator[bytes]:
        """A line with the applied seq each time it moves (what moved while the last line was
        being sent goes in the next one), and every second."""
        async for seq in self._applied():
            yield b'{"seq":%d}\n' % seq

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
            await self._post_ack(url, seq)

    async def _post_ack(self, url: str, seq: int) -> None:
        body = {"pod": self.node.settings.pod_name, "seq": seq}
        async with self.node.session.post(
            f"{url}/v1/replication/ack",
            json=body,
            headers=self._headers(),
            timeout=aiohttp.ClientTimeout(total=3),
        ) as resp:
            await _raise_for(resp)

    async def _snapshot(self, url: str) -> None:
        p = self.progress
        started = time.monotonic()
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=3, sock_read=30)
        async with self.node.session.get(
            f"{url}/v1/replication/snapshot",
            params={"pod": self.node.settings.pod_name},
            headers=self._headers(),
            timeout=timeout,
        ) as resp:
            await _raise_for(resp)
            lines = iter_lines(resp.content)
            header = snapshot.parse_header(await anext(lines))
            ours = self.store.state.epoch
            if ours is not None and header.epoch != ours:
                raise EpochMismatch(
                    f"the manager's epoch is {header.epoch}, ours is {ours}", epoch=header.epoch
                )
            log.info("snapshot: installing %d keys at seq %d from %s", header.keys, header.seq, url)
            await snapshot.install(self.store, header, lines, self._snapshot_progress)
            await resp.content.read()  # to the end, so that the manager's send completes
            if self.metrics is not None:
                seconds = time.monotonic() - started
                self.metrics.snapshot_installed(resp.content.total_bytes, seconds)
        p.snapshots_installed += 1
        p.snapshot_progress = None
        p.manager_seq = max(p.manager_seq, header.seq)
        self.need_snapshot = False
        log.info(
            "snapshot: installed %d keys at seq %d in %.2fs",
            header.keys,
            header.seq,
            time.monotonic() - started,
        )

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


async def _raise_for(resp: aiohttp.ClientResponse) -> None:
    """Turn a JSON error answer into the matching domain error."""
    if resp.status < 400:
        return
    try:
        err = (await resp.json())["error"]
        code, message = err["code"], err["message"]
    except (ValueError, KeyError, TypeError, aiohttp.ContentTypeError):
        raise ManagerUnavailable(f"the manager answered {resp.status}") from None
    cls = ERRORS.get(code, ManagerUnavailable)
    details = {k: v for k, v in err.items() if k not in ("code", "message")}
    raise cls(message, **details)
