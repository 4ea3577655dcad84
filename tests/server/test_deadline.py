"""The write deadline of long responses: a reader that takes no byte for the timeout is cut off,
one that reads slowly but steadily gets everything, however long one write takes to drain."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kvstore.server import httputil as h

TIMEOUT = 0.5
CHUNK = 1 << 20


class Outcomes(list[str]):
    """What each response came to; `ended` is set at each."""

    def __init__(self) -> None:
        super().__init__()
        self.ended = asyncio.Event()

    def append(self, outcome: str) -> None:
        super().append(outcome)
        self.ended.set()


@pytest.fixture
async def server() -> AsyncIterator[tuple[TestServer, Outcomes]]:
    outcomes = Outcomes()

    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        out = h.DeadlineWriter(request, resp, TIMEOUT)
        try:
            for _ in range(int(request.query["chunks"])):
                await out.write(b"x" * CHUNK)  # each write takes many timeouts to drain
            outcomes.append("sent")
        except h.Stalled:
            outcomes.append("cut")
        return resp

    app = web.Application()
    app.router.add_get("/long", handler)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server()
    yield srv, outcomes
    await srv.close()


def connect(srv: TestServer, chunks: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    assert srv.port is not None
    sock.connect(("127.0.0.1", srv.port))
    sock.sendall(
        f"GET /long?chunks={chunks} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    return sock


async def test_a_slow_steady_reader_gets_everything(server: tuple[TestServer, Outcomes]) -> None:
    srv, outcomes = server
    sock = connect(srv, 3)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    got = 0
    try:
        while True:
            data = await loop.sock_recv(sock, 16 * 1024)
            if not data:
                break
            got += len(data)
            await asyncio.sleep(0.02)  # about 800 KB/s: a write of 1 MiB takes over a second
    finally:
        sock.close()
    assert outcomes == ["sent"]
    assert got > CHUNK * 3


async def test_a_reader_that_stops_is_cut_off(server: tuple[TestServer, Outcomes]) -> None:
    srv, outcomes = server
    sock = connect(srv, 32)  # more than the kernel's buffers hold
    try:
        async with asyncio.timeout(60):
            await outcomes.ended.wait()
    finally:
        sock.close()
    assert outcomes == ["cut"]
