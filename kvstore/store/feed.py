"""The change feed: every change from a seq on, then live, for replication streams and watches.

One `Feed` per store takes each commit's changes and hands them to the subscriptions whose
prefix they match. It finds them by walking the key's own prefixes (one dict lookup per distinct
prefix length in use), so a commit costs nothing for a watch on a prefix it does not touch, and
wakes no one but the subscriptions it feeds.

A subscription reads the retained log until it reaches what commits are pushing, then takes the
pushed changes straight from memory. Its buffer is bounded in bytes (keys and values): one that
falls behind by more than `BUFFER_BYTES` drops its buffer and goes back to reading the log, so a
slow or stalled reader costs neither the writer's time nor unbounded memory. If the log has
moved past it meanwhile, it gets Compacted (a follower then takes a snapshot; a watcher gets
410). Heartbeats run on a clock of their own: a subscription hears [] whenever `heartbeat`
seconds pass without a change for it, whatever else is written.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import Counter, deque
from collections.abc import AsyncIterator
from types import TracebackType

from kvstore.errors import TooManyWatches
from kvstore.model import Change
from kvstore.store.store import CHANGE_OVERHEAD, Store

READ_LIMIT = 2000  # changes per log read
READ_BYTES = 4 << 20  # bytes of keys and values per log read
BUFFER_BYTES = 4 << 20  # a subscription's in-memory buffer, in bytes of keys and values
TICK = 0.25  # the heartbeat clock's period, at most


def change_bytes(changes: list[Change]) -> int:
    """What a list of changes costs to hold, as the feed counts it."""
    return sum(len(c.key) + len(c.value or b"") for c in changes) + CHANGE_OVERHEAD * len(changes)


class Subscription:
    """The changes of one prefix ("" for all), for one reader. Use it in a `with` block: it is
    registered from its creation (so that a cap counts it at once) until the block ends."""

    def __init__(self, feed: Feed, prefix: str, kind: str, buffer_bytes: int) -> None:
        self.feed, self.prefix, self.kind = feed, prefix, kind
        self.buffer_bytes = buffer_bytes
        self.batches: deque[list[Change]] = deque()
        self.bytes = 0
        # Every matching change with seq >= start is in the buffer; None: the buffer overflowed
        # and holds nothing, the reader goes back to the log.
        self.start: int | None = feed.published + 1
        self.event = asyncio.Event()
        self.overflows = 0
        self.heartbeat: float | None = None  # while following
        self.due: float | None = None  # while waiting: when the clock must wake it (loop time)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.feed.remove(self)
        self.batches.clear()
        self.bytes = 0

    def push(self, changes: list[Change]) -> None:
        """Matching changes, just committed."""
        if self.start is not None:
            size = change_bytes(changes)
            if self.bytes + size > self.buffer_bytes:
                self.reset()
                self.overflows += 1
            else:
                self.batches.append(changes)
                self.bytes += size
        self.event.set()

    def reset(self) -> None:
        self.batches.clear()
        self.bytes = 0
        self.start = None
        self.event.set()

    def _take(self, next_seq: int) -> list[Change]:
        out: list[Change] = []
        while self.batches:
            batch = self.batches.popleft()
            if batch[0].seq >= next_seq:
                out.extend(batch)
            else:
                out.extend(c for c in batch if c.seq >= next_seq)
        self.bytes = 0
        return out

    async def follow(self, from_seq: int, heartbeat: float = 1.0) -> AsyncIterator[list[Change]]:
        """Yield lists of this prefix's changes with seq >= from_seq, in order, forever; [] as
        a heartbeat when none came for `heartbeat` seconds. Raises Compacted if from_seq (or a
        seq it must read from the log after an overflow) left the log."""
        store, feed, prefix = self.feed.store, self.feed, self.prefix
        loop = asyncio.get_running_loop()
        next_seq = from_seq
        beat = loop.time() + heartbeat
        while True:
            if self.start is None:
                self.start = feed.published + 1  # buffer again from here; read the log up to it
            more = False  # more to read from the log at once
            if next_seq >= self.start:
                out = self._take(next_seq)
                next_seq = max(next_seq, feed.published + 1)
            elif next_seq > store.state.seq:
                out = []
            else:
                batch = await store.read_changes(next_seq, READ_LIMIT, READ_BYTES)
                out, more = [], bool(batch)
                if batch:
                    next_seq = batch[-1].seq + 1
                    out = batch if not prefix else [c for c in batch if c.key.startswith(prefix)]
            if out:
                yield out
                beat = loop.time() + heartbeat
                continue
            if not more:
                self.event.clear()
                if loop.time() < beat:
                    # One clock wakes every waiting subscription whose heartbeat is due: no
                    # timer of its own to arm and cancel at each wait.
                    self.due = beat
                    self.heartbeat = heartbeat
                    self.feed.clock()
                    try:
                        await self.event.wait()
                    finally:
                        self.due = None
            if loop.time() >= beat - self.feed.tick_for(heartbeat):
                yield []
                beat = loop.time() + heartbeat


class Feed:
    """A store's subscriptions by prefix; one listener on the store for all of them."""

    def __init__(self, store: Store) -> None:
        self._store = weakref.ref(store)  # the store holds the feed (its listener), not back
        self.published = store.state.seq
        self.by_prefix: dict[str, set[Subscription]] = {}
        self.lengths: list[int] = []  # the distinct prefix lengths in use, ascending
        self.kinds: Counter[str] = Counter()
        self._tick: asyncio.TimerHandle | None = None
        store.add_listener(self._on_commit)

    @property
    def store(self) -> Store:
        store = self._store()
        assert store is not None, "a feed outlived its store"
        return store

    @staticmethod
    def tick_for(heartbeat: float) -> float:
        """How often the clock looks for due heartbeats: a subscription hears one at most this
        much before `heartbeat` seconds have passed, never after."""
        return min(TICK, heartbeat / 4)

    def clock(self) -> None:
        """Arm the heartbeat clock if it is not armed (it stays armed while anyone waits)."""
        if self._tick is None:
            loop = asyncio.get_running_loop()
            self._tick = loop.call_later(self._next_tick(), self._on_tick, loop)

    def _next_tick(self) -> float:
        beats = [s.heartbeat for subs in self.by_prefix.values() for s in subs if s.heartbeat]
        return self.tick_for(min(beats)) if beats else TICK

    def _on_tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._tick = None
        now, waiting = loop.time(), False
        shortest = TICK * 4
        for subs in self.by_prefix.values():
            for sub in subs:
                if sub.due is None:
                    continue
                waiting = True
                beat = sub.heartbeat or TICK
                shortest = min(shortest, beat)
                if sub.due - self.tick_for(beat) <= now:
                    sub.event.set()
        if waiting:
            self._tick = loop.call_later(self.tick_for(shortest), self._on_tick, loop)

    def count(self, kind: str) -> int:
        return self.kinds[kind]

    def subscribe(
        self,
        prefix: str = "",
        *,
        kind: str = "stream",
        limit: int | None = None,
        buffer_bytes: int = BUFFER_BYTES,
    ) -> Subscription:
        """A new subscription; TooManyWatches if `limit` of this kind are open already."""
        if limit is not None and self.kinds[kind] >= limit:
            raise TooManyWatches(
                f"this pod has {self.kinds[kind]} {kind}es open, the most it takes "
                "(KV_MAX_WATCHES): close one, or watch from another replica",
                limit=limit,
            )
        sub = Subscription(self, prefix, kind, buffer_bytes)
        subs = self.by_prefix.setdefault(prefix, set())
        if not subs:
            self.lengths = sorted({*self.lengths, len(prefix)})
        subs.add(sub)
        self.kinds[kind] += 1
        return sub

    def remove(self, sub: Subscription) -> None:
        subs = self.by_prefix.get(sub.prefix)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        self.kinds[sub.kind] -= 1
        if not subs:
            del self.by_prefix[sub.prefix]
            if not any(len(p) == len(sub.prefix) for p in self.by_prefix):
                self.lengths = [n for n in self.lengths if n != len(sub.prefix)]

    def _on_commit(self, changes: list[Change]) -> None:
        if not changes:  # a snapshot was installed: what the buffers hold is history
            self.published = self.store.state.seq
            for subs in self.by_prefix.values():
                for sub in subs:
                    sub.reset()
            return
        self.published = max(self.published, changes[-1].seq)
        by_prefix = self.by_prefix
        if not by_prefix:
            return
        matched: dict[str, list[Change]] = {}
        lengths = self.lengths
        if lengths[0] == 0:
            matched[""] = changes
            lengths = lengths[1:]
        if lengths:
            for c in changes:
                key = c.key
                for n in lengths:
                    if n > len(key):
                        break
                    head = key[:n]
                    if head in by_prefix:
                        matched.setdefault(head, []).append(c)
        for head, found in matched.items():
            for sub in by_prefix[head]:
                sub.push(found)


_FEEDS: weakref.WeakKeyDictionary[Store, Feed] = weakref.WeakKeyDictionary()


def feed_of(store: Store) -> Feed:
    """The store's feed, made on first use."""
    feed = _FEEDS.get(store)
    if feed is None:
        feed = _FEEDS[store] = Feed(store)
    return feed


def subscribe(
    store: Store, prefix: str = "", *, kind: str = "stream", limit: int | None = None
) -> Subscription:
    return feed_of(store).subscribe(prefix, kind=kind, limit=limit)


async def follow(
    store: Store, from_seq: int, *, heartbeat: float = 1.0, prefix: str = ""
) -> AsyncIterator[list[Change]]:
    """Every change (of `prefix`) with seq >= from_seq, as `Subscription.follow` yields them."""
    with subscribe(store, prefix) as sub:
        async for batch in sub.follow(from_seq, heartbeat):
            yield batch
