"""On the manager: who streams from it and how far each follower has applied, for `ack=N`,
`/v1/status` and metrics."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from kvstore.errors import WaitTimeout


@dataclass
class TrackedFollower:
    pod: str
    acked_seq: int = 0
    streams: int = 0  # open replication streams: a reconnect may open one before the old ends
    since: float = field(default_factory=time.time)  # when it (re)connected


class FollowerTracker:
    """On the manager: each follower's acked seq, and waiters for `ack=N`. Its callers give it
    only members of the set (`Node.is_member`), and `retain` drops those DNS no longer lists:
    it holds at most one entry per pod of the set."""

    def __init__(self) -> None:
        self.followers: dict[str, TrackedFollower] = {}
        self._changed = asyncio.Event()

    def info(self, pod: str) -> TrackedFollower:
        if pod not in self.followers:
            self.followers[pod] = TrackedFollower(pod)
        return self.followers[pod]

    def connected(self, pod: str, up: bool) -> None:
        if not up and pod not in self.followers:
            return  # dropped meanwhile (`retain`): nothing to count down
        info = self.info(pod)
        info.streams += 1 if up else -1
        if up:
            info.since = time.time()

    def ack(self, pod: str, seq: int) -> None:
        info = self.info(pod)
        info.acked_seq = max(info.acked_seq, seq)
        self._changed.set()

    def retain(self, members: frozenset[str]) -> None:
        """Forget the pods that are no longer members of the set."""
        for pod in [p for p in self.followers if p not in members]:
            del self.followers[pod]

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
