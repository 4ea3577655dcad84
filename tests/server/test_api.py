"""The client API in-process (the real app, the real store, a real DNS server on loopback):
every bad input gets a 4xx with a JSON error naming what was wrong, and nothing half-written."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from kvstore import config
from kvstore.local.dns import DNSServer
from kvstore.server import routes
from kvstore.server.app import create_app
from kvstore.server.httputil import Handler

JSON = {"Content-Type": "application/json"}


async def make_client(
    tmp_path: Path,
    dns: DNSServer,
    *,
    extra_routes: Sequence[tuple[str, str, Handler]] = (),
    **env: str,
) -> TestClient[Any, Any]:
    """The real app on a test server; `extra_routes` (in the client group) are added first."""
    base = {"KV_POD_NAME": "kv-0", "KV_DATA_DIR": str(tmp_path), "KV_DNS_SERVER": dns.address}
    base["KV_RESTORE_WAIT"] = "0"  # an empty manager asks the pods DNS lists once, no waiting
    app = create_app(config.load(env={**base, **env}))
    for method, path, handler in extra_routes:
        routes.add(app, method, path, handler, routes.CLIENT)
    client: TestClient[Any, Any] = TestClient(TestServer(app))
    await client.start_server()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # 503 until its startup restore check is done
        async with client.get("/readyz") as resp:
            if resp.status == 200:
                return client
        await _tick()
    await client.close()
    raise AssertionError("the manager never became ready within 30 s")


async def _tick() -> None:
    import asyncio

    await asyncio.sleep(0.01)


@pytest.fixture
async def client(tmp_path: Path, dns: DNSServer) -> AsyncIterator[TestClient[Any, Any]]:
    c = await make_client(tmp_path, dns, KV_MAX_VALUE_BYTES="1000", KV_MAX_TXN_OPS="5")
    yield c
    await c.close()


async def error_of(resp: Any, status: int, code: str) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    err: dict[str, Any] = (await resp.json())["error"]
    assert err["code"] == code and err["message"]
    return err


async def test_put_get_delete_and_headers(client: TestClient[Any, Any]) -> None:
    async with client.put("/v1/kv/a%2Fb", data=b"\x00\xff") as resp:
        assert resp.status == 201 and resp.headers["ETag"] == '"1"'
        assert await resp.json() == {"key": "a/b", "version": 1, "seq": 1}
    async with client.put("/v1/kv/a%2Fb", data=b"2") as resp:
        assert resp.status == 200 and resp.headers["X-KV-Seq"] == "2"
    async with client.get("/v1/kv/a%2Fb") as resp:
        assert await resp.read() == b"2" and resp.headers["ETag"] == '"2"'
        assert resp.headers["X-KV-Served-By"] == "kv-0"
    async with client.delete("/v1/kv/a%2Fb", headers={"If-Match": '"1"'}) as resp:
        await error_of(resp, 412, "precondition_failed")
    async with client.delete("/v1/kv/a%2Fb", headers={"If-Match": '"2"'}) as resp:
        assert await resp.json() == {"key": "a/b", "seq": 3}
    async with client.delete("/v1/kv/a%2Fb") as resp:
        await error_of(resp, 404, "not_found")


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("PUT", "/v1/kv/%01", {"data": b"x"}, 400, "invalid_key"),
        ("PUT", "/v1/kv/", {"data": b"x"}, 400, "invalid_key"),
        ("PUT", "/v1/kv/%FF", {"data": b"x"}, 400, "invalid_key"),
        ("PUT", "/v1/kv/" + "k" * 1025, {"data": b"x"}, 413, "too_large"),
        ("PUT", "/v1/kv/big", {"data": b"x" * 1001}, 413, "too_large"),
        ("PUT", "/v1/kv/x", {"data": b"1", "headers": {"If-Match": "v1"}}, 400, "invalid_request"),
        (
            "PUT",
            "/v1/kv/x",
            {"data": b"1", "headers": {"If-None-Match": '"3"'}},
            400,
            "invalid_request",
        ),
        ("PUT", "/v1/kv/x?ack=many", {"data": b"1"}, 400, "invalid_request"),
        ("GET", "/v1/kv/x?min_seq=-1", {}, 400, "invalid_request"),
        ("GET", "/v1/kv/x?min_seq=1&timeout=forever", {}, 400, "invalid_request"),
        ("GET", "/v1/kv/x?consistency=strong", {}, 400, "invalid_request"),
        ("GET", "/v1/kv?limit=1001", {}, 400, "invalid_request"),
        ("GET", "/v1/kv?limit=0", {}, 400, "invalid_request"),
        ("GET", "/v1/kv?values=perhaps", {}, 400, "invalid_request"),
        ("GET", "/v1/watch?since=abc", {}, 400, "invalid_request"),
        ("POST", "/v1/txn", {"data": b"{not json", "headers": JSON}, 400, "invalid_request"),
        ("POST", "/v1/txn", {"data": b'{"ops": []}'}, 415, "unsupported_media_type"),
        ("POST", "/v1/txn", {"data": b"[" * 100_000, "headers": JSON}, 400, "invalid_request"),
        ("POST", "/v1/txn", {"json": {"ops": []}}, 400, "invalid_request"),
        ("POST", "/v1/txn", {"json": [1, 2]}, 400, "invalid_request"),
        ("POST", "/v1/txn", {"json": {"ops": [{"op": "get", "key": "a"}]}}, 400, "invalid_request"),
        (
            "POST",
            "/v1/txn",
            {"json": {"ops": [{"op": "put", "key": "a", "value": "@@"}]}},
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/txn",
            {"json": {"ops": [{"op": "put", "key": "a", "value": "eA==", "if_version": "1"}]}},
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/txn",
            {"json": {"ops": [{"op": "put", "key": "a", "value": "eA==", "extra": 1}]}},
            400,
            "invalid_request",
        ),
        (
            "POST",
            "/v1/txn",
            {"json": {"ops": [{"op": "delete", "key": "a"}] * 6}},
            413,
            "too_large",
        ),
        ("GET", "/v1/nothing", {}, 404, "not_found"),
        ("PATCH", "/v1/kv/x", {}, 405, "method_not_allowed"),
        ("GET", "/v1/kv/x?min_seq=99&timeout=0.05", {}, 504, "timeout"),
    ],
)
async def test_bad_input_gets_a_json_4xx(
    client: TestClient[Any, Any],
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    async with client.request(method, path, **kwargs) as resp:
        await error_of(resp, status, code)
    async with client.get("/v1/status") as resp:
        assert (await resp.json())["applied_seq"] == 0  # nothing was written


async def test_txn_is_all_or_nothing_and_names_the_failing_op(
    client: TestClient[Any, Any],
) -> None:
    v = base64.b64encode(b"1").decode()
    ops: list[dict[str, Any]] = [
        {"op": "put", "key": "t1", "value": v},
        {"op": "put", "key": "t2", "value": v, "if_version": 3},
    ]
    async with client.post("/v1/txn", json={"ops": ops}) as resp:
        err = await error_of(resp, 412, "precondition_failed")
        assert err["op_index"] == 1 and "op 1" in err["message"]
    async with client.get("/v1/kv/t1") as resp:
        assert resp.status == 404
    ops[1]["if_version"] = 0
    ops.append({"op": "delete", "key": "missing"})
    async with client.post("/v1/txn", json={"ops": ops}) as resp:
        doc = await resp.json()
    assert doc["seq"] == 2 and doc["results"][2] == {
        "op": "delete",
        "key": "missing",
        "deleted": False,
    }


async def test_list_pages_in_key_order(client: TestClient[Any, Any]) -> None:
    for key in ["b/2", "a/1", "b/1", "b/3", "c/1"]:
        async with client.put(f"/v1/kv/{key}", data=key.encode()):
            pass
    seen, after = [], ""
    while True:
        async with client.get(f"/v1/kv?prefix=b/&limit=2&start_after={after}") as resp:
            page = await resp.json()
        seen += [item["key"] for item in page["items"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert seen == ["b/1", "b/2", "b/3"]
    async with client.get("/v1/kv?prefix=a/&values=true") as resp:
        item = (await resp.json())["items"][0]
    assert item == {"key": "a/1", "version": 1, "seq": 2, "size": 3, "value": "YS8x"}


async def test_watch_replays_then_goes_live_and_410_when_compacted(
    tmp_path: Path, dns: DNSServer
) -> None:
    client = await make_client(tmp_path, dns, KV_LOG_RETENTION="3")
    try:
        for i in range(6):
            async with client.put(f"/v1/kv/w{i}", data=b"v"):
                pass
        async with client.get("/v1/watch?since=0") as resp:
            err = await error_of(resp, 410, "compacted")
            assert err["oldest"] >= 2
        async with client.get("/v1/watch?since=4&prefix=w") as resp:
            line = json.loads(await resp.content.readline())
            assert (line["seq"], line["key"], line["op"]) == (5, "w4", "put")
    finally:
        await client.close()


async def test_auth_token(tmp_path: Path, dns: DNSServer) -> None:
    client = await make_client(tmp_path, dns, KV_AUTH_TOKEN="s3cret")
    try:
        async with client.put("/v1/kv/a", data=b"1") as resp:
            await error_of(resp, 401, "unauthorized")
        async with client.put("/v1/kv/a", data=b"1", headers={"Authorization": "Bearer nope"}) as r:
            await error_of(r, 401, "unauthorized")
        async with client.put(
            "/v1/kv/a", data=b"1", headers={"Authorization": "Bearer s3cret"}
        ) as resp:
            assert resp.status == 201
        async with client.get("/livez") as resp:  # probes need no token
            assert resp.status == 200
    finally:
        await client.close()
