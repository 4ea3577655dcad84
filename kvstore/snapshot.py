"""Snapshots: a consistent, streamed copy of a store, and its atomic install on another.

Wire format (NDJSON, one object a line):
  {"type": "header", "epoch", "seq", "digest", "keys"}
  {"type": "rows", "rows": [[key, value_base64, version, create_seq, mod_seq], ...]}  (many)
  {"type": "end", "keys"}

Producing reads inside one SQLite read transaction, so the copy is the store at exactly `seq`.
Installing replaces the whole store inside one write transaction on the writer connection: a
crash at any point before COMMIT leaves the old data whole. The digest is recomputed from the
rows and must equal the header's, or nothing is installed.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiosqlite

from . import schema
from .errors import InvalidRequest
from .model import DIGEST_MOD, digest_hex, entry_hash, hash_bytes
from .storage import State, Store

ROWS_PER_LINE = 2000
LINE_BYTES = 4 << 20
Progress = Callable[[int, int], None]  # (keys installed, keys expected)


@dataclass(frozen=True)
class Header:
    epoch: str
    seq: int
    digest: str
    keys: int


async def produce(store: Store) -> AsyncIterator[bytes]:
    """Yield the snapshot's lines; the read transaction pins one consistent state."""
    conn = await aiosqlite.connect(store.path, isolation_level=None)
    try:
        await conn.execute("BEGIN")
        async with conn.execute(schema.READ_META) as cur:
            epoch, seq, digest, keys = await cur.fetchone()  # type: ignore[misc]
        yield _line({"type": "header", "epoch": epoch, "seq": seq, "digest": digest, "keys": keys})
        sql = "SELECT key, value, version, create_seq, mod_seq FROM kv"
        async with conn.execute(sql) as cur:
            page: list[list[Any]] = []
            size = 0
            while rows := await cur.fetchmany(200):
                for k, v, ver, cs, ms in rows:
                    page.append([k, base64.b64encode(v).decode(), ver, cs, ms])
                    size += len(v) + len(k)
                if len(page) >= ROWS_PER_LINE or size >= LINE_BYTES:
                    yield _line({"type": "rows", "rows": page})
                    page, size = [], 0
            if page:
                yield _line({"type": "rows", "rows": page})
        yield _line({"type": "end", "keys": keys})
        await conn.execute("COMMIT")
    finally:
        await conn.close()


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def parse_header(line: bytes) -> Header:
    msg = json.loads(line)
    if msg.get("type") != "header":
        raise InvalidRequest("a snapshot starts with a header line")
    return Header(msg["epoch"], int(msg["seq"]), msg["digest"], int(msg["keys"]))


async def install(
    store: Store, header: Header, lines: AsyncIterator[bytes], progress: Progress | None = None
) -> None:
    """Replace the store's contents with the snapshot, all or nothing."""
    await store.run_in_writer(_begin)
    try:
        digest, count, ended = 0, 0, False
        async for line in lines:
            kind, d_digest, n = await store.run_in_writer(_insert_line, line)
            if kind == "end":
                ended = True
                break
            digest, count = (digest + d_digest) % DIGEST_MOD, count + n
            if progress is not None:
                progress(count, header.keys)
        _verify(header, ended, count, digest)
        await store.run_in_writer(_commit, header)
    except BaseException:
        await store.run_in_writer(_rollback)
        raise
    store.installed(State(header.epoch, header.seq, digest, count, pruned_upto=header.seq))


def _verify(header: Header, ended: bool, count: int, digest: int) -> None:
    if not ended:
        raise InvalidRequest("the snapshot stream ended before its end line")
    if count != header.keys or digest_hex(digest) != header.digest:
        raise InvalidRequest(
            f"the snapshot does not match its header: {count} keys, digest {digest_hex(digest)}; "
            f"expected {header.keys} keys, digest {header.digest}"
        )


def _begin(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("DELETE FROM kv")
    conn.execute("DELETE FROM changes")


def _insert_line(conn: sqlite3.Connection, line: bytes) -> tuple[str, int, int]:
    """In the writer thread: decode one line and insert its rows; returns (kind, digest, n)."""
    msg = json.loads(line)
    kind = msg.get("type")
    if kind != "rows":
        return kind or "", 0, 0
    digest, params = 0, []
    for key, b64, version, create_seq, mod_seq in msg["rows"]:
        value = base64.b64decode(b64)
        h = entry_hash(key, value)
        digest += h
        params.append((key, value, version, create_seq, mod_seq, hash_bytes(h)))
    conn.executemany(schema.UPSERT, params)
    return kind, digest % DIGEST_MOD, len(params)


def _commit(conn: sqlite3.Connection, header: Header) -> None:
    conn.execute(schema.UPDATE_META, (header.epoch, header.seq, header.digest, header.keys))
    conn.execute("COMMIT")


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")
