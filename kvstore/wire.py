"""What pods send each other: the replication paths, NDJSON line reading, and every line codec.

aiohttp's `readline` refuses lines over 512 KiB; a snapshot page or a batch with large values is
longer, so lines are split here from raw chunks.

Stream lines (GET /v1/replication/stream):
    {"t": "hello", "epoch", "seq", "pod", "term", "terms": [[term, start_seq], ...]}
    {"t": "c", "seq": <sender's seq>, "c": [[seq, op, key, version, value_b64|null, ts], ...]}
    {"t": "hb", "seq", "term", "time"}
A field an older sender lacks has a default ("terms": none, "term": 0); a reader ignores the
fields it does not know.
"""

from __future__ import annotations

import binascii
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from kvstore.errors import TooLarge
from kvstore.model import Change
from kvstore.store.terms import Terms, normalize

MAX_LINE = 256 * 1024 * 1024
STATUS_PATH = "/v1/status"
STREAM_PATH = "/v1/replication/stream"
SNAPSHOT_PATH = "/v1/replication/snapshot"
ACK_PATH = "/v1/replication/ack"
ACKS_PATH = "/v1/replication/acks"
LOG_PATH = "/v1/replication/log"
RESYNC_PATH = "/v1/repair/resync"
RESTORE_FROM_PATH = "/v1/repair/restore-from"
# A sender (snapshot pages, replication stream lines) closes a line once it holds this many
# bytes of keys and values (each change or row counted with ROW_FRAMING more).
LINE_BYTES = 4 << 20
ROW_FRAMING = 64


def longest_line(max_key_bytes: int, max_value_bytes: int) -> int:
    """An upper bound on a line a sender writes: LINE_BYTES and then one more row, with each
    value in base64 (4/3), each key JSON-escaped (at most 6 bytes a byte) and its framing."""
    raw = LINE_BYTES + ROW_FRAMING + max_key_bytes + max_value_bytes
    return 6 * raw + 4096


async def iter_lines(
    stream: aiohttp.StreamReader, max_line: int = MAX_LINE
) -> AsyncIterator[bytes]:
    """Yield each complete line (without its newline); a final unterminated line is dropped,
    since a stream cut mid-line is a broken stream, not a short line."""
    buffer = bytearray()
    while True:
        chunk = await stream.readany()
        if not chunk:
            return
        start = len(buffer)
        buffer += chunk
        end = buffer.find(b"\n", start)
        begin = 0
        while end != -1:
            yield bytes(buffer[begin:end])
            begin = end + 1
            end = buffer.find(b"\n", begin)
        del buffer[:begin]
        if len(buffer) > max_line:
            raise TooLarge(f"a stream line is over {max_line} bytes", limit=max_line)


def line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def hello_line(epoch: str | None, seq: int, pod: str, term: int = 0, terms: Terms = ()) -> bytes:
    doc = {"t": "hello", "epoch": epoch, "seq": seq, "pod": pod}
    return line(doc | {"term": term, "terms": [list(row) for row in terms]})


def hello_terms(msg: dict[str, Any]) -> Terms:
    """The term table a hello line carries (none from an older manager); PeerError-free:
    ValueError for a malformed one."""
    return normalize(msg.get("terms") or ())


def heartbeat_line(seq: int, term: int = 0) -> bytes:
    return b'{"t":"hb","seq":%d,"term":%d,"time":%.3f}\n' % (seq, term, time.time())


def ack_line(seq: int) -> bytes:
    return b'{"seq":%d}\n' % seq


def encode_changes(changes: list[Change], seq: int, max_bytes: int = LINE_BYTES) -> list[bytes]:
    """The changes as stream lines, a line closed once it holds `max_bytes` of keys and values
    (base64), each change counted with ROW_FRAMING more: a line is at most `longest_line`."""
    lines: list[bytes] = []
    rows: list[list[Any]] = []
    size = 0
    b2a = binascii.b2a_base64
    for c in changes:
        value = None if c.value is None else b2a(c.value, newline=False).decode()
        rows.append([c.seq, c.op, c.key, c.version, value, c.ts])
        size += len(value or "") + len(c.key) + ROW_FRAMING
        if size >= max_bytes:
            lines.append(_changes_line(rows, seq))
            rows, size = [], 0
    if rows:
        lines.append(_changes_line(rows, seq))
    return lines


def _changes_line(rows: list[list[Any]], seq: int) -> bytes:
    return json.dumps({"t": "c", "seq": seq, "c": rows}, separators=(",", ":")).encode() + b"\n"


def decode_changes(msg: dict[str, Any]) -> list[Change]:
    # binascii and tuple.__new__ directly: half the cost of base64.b64decode and Change(...),
    # which matters for a follower catching up on 100,000 changes.
    a2b, new = binascii.a2b_base64, tuple.__new__
    return [
        new(Change, (seq, op, key, version, None if v is None else a2b(v), ts))
        for seq, op, key, version, v, ts in msg["c"]
    ]
