"""HTTP plumbing shared by the handlers: JSON errors (mapped in one middleware, the unexpected
included), auth, strict query parameters and headers (ASCII digits only, each parameter at
most once), media types, JSON bounded before it is parsed, and bounded body reads."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import unquote

from aiohttp import web

from kvstore import errors as e

log = logging.getLogger("kvstore.http")
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Every domain error maps to exactly one HTTP status here, and nowhere else.
STATUS: dict[type[e.KVError], int] = {
    e.InvalidKey: 400,
    e.InvalidRequest: 400,
    e.Unauthorized: 401,
    e.KeyNotFound: 404,
    e.EpochMismatch: 409,
    e.Diverged: 409,
    e.Compacted: 410,
    e.PreconditionFailed: 412,
    e.TooLarge: 413,
    e.TooManyWatches: 429,
    e.UnsupportedMediaType: 415,
    e.Internal: 500,
    e.NotReady: 503,
    e.ManagerUnavailable: 503,
    e.ShuttingDown: 503,
    e.StoreClosed: 503,
    e.WaitTimeout: 504,
    e.UnknownOutcome: 504,
    e.InsufficientStorage: 507,
}
RETRY_AFTER = (
    e.NotReady,
    e.ManagerUnavailable,
    e.ShuttingDown,
    e.StoreClosed,
    e.InsufficientStorage,
)
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    431: "headers_too_large",
}
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')  # unrolled: C-speed over long strings
REQUEST_ID = "X-Request-Id"
# A whole number in a parameter or header: ASCII digits only (int() would also take an
# Arabic-Indic "1", "1_0", "+5" and " 5"), and few enough of them for a 64-bit seq or version.
WHOLE = re.compile(r"[0-9]{1,18}")
SECONDS = re.compile(r"[0-9]{1,9}(?:\.[0-9]{1,9})?")
# The JSON bodies we take are a few levels deep; anything deeper is refused before parsing.
JSON_DEPTH = 16
_JSON_TOKEN = re.compile(rb'[\[\]{}]|"(?:[^"\\]|\\.)*"', re.DOTALL)


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    err.update(details)
    return {"error": err}


def json_response(
    data: Any,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> web.Response:
    # A bytes body with its Content-Type among the headers is aiohttp's quickest path (a str
    # body goes through its payload registry).
    body = json.dumps(data, separators=(",", ":")).encode()
    all_headers = {"Content-Type": "application/json"}
    if headers:
        all_headers.update(headers)
    return web.Response(body=body, status=status, headers=all_headers)


def status_of(exc: e.KVError) -> int:
    """The class's status, or its nearest base's: a subclass never silently becomes a 400."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(exc: e.KVError) -> web.Response:
    status = status_of(exc)
    headers = {}
    if isinstance(exc, RETRY_AFTER):
        headers["Retry-After"] = str(exc.details.pop("retry_after", 1))
    return json_response(error_body(exc.code, exc.message, **exc.details), status, headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Domain errors and aiohttp's own HTTP errors as JSON; anything else, which no input may
    cause, as a JSON 500 `internal` with a request id (the log has the traceback under it)."""
    try:
        return await handler(request)
    except e.KVError as exc:
        return error_response(exc)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        code = HTTP_CODES.get(exc.status, "error")
        return json_response(
            error_body(code, f"{exc.reason}: {request.method} {request.path}"),
            exc.status,
            {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None,
        )
    except ConnectionError:
        raise  # the client went away: nobody to answer
    except Exception as exc:
        return internal_error(request, exc)


def internal_error(request: web.Request, exc: BaseException) -> web.Response:
    request_id = uuid.uuid4().hex
    log.error(
        "internal error %s in %s %s",
        request_id,
        request.method,
        request.rel_url.raw_path,
        exc_info=exc,
    )
    error = e.Internal(
        f"an internal error ({type(exc).__name__}); the server log has it under request id "
        f"{request_id}",
        request_id=request_id,
    )
    response = error_response(error)
    response.headers[REQUEST_ID] = request_id
    return response


@web.middleware
async def query_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Each query parameter at most once: one request, read one way, on every pod (a follower
    forwards the query as it came)."""
    if request.query_string:
        query = request.query
        if len(query) != len(set(query.keys())):
            twice = sorted({k for k in query if len(query.getall(k)) > 1})
            raise e.InvalidRequest(
                f"the parameter(s) {', '.join(twice)} given more than once: give each once"
            )
    return await handler(request)


def check_token(request: web.Request, token: str | None, what: str) -> None:
    """Constant-time comparison of `Authorization: Bearer <token>`, as bytes: the header may
    hold any bytes (aiohttp keeps those that are not UTF-8 as surrogates)."""
    if token is None:
        return
    given = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    scheme, _, value = given.partition(b" ")
    if scheme.lower() != b"bearer" or not hmac.compare_digest(value.strip(), token.encode()):
        raise e.Unauthorized(f"{what} needs the header Authorization: Bearer <token>")


def whole_number(raw: str, what: str) -> int:
    """ASCII digits only, at most 18 of them; InvalidRequest naming `what` otherwise."""
    if not WHOLE.fullmatch(raw):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise e.InvalidRequest(f"{what}={shown!r}: expected a whole number (digits 0-9)")
    return int(raw)


def require_media_type(request: web.Request, expected: str) -> None:
    """The body must be declared as `expected` (parameters such as charset aside): a body of
    another type, as a browser may send from any page without asking, is refused."""
    given = request.headers.get("Content-Type", "")
    media = given.split(";", 1)[0].strip().lower()
    if media != expected:
        shown = given[:80] if given else "none"
        raise e.UnsupportedMediaType(
            f"the body must be sent as Content-Type: {expected} (got {shown})",
            expected=expected,
        )


def check_json_depth(body: bytes, what: str, limit: int = JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than `limit` before it is parsed (the parser would recurse
    once per level). Strings are skipped whole, so brackets inside them do not count."""
    depth = 0
    for match in _JSON_TOKEN.finditer(body):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise e.InvalidRequest(f"{what} is nested more than {limit} levels deep")
        elif token in (b"]", b"}"):
            depth -= 1


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number we take")


def parse_json(body: bytes, what: str) -> Any:
    """A JSON body: bounded in depth first; NaN and Infinity refused; InvalidRequest for
    anything that is not JSON."""
    check_json_depth(body, what)
    try:
        return json.loads(body, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise e.InvalidRequest(f"{what} is not JSON: {exc}") from None


def is_whole(value: Any, maximum: int = (1 << 63) - 1) -> bool:
    """A JSON whole number (not a bool, not a float) from 0 to `maximum`."""
    return type(value) is int and 0 <= value <= maximum


def key_from_path(request: web.Request, prefix: str = "/v1/kv/") -> str:
    raw = request.rel_url.raw_path[len(prefix) :]
    try:
        return unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise e.InvalidKey("the key is not valid UTF-8 once percent-decoded") from None


def int_param(
    request: web.Request,
    name: str,
    default: int | None = None,
    *,
    minimum: int = 0,
    maximum: int | None = None,
) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = whole_number(raw, name)
    if value < minimum or (maximum is not None and value > maximum):
        top = "" if maximum is None else f" and at most {maximum}"
        raise e.InvalidRequest(f"{name}={value}: must be at least {minimum}{top}")
    return value


def float_param(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not SECONDS.fullmatch(raw):
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise e.InvalidRequest(f"{name}={shown!r}: expected seconds (digits, a decimal point)")
    value = float(raw)
    if not 0 <= value <= 3600:
        raise e.InvalidRequest(f"{name}={raw}: expected 0 to 3600 seconds")
    return value


def bool_param(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no", ""):
        return False
    raise e.InvalidRequest(f"{name}={raw!r}: expected true or false")


async def start_body(resp: web.StreamResponse, request: web.Request) -> bool:
    """Send a streamed answer's headers. False for HEAD: headers only, and the handler returns
    at once (a body written after them would be read as the next answer on the connection)."""
    await resp.prepare(request)
    return request.method != "HEAD"


async def read_body(request: web.Request, limit: int, what: str) -> bytes:
    """Read the body, refusing it with 413 as soon as it is known to exceed `limit` bytes."""
    length = request.content_length
    if length is not None and length > limit:
        raise e.TooLarge(
            f"{what} is {length} bytes, over the limit of {limit}", limit=limit, size=length
        )
    content = request.content
    if content.is_eof():  # the whole body has arrived (as small ones do): no await needed
        body = content.read_nowait()
        if len(body) > limit:
            raise e.TooLarge(f"{what} is over the limit of {limit} bytes", limit=limit)
        return body
    chunks, size = [], 0
    async for chunk in content.iter_any():
        size += len(chunk)
        if size > limit:
            raise e.TooLarge(f"{what} is over the limit of {limit} bytes", limit=limit)
        chunks.append(chunk)
    return b"".join(chunks)


def more_json_values_than(body: bytes, most: int) -> bool:
    """Whether a JSON document holds more than `most` values, found without parsing it and
    without copying it: what parsing allocates is about proportional to its values. Each value
    but the first follows a comma or opens a container, so these count them from above; every
    string is a value or a member's name, no more names than values, so quotes count them from
    below; only in between are the structural bytes inside strings counted out, one string at a
    time."""
    upper = 1 + body.count(b",") + body.count(b"[") + body.count(b"{")
    if upper <= most:
        return False
    if (body.count(b'"') - body.count(b'\\"')) // 4 > most:
        return True
    for match in _JSON_STRING.finditer(body):
        start, end = match.span()
        upper -= body.count(b",", start, end) + body.count(b"[", start, end)
        upper -= body.count(b"{", start, end)
    return upper > most


class Stalled(ConnectionError):
    """The reader of a long response took no byte for the write timeout: it was cut off."""


class DeadlineWriter:
    """Writes a long response (watch, stream, snapshot, backup). A reader that takes no byte for
    `timeout` seconds is cut off: the connection is aborted (its unsent bytes dropped) and
    Stalled raised, so that the handler lets go of what it holds (a read transaction, a buffer).
    A slow reader that keeps taking bytes is not cut off."""

    def __init__(self, request: web.Request, resp: web.StreamResponse, timeout: float) -> None:
        self.request, self.resp, self.timeout = request, resp, timeout
        self.sent = 0

    async def write(self, data: bytes) -> None:
        self.sent += len(data)
        transport = self.request.transport
        if transport is not None:
            _, high = transport.get_write_buffer_limits()
            if transport.get_write_buffer_size() + len(data) < high:
                await self.resp.write(data)  # it fits: the write cannot wait for the reader
                return
        try:
            async with asyncio.timeout(self.timeout):  # one timer, no task
                await self.resp.write(data)
        except TimeoutError:
            await self._wait_for_reader()

    async def _wait_for_reader(self) -> None:
        """The data is in the transport's buffer, which is not draining: wait while the reader
        takes bytes, cut it off once it has taken none for `timeout` seconds."""
        transport = self.request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the reader went away")
        low, _ = transport.get_write_buffer_limits()
        last, since = transport.get_write_buffer_size(), time.monotonic()
        step = min(1.0, self.timeout / 4)
        while True:
            await asyncio.sleep(step)
            if transport.is_closing():
                raise ConnectionResetError("the reader went away")
            size = transport.get_write_buffer_size()
            if size <= low:
                return
            if size < last:
                last, since = size, time.monotonic()
            elif time.monotonic() - since >= self.timeout:
                transport.abort()
                raise Stalled(
                    f"the reader took no byte for {self.timeout:g}s ({size} bytes unsent)"
                )


def disconnected(request: web.Request) -> bool:
    """True once the client's connection is closed or closing."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def while_connected(request: web.Request, work: Awaitable[T], poll: float = 1.0) -> T:
    """Await `work`, cancelled (and ConnectionResetError raised) if the client goes away
    meanwhile: a wait must not outlive the request it is for."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll)
            if done:
                return task.result()
            if disconnected(request):
                raise ConnectionResetError("the client went away")
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def etag_version(value: str, header: str) -> int | None:
    """`"<version>"` -> version; `*` -> None (the caller handles it)."""
    value = value.strip()
    if value == "*":
        return None
    inner = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    if not WHOLE.fullmatch(inner):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise e.InvalidRequest(f'{header}: {shown!r}: expected "<version>" or *')
    return int(inner)
