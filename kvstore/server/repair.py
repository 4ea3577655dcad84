"""`kvstore repair`'s endpoints (the client group):

- POST /v1/repair/resync {"backup"?: <path>} on a follower: write a backup of its data (into
  its data directory unless a path is given), then replace the data with a snapshot from the
  manager. The one way past a divergence or an epoch mismatch, and only on request.
- POST /v1/repair/restore-from {"pod": "kv-N"} on a manager that waits because its peers hold
  different epochs: restore from that peer.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from kvstore import wire
from kvstore.cluster.restore import restore_from_request
from kvstore.errors import InvalidRequest
from kvstore.server import httputil as h
from kvstore.server import routes
from kvstore.server.keys import FOLLOWER, NODE
from kvstore.server.routes import CLIENT

BODY_LIMIT = 64 * 1024  # a path or a pod name


async def _doc(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    h.require_media_type(request, "application/json")
    doc = h.parse_json(await h.read_body(request, BODY_LIMIT, "the body"), "the body")
    if not isinstance(doc, dict):
        raise InvalidRequest("the body must be a JSON object")
    return doc


async def resync(request: web.Request) -> web.StreamResponse:
    follower = request.app.get(FOLLOWER)
    if follower is None:
        raise InvalidRequest("resync is for a follower; this pod is the manager")
    doc = await _doc(request)
    backup = doc.get("backup")
    if backup is not None and not _is_file_name(backup):
        raise InvalidRequest(
            '"backup" must be a file name (letters, digits, ".", "-", "_"; at most 128): '
            "the backup is written in the pod's data directory, never elsewhere"
        )
    return h.json_response(await follower.resync(backup))


async def restore_from(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE]
    doc = await _doc(request)
    pod = doc.get("pod")
    if not isinstance(pod, str) or not pod:
        raise InvalidRequest('expected {"pod": "<the peer to restore from, e.g. kv-1>"}')
    answer = await restore_from_request(node, pod)
    if not answer["accepted"]:
        raise InvalidRequest(f"restore-from: {answer['reason']}")
    return h.json_response(answer)


def _is_file_name(name: object) -> bool:
    """A plain file name: a client never chooses where on the pod's disk a file is written."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= 128
        and not name.startswith(".")
        and all(c.isascii() and (c.isalnum() or c in ".-_") for c in name)
    )


def add_routes(app: web.Application) -> None:
    routes.add(app, "POST", wire.RESYNC_PATH, resync, CLIENT)
    routes.add(app, "POST", wire.RESTORE_FROM_PATH, restore_from, CLIENT)
