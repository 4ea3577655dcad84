"""One write transaction being staged, as plain data and plain functions: the state it started
from, each key's row as it leaves it, and the staging of a group commit's requests (with their
conditions) or of a follower's replicated changes. Nothing here commits: the store's one
transaction runner does (kvstore/store/store.py).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kvstore.errors import Diverged, KeyNotFound, KVError, PreconditionFailed
from kvstore.model import (
    DELETE,
    DIGEST_MOD,
    PUT,
    Change,
    DeleteResult,
    OpResult,
    WriteRequest,
    WriteResult,
    entry_hash,
    hash_bytes,
    hash_int,
)
from kvstore.store import schema
from kvstore.store.terms import Terms, term_at

Current = tuple[int, int, int] | None  # (version, hash, create_seq) of a key, None if absent


@dataclass
class State:
    """What the store knows of itself, mirrored from the meta row after each commit."""

    epoch: str | None = None
    seq: int = 0
    digest: int = 0
    keys: int = 0
    pruned_upto: int = 0  # every change with seq <= this has left the log
    term: int = 0  # the manager: the term it writes in; a follower: the highest term it knows
    terms: Terms = ()  # ((term, start_seq), ...): see kvstore/store/terms.py

    @property
    def oldest_seq(self) -> int:
        return self.pruned_upto + 1

    @property
    def last_term(self) -> int:
        """The term of the change at `seq` (the last applied one)."""
        return term_at(self.terms, self.seq)


class Budget:
    """Staging on the loop hands the loop back to the other tasks every so many changes or
    bytes, so that a large batch does not hold up reads."""

    CHANGES = 256
    BYTES = 1 << 20

    def __init__(self) -> None:
        self.changes = 0
        self.bytes = 0

    def spend(self, size: int) -> bool:
        """Count one change of `size` bytes; True when it is time to hand the loop back."""
        self.changes += 1
        self.bytes += size
        if self.changes >= self.CHANGES or self.bytes >= self.BYTES:
            self.changes = self.bytes = 0
            return True
        return False


class Txn:
    """One write transaction being built on the writer connection: the state it started from,
    the seq, digest and key count so far, and each key's row as the transaction leaves it.

    Rows are read for many keys at once (`prefetch`) and written once per key at the end
    (`flush`): a statement costs far more in Python than the B-tree work it does."""

    def __init__(self, conn: sqlite3.Connection, start: State) -> None:
        self.conn = conn
        self.start = start
        self.epoch = start.epoch
        self.seq, self.digest, self.keys = start.seq, start.digest, start.keys
        self.pruned = start.pruned_upto
        self.now = time.time()
        self.changes: list[Change] = []
        self.outcomes: list[list[OpResult] | KVError] = []
        self._known: dict[str, Current] = {}
        self._rows: dict[str, tuple[Any, ...] | None] = {}  # key -> row to store, None: delete

    def prefetch(self, keys: Iterable[str]) -> None:
        """Read the current row of each key not seen yet, LOOKUP_CHUNK keys a statement."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._known]
        for i in range(0, len(missing), schema.LOOKUP_CHUNK):
            chunk = missing[i : i + schema.LOOKUP_CHUNK]
            sql, params = schema.lookup_many(chunk)
            for key, version, raw_hash, create_seq in self.conn.execute(sql, params):
                self._known[key] = (version, hash_int(raw_hash), create_seq)
            for key in chunk:
                self._known.setdefault(key, None)

    def current(self, key: str) -> Current:
        """(version, hash, create_seq) of the key as this transaction has left it so far."""
        if key not in self._known:
            self.prefetch((key,))
        return self._known[key]

    def apply(self, ch: Change, cur: Current) -> None:
        """Account for one change; its row is written by `flush`."""
        old_hash = cur[1] if cur else 0
        if ch.op == DELETE:
            if cur is not None:
                self.digest -= old_hash
                self.keys -= 1
                self._rows[ch.key] = None
            self._known[ch.key] = None
        else:
            assert ch.value is not None
            new_hash = entry_hash(ch.key, ch.value)
            create_seq = cur[2] if cur else ch.seq
            row = (ch.key, ch.value, ch.version, create_seq, ch.seq, hash_bytes(new_hash))
            self._rows[ch.key] = row
            self.digest += new_hash - old_hash  # reduced mod DIGEST_MOD when read
            self.keys += 0 if cur else 1
            self._known[ch.key] = (ch.version, new_hash, create_seq)
        self.seq = ch.seq
        self.changes.append(ch)

    def skip(self, ch: Change) -> None:
        self.seq = ch.seq
        self.changes.append(ch)

    async def flush(self) -> None:
        """Write each changed key's final row (each key once, so the order does not matter)."""
        puts = [row for row in self._rows.values() if row is not None]
        deletes = [(key,) for key, row in self._rows.items() if row is None]
        for sql, rows in ((schema.UPSERT, puts), (schema.DELETE_KEY, deletes)):
            for i in range(0, len(rows), Budget.CHANGES):
                self.conn.executemany(sql, rows[i : i + Budget.CHANGES])
                if len(rows) > Budget.CHANGES:
                    await asyncio.sleep(0)
        self._rows.clear()

    def state(self, epoch: str | None) -> State:
        st = self.start
        return State(
            epoch, self.seq, self.digest % DIGEST_MOD, self.keys, self.pruned, st.term, st.terms
        )


async def stage_requests(txn: Txn, requests: list[WriteRequest]) -> None:
    """The client requests of one group commit, in order; a request whose condition fails
    changes nothing and takes no seq."""
    budget = Budget()
    txn.prefetch(op.key for req in requests for op in req.ops)
    for req in requests:
        failure = check_conditions(txn, req)
        if failure is not None:
            txn.outcomes.append(failure)
            continue
        results: list[OpResult] = []
        for op in req.ops:
            results.append(_stage_op(txn, op.op, op.key, op.value))
            if budget.spend(len(op.value)):
                await asyncio.sleep(0)
        txn.outcomes.append(results)


def _stage_op(txn: Txn, op: str, key: str, value: bytes) -> OpResult:
    cur = txn.current(key)
    if op == DELETE:
        if cur is None:
            return DeleteResult(key, None)
        txn.apply(Change(txn.seq + 1, DELETE, key, 0, None, txn.now), cur)
        return DeleteResult(key, txn.seq)
    version = cur[0] + 1 if cur else 1
    txn.apply(Change(txn.seq + 1, PUT, key, version, value, txn.now), cur)
    return WriteResult(key, version, txn.seq, cur is None)


def check_conditions(txn: Txn, req: WriteRequest) -> KVError | None:
    """The first condition of the request that does not hold, as its error."""
    for index, op in enumerate(req.ops):
        if not (op.if_absent or op.if_exists or op.if_version is not None) and (
            op.op != DELETE or req.txn
        ):
            continue
        cur = txn.current(op.key)
        actual = cur[0] if cur else 0
        where = f"op {index} ({op.op} {op.key!r})" if req.txn else f"key {op.key!r}"
        details = {"op_index": index, "key": op.key, "current_version": actual}
        if op.if_absent and cur is not None:
            return PreconditionFailed(
                f"{where}: the key exists (version {actual}) and "
                "If-None-Match: * asks that it does not",
                **details,
            )
        if op.if_exists and cur is None:
            return PreconditionFailed(f"{where}: the key does not exist", **details)
        if op.if_version is not None and actual != op.if_version:
            return PreconditionFailed(
                f"{where}: expected version {op.if_version}, the current version is {actual}",
                expected_version=op.if_version,
                **details,
            )
        if op.op == DELETE and cur is None and not req.txn:
            return KeyNotFound(f"key {op.key!r} does not exist", key=op.key)
    return None


async def stage_changes(
    txn: Txn, changes: list[Change], skip: Callable[[Change], bool] | None = None
) -> None:
    """A follower's replicated changes, in seq order with no gap. `skip` is the test-only
    fault: a change it names is lost silently (the log still records it, as it was sent)."""
    budget = Budget()
    txn.prefetch(ch.key for ch in changes if ch.seq > txn.seq)
    for ch in changes:
        if ch.seq <= txn.seq:
            continue  # applied already
        if ch.seq != txn.seq + 1:
            raise Diverged(f"expected seq {txn.seq + 1} next, received {ch.seq}")
        if skip is not None and skip(ch):
            txn.skip(ch)
            continue
        txn.apply(ch, txn.current(ch.key))
        if budget.spend(len(ch.value or b"")):
            await asyncio.sleep(0)
