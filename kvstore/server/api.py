"""The client HTTP API (SPEC §2). Handlers parse and validate, then call the store; errors are
domain exceptions that httputil's middleware turns into JSON."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from kvstore.cluster.node import Node
from kvstore.errors import Compacted, InvalidKey, InvalidRequest, KeyNotFound, KVError, TooLarge
from kvstore.model import DELETE, PUT, Change, Op, WriteRequest, WriteResult, validate_key
from kvstore.server import httputil as h
from kvstore.server import routes
from kvstore.server.forward import forward
from kvstore.server.keys import METRICS, NODE
from kvstore.server.routes import CLIENT
from kvstore.store.feed import Subscription, subscribe
from kvstore.wire import LINE_BYTES

log = logging.getLogger("kvstore.api")
DEFAULT_WAIT = 5.0
WATCH_HEARTBEAT = 2.0
TXN_FIELDS = {"op", "key", "value", "if_version"}
# An op is an object of at most len(TXN_FIELDS) members, and a comma after it; the document
# around the ops adds a few values more.
TXN_VALUES_PER_OP = 2 * len(TXN_FIELDS) + 2


def _node(request: web.Request) -> Node:
    return request.app[NODE]


def _headers(node: Node, version: int | None = None) -> dict[str, str]:
    out = {"X-KV-Seq": str(node.store.state.seq), "X-KV-Served-By": node.settings.pod_name}
    if version is not None:
        out["ETag"] = f'"{version}"'
    return out


def _key(request: web.Request, node: Node) -> str:
    key = h.key_from_path(request)
    validate_key(key, node.settings.max_key_bytes)
    return key


def _conditions(request: web.Request) -> dict[str, Any]:
    cond: dict[str, Any] = {}
    if "If-Match" in request.headers:
        version = h.etag_version(request.headers["If-Match"], "If-Match")
        cond["if_exists" if version is None else "if_version"] = (
            True if version is None else version
        )
    if "If-None-Match" in request.headers:
        if request.headers["If-None-Match"].strip() != "*":
            raise InvalidRequest("If-None-Match: only * is supported (create only if absent)")
        cond["if_absent"] = True
    return cond


def _ack_wait(request: web.Request) -> tuple[int, float]:
    """`?ack=N&timeout=S` (and `?redirect=`, a follower's), checked before anything is written,
    alike on every pod."""
    if not request.query_string:
        return 0, DEFAULT_WAIT
    h.bool_param(request, "redirect")
    n = h.int_param(request, "ack", 0, maximum=1000) or 0
    return n, h.float_param(request, "timeout", DEFAULT_WAIT)


async def _acked(node: Node, ack: tuple[int, float], seq: int) -> None:
    n, timeout = ack
    if n:
        await node.tracker.wait_for(n, seq, timeout)


async def put_key(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    key = _key(request, node)
    cond = _conditions(request)
    ack = _ack_wait(request)
    body = await h.read_body(request, node.settings.max_value_bytes, "the value")
    if not node.is_manager:
        return await forward(node, request, body)
    node.require_data()
    result = (await node.store.write(WriteRequest([Op(PUT, key, body, **cond)])))[0]
    assert isinstance(result, WriteResult)
    seq, version = result.seq, result.version
    await _acked(node, ack, seq)
    headers = {
        "X-KV-Seq": str(seq),
        "X-KV-Served-By": node.settings.pod_name,
        "ETag": f'"{version}"',
    }
    out = {"key": key, "version": version, "seq": seq}
    return h.json_response(out, 201 if result.created else 200, headers)


async def delete_key(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    key = _key(request, node)
    cond = _conditions(request)
    ack = _ack_wait(request)
    if not node.is_manager:
        return await forward(node, request, b"")
    node.require_data()
    result = (await node.store.write(WriteRequest([Op(DELETE, key, **cond)])))[0]
    assert result.seq is not None  # a missing key is a 404 outside a txn
    await _acked(node, ack, result.seq)
    headers = _headers(node) | {"X-KV-Seq": str(result.seq)}
    return h.json_response({"key": key, "seq": result.seq}, 200, headers)


async def _get_options(request: web.Request, node: Node) -> web.StreamResponse | None:
    """`?consistency=` and `?min_seq=&timeout=`: a forwarded answer, or None to read here."""
    consistency = request.query.get("consistency", "local")
    if consistency not in ("local", "manager"):
        raise InvalidRequest(f"consistency={consistency!r}: expected local or manager")
    h.bool_param(request, "redirect")  # with consistency=manager, a follower's to read
    if consistency == "manager" and not node.is_manager:
        return await forward(node, request, b"")
    node.require_data()
    min_seq = h.int_param(request, "min_seq")
    if min_seq is not None:
        timeout = h.float_param(request, "timeout", DEFAULT_WAIT)
        if node.store.state.seq < min_seq:  # a wait ends with its request's connection
            await h.while_connected(request, node.store.wait_for_seq(min_seq, timeout))
    return None


async def get_key(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    key = _key(request, node)
    if request.query_string:
        reply = await _get_options(request, node)
        if reply is not None:
            return reply
    node.require_data()
    item = node.store.get(key)
    if item is None:
        raise KeyNotFound(f"key {key!r} does not exist", key=key)
    headers = {
        "Content-Type": "application/octet-stream",
        "X-KV-Seq": str(node.store.state.seq),
        "X-KV-Served-By": node.settings.pod_name,
        "ETag": f'"{item.version}"',
    }
    if not node.is_manager:  # how stale this replica may be
        lag = node.lag()
        headers["X-KV-Manager-Seq"] = str(node.link.manager_seq)
        headers["X-KV-Lag-Seconds"] = f"{lag['seconds']:.3f}"
    return web.Response(body=item.value, headers=headers)


async def list_keys(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    node.require_data()
    limit = h.int_param(request, "limit", 100, minimum=1, maximum=1000)
    assert limit is not None
    values = h.bool_param(request, "values")
    start_after = request.query.get("start_after")
    items, nxt = await node.store.list_items(
        request.query.get("prefix", ""), start_after, limit, values
    )
    out = []
    for item in items:
        row: dict[str, Any] = {
            "key": item.key,
            "version": item.version,
            "seq": item.mod_seq,
            "size": item.size,
        }
        if values:
            row["value"] = base64.b64encode(item.value).decode()
        out.append(row)
    return h.json_response({"items": out, "next": nxt}, headers=_headers(node))


def _parse_op(index: int, raw: Any, node: Node) -> Op:
    where = f"ops[{index}]"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{where}: expected an object with op and key")
    unknown = set(raw) - TXN_FIELDS
    if unknown:
        raise InvalidRequest(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    kind, key = raw.get("op"), raw.get("key")
    if kind not in (PUT, DELETE):
        raise InvalidRequest(f'{where}.op: expected "put" or "delete", got {kind!r}')
    if not isinstance(key, str):
        raise InvalidRequest(f"{where}.key: expected a string")
    validate_key(key, node.settings.max_key_bytes)
    if_version = raw.get("if_version")
    if if_version is not None and not h.is_whole(if_version):
        raise InvalidRequest(f"{where}.if_version: expected a whole number >= 0")
    value = b""
    if kind == PUT:
        value = _decode_value(where, raw.get("value"), node.settings.max_value_bytes)
    elif "value" in raw:
        raise InvalidRequest(f"{where}: a delete takes no value")
    return Op(kind, key, value, if_version=if_version)


def _decode_value(where: str, raw: Any, limit: int) -> bytes:
    if not isinstance(raw, str):
        raise InvalidRequest(f"{where}.value: expected the value as a base64 string")
    try:
        value = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where}.value: not valid base64") from None
    if len(value) > limit:
        raise TooLarge(
            f"{where}.value is {len(value)} bytes, over the limit of {limit}",
            limit=limit,
            size=len(value),
        )
    return value


def parse_txn(body: bytes, node: Node) -> list[Op]:
    limit = node.settings.max_txn_ops
    most = TXN_VALUES_PER_OP * (limit + 1)
    if h.more_json_values_than(body, most):  # parsing them would cost far more than the body
        raise TooLarge(
            f"the txn body holds more than {most} JSON values: more than {limit} ops "
            "(KV_MAX_TXN_OPS) can hold",
            limit=limit,
        )
    doc = h.parse_json(body, "the txn body")
    if not isinstance(doc, dict) or not isinstance(doc.get("ops"), list):
        raise InvalidRequest('the body must be {"ops": [...]}')
    ops = doc["ops"]
    if not ops:
        raise InvalidRequest("ops is empty: a txn needs at least one op")
    if len(ops) > limit:
        raise TooLarge(
            f"the txn has {len(ops)} ops, over the limit of {limit} (KV_MAX_TXN_OPS)",
            limit=limit,
            size=len(ops),
        )
    return [_parse_op(i, raw, node) for i, raw in enumerate(ops)]


async def txn(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    h.require_media_type(request, "application/json")
    body = await h.read_body(request, node.settings.max_txn_bytes, "the txn body")
    ops = parse_txn(body, node)
    ack = _ack_wait(request)
    if not node.is_manager:
        return await forward(node, request, body)
    node.require_data()
    results = await node.store.write(WriteRequest(ops, txn=True))
    seqs = [r.seq for r in results if r.seq is not None]
    request.app[METRICS].count_txn(len(seqs))
    seq = seqs[-1] if seqs else node.store.state.seq
    await _acked(node, ack, seq)
    headers = _headers(node) | {"X-KV-Seq": str(seq)}
    out = {"seq": seq, "results": [r.to_json() for r in results]}
    return h.json_response(out, 200, headers)


def change_json(c: Change) -> dict[str, Any]:
    out: dict[str, Any] = {"seq": c.seq, "op": c.op, "key": c.key, "version": c.version}
    if c.value is not None:
        out["value"] = base64.b64encode(c.value).decode()
    return out


async def watch(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    node.require_data()
    prefix = request.query.get("prefix", "")
    since = h.int_param(request, "since", node.store.state.seq)
    assert since is not None
    if since + 1 < node.store.state.oldest_seq:
        raise Compacted(
            f"changes after seq {since} are no longer retained; the oldest is "
            f"{node.store.state.oldest_seq}",
            oldest=node.store.state.oldest_seq,
        )
    store = node.store
    with subscribe(store, prefix, kind="watch", limit=node.settings.max_watches) as sub:
        resp = web.StreamResponse(headers=_headers(node) | {"Content-Type": "application/x-ndjson"})
        if not await h.start_body(resp, request):
            return resp
        out = h.DeadlineWriter(request, resp, node.settings.write_timeout)
        try:
            with routes.tracked_stream(request):
                await _send_watch(sub, out, since)
        except h.Stalled as exc:
            request.app[METRICS].stream_cut("watch")
            log.warning("watch of %r from %s cut off: %s", prefix, request.remote, exc)
        except ConnectionError:
            pass  # the watcher went away
    return resp


async def _send_watch(sub: Subscription, out: h.DeadlineWriter, since: int) -> None:
    store = sub.feed.store
    try:
        async for batch in sub.follow(since + 1, WATCH_HEARTBEAT):
            if batch:
                for chunk in _watch_lines(batch):
                    await out.write(chunk)
            else:
                await out.write(b'{"heartbeat":true,"seq":%d}\n' % store.state.seq)
    except KVError as exc:  # e.g. compacted while it lagged: the last line says so
        await out.write(json.dumps(h.error_body(exc.code, exc.message)).encode() + b"\n")


def _watch_lines(batch: list[Change]) -> Iterator[bytes]:
    """The changes as watch lines, in writes of about LINE_BYTES at most."""
    lines: list[str] = []
    size = 0
    for c in batch:
        lines.append(json.dumps(change_json(c)))
        size += len(lines[-1])
        if size >= LINE_BYTES:
            yield ("\n".join(lines) + "\n").encode()
            lines, size = [], 0
    if lines:
        yield ("\n".join(lines) + "\n").encode()


async def empty_key(request: web.Request) -> web.StreamResponse:
    _node(request)
    raise InvalidKey("the key is empty: keys are 1 or more bytes of UTF-8")


def add_routes(app: web.Application) -> None:
    routes.add(app, "GET", "/v1/kv", list_keys, CLIENT)
    for method in ("GET", "PUT", "DELETE"):
        routes.add(app, method, "/v1/kv/", empty_key, CLIENT)
    routes.add(app, "GET", "/v1/kv/{key:.+}", get_key, CLIENT)
    routes.add(app, "PUT", "/v1/kv/{key:.+}", put_key, CLIENT)
    routes.add(app, "DELETE", "/v1/kv/{key:.+}", delete_key, CLIENT)
    routes.add(app, "POST", "/v1/txn", txn, CLIENT)
    routes.add(app, "GET", "/v1/watch", watch, CLIENT)
