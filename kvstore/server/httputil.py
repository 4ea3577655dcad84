"""HTTP plumbing shared by the handlers: JSON errors (mapped in one middleware), auth, query
parameters and bounded body reads."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from kvstore import errors as e

log = logging.getLogger("kvstore.http")
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
    e.NotReady: 503,
    e.ManagerUnavailable: 503,
    e.ShuttingDown: 503,
    e.StoreClosed: 503,
    e.WaitTimeout: 504,
}
RETRY_AFTER = (e.NotReady, e.ManagerUnavailable, e.ShuttingDown, e.StoreClosed)
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    414: "uri_too_long",
}


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


def check_token(request: web.Request, token: str | None, what: str) -> None:
    """Constant-time comparison of `Authorization: Bearer <token>`."""
    if token is None:
        return
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        value.strip().encode(), token.encode()
    ):
        raise e.Unauthorized(f"{what} needs the header Authorization: Bearer <token>")


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
    try:
        value = int(raw)
    except ValueError:
        raise e.InvalidRequest(f"{name}={raw!r}: expected a whole number") from None
    if value < minimum or (maximum is not None and value > maximum):
        top = "" if maximum is None else f" and at most {maximum}"
        raise e.InvalidRequest(f"{name}={value}: must be at least {minimum}{top}")
    return value


def float_param(request: web.Request, name: str, default: float) -> float:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise e.InvalidRequest(f"{name}={raw!r}: expected seconds, decimals allowed") from None
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


def etag_version(value: str, header: str) -> int | None:
    """`"<version>"` -> version; `*` -> None (the caller handles it)."""
    value = value.strip()
    if value == "*":
        return None
    inner = value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    if not inner.isdigit():
        raise e.InvalidRequest(f'{header}: {value!r}: expected "<version>" or *')
    return int(inner)
