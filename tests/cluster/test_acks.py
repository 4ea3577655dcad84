"""Follower acks: the manager reads them from one long request as they arrive; a follower uses
it, and falls back to a request per ack with a manager that does not offer it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kvstore import config
from kvstore.cluster.discovery import Discovery
from kvstore.cluster.follower import Follower
from kvstore.cluster.node import Node
from kvstore.cluster.peer import PeerClient
from kvstore.local.dns import DNSServer
from kvstore.model import PUT, Change
from kvstore.server.keys import NODE
from kvstore.store.store import Store
from tests.server.test_api import make_client


async def test_the_manager_takes_acks_as_they_arrive(tmp_path: Path, dns: DNSServer) -> None:
    dns.table.set_pod("kv-7", "127.0.0.7")  # acks count only for pods DNS lists
    client = await make_client(tmp_path, dns)
    node = client.app[NODE]
    sent: asyncio.Queue[int] = asyncio.Queue()

    async def lines() -> AsyncIterator[bytes]:
        while (seq := await sent.get()) >= 0:
            yield b'{"seq":%d}\n' % seq

    try:
        request = asyncio.create_task(
            client.post(
                "/v1/replication/acks",
                params={"pod": "kv-7"},
                data=lines(),
                headers={"Content-Type": "application/x-ndjson"},
            )
        )
        for seq in (3, 9):
            sent.put_nowait(seq)
            await node.tracker.wait_for(1, seq, 10)  # seen while the request is still open
            assert node.tracker.info("kv-7").acked_seq == seq and not request.done()
        sent.put_nowait(-1)
        resp = await request
        assert resp.status == 200 and await resp.json() == {"ok": True, "counted": True}
        resp.release()
        bad = await client.post(
            "/v1/replication/acks",
            params={"pod": "kv-7"},
            data=b"nope\n",
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert bad.status == 400
        bad.release()
        missing_pod = await client.post(
            "/v1/replication/acks",
            data=b'{"seq": 1}\n',
            headers={"Content-Type": "application/x-ndjson"},
        )
        assert missing_pod.status == 400
        missing_pod.release()
    finally:
        await client.close()


async def test_a_follower_falls_back_to_a_request_per_ack(tmp_path: Path) -> None:
    posted: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def ack(request: web.Request) -> web.Response:  # what an older manager offers
        posted.put_nowait(json.loads(await request.read()))
        return web.json_response({"ok": True})

    old = web.Application()
    old.router.add_post("/v1/replication/ack", ack)
    server = TestServer(old)
    await server.start_server()
    store = Store(str(tmp_path / "f"))
    await store.open()
    await store.set_epoch("e1")
    settings = config.load(env={"KV_POD_NAME": "kv-1", "KV_DATA_DIR": str(tmp_path / "f")})
    try:
        async with aiohttp.ClientSession() as session:
            peers = PeerClient(session, settings)
            follower = Follower(Node(settings, store, Discovery(settings), peers))
            acker = asyncio.create_task(follower._acker(str(server.make_url("")).rstrip("/")))
            assert (await asyncio.wait_for(posted.get(), 10)) == {"pod": "kv-1", "seq": 0}
            await store.apply([Change(1, PUT, "a", 1, b"x", 0.0)], "e1")
            assert (await asyncio.wait_for(posted.get(), 10))["seq"] == 1
            acker.cancel()
            with pytest.raises(asyncio.CancelledError):
                await acker
    finally:
        await store.close()
        await server.close()
