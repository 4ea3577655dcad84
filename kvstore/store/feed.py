"""The change feed: every change from a seq on, then live, for replication streams and watch.

A subscriber reads the retained log until it reaches what commits are pushing, then takes the
pushed batches straight from memory (woken by the commit, no polling). Its in-memory buffer is
bounded: a subscriber that falls behind by more than `max_buffered` changes drops its buffer and
goes back to reading the log, so a slow reader costs neither the writer's time nor unbounded
memory. If the log has moved past it meanwhile, it gets Compacted (a follower then takes a
snapshot; a watcher gets 410).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator

from kvstore.model import Change
from kvstore.store.store import Store

READ_LIMIT = 2000


class _Subscription:
    def __init__(self, max_buffered: int) -> None:
        self.batches: deque[list[Change]] = deque()
        self.buffered = 0
        self.max_buffered = max_buffered
        self.overflowed = False
        self.event = asyncio.Event()

    def push(self, changes: list[Change]) -> None:
        if not self.overflowed:
            if self.buffered + len(changes) > self.max_buffered:
                self.overflowed = True
                self.batches.clear()
                self.buffered = 0
            else:
                self.batches.append(changes)
                self.buffered += len(changes)
        self.event.set()

    def take(self, next_seq: int) -> list[Change] | None:
        """Buffered changes from next_seq on, if the buffer holds next_seq; else None."""
        if self.overflowed:
            self.overflowed = False
            return None
        while self.batches and self.batches[0][-1].seq < next_seq:
            self.buffered -= len(self.batches.popleft())
        if not self.batches or self.batches[0][0].seq > next_seq:
            return None
        out: list[Change] = []
        while self.batches:
            batch = self.batches.popleft()
            self.buffered -= len(batch)
            out.extend(c for c in batch if c.seq >= next_seq)
        return out


async def follow(
    store: Store, from_seq: int, *, heartbeat: float = 1.0, max_buffered: int = 50_000
) -> AsyncIterator[list[Change]]:
    """Yield batches of changes with seq >= from_seq, in order, forever; [] as a heartbeat when
    nothing committed for `heartbeat` seconds. Raises Compacted if from_seq left the log."""
    sub = _Subscription(max_buffered)
    store.add_listener(sub.push)
    try:
        next_seq = from_seq
        while True:
            if next_seq > store.state.seq:
                sub.event.clear()
                if next_seq > store.state.seq:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(heartbeat):  # cheaper than wait_for's task
                            await sub.event.wait()
                    if next_seq > store.state.seq:
                        yield []
                    continue
            batch = sub.take(next_seq)
            if batch is None:
                batch = await store.read_changes(next_seq, READ_LIMIT)
            if batch:
                next_seq = batch[-1].seq + 1
                yield batch
    finally:
        store.remove_listener(sub.push)
