"""The manager's start: a manager whose database is empty (a lost volume) asks its peers for
their epoch and seq before it takes any write. If any holds data, it restores from the most
advanced one and keeps that epoch; only when no peer holds data is a new epoch born.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Any

import aiohttp

from kvstore.cluster.discovery import Peer
from kvstore.cluster.node import Node
from kvstore.errors import KVError

log = logging.getLogger("kvstore.restore")
ASK_TIMEOUT = 3.0
RETRY_DELAY = 1.0


async def _ask(node: Node, peer: Peer) -> dict[str, Any] | None:
    try:
        return await node.peers.status(peer.url, ASK_TIMEOUT)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KVError):
        return None


async def _candidates(node: Node) -> list[tuple[int, Peer, str]]:
    """Peers holding data, most advanced first: (applied seq, peer, epoch)."""
    me = node.settings
    peers = [p for p in await node.discovery.peers() if p.name != me.pod_name and p.host != me.host]
    answers = await asyncio.gather(*(_ask(node, p) for p in peers))
    found = [
        (int(doc.get("applied_seq", 0)), peer, str(doc["epoch"]))
        for peer, doc in zip(peers, answers, strict=True)
        if doc and doc.get("epoch")
    ]
    return sorted(found, key=lambda c: c[0], reverse=True)


async def _restore_from(node: Node, peer: Peer) -> None:
    taken = await node.peers.take_snapshot(peer.url, node.store)
    h = taken.header
    log.info(
        "restore: took %d keys at seq %d, epoch %s, from %s", h.keys, h.seq, h.epoch, peer.name
    )


async def restore_or_init(node: Node) -> None:
    """Return once the manager's store has an epoch; then it may take writes."""
    if node.store.state.epoch is None:
        await _restore_or_new(node)
    node.restoring = False
    log.info("manager ready: epoch %s, seq %d", node.store.state.epoch, node.store.state.seq)


async def _restore_or_new(node: Node) -> None:
    log.info("restore: empty database; asking peers for their data")
    while True:
        candidates = await _candidates(node)
        if not candidates:
            epoch = secrets.token_hex(8)
            await node.store.set_epoch(epoch)
            log.info("restore: no peer holds data; new epoch %s", epoch)
            return
        for seq, peer, epoch in candidates:
            log.info("restore: %s holds epoch %s at seq %d", peer.name, epoch, seq)
            try:
                await _restore_from(node, peer)
                return
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError, KVError) as exc:
                log.warning("restore: from %s failed: %s", peer.name, exc)
        await asyncio.sleep(RETRY_DELAY)
