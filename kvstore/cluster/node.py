"""One pod's runtime state: its settings, its store, and what it knows of the other pods.

The manager keeps a `FollowerTracker` (who streams from it and how far each has applied); a
follower keeps a `ManagerLink` (its link to the manager). The HTTP layer sees a node only
through `NodeView`: may this pod serve, is it ready and why, how stale it is, its status.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from kvstore.cluster.discovery import Discovery
from kvstore.cluster.peer import PeerClient
from kvstore.cluster.tracker import FollowerTracker
from kvstore.config import Settings
from kvstore.errors import NotReady
from kvstore.model import digest_hex
from kvstore.store.store import Store

NEVER_CONNECTED_GRACE = 10.0  # seconds a follower may be without its manager and stay ready
MEMBERS_TTL = 2.0  # seconds the set's members, as DNS lists them, are taken as known
Check = tuple[bool, str]  # (passed, the line /readyz shows)


@dataclass
class ManagerLink:
    """On a follower: the link to the manager."""

    started: float = field(default_factory=time.monotonic)
    connected: bool = False
    manager_url: str | None = None  # the address resolved for the current connection only
    manager_seq: int = 0
    last_heard: float = 0.0  # monotonic time of the last line from the manager
    lost_at: float | None = None  # monotonic time the link was lost (None while connected)
    caught_up_at: float = field(default_factory=time.monotonic)
    epoch_mismatch: str | None = None  # the manager's epoch, when it is not ours
    diverged: str | None = None  # why the manager refused our history (409 diverged)
    diverged_seq: int | None = None  # the first seq where our history and the manager's part
    refused: str | None = None  # the manager answers, but not with a stream we can follow
    last_error: str | None = None
    reconnects: int = 0
    snapshots_installed: int = 0
    snapshot_progress: tuple[int, int] | None = None


class NodeView(Protocol):
    """What the HTTP handlers need of a pod (tests/fakes.py has a stand-in)."""

    settings: Settings
    store: Store
    shutting_down: bool

    @property
    def is_manager(self) -> bool: ...

    def require_data(self) -> None: ...

    def readiness(self) -> list[Check]: ...

    def lag(self) -> dict[str, Any]: ...

    def status(self) -> dict[str, Any]: ...


@dataclass
class Node:
    settings: Settings
    store: Store
    discovery: Discovery
    peers: PeerClient
    tracker: FollowerTracker = field(default_factory=FollowerTracker)
    link: ManagerLink = field(default_factory=ManagerLink)
    restoring: bool = True  # the manager, until its store has an epoch
    restore_note: str = "starting"  # the manager's restore: what it is doing or waiting for
    restore_choice: asyncio.Queue[str] = field(default_factory=asyncio.Queue)  # restore-from
    restore_blocked: bool = False  # peers disagree on the epoch: waiting for restore-from
    shutting_down: bool = False
    started_at: float = field(default_factory=time.time)
    _members: frozenset[str] = frozenset()
    _members_at: float | None = None  # monotonic time of the last lookup

    @property
    def is_manager(self) -> bool:
        return self.settings.is_manager

    @property
    def has_data(self) -> bool:
        return self.store.state.epoch is not None

    def require_data(self) -> None:
        """May this pod serve data now? NotReady (503) says why not."""
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

    async def members(self) -> frozenset[str]:
        """The other pods of the set, by name, as DNS lists them (looked up at most every
        MEMBERS_TTL seconds). On the manager, the tracker is kept to these."""
        now = time.monotonic()
        if self._members_at is None or now - self._members_at >= MEMBERS_TTL:
            self._members_at = now
            peers = await self.discovery.peers()
            if peers:  # none: DNS failed or is catching up; keep what it said last
                self._members = frozenset({p.name for p in peers} - {self.settings.pod_name})
                if self.is_manager:
                    self.tracker.retain(self._members)
        return self._members

    async def is_member(self, pod: str) -> bool:
        """Does `pod` name a follower of this set? Only then do its acks and streams count (a
        made-up name would satisfy `ack=N` with no follower, and grow status and metrics)."""
        return pod in await self.members()

    def lag(self) -> dict[str, Any]:
        """How far behind the manager this replica may be: entries as last heard, and seconds
        since it was last known caught up (0 while streaming and caught up; growing while the
        manager cannot be reached)."""
        if self.is_manager:
            return {"entries": 0, "seconds": 0.0}
        p = self.link
        entries = max(0, p.manager_seq - self.store.state.seq)
        fresh = p.connected and entries == 0
        seconds = 0.0 if fresh else time.monotonic() - p.caught_up_at
        return {"entries": entries, "seconds": round(seconds, 3)}

    def readiness(self) -> list[Check]:
        """Each readiness check as (passed, line)."""
        out: list[Check] = [(not self.store.closed, "db ok")]
        if self.shutting_down:
            out.append((False, "shutdown: in progress"))
        if self.is_manager:
            note = self.restore_note if self.restoring else "done"
            out.append((not self.restoring, "restore: " + note))
            return out
        return out + self._follower_checks()

    def _follower_checks(self) -> list[Check]:
        p, has = self.link, self.has_data
        out: list[Check] = [(has, "data: " + ("installed" if has else "no snapshot yet"))]
        if p.epoch_mismatch:
            out.append(
                (False, f"epoch: ours {self.store.state.epoch}, manager's {p.epoch_mismatch}")
            )
        if p.diverged is not None:
            at = "?" if p.diverged_seq is None else str(p.diverged_seq)
            out.append((False, f"replication: diverged at seq {at} (see kvstore repair status)"))
        elif p.refused is not None:
            out.append((False, f"replication: the manager refuses our stream: {p.refused}"))
        else:
            out.append(self._link_check())
        if p.connected:
            lag, most = self.lag()["entries"], self.settings.ready_max_lag
            out.append((lag <= most, f"lag: {lag} entries (max {most})"))
        return out

    def _link_check(self) -> Check:
        """A follower that cannot reach its manager stays ready: it serves stale reads, and its
        lag headers say how stale, so that the read Service keeps endpoints."""
        p = self.link
        if p.connected:
            return True, "replication: connected"
        lost = time.monotonic() - (p.lost_at if p.lost_at is not None else p.started)
        return True, f"replication: no manager for {lost:.0f}s (serving reads, maybe stale)"

    @property
    def ready(self) -> bool:
        return all(ok for ok, _ in self.readiness())

    def status(self) -> dict[str, Any]:
        st, s = self.store.state, self.settings
        doc: dict[str, Any] = {
            "pod": s.pod_name,
            "ordinal": s.ordinal,
            "role": s.role,
            "revision": s.revision,
            "epoch": st.epoch,
            "term": st.term,
            "last_term": st.last_term,
            "terms": [list(row) for row in st.terms],
            "applied_seq": st.seq,
            "oldest_seq": st.oldest_seq,
            "keys": st.keys,
            "digest": digest_hex(st.digest),
            "ready": self.ready,
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "lag": self.lag(),
        }
        return doc | (self._manager_status() if self.is_manager else self._follower_status())

    def _manager_status(self) -> dict[str, Any]:
        s, seq = self.settings, self.store.state.seq
        return {
            "manager": {"url": f"http://{s.manager_fqdn}:{s.port}", "seq": seq, "connected": True},
            "followers": self.tracker.describe(seq),
            "restoring": self.restoring,
            "restore": {"note": self.restore_note, "blocked": self.restore_blocked},
            "diverged": None,
            "epoch_mismatch": None,
        }

    def _follower_status(self) -> dict[str, Any]:
        p = self.link
        diverged = None if p.diverged is None else {"seq": p.diverged_seq, "message": p.diverged}
        return {
            "manager": {"url": p.manager_url, "seq": p.manager_seq, "connected": p.connected},
            "diverged": diverged,
            "epoch_mismatch": p.epoch_mismatch,
            "replication": {
                "reconnects": p.reconnects,
                "snapshots_installed": p.snapshots_installed,
                "snapshot_progress": p.snapshot_progress,
                "last_error": p.last_error,
                "epoch_mismatch": p.epoch_mismatch,
                "diverged": p.diverged,
                "diverged_seq": p.diverged_seq,
                "refused": p.refused,
            },
        }
