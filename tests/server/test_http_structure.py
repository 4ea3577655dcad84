"""The HTTP surface's structure, in-process with the real app and store: every route has a
group, the unexpected is a JSON 500 with a request id, a full disk is a 507 that names its
cause, and log lines cannot be forged."""

from __future__ import annotations

import io
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from kvstore import config
from kvstore import errors as e
from kvstore.errors import InsufficientStorage
from kvstore.local.dns import DNSServer
from kvstore.model import PUT, Op, WriteRequest
from kvstore.server import logs, routes
from kvstore.server.app import create_app
from kvstore.server.httputil import STATUS, status_of
from kvstore.server.keys import STORE
from kvstore.server.routes import CLIENT, OPEN, REPLICATION
from tests.server.test_api import error_of, make_client


def _app(**env: str) -> web.Application:
    return create_app(config.load(env={"KV_POD_NAME": "kv-0", "KV_DATA_DIR": "/x", **env}))


def route_table(app: web.Application) -> list[tuple[str, str, str]]:
    """(method, path, group) of every route aiohttp will match, HEAD routes included."""
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = str(info.get("path") or info.get("formatter"))
        group = routes.group_of(app, route.handler)
        out.append((route.method, path, group.name if group else "NONE"))
    return sorted(out)


def test_every_route_belongs_to_a_group() -> None:
    app = _app(KV_AUTH_TOKEN="s3cret")
    table = route_table(app)
    assert table and all(group != "NONE" for _, _, group in table), table
    by_route = {(m, p): g for m, p, g in table}
    for path in ("/v1/replication/stream", "/v1/replication/snapshot"):
        assert by_route[("GET", path)] == REPLICATION.name
        assert by_route[("HEAD", path)] == REPLICATION.name
    for path in ("/v1/replication/ack", "/v1/replication/acks"):
        assert by_route[("POST", path)] == REPLICATION.name
    for route in (("GET", "/v1/kv/{key}"), ("PUT", "/v1/kv/{key}"), ("POST", "/v1/txn")):
        assert by_route[route] == CLIENT.name
    open_routes = sorted(p for (m, p), g in by_route.items() if g == OPEN.name and m == "GET")
    assert open_routes == ["/", "/livez", "/metrics", "/readyz", "/v1/openapi.json", "/web/{name}"]
    # With only the client token set, it is the replication group's token too.
    settings = config.load(env={"KV_POD_NAME": "kv-0", "KV_AUTH_TOKEN": "s3cret"})
    assert REPLICATION.token(settings) == "s3cret"


async def test_an_unexpected_error_is_a_json_500_with_a_request_id(
    tmp_path: Path, dns: DNSServer, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("a bug, not the client's doing")

    client = await make_client(tmp_path, dns, extra_routes=[("GET", "/v1/broken", broken)])
    try:
        with caplog.at_level(logging.ERROR, logger="kvstore.http"):
            async with client.get("/v1/broken") as resp:
                err = await error_of(resp, 500, "internal")
                request_id = resp.headers["X-Request-Id"]
        assert err["request_id"] == request_id and request_id in err["message"]
        record = next(r for r in caplog.records if request_id in r.getMessage())
        assert record.exc_info is not None and "a bug" in str(record.exc_info[1])
        async with client.get("/livez") as resp:  # still serving
            assert resp.status == 200
    finally:
        await client.close()


async def test_a_full_disk_is_507_with_the_sqlite_error_as_its_cause(
    tmp_path: Path, dns: DNSServer
) -> None:
    client = await make_client(tmp_path, dns)
    store = client.app[STORE]
    try:
        async with client.put("/v1/kv/small", data=b"x") as resp:
            assert resp.status == 201
        conn: sqlite3.Connection = store._wc
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # the database cannot grow now
        async with client.put("/v1/kv/big", data=b"y" * 200_000) as resp:
            err = await error_of(resp, 507, "insufficient_storage")
            assert resp.headers["Retry-After"].isdigit()
        assert "full" in err["message"] and "cannot rollback" not in err["message"]
        with pytest.raises(InsufficientStorage) as caught:
            await store.write(WriteRequest([Op(PUT, "big", b"y" * 200_000)]))
        cause = caught.value.__cause__
        assert isinstance(cause, sqlite3.OperationalError), repr(cause)
        assert cause.sqlite_errorcode == sqlite3.SQLITE_FULL
        assert store.state.seq == 1  # nothing kept
        conn.execute("PRAGMA max_page_count = 1073741823")  # space again: writes go on
        async with client.put("/v1/kv/big", data=b"y" * 200_000) as resp:
            assert resp.status == 201 and (await resp.json())["seq"] == 2
        async with client.get("/v1/kv/big") as resp:
            assert resp.status == 200 and len(await resp.read()) == 200_000
    finally:
        await client.close()


def test_a_text_log_line_cannot_be_forged() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.TextFormatter("%(name)s: %(message)s"))
    logger = logging.getLogger("kvstore.test-forge")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("follower %s connected", "kv-1\n2026 INFO forged\r\u2028x\x1b[31m")
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed for %s", "a\nb")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert (
        lines[0]
        == "kvstore.test-forge: follower kv-1\\n2026 INFO forged\\r\\u2028x\\x1b[31m connected"
    )
    assert lines[1] == "kvstore.test-forge: failed for a\\nb"
    assert lines[2] == "Traceback (most recent call last):"  # a traceback keeps its lines


def test_status_codes_of_the_new_errors() -> None:
    expected: dict[type[Any], int] = {
        e.UnsupportedMediaType: 415,
        e.UnknownOutcome: 504,
        e.InsufficientStorage: 507,
        e.Internal: 500,
    }
    for cls, status in expected.items():
        assert STATUS[cls] == status and status_of(cls("x")) == status
        assert e.BY_CODE[cls.code] is cls
