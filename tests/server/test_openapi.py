"""The OpenAPI document (kvstore/server/openapi.json) is valid OpenAPI 3.1 and true: every
aiohttp route is described, every described operation is a route, the open ones are the routes
of the open group, and a pod serves the document as it is."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from openapi_spec_validator import validate

from kvstore import config
from kvstore.local.dns import DNSServer
from kvstore.server import openapi, routes
from kvstore.server.app import create_app
from kvstore.server.routes import OPEN
from tests.server.test_api import make_client

METHODS = ("get", "put", "post", "delete", "options", "head", "patch")


def _app() -> web.Application:
    return create_app(config.load(env={"KV_POD_NAME": "kv-0", "KV_DATA_DIR": "/x"}))


def app_routes(app: web.Application) -> dict[tuple[str, str], str]:
    """(METHOD, path template) -> group name, for every route; HEAD goes with its GET."""
    out = {}
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource else {}
        path = str(info.get("path") or info.get("formatter"))
        group = routes.group_of(app, route.handler)
        out[(route.method, path)] = group.name if group else "NONE"
    return out


def described() -> dict[tuple[str, str], dict[str, object]]:
    doc = openapi.document()
    return {
        (method.upper(), path): op
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in METHODS
    }


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = openapi.document()
    assert doc["openapi"].startswith("3.1")
    validate(doc)  # raises on any error


def test_every_route_is_described_and_every_description_is_a_route() -> None:
    actual = app_routes(_app())
    documented = described()
    assert sorted(set(actual) - set(documented)) == [], "routes the document does not describe"
    assert sorted(set(documented) - set(actual)) == [], "described operations that are no route"
    for key, op in documented.items():
        is_open = op.get("security") == [{}]
        assert is_open == (actual[key] == OPEN.name), f"{key}: security says open={is_open}"
        assert op.get("operationId") and op.get("responses"), key
    ids = [op["operationId"] for op in documented.values()]
    assert len(ids) == len(set(ids))


def test_documented_parameters_are_those_the_handlers_read() -> None:
    documented = described()
    doc = openapi.document()
    names = {
        key: {
            p["name"]
            for p in [*doc["paths"][key[1]].get("parameters", []), *op.get("parameters", [])]  # type: ignore[misc]
            if p["in"] == "query"
        }
        for key, op in documented.items()
    }
    assert names[("PUT", "/v1/kv/{key}")] == {"ack", "timeout", "redirect"}
    assert names[("GET", "/v1/kv/{key}")] == {"consistency", "min_seq", "timeout", "redirect"}
    assert names[("GET", "/v1/kv")] == {"prefix", "start_after", "limit", "values"}
    assert names[("GET", "/v1/replication/stream")] == {"from", "epoch", "term", "pod"}
    assert names[("GET", "/v1/replication/snapshot")] == {"from", "epoch", "term", "pod"}


async def test_a_pod_serves_the_document(tmp_path: Path, dns: DNSServer) -> None:
    client = await make_client(tmp_path, dns, KV_AUTH_TOKEN="s3cret")
    try:
        async with client.get("/v1/openapi.json") as resp:  # open: no token
            assert resp.status == 200 and resp.content_type == "application/json"
            assert await resp.read() == openapi.document_bytes()
    finally:
        await client.close()
