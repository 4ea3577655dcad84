"""One client for every request a pod makes to another pod: status, snapshot, the replication
stream, acks and forwarded writes. It owns the URLs, the bearer header, the timeouts and the
decoding of error answers (`errors.from_wire`); its callers keep only their decisions.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from kvstore import wire
from kvstore.config import Settings
from kvstore.errors import KVError, ManagerUnavailable, from_wire
from kvstore.store import snapshot
from kvstore.store.store import Store

CONNECT_TIMEOUT = 3.0
HEARTBEAT_TIMEOUT = 5.0  # no line from the manager for this long: the link is dead
SNAPSHOT_READ_TIMEOUT = 30.0
# A forwarded request carries the client's headers only, not aiohttp's defaults.
FORWARD_SKIP_AUTO = ("Content-Type", "User-Agent", "Accept", "Accept-Encoding")


class PeerError(KVError):
    """Another pod answered with an error that is not one of ours, or not at all as expected."""

    code = "peer_error"


class AcksUnsupported(Exception):
    """The manager has no long acks request (an older version): acks go one at a time."""


@dataclass(frozen=True)
class Forwarded:
    """A peer's answer to a forwarded request, passed back as it came."""

    status: int
    body: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True)
class SnapshotTaken:
    header: snapshot.Header
    bytes: int
    seconds: float


class PeerClient:
    def __init__(self, session: aiohttp.ClientSession, settings: Settings) -> None:
        self.session = session
        self.settings = settings

    def _auth(self, token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    @property
    def _replication(self) -> dict[str, str]:
        return self._auth(self.settings.replication_secret)

    async def status(self, url: str, timeout: float) -> dict[str, Any]:
        """Another pod's `/v1/status`. Raises TimeoutError, aiohttp.ClientError or OSError when
        it cannot be had, and KVError for an error answer."""
        wait = aiohttp.ClientTimeout(total=timeout)
        headers = self._auth(self.settings.auth_token)
        async with self.session.get(url + wire.STATUS_PATH, headers=headers, timeout=wait) as resp:
            await raise_for(resp, PeerError)
            doc = await resp.json()
        if not isinstance(doc, dict):
            raise PeerError(f"{url}{wire.STATUS_PATH} answered {type(doc).__name__}, not a status")
        return doc

    @asynccontextmanager
    async def stream(
        self, url: str, params: Mapping[str, str]
    ) -> AsyncIterator[AsyncIterator[bytes]]:
        """The manager's change stream from `params["from"]`: its lines, the hello first."""
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=HEARTBEAT_TIMEOUT
        )
        async with self.session.get(
            url + wire.STREAM_PATH, params=params, headers=self._replication, timeout=timeout
        ) as resp:
            await raise_for(resp, ManagerUnavailable)
            yield wire.iter_lines(resp.content)

    async def post_acks(self, url: str, pod: str, lines: AsyncIterator[bytes]) -> None:
        """Report the applied seq over one long request; returns when the manager ends it."""
        async with self.session.post(
            url + wire.ACKS_PATH,
            params={"pod": pod},
            data=lines,
            headers=self._replication | {"Content-Type": "application/x-ndjson"},
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT),
        ) as resp:
            if resp.status in (404, 405):
                raise AcksUnsupported()
            await raise_for(resp, ManagerUnavailable)

    async def post_ack(self, url: str, pod: str, seq: int) -> None:
        async with self.session.post(
            url + wire.ACK_PATH,
            json={"pod": pod, "seq": seq},
            headers=self._replication,
            timeout=aiohttp.ClientTimeout(total=CONNECT_TIMEOUT),
        ) as resp:
            await raise_for(resp, ManagerUnavailable)

    async def take_snapshot(
        self,
        url: str,
        store: Store,
        check: snapshot.HeaderCheck | None = None,
        progress: snapshot.InstallProgress | None = None,
        held: Mapping[str, str] | None = None,
    ) -> SnapshotTaken:
        """Fetch a peer's snapshot and install it into `store`, all or nothing; `check` may
        refuse it on its header before anything is installed. `held`: what a store that holds
        data has (from, epoch, term), for the peer's history check."""
        started = time.monotonic()
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT, sock_read=SNAPSHOT_READ_TIMEOUT
        )
        params = {"pod": self.settings.pod_name, **(held or {})}
        async with self.session.get(
            url + wire.SNAPSHOT_PATH, params=params, headers=self._replication, timeout=timeout
        ) as resp:
            await raise_for(resp, PeerError)
            lines = wire.iter_lines(resp.content)
            header = snapshot.parse_header(await anext(lines, b""))
            if check is not None:
                check(header)
            await snapshot.install(store, header, lines, progress)
            await resp.content.read()  # to the end, so that the sender's send completes
            size = resp.content.total_bytes
        return SnapshotTaken(header, size, time.monotonic() - started)

    async def forward(
        self, method: str, url: URL, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> Forwarded:
        """Send a request on as it came (`url` already encoded, `headers` as they are: nothing
        added but Host and the body's length); the answer as it came back. Connecting has its
        own deadline (ConnectionTimeoutError: nothing was sent); `timeout` bounds the wait for
        the answer once the request is on its way."""
        wait = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=timeout)
        async with self.session.request(
            method,
            url,
            data=body,
            headers=headers,
            timeout=wait,
            skip_auto_headers=FORWARD_SKIP_AUTO,
            allow_redirects=False,
        ) as resp:
            payload = await resp.read()
            return Forwarded(resp.status, payload, resp.headers)


async def raise_for(resp: aiohttp.ClientResponse, fallback: type[KVError]) -> None:
    """Turn an error answer into the matching domain error (`fallback` for one not ours)."""
    if resp.status < 400:
        return
    body = await resp.content.read(64 * 1024)
    raise from_wire(resp.status, body, fallback)


def decode_line(raw: bytes) -> dict[str, Any]:
    """One JSON object line from a peer; PeerError for anything else."""
    try:
        msg = json.loads(raw)
    except ValueError as exc:
        raise PeerError(f"a line from the peer is not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise PeerError("a line from the peer is not a JSON object")
    return msg
