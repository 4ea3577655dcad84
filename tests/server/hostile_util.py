"""Raw HTTP for the hostile-client tests: requests sent as written (`http.client` and plain
sockets never resolve dot segments or re-encode a query), and a stand-in manager that records
the bytes a follower forwards to it."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def code(self) -> str | None:
        """The JSON error code, or None when the body is not our error shape."""
        try:
            err = self.json()["error"]
        except (ValueError, KeyError, TypeError):
            return None
        return str(err["code"]) if isinstance(err, dict) and err.get("message") else None


def _request(
    base: str,
    method: str,
    path: str,
    headers: Mapping[str, str | bytes],
    body: bytes | None,
    timeout: float,
) -> Answer:
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return Answer(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


async def raw(
    base: str,
    method: str,
    path: str,
    headers: Mapping[str, str | bytes] | None = None,
    body: bytes | None = None,
    timeout: float = 30.0,
) -> Answer:
    """One request with `path` (and its query) sent exactly as given; a bytes header value is
    sent as those bytes."""
    return await asyncio.to_thread(_request, base, method, path, headers or {}, body, timeout)


def _raw_bytes(base: str, request: bytes, timeout: float) -> bytes:
    parts = urlsplit(base)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


async def raw_bytes(base: str, request: bytes, timeout: float = 30.0) -> Answer:
    """A request written byte for byte (e.g. a header that is not UTF-8); read to the close."""
    data = await asyncio.to_thread(_raw_bytes, base, request, timeout)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(status, headers, body)


@dataclass
class Received:
    """A request as a stand-in manager read it: the request line, headers in order, body."""

    line: str
    headers: list[tuple[str, str]]
    body: bytes

    def header_names(self) -> set[str]:
        return {name.lower() for name, _ in self.headers}


Reply = bytes | None  # the whole answer to write, or None: read the request, answer nothing


@dataclass
class StandInManager:
    """A TCP server on the manager's address that records every request and answers with
    `reply` (None: keep the connection open and answer nothing; b"": close it at once)."""

    host: str
    port: int
    reply: Reply = (
        b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
        b"Keep-Alive: timeout=5\r\nX-KV-Seq: 7\r\n\r\n{}"
    )
    received: list[Received] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __aenter__(self) -> StandInManager:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")[:-2]
                headers = [
                    (n.strip(), v.strip()) for n, _, v in (x.partition(":") for x in lines[1:])
                ]
                length = next((int(v) for n, v in headers if n.lower() == "content-length"), 0)
                body = await reader.readexactly(length) if length else b""
                if lines[0].split(" ")[1].startswith("/v1/kv/") or "txn" in lines[0]:
                    self.received.append(Received(lines[0], headers, body))
                    self._arrived.set()
                    reply = self.reply
                else:  # the follower's own replication calls: not what the test looks at
                    reply = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n"
                if reply is None:
                    await reader.read()  # answer nothing until the other side gives up
                    return
                if not reply:
                    return
                writer.write(reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            self._writers.discard(writer)
            writer.close()

    async def wait_request(self, count: int, timeout: float = 10.0) -> Received:
        async with asyncio.timeout(timeout):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.received[count - 1]
