"""Snapshots: a consistent, streamed copy of a store, and its atomic install on another.

Wire format (NDJSON, one object a line):
  {"type": "header", "epoch", "seq", "digest", "keys", "term", "terms": [[term, start_seq], ...]}
  {"type": "rows", "rows": [[key, value_base64, version, create_seq, mod_seq], ...]}  (many)
  {"type": "end", "keys"}

Producing reads inside one SQLite read transaction, so the copy is the store at exactly `seq`;
rows come in key order. Installing replaces the whole store inside one write transaction on the
writer connection: a crash at any point before COMMIT leaves the old data whole. The digest is
recomputed from the rows and must equal the header's, or nothing is installed. The header's
term table (absent from an older sender: no terms) is installed with the rows.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import sqlite3
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from kvstore.errors import InvalidRequest
from kvstore.model import DIGEST_MOD, digest_hex, entry_hash, hash_bytes
from kvstore.store import schema
from kvstore.store.store import Store
from kvstore.store.terms import Terms, normalize
from kvstore.store.txn import State
from kvstore.wire import LINE_BYTES, ROW_FRAMING

ROWS_PER_LINE = 2000
InstallProgress = Callable[[int, int], None]  # (keys installed, keys expected)
T = TypeVar("T")


@dataclass(frozen=True)
class Header:
    epoch: str
    seq: int
    digest: str
    keys: int
    term: int = 0
    terms: Terms = ()


HeaderCheck = Callable[[Header], None]  # raises to refuse a snapshot before it is installed


async def produce(store: Store) -> AsyncGenerator[bytes, None]:
    """Yield the snapshot's lines; the read transaction pins one consistent state. Rows go in
    key order, so that the installer appends to its key index instead of splitting pages all
    over it; each line is read and encoded in one trip to a reader thread of its own."""
    reader = _Reader(store.path)
    try:
        header = await reader.call(reader.begin)
        yield header
        while line := await reader.call(reader.page):
            yield line
        yield await reader.call(reader.end)
    finally:
        await reader.close()


class _Reader:
    """A read-only connection used from one thread of its own."""

    SQL = "SELECT key, value, version, create_seq, mod_seq FROM kv ORDER BY key"

    def __init__(self, path: str) -> None:
        self.path = path
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kv-snapshot")
        self.conn: sqlite3.Connection | None = None
        self.cursor: sqlite3.Cursor | None = None
        self.keys = 0

    async def call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    def begin(self) -> bytes:
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute("BEGIN")
        epoch, seq, digest, self.keys = self.conn.execute(schema.READ_META).fetchone()
        (term,) = self.conn.execute("SELECT term FROM meta WHERE id = 1").fetchone()
        terms = [list(row) for row in self.conn.execute(schema.READ_TERMS)]
        self.cursor = self.conn.execute(self.SQL)
        header = {"type": "header", "epoch": epoch, "seq": seq, "digest": digest}
        return _line(header | {"keys": self.keys, "term": term, "terms": terms})

    def page(self) -> bytes | None:
        """The next line of rows (at most ROWS_PER_LINE rows, and no more once LINE_BYTES of
        keys and values are in it), None at the end. Rows are stepped one at a time, so that no
        more are loaded than go in the line, however large the values."""
        assert self.cursor is not None
        out: list[list[Any]] = []
        size = 0
        b2a = binascii.b2a_base64
        for k, v, ver, cs, ms in self.cursor:
            out.append([k, b2a(v, newline=False).decode(), ver, cs, ms])
            size += len(v) + len(k) + ROW_FRAMING
            if size >= LINE_BYTES or len(out) >= ROWS_PER_LINE:
                break
        return _line({"type": "rows", "rows": out}) if out else None

    def end(self) -> bytes:
        return _line({"type": "end", "keys": self.keys})

    def _close(self) -> None:
        if self.conn is not None:
            self.conn.close()  # ends the read transaction

    async def close(self) -> None:
        try:
            await self.call(self._close)
        finally:
            self.executor.shutdown(wait=False)


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def parse_header(line: bytes) -> Header:
    """The first line of a snapshot; InvalidRequest for anything else (a cut or broken peer)."""
    try:
        msg = json.loads(line)
        if msg.get("type") != "header":
            raise InvalidRequest("a snapshot starts with a header line")
        terms = normalize(msg.get("terms") or ())
        term = int(msg.get("term") or max((t for t, _ in terms), default=0))
        return Header(
            str(msg["epoch"]), int(msg["seq"]), str(msg["digest"]), int(msg["keys"]), term, terms
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InvalidRequest(f"not a snapshot header: {line[:100]!r}") from None


async def install(
    store: Store,
    header: Header,
    lines: AsyncIterator[bytes],
    progress: InstallProgress | None = None,
) -> None:
    """Replace the store's contents with the snapshot, all or nothing: one transaction on the
    store's writer connection, its rows inserted on the event loop line by line as they arrive,
    its COMMIT in the writer thread."""
    counts = _Counts()

    async def work(conn: sqlite3.Connection) -> State:
        conn.execute("DELETE FROM kv")
        conn.execute("DELETE FROM changes")
        async for line in lines:
            try:
                kind, d_digest, n = _insert_line(conn, line)
            except (ValueError, KeyError, TypeError, AttributeError, sqlite3.IntegrityError) as exc:
                raise InvalidRequest(f"a bad snapshot line ({type(exc).__name__}: {exc})") from None
            if kind == "end":
                counts.ended = True
                break
            counts.add(d_digest, n)
            if progress is not None:
                progress(counts.keys, header.keys)
        _verify(header, counts.ended, counts.keys, counts.digest)
        conn.execute(schema.UPDATE_META, (header.epoch, header.seq, header.digest, header.keys))
        conn.execute("DELETE FROM terms")
        conn.executemany(schema.INSERT_TERM, header.terms)
        conn.execute(schema.SET_TERM, (header.term,))
        return State(
            header.epoch,
            header.seq,
            counts.digest,
            counts.keys,
            header.seq,
            header.term,
            header.terms,
        )

    await store.run_transaction(work)
    store.installed()


@dataclass
class _Counts:
    digest: int = 0
    keys: int = 0
    ended: bool = False

    def add(self, digest: int, keys: int) -> None:
        self.digest = (self.digest + digest) % DIGEST_MOD
        self.keys += keys


def _verify(header: Header, ended: bool, count: int, digest: int) -> None:
    if not ended:
        raise InvalidRequest("the snapshot stream ended before its end line")
    if count != header.keys or digest_hex(digest) != header.digest:
        raise InvalidRequest(
            f"the snapshot does not match its header: {count} keys, digest {digest_hex(digest)}; "
            f"expected {header.keys} keys, digest {header.digest}"
        )


def _insert_line(conn: sqlite3.Connection, line: bytes) -> tuple[str, int, int]:
    """Decode one line and insert its rows; returns (kind, digest, n)."""
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
    conn.executemany(schema.INSERT_KV, params)  # the table was emptied: a repeated key fails
    return kind, digest % DIGEST_MOD, len(params)
