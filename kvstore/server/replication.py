"""Replication endpoints, served by every pod (followers stream from the manager; a manager
that lost its volume takes a snapshot from a follower):

- GET  /v1/replication/stream?from=<seq>&epoch=<epoch>&term=<term of seq from-1>&pod=<name>:
  NDJSON. The history check first: the follower's last change (from-1, term) must be in this
  store's history, else 409 diverged naming the first seq where they part (kvstore/store/
  terms.py). Then a hello line, the retained changes with seq >= from, then each commit as it
  happens (woken by the commit), and a heartbeat line at least every second.
    {"t": "hello", "epoch", "seq", "pod", "term", "terms"}
    {"t": "c", "seq": <sender's seq>, "c": [[seq, op, key, version, value_b64|null, ts], ...]}
    {"t": "hb", "seq", "term", "time"}
- GET  /v1/replication/snapshot[?from=&epoch=&term=]: see snapshot.py. A follower that holds
  data sends what it holds, and gets the same history check first.
- GET  /v1/replication/log?from=<seq>: this pod's own retained changes from a seq, as stream
  lines (`kvstore repair export` reads a diverged follower's changes past the fork with it).
- POST /v1/replication/acks?pod=<name>: a follower reports what it applied, over one long
  request: its body is NDJSON, a line {"seq": <applied seq>} after each apply and every second,
  read as it arrives. A request per report would cost both pods a whole HTTP exchange per
  apply; followers fall back to that (below) with a manager that does not offer this one.
- POST /v1/replication/ack {"pod", "seq"}: one report.
"""

from __future__ import annotations

import contextlib
import logging
import time

from aiohttp import web

from kvstore import wire
from kvstore.cluster.node import Node
from kvstore.errors import Compacted, Diverged, EpochMismatch, InvalidRequest, KVError, NotReady
from kvstore.server import httputil as h
from kvstore.server import routes
from kvstore.server.keys import METRICS, NODE
from kvstore.server.routes import REPLICATION
from kvstore.store import snapshot, terms
from kvstore.store.feed import follow

log = logging.getLogger("kvstore.replication")
HEARTBEAT = 1.0
ACK_LINE_BYTES = 1024


def _node(request: web.Request) -> Node:
    return request.app[NODE]


def _check_history(node: Node, request: web.Request, from_seq: int) -> None:
    """409 diverged unless the follower's last change (from_seq - 1, term) is in our history.
    An older follower sends no term: only its seq is checked."""
    st = node.store.state
    if st.epoch is None or (node.is_manager and node.restoring):
        raise NotReady("this pod has no data to stream yet", retry_after=1)
    epoch = request.query.get("epoch")
    if epoch and epoch != st.epoch:
        raise EpochMismatch(
            f"this store's epoch is {st.epoch}, not {epoch}", ours=st.epoch, theirs=epoch
        )
    term = h.int_param(request, "term", minimum=0)
    fork = terms.resume_fork(st.terms, st.seq, from_seq - 1, term)
    if fork is not None:
        held = f"seq {from_seq - 1}" + ("" if term is None else f" of term {term}")
        raise Diverged(
            f"the follower's last change ({held}) is not in this store's history (seq "
            f"{st.seq}, term {st.last_term}): the histories part at seq {fork}. Nothing is "
            "applied; see `kvstore repair status`",
            seq=fork,
            manager_seq=st.seq,
            terms=[list(row) for row in st.terms],
        )


def _check_stream(node: Node, request: web.Request, from_seq: int) -> None:
    _check_history(node, request, from_seq)
    st = node.store.state
    if from_seq < st.oldest_seq:
        raise Compacted(
            f"seq {from_seq} is older than the retained log, which starts at "
            f"{st.oldest_seq}: take a snapshot",
            oldest=st.oldest_seq,
        )


async def stream(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    from_seq = h.int_param(request, "from", 1, minimum=1)
    assert from_seq is not None
    _check_stream(node, request, from_seq)
    pod = request.query.get("pod") or request.remote or "unknown"
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    if not await h.start_body(resp, request):
        return resp
    st = node.store.state
    await resp.write(wire.hello_line(st.epoch, st.seq, node.settings.pod_name, st.term, st.terms))
    # A name DNS does not list as one of the set's pods is served, but counts as no follower.
    member = await node.is_member(pod)
    if member:
        node.tracker.connected(pod, True)
        log.info("follower %s connected from seq %d", pod, from_seq)
    else:
        log.info("stream from seq %d for %s, not a member of the set: not counted", from_seq, pod)
    out = h.DeadlineWriter(request, resp, node.settings.write_timeout)
    try:
        with routes.tracked_stream(request):
            await _send_changes(node, out, from_seq)
    except KVError as exc:  # e.g. compacted while it lagged: it will reconnect and resume
        log.info("follower %s stream ended: %s", pod, exc.message)
    except h.Stalled as exc:
        request.app[METRICS].stream_cut("stream")
        log.warning("follower %s stream cut off after %d bytes: %s", pod, out.sent, exc)
    except ConnectionError:
        pass
    finally:
        if member:
            node.tracker.connected(pod, False)
        log.info("follower %s disconnected", pod)
    return resp


async def _send_changes(node: Node, out: h.DeadlineWriter, from_seq: int) -> None:
    async for batch in follow(node.store, from_seq, heartbeat=HEARTBEAT):
        seq = node.store.state.seq
        if batch:
            for line in wire.encode_changes(batch, seq):
                await out.write(line)
        else:
            await out.write(wire.heartbeat_line(seq, node.store.state.term))


async def snapshot_handler(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    if node.store.state.epoch is None or (node.is_manager and node.restoring):
        raise NotReady("this pod has no data to copy yet", retry_after=1)
    from_seq = h.int_param(request, "from", minimum=1)
    if from_seq is not None:  # a follower that holds data: never over a history of its own
        _check_history(node, request, from_seq)
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    if not await h.start_body(resp, request):
        return resp
    started = time.monotonic()
    to = request.query.get("pod") or request.remote
    out = h.DeadlineWriter(request, resp, node.settings.write_timeout)
    try:
        # Closed on the way out, whatever ends the loop: that ends the read transaction.
        async with contextlib.aclosing(snapshot.produce(node.store)) as lines:
            async for line in lines:
                await out.write(line)
    except h.Stalled as exc:
        request.app[METRICS].stream_cut("snapshot")
        log.warning("snapshot to %s cut off after %d bytes: %s", to, out.sent, exc)
        return resp
    except ConnectionError as exc:
        log.info("snapshot to %s cut off after %d bytes: %s", to, out.sent, exc)
        return resp
    seconds = time.monotonic() - started
    log.info("snapshot sent to %s: %d bytes in %.2fs", to, out.sent, seconds)
    request.app[METRICS].snapshot_sent(out.sent, seconds)
    return resp


async def ack(request: web.Request) -> web.StreamResponse:
    """One ack; counted only for a member of the set (see `Node.is_member`)."""
    node = _node(request)
    h.require_media_type(request, "application/json")
    body = await h.read_body(request, ACK_LINE_BYTES, "the ack")
    doc = h.parse_json(body, "the ack")
    if not isinstance(doc, dict) or not isinstance(doc.get("pod"), str):
        raise InvalidRequest('expected {"pod": <name>, "seq": <applied seq>}')
    pod, seq = doc["pod"], _seq(doc.get("seq"))
    counted = await node.is_member(pod)
    if counted:
        node.tracker.ack(pod, seq)
    return h.json_response({"ok": True, "counted": counted})


async def acks(request: web.Request) -> web.StreamResponse:
    node = _node(request)
    h.require_media_type(request, "application/x-ndjson")
    pod = request.query.get("pod")
    if not pod:
        raise InvalidRequest("expected ?pod=<follower's pod name>")
    counted = False
    with routes.tracked_stream(request), contextlib.suppress(ConnectionError):
        async for line in wire.iter_lines(request.content, ACK_LINE_BYTES):
            seq = _ack_seq(line)
            counted = await node.is_member(pod)  # cached: DNS is asked at most every few s
            if counted:
                node.tracker.ack(pod, seq)
    return h.json_response({"ok": True, "counted": counted})


def _ack_seq(line: bytes) -> int:
    doc = h.parse_json(line, "an ack line")
    if not isinstance(doc, dict):
        raise InvalidRequest('expected lines {"seq": <applied seq>}')
    return _seq(doc.get("seq"))


def _seq(value: object) -> int:
    if not h.is_whole(value):
        raise InvalidRequest(f"seq={value!r}: expected the applied seq, a whole number >= 0")
    assert isinstance(value, int)
    return value


async def log_handler(request: web.Request) -> web.StreamResponse:
    """This pod's own retained changes with seq >= from (on a diverged follower: what it holds
    past the fork), as stream lines, then a last line {"t": "end", "seq", "term", "terms"}."""
    node = _node(request)
    from_seq = h.int_param(request, "from", 1, minimum=1)
    assert from_seq is not None
    store = node.store
    if from_seq < store.state.oldest_seq and from_seq <= store.state.seq:
        raise Compacted(
            f"seq {from_seq} has left this pod's retained log, which starts at "
            f"{store.state.oldest_seq}",
            oldest=store.state.oldest_seq,
        )
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await resp.prepare(request)
    if request.method == "HEAD":
        return resp
    seq, st = from_seq, store.state
    while seq <= st.seq:
        batch = await store.read_changes(seq, limit=1000)
        batch = [c for c in batch if c.seq <= st.seq]
        if not batch:
            break
        for line in wire.encode_changes(batch, st.seq):
            await resp.write(line)
        seq = batch[-1].seq + 1
    end = {"t": "end", "seq": st.seq, "term": st.last_term}
    await resp.write(wire.line(end | {"terms": [list(row) for row in st.terms]}))
    return resp


def add_routes(app: web.Application) -> None:
    routes.add(app, "GET", wire.STREAM_PATH, stream, REPLICATION)
    routes.add(app, "GET", wire.SNAPSHOT_PATH, snapshot_handler, REPLICATION)
    routes.add(app, "POST", wire.ACK_PATH, ack, REPLICATION)
    routes.add(app, "POST", wire.ACKS_PATH, acks, REPLICATION)
    routes.add(app, "GET", wire.LOG_PATH, log_handler, REPLICATION)
