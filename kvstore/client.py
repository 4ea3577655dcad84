"""A typed asyncio client for the kvstore HTTP API (SPEC §2), shared by the CLI, bench and tests.

    async with KVClient("http://127.0.0.1:8080") as kv:
        await kv.put("a", b"1")
        item = await kv.get("a")

Error answers become `ClientError` subclasses that are also the matching domain errors of
`kvstore.errors` (a 404 is both `client.KeyNotFound` and `errors.KeyNotFound`); a server that
cannot be reached, or does not answer in time, raises `ConnectionFailed`.
"""

from __future__ import annotations

import base64
import io
import json
import os
import socket
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, NotRequired, Self, TypedDict, cast
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from kvstore import errors
from kvstore.wire import iter_lines

DEFAULT_TIMEOUT = 30.0
# Streams (watch) stay open for as long as the caller reads: no total or read deadline.
STREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=10)
LARGE_BODY = 1 << 20
Query = dict[str, str | int | float | None]  # None values are left out of the query string


# --- errors ------------------------------------------------------------------------------------
class ClientError(errors.KVError):
    """The server answered with an error (`status`, `code`, `message` from its JSON body)."""

    def __init__(
        self, status: int, code: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.message} ({self.status} {self.code})" if self.status else self.message


class ConnectionFailed(ClientError):
    """No answer: the server is unreachable, closed the connection, or took too long."""

    def __init__(self, message: str) -> None:
        super().__init__(0, "unreachable", message)


class InvalidRequest(ClientError, errors.InvalidRequest):
    """400: the request is malformed (bad parameter, bad JSON)."""


class InvalidKey(InvalidRequest, errors.InvalidKey):
    """400: the key is empty, not UTF-8 or holds a control character."""


class Unauthorized(ClientError, errors.Unauthorized):
    """401: missing or wrong bearer token."""


class KeyNotFound(ClientError, errors.KeyNotFound):
    """404: no such key."""


class Conflict(ClientError):
    """409: the stores disagree on history (epoch mismatch, divergence)."""


class Compacted(ClientError, errors.Compacted):
    """410: the seq asked for is older than the retained change log."""


class PreconditionFailed(ClientError, errors.PreconditionFailed):
    """412: If-Match / If-None-Match / a txn's if_version did not hold."""


class TooLarge(ClientError, errors.TooLarge):
    """413: key, value or txn over the server's limits."""


class UnsupportedMediaType(ClientError, errors.UnsupportedMediaType):
    """415: a POST body sent without the Content-Type the endpoint reads."""


class InsufficientStorage(ClientError, errors.InsufficientStorage):
    """507: the server's disk is full; nothing of the write was kept. Retry later."""


class Unavailable(ClientError):
    """503: the replica cannot answer now (not ready, no manager, shutting down)."""


class WaitTimeout(ClientError, errors.WaitTimeout):
    """504: `ack=N` or `min_seq` did not hold in time (a write itself stays committed)."""


class UnknownOutcome(ClientError, errors.UnknownOutcome):
    """504 `unknown_outcome`: a follower sent the write on to the manager and had no answer; it
    may have been applied. Read the key, or retry with If-Match / If-None-Match (a txn with
    if_version) so that a retry cannot apply it twice."""


_BY_CODE: dict[str, type[ClientError]] = {
    "invalid_key": InvalidKey,
    "unknown_outcome": UnknownOutcome,
}
_BY_STATUS: dict[int, type[ClientError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    404: KeyNotFound,
    409: Conflict,
    410: Compacted,
    412: PreconditionFailed,
    413: TooLarge,
    415: UnsupportedMediaType,
    503: Unavailable,
    504: WaitTimeout,
    507: InsufficientStorage,
}
_STATUS_OF_CODE = {cls.code: status for status, cls in _BY_STATUS.items() if cls.code != "error"}


def error_for(status: int, body: bytes, retry_after: str | None = None) -> ClientError:
    """The exception for an error answer, decoded by `errors.from_wire` and typed by the
    domain error it names (else by status); a body that is not our JSON still gives a message."""
    domain = errors.from_wire(status, body, _NotOurs)
    if isinstance(domain, _NotOurs):
        code, message = f"http_{status}", body.decode("utf-8", "replace").strip()[:200]
    else:
        code, message = domain.wire_code or domain.code, domain.message
    cls = _client_class(type(domain)) or _BY_STATUS.get(status, ClientError)
    wait = float(retry_after) if retry_after and retry_after.isdigit() else None
    exc = cls(status, code, message or f"HTTP {status}", retry_after=wait)
    exc.details = domain.details
    return exc


class _NotOurs(errors.KVError):
    """An error answer whose body is not our JSON error (a proxy's page, an empty body)."""


def _client_class(domain: type[errors.KVError]) -> type[ClientError] | None:
    """The client class that is also the domain class, or its nearest base's."""
    for base in domain.__mro__:
        if base is errors.KVError or not issubclass(base, errors.KVError):
            return None
        for cls in (_BY_CODE.get(base.code), *_BY_STATUS.values()):
            if cls is not None and issubclass(cls, base):
                return cls
    return None


def stream_error(err: Mapping[str, Any]) -> ClientError:
    """An error line inside a stream that began with 200: typed by its code."""
    code = str(err.get("code", "error"))
    status = _STATUS_OF_CODE.get(code, 0)
    cls = _BY_CODE.get(code) or _BY_STATUS.get(status, ClientError)
    return cls(status, code, str(err.get("message", "the stream failed")))


# --- results -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """A value read. `seq` is the answering replica's applied seq (`X-KV-Seq`)."""

    key: str
    value: bytes
    version: int
    seq: int
    served_by: str


@dataclass(frozen=True)
class WriteResult:
    key: str
    version: int
    seq: int
    created: bool
    served_by: str


@dataclass(frozen=True)
class DeleteResult:
    key: str
    seq: int
    served_by: str


@dataclass(frozen=True)
class ListItem:
    key: str
    version: int
    seq: int
    size: int
    value: bytes | None = None  # only with values=True


@dataclass(frozen=True)
class Page:
    items: list[ListItem]
    next: str | None  # pass as start_after for the next page; None on the last page


@dataclass(frozen=True)
class TxnOp:
    """One op of a txn; build with `TxnOp.put(...)` or `TxnOp.delete(...)`."""

    op: Literal["put", "delete"]
    key: str
    value: bytes | None = None
    if_version: int | None = None

    @classmethod
    def put(cls, key: str, value: bytes, if_version: int | None = None) -> TxnOp:
        return cls("put", key, value, if_version)

    @classmethod
    def delete(cls, key: str, if_version: int | None = None) -> TxnOp:
        return cls("delete", key, None, if_version)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "key": self.key}
        if self.value is not None:
            out["value"] = base64.b64encode(self.value).decode("ascii")
        if self.if_version is not None:
            out["if_version"] = self.if_version
        return out


@dataclass(frozen=True)
class TxnResult:
    seq: int  # seq of the txn's last change
    results: list[dict[str, Any]]  # one per op, as the server reports it


@dataclass(frozen=True)
class Event:
    """One change from a watch stream. `version` is 0 and `value` None for a delete."""

    seq: int
    op: str
    key: str
    version: int
    value: bytes | None

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Event:
        raw = obj.get("value")
        value = base64.b64decode(raw) if isinstance(raw, str) else None
        return cls(int(obj["seq"]), str(obj["op"]), str(obj["key"]), int(obj["version"]), value)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seq": self.seq, "op": self.op, "key": self.key}
        out["version"] = self.version
        if self.value is not None:
            out["value"] = base64.b64encode(self.value).decode("ascii")
        return out


@dataclass(frozen=True)
class Digest:
    seq: int
    digest: str


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: list[str]  # the server's lines, e.g. "[+]db ok"


class ManagerInfo(TypedDict):
    url: str | None
    seq: int | None
    connected: bool


class LagInfo(TypedDict):
    entries: int | None
    seconds: float | None


class FollowerStatus(TypedDict):
    pod: str
    acked_seq: int
    lag_entries: int
    since: float | str | None


class Status(TypedDict):
    pod: str
    ordinal: int
    role: str
    epoch: str
    applied_seq: int
    ready: bool
    manager: ManagerInfo
    lag: LagInfo
    followers: NotRequired[list[FollowerStatus]]  # the manager only
    keys: int
    digest: str
    oldest_seq: NotRequired[int]  # the oldest change still in the log (watch --since floor)
    uptime_seconds: NotRequired[float]


# --- the client --------------------------------------------------------------------------------
class KVClient:
    """One connection pool to one kvstore server. Use as `async with KVClient(url) as kv`."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connections: int = 100,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(limit=self._connections)
        self._session = aiohttp.ClientSession(
            connector=connector, headers=self._headers, timeout=STREAM_TIMEOUT
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- plumbing ----------------------------------------------------------------------------
    def _url(self, path: str, query: Query | None = None) -> URL:
        params = {k: str(v) for k, v in (query or {}).items() if v is not None}
        suffix = f"?{urlencode(params)}" if params else ""
        return URL(f"{self.url}{path}{suffix}", encoded=True)

    def _key_path(self, key: str) -> str:
        return "/v1/kv/" + quote(key, safe="")

    async def _request(
        self,
        method: str,
        url: URL,
        *,
        data: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        wait: float | None = None,
        ok: Sequence[int] = (),
    ) -> tuple[aiohttp.ClientResponse, bytes]:
        """Send one request, read the whole answer, raise the typed error for a 4xx/5xx
        (unless listed in `ok`). `wait` is a server-side wait (timeout=S) added to the deadline."""
        if self._session is None:
            raise RuntimeError("KVClient is not open: use `async with KVClient(url) as kv`")
        deadline = aiohttp.ClientTimeout(total=self.timeout + (wait or 0.0))
        # aiohttp wants large bodies as a stream (it warns about raw bytes over 1 MiB).
        payload = io.BytesIO(data) if data is not None and len(data) > LARGE_BODY else data
        try:
            async with self._session.request(
                method, url, data=payload, headers=headers, timeout=deadline
            ) as resp:
                body = await resp.read()
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"cannot reach {self.url}: {_reason(exc)}") from exc
        except TimeoutError as exc:
            raise ConnectionFailed(
                f"no answer from {self.url} within {deadline.total:g} s"
            ) from exc
        if resp.status >= 400 and resp.status not in ok:
            raise error_for(resp.status, body, resp.headers.get("Retry-After"))
        return resp, body

    async def _json(self, method: str, url: URL, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else None
        _, raw = await self._request(method, url, data=data, headers=headers)
        return json.loads(raw)

    # --- keys --------------------------------------------------------------------------------
    async def get(
        self,
        key: str,
        *,
        min_seq: int | None = None,
        timeout: float | None = None,
        consistency: Literal["manager"] | None = None,
    ) -> Item:
        query: Query = {"min_seq": min_seq, "timeout": timeout, "consistency": consistency}
        resp, body = await self._request("GET", self._url(self._key_path(key), query), wait=timeout)
        h = resp.headers
        return Item(key, body, _etag(h), int(h.get("X-KV-Seq", 0)), h.get("X-KV-Served-By", ""))

    async def put(
        self,
        key: str,
        value: bytes,
        *,
        if_match: int | None = None,
        if_none_match: bool = False,
        ack: int | None = None,
        timeout: float | None = None,
    ) -> WriteResult:
        headers = _conditions(if_match, if_none_match)
        url = self._url(self._key_path(key), {"ack": ack, "timeout": timeout})
        resp, body = await self._request("PUT", url, data=value, headers=headers, wait=timeout)
        data = json.loads(body)
        served_by = resp.headers.get("X-KV-Served-By", "")
        return WriteResult(data["key"], data["version"], data["seq"], resp.status == 201, served_by)

    async def delete(self, key: str, *, if_match: int | None = None) -> DeleteResult:
        url = self._url(self._key_path(key))
        resp, body = await self._request("DELETE", url, headers=_conditions(if_match, False))
        data = json.loads(body)
        return DeleteResult(data["key"], data["seq"], resp.headers.get("X-KV-Served-By", ""))

    async def list(
        self,
        prefix: str = "",
        *,
        start_after: str | None = None,
        limit: int | None = None,
        values: bool = False,
    ) -> Page:
        query: Query = {"prefix": prefix or None, "start_after": start_after, "limit": limit}
        query["values"] = "true" if values else None
        data = await self._json("GET", self._url("/v1/kv", query))
        items = [_list_item(obj) for obj in data["items"]]
        return Page(items, data.get("next"))

    async def list_all(
        self, prefix: str = "", *, limit: int | None = None, values: bool = False
    ) -> AsyncGenerator[Page, None]:
        """Every page under `prefix`, following `next`; `limit` is the page size."""
        start_after: str | None = None
        while True:
            page = await self.list(prefix, start_after=start_after, limit=limit, values=values)
            yield page
            if page.next is None:
                return
            start_after = page.next

    async def txn(self, ops: Sequence[TxnOp]) -> TxnResult:
        data = await self._json("POST", self._url("/v1/txn"), {"ops": [o.to_json() for o in ops]})
        return TxnResult(int(data["seq"]), list(data.get("results", [])))

    async def watch(
        self, prefix: str = "", since: int | None = None
    ) -> AsyncGenerator[Event, None]:
        """Every change with seq > `since` under `prefix`, then live ones, until the server
        closes the stream. Close it early with `contextlib.aclosing`."""
        if self._session is None:
            raise RuntimeError("KVClient is not open: use `async with KVClient(url) as kv`")
        url = self._url("/v1/watch", {"prefix": prefix or None, "since": since})
        try:
            async with self._session.get(url, timeout=STREAM_TIMEOUT) as resp:
                if resp.status >= 400:
                    body = await resp.read()
                    raise error_for(resp.status, body, resp.headers.get("Retry-After"))
                async for line in iter_lines(resp.content):
                    if not line.strip():
                        continue
                    obj = json.loads(line)
                    if "key" in obj:
                        yield Event.from_json(obj)
                    elif "error" in obj:
                        raise stream_error(obj["error"])
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"watch on {self.url} failed: {_reason(exc)}") from exc

    # --- operations --------------------------------------------------------------------------
    async def status(self) -> Status:
        return cast(Status, await self._json("GET", self._url("/v1/status")))

    async def digest(self) -> Digest:
        data = await self._json("GET", self._url("/v1/digest"))
        return Digest(int(data["seq"]), str(data["digest"]))

    async def readyz(self) -> Readiness:
        resp, body = await self._request("GET", self._url("/readyz"), ok=(503,))
        lines = [ln for ln in body.decode("utf-8", "replace").splitlines() if ln.strip()]
        return Readiness(resp.status == 200, lines)


# --- helpers -----------------------------------------------------------------------------------
def _conditions(if_match: int | None, if_none_match: bool) -> dict[str, str]:
    headers = {}
    if if_match is not None:
        headers["If-Match"] = f'"{if_match}"'
    if if_none_match:
        headers["If-None-Match"] = "*"
    return headers


def _etag(headers: Mapping[str, str]) -> int:
    raw = headers.get("ETag", "").strip().removeprefix("W/").strip('"')
    return int(raw) if raw.isdigit() else 0


def _list_item(obj: Mapping[str, Any]) -> ListItem:
    raw = obj.get("value")
    value = base64.b64decode(raw) if isinstance(raw, str) else None
    return ListItem(str(obj["key"]), int(obj["version"]), int(obj["seq"]), int(obj["size"]), value)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        if isinstance(err, socket.gaierror):  # DNS
            return f"cannot resolve the host name ({err.strerror})"
        return os.strerror(err.errno).lower() if err.errno else str(err)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    return str(exc) or type(exc).__name__
