"""One pod's runtime state: its settings, its store, and what it knows of the other pods.

The manager keeps a `FollowerTracker` (who streams from it and how far each has applied, for
`ack=N`, status and metrics); a follower keeps a `Progress` (its link to the manager).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kvstore.cluster.discovery import Discovery
from kvstore.config import Settings
from kvstore.errors import NotReady, WaitTimeout
from kvstore.store.store import Store


class PeerAnswered(ValueError):
    """A peer answered, but not with its status."""


@dataclass
class FollowerInfo:
    pod: str
    acked_seq: int = 0
    streams: int = 0  # open replication streams: a reconnect may open one before the old ends
    since: float = field(default_factory=time.time)  # when it (re)connected
    last_ack: float = field(default_factory=time.monotonic)


class FollowerTracker:
    """On the manager: each follower's acked seq, and waiters for `ack=N`."""

    def __init__(self) -> None:
        self.followers: dict[str, FollowerInfo] = {}
        self._changed = asyncio.Event()

    def info(self, pod: str) -> FollowerInfo:
        if pod not in self.followers:
            self.followers[pod] = FollowerInfo(pod)
        return self.followers[pod]

    def connected(self, pod: str, up: bool) -> None:
        info = self.info(pod)
        info.streams += 1 if up else -1
        if up:
            info.since = time.time()

    def ack(self, pod: str, seq: int) -> None:
        info = self.info(pod)
        info.acked_seq = max(info.acked_seq, seq)
        info.last_ack = time.monotonic()
        self._changed.set()

    def count_at(self, seq: int) -> int:
        return sum(1 for f in self.followers.values() if f.acked_seq >= seq)

    async def wait_for(self, n: int, seq: int, timeout: float) -> None:
        """Return once `n` followers applied `seq`; WaitTimeout names how many did."""
        deadline = time.monotonic() + timeout
        while self.count_at(seq) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                got = self.count_at(seq)
                raise WaitTimeout(
                    f"committed at seq {seq}, but only {got} of the {n} followers asked for "
                    f"applied it within {timeout:g}s",
                    acked=got,
                    wanted=n,
                    seq=seq,
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                continue

    def describe(self, manager_seq: int) -> list[dict[str, Any]]:
        return [
            {
                "pod": f.pod,
                "acked_seq": f.acked_seq,
                "lag_entries": max(0, manager_seq - f.acked_seq),
                "connected": f.streams > 0,
                "since": f.since,
            }
            for f in sorted(self.followers.values(), key=lambda f: f.pod)
        ]


@dataclass
class Progress:
    """On a follower: the link to the manager."""

    started: float = field(default_factory=time.monotonic)
    connected: bool = False
    manager_url: str | None = None  # the address resolved for the current connection only
    manager_seq: int = 0
    last_heard: float = 0.0  # monotonic time of the last line from the manager
    lost_at: float | None = None  # monotonic time the link was lost (None while connected)
    caught_up_at: float = field(default_factory=time.monotonic)
    epoch_mismatch: str | None = None  # the manager's epoch, when it is not ours
    diverged: str | None = None
    last_error: str | None = None
    reconnects: int = 0
    snapshots_installed: int = 0
    snapshot_progress: tuple[int, int] | None = None


@dataclass
class Node:
    settings: Settings
    store: Store
    discovery: Discovery
    session: aiohttp.ClientSession
    tracker: FollowerTracker = field(default_factory=FollowerTracker)
    progress: Progress = field(default_factory=Progress)
    restoring: bool = True  # the manager, until its store has an epoch
    shutting_down: bool = False
    started_at: float = field(default_factory=time.time)

    @property
    def is_manager(self) -> bool:
        return self.settings.is_manager

    @property
    def has_data(self) -> bool:
        return self.store.state.epoch is not None

    def require_data(self) -> None:
        if self.is_manager and self.restoring:
            raise NotReady(
                "the manager is starting (restoring its data from peers); retry shortly",
                retry_after=1,
            )
        if not self.has_data:
            raise NotReady(
                "this replica has no data yet: it is waiting for its first snapshot "
                "from the manager; retry shortly",
                retry_after=1,
            )

    async def peer_status(self, url: str, timeout: float) -> dict[str, Any]:
        """Another pod's `/v1/status`. Raises TimeoutError, aiohttp.ClientError or OSError when
        it cannot be had, and PeerAnswered for an answer other than 200."""
        token = self.settings.auth_token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        wait = aiohttp.ClientTimeout(total=timeout)
        async with self.session.get(f"{url}/v1/status", headers=headers, timeout=wait) as resp:
            if resp.status != 200:
                raise PeerAnswered(f"/v1/status answered {resp.status}")
            doc: dict[str, Any] = await resp.json()
            return doc

    def lag(self) -> dict[str, Any]:
        if self.is_manager:
            return {"entries": 0, "seconds": 0.0}
        entries = max(0, self.progress.manager_seq - self.store.state.seq)
        seconds = 0.0 if entries == 0 else time.monotonic() - self.progress.caught_up_at
        return {"entries": entries, "seconds": round(seconds, 3)}
