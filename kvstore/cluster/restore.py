"""The manager's start. With data: a new term, then writes. With an empty database (a lost
volume): the restore, before any write.

1. Ask every peer DNS lists for its `/v1/status`, again and again, until all have answered or
   KV_RESTORE_WAIT has passed (a peer that is down may hold the latest writes).
2. Consider the peers that hold data and are neither diverged nor in an epoch mismatch.
   - no peer that answered holds any data: a new epoch is born;
   - only diverged or mismatched peers hold data: restore nothing, wait (asking again) for a
     usable peer or an operator's pick;
   - one epoch: restore from the most up to date (term of its last change, then seq; the rest
     in that order if it fails), keep the epoch, start a new term;
   - several epochs: restore nothing, stay not ready, and say which peer holds what until an
     operator picks one (`kvstore repair restore-from --pod kv-N`, POST
     /v1/repair/restore-from).
3. A peer that fails mid-restore (cut stream, bad header, bad rows, anything) is logged with the
   reason and the next one is tried; when none worked, all over again after a backoff. The
   readiness line `restore: ...` always says what the manager is doing or waiting for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

from kvstore.cluster.discovery import Peer
from kvstore.cluster.node import Node

log = logging.getLogger("kvstore.restore")
ASK_TIMEOUT = 3.0
ASK_INTERVAL = 1.0
RETRY_DELAY = 1.0
RETRY_CAP = 15.0
BLOCKED_RECHECK = 5.0


@dataclass(frozen=True)
class Holder:
    """A peer that answered, and what it holds."""

    peer: Peer
    epoch: str | None
    seq: int
    last_term: int
    term: int
    diverged: bool
    epoch_mismatch: bool

    @property
    def usable(self) -> bool:
        return self.epoch is not None and not self.diverged and not self.epoch_mismatch

    def describe(self) -> str:
        if self.epoch is None:
            return f"{self.peer.name}: no data"
        extra = " (diverged)" if self.diverged else ""
        extra += " (epoch mismatch)" if self.epoch_mismatch else ""
        return (
            f"{self.peer.name}: epoch {self.epoch} at seq {self.seq}, term {self.last_term}{extra}"
        )


def holder_of(peer: Peer, doc: dict[str, Any]) -> Holder:
    """What a peer's status says it holds; fields an older peer lacks take their default."""
    replication = doc.get("replication") or {}
    epoch = doc.get("epoch")
    return Holder(
        peer,
        str(epoch) if epoch else None,
        int(doc.get("applied_seq") or 0),
        int(doc.get("last_term") or 0),
        int(doc.get("term") or 0),
        bool(doc.get("diverged") or replication.get("diverged")),
        bool(doc.get("epoch_mismatch") or replication.get("epoch_mismatch")),
    )


def rank(holders: list[Holder]) -> list[Holder]:
    """The usable holders, most up to date first: term of the last change, then seq."""
    usable = [h for h in holders if h.usable]
    return sorted(usable, key=lambda h: (h.last_term, h.seq), reverse=True)


async def restore_or_init(node: Node) -> None:
    """Return once the manager's store has an epoch and a new term; then it may take writes."""
    at_least = 0
    if node.store.state.epoch is None:
        at_least = await _restore_or_new(node)
    term = await node.store.begin_term(at_least)
    node.restoring = False
    node.restore_note = "done"
    st = node.store.state
    log.info("manager ready: epoch %s, seq %d, term %d", st.epoch, st.seq, term)


async def _ask(node: Node, peer: Peer) -> Holder | None:
    try:
        return holder_of(peer, await node.peers.status(peer.url, ASK_TIMEOUT))
    except Exception as exc:  # any failure of a peer is "no answer" (logged at debug)
        log.debug("restore: %s did not answer: %s: %s", peer.name, type(exc).__name__, exc)
        return None


async def _peers(node: Node) -> list[Peer]:
    me = node.settings
    return [p for p in await node.discovery.peers() if p.name != me.pod_name and p.host != me.host]


async def _survey(node: Node, wait: float) -> tuple[list[Holder], list[str]]:
    """Ask every peer until all answered or `wait` seconds passed: (answers, silent peers)."""
    deadline = time.monotonic() + wait
    answers: dict[str, Holder] = {}
    while True:
        peers = await _peers(node)
        ask = [p for p in peers if p.name not in answers]
        for holder in await asyncio.gather(*(_ask(node, p) for p in ask)):
            if holder is not None:
                answers[holder.peer.name] = holder
        silent = sorted(p.name for p in peers if p.name not in answers)
        left = deadline - time.monotonic()
        if not silent or left <= 0:
            return list(answers.values()), silent
        node.restore_note = f"waiting for {', '.join(silent)} to answer ({left:.0f}s left)"
        await asyncio.sleep(min(ASK_INTERVAL, max(left, 0.01)))


async def _restore_or_new(node: Node) -> int:
    """Fill the empty store; returns the lowest acceptable next term (above every peer's)."""
    log.info(
        "restore: empty database; asking every peer for its data (up to %gs)",
        node.settings.restore_wait,
    )
    started = time.monotonic()
    wait = node.settings.restore_wait
    delay = RETRY_DELAY
    said = ""
    while True:
        holders, silent = await _survey(node, wait)
        wait = 0.0  # waited once; from now on, whoever answers
        at_least = max((h.term for h in holders), default=0) + 1
        for h in holders:
            if h.epoch is not None and not h.usable:
                log.warning("restore: not from %s", h.describe())
        if silent:
            log.warning("restore: no answer from %s", ", ".join(silent))
        ranked = rank(holders)
        epochs = sorted({h.epoch for h in ranked if h.epoch is not None})
        holding = [h for h in holders if h.epoch is not None]
        if not holding:
            epoch = secrets.token_hex(8)
            await node.store.set_epoch(epoch)
            log.info("restore: no peer holds data; new epoch %s", epoch)
            return at_least
        note = ""
        if not ranked:  # data only on peers that are diverged or in an epoch mismatch
            text = "; ".join(h.describe() for h in holding)
            note = (
                f"blocked: no peer to restore from ({text}); waiting for one, or pick one "
                "with `kvstore repair restore-from --pod <name>`"
            )
        elif len(epochs) > 1:
            text = "; ".join(h.describe() for h in ranked)
            note = (
                f"blocked: peers hold different epochs ({text}); pick one with "
                "`kvstore repair restore-from --pod <name>`"
            )
        if note:
            if note != said:
                log.error("restore: %s", note)
                said = note
            node.restore_note, node.restore_blocked = note, True
            choice = await _wait_choice(node)
            if choice is None:
                continue  # ask again: the peers may have changed
            ranked = [h for h in ranked if h.peer.name == choice] or await _chosen(node, choice)
            if not ranked:
                continue
            log.warning("restore: from %s, as an operator asked", ranked[0].describe())
        node.restore_blocked = False
        for holder in ranked:
            if ranked[0].epoch != holder.epoch:
                break
            if await _restore_from(node, holder):
                log.info(
                    "restore: done in %.1fs from %s", time.monotonic() - started, holder.peer.name
                )
                return at_least
        node.restore_note = f"every peer failed; asking again in {delay:.0f}s"
        await asyncio.sleep(delay)
        delay = min(RETRY_CAP, delay * 2)


async def _wait_choice(node: Node) -> str | None:
    """The pod an operator named with restore-from, or None after a while (to ask again)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(BLOCKED_RECHECK):
            return await node.restore_choice.get()
    return None


async def _chosen(node: Node, name: str) -> list[Holder]:
    """The named peer, asked now (it may not have answered before)."""
    for peer in await _peers(node):
        if peer.name == name:
            holder = await _ask(node, peer)
            if holder is not None and holder.epoch is not None:
                return [holder]
    log.warning("restore: %s, named by restore-from, holds no data or does not answer", name)
    return []


async def _restore_from(node: Node, holder: Holder) -> bool:
    """Take the peer's snapshot; False (logged with the reason) if anything went wrong."""
    name = holder.peer.name
    node.restore_note = f"taking a snapshot from {holder.describe()}"
    log.info("restore: from %s", holder.describe())
    try:
        taken = await node.peers.take_snapshot(holder.peer.url, node.store)
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a broken peer: cut stream, bad header, bad rows, anything
        log.warning("restore: from %s failed: %s: %s", name, type(exc).__name__, exc)
        node.restore_note = f"from {name} failed ({type(exc).__name__}: {exc}); trying the next"
        return False
    h = taken.header
    log.info(
        "restore: took %d keys at seq %d, epoch %s, term %d, from %s",
        h.keys,
        h.seq,
        h.epoch,
        h.term,
        name,
    )
    return True


async def restore_from_request(node: Node, pod: str) -> dict[str, Any]:
    """POST /v1/repair/restore-from: an operator names the peer to restore from."""
    if not node.is_manager or not node.restoring:
        return {"accepted": False, "reason": "this pod is not a manager waiting to restore"}
    node.restore_choice.put_nowait(pod)
    return {"accepted": True, "pod": pod, "note": node.restore_note}
