"""`GET /v1/openapi.json`: the OpenAPI 3.1 document of the whole HTTP API, kvstore/server/
openapi.json, served as it is in the package (tests/server/test_openapi.py keeps it and the routes
the same)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from aiohttp import web

from kvstore.server import routes
from kvstore.server.routes import OPEN

DOCUMENT = "openapi.json"


@cache
def document_bytes() -> bytes:
    return resources.files("kvstore.server").joinpath(DOCUMENT).read_bytes()


def document() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(document_bytes())
    return doc


async def openapi(request: web.Request) -> web.StreamResponse:
    return web.Response(body=document_bytes(), headers={"Content-Type": "application/json"})


def add_routes(app: web.Application) -> None:
    routes.add(app, "GET", "/v1/openapi.json", openapi, OPEN)
