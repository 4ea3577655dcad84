"""SQLite storage: the one write path (group commit), reads, the change log and the digest.

Three kinds of connection, each with one job:
- the writer: every write (a batch of client requests on the manager, a batch of replicated
  changes on a follower, a snapshot install) is one transaction on it. Its statements run on
  the event loop (each takes microseconds in the page cache) and its COMMIT, with the fsync,
  in one dedicated thread: one thread hop per batch, and the GIL changes hands once per batch
  instead of once per statement. Large batches hand the loop back every so often.
- the point reader: used on the event-loop thread for single-key reads. A WAL read of one row
  takes microseconds, less than the thread hop aiosqlite would add.
- aiosqlite: scans that may be long (list pages, change-log reads) run off the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import aiosqlite

from kvstore.errors import (
    Compacted,
    EpochMismatch,
    InsufficientStorage,
    KVError,
    ShuttingDown,
    StoreClosed,
    WaitTimeout,
)
from kvstore.model import DIGEST_MOD, Change, Entry, OpResult, WriteRequest, digest_hex
from kvstore.store import schema
from kvstore.store.terms import Terms, next_term, term_at
from kvstore.store.txn import State, Txn, stage_changes, stage_requests

T = TypeVar("T")
Listener = Callable[[list[Change]], None]
SkipHook = Callable[[Change], bool]
Stage = Callable[[sqlite3.Connection], Awaitable[State]]
MAX_BATCH_OPS = 5000
CHANGE_OVERHEAD = 64  # bytes a change costs beyond its key and value, when reads are sized


@dataclass
class _Pending:
    request: WriteRequest
    future: asyncio.Future[list[OpResult]]


class Store:
    def __init__(
        self,
        data_dir: str,
        *,
        durability: str = "full",
        retention: int = 100_000,
    ) -> None:
        self.path = os.path.join(data_dir, schema.DB_NAME)
        self.data_dir = data_dir
        self.durability = durability
        self.retention = retention
        self.skip_change: SkipHook | None = None  # a test-only fault (KV_FAULT_SKIP_SEQ)
        self.state = State()
        self.on_commit: Callable[[int, float], None] | None = None  # (changes, seconds)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kv-writer")
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._scan: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._listeners: list[Listener] = []
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._counter = itertools.count()
        self._gone = 0  # entries of _waiters whose wait ended without their seq
        self._wlock = asyncio.Lock()  # one write transaction at a time on the writer connection
        self._hold_reads = True  # point reads may share a read transaction (no write under way)
        self._closing = False
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------
    async def open(self) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        self._wconn = await self._in_writer(schema.connect, self.path, self.durability)
        self._rconn = schema.connect(self.path, self.durability, readonly=True)
        self._scan = await aiosqlite.connect(self.path, isolation_level=None)
        await self._in_writer(self._load_state)
        self._writer = asyncio.create_task(self._write_loop(), name="kv-group-commit")

    def _load_state(self) -> None:
        conn = self._wc
        epoch, seq, digest, keys = conn.execute(schema.READ_META).fetchone()
        (oldest,) = conn.execute("SELECT min(seq) FROM changes").fetchone()
        pruned = (oldest - 1) if oldest is not None else seq
        (term,) = conn.execute("SELECT term FROM meta WHERE id = 1").fetchone()
        terms = tuple((t, s) for t, s in conn.execute(schema.READ_TERMS))
        self.state = State(epoch, seq, int(digest, 16), keys, pruned, term, terms)

    async def close(self) -> None:
        """Finish queued writes, then close every connection. Safe to call more than once."""
        if self._closed:
            return
        self._closing = True
        if self._writer is not None and not self._writer.done():
            await self._queue.join()
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        for fut in (f for _, _, f in self._waiters if not f.done()):
            fut.set_exception(StoreClosed("the store is closed"))
        self._waiters.clear()
        self._gone = 0
        if self._scan is not None:
            await self._scan.close()
        if self._rconn is not None:
            self._rconn.close()
        if self._wconn is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._wconn.close)
        self._executor.shutdown(wait=True)

    @property
    def closed(self) -> bool:
        return self._closed

    def _committed(self, changes: list[Change], started: float) -> None:
        if self.on_commit is not None:
            self.on_commit(len(changes), time.perf_counter() - started)
        self._publish(changes)

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed("the store is closed")

    @property
    def _wc(self) -> sqlite3.Connection:
        assert self._wconn is not None
        return self._wconn

    async def _in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    # --- listeners and waiting for a seq -----------------------------------------------------
    def add_listener(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def _publish(self, changes: list[Change]) -> None:
        if changes:
            for listener in list(self._listeners):
                listener(changes)
        while self._waiters and self._waiters[0][0] <= self.state.seq:
            _, _, fut = heapq.heappop(self._waiters)
            if fut.done():  # abandoned, and counted as such
                self._gone = max(0, self._gone - 1)
            else:
                fut.set_result(None)

    @property
    def waiting(self) -> int:
        """Reads waiting for a seq (`wait_for_seq`) right now."""
        return sum(1 for _, _, fut in self._waiters if not fut.done())

    async def wait_for_seq(self, seq: int, timeout: float) -> None:
        """Return once this store has applied `seq`; WaitTimeout after `timeout` seconds. A wait
        that ends otherwise (timeout, cancelled) leaves nothing behind."""
        self._check_open()
        if self.state.seq >= seq:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._counter), fut))
        try:
            async with asyncio.timeout(timeout):
                await fut
        except TimeoutError:
            raise WaitTimeout(
                f"this replica has applied seq {self.state.seq}, not yet {seq}, after {timeout:g}s",
                applied_seq=self.state.seq,
                min_seq=seq,
            ) from None
        finally:
            if fut.cancelled():  # timed out or cancelled: its entry goes, lazily
                self._forget_waiter()

    def _forget_waiter(self) -> None:
        """Count one abandoned entry; rebuild the heap without them once they are half of it
        (each rebuild is paid for by as many abandoned waits as it removes)."""
        self._gone += 1
        if self._gone * 2 >= len(self._waiters):
            self._waiters = [w for w in self._waiters if not w[2].done()]
            heapq.heapify(self._waiters)
            self._gone = 0

    # --- reads -------------------------------------------------------------------------------
    def get(self, key: str) -> Entry | None:
        """A point read on the loop thread (no thread hop). Between write transactions, reads
        share one read transaction, which a commit ends: beginning and ending one per read
        (file locks, WAL index) cost as much as the read."""
        self._check_open()
        conn = self._rconn
        assert conn is not None
        if self._hold_reads and not conn.in_transaction:
            conn.execute("BEGIN")
        row = conn.execute(schema.GET, (key,)).fetchone()
        if row is None:
            return None
        return Entry(key, row[0], row[1], row[2], row[3], len(row[0]))

    async def list_items(
        self, prefix: str, start_after: str | None, limit: int, values: bool
    ) -> tuple[list[Entry], str | None]:
        self._check_open()
        assert self._scan is not None
        lower, op = prefix, ">="
        if start_after is not None and start_after >= prefix:
            lower, op = start_after, ">"
        cols = "key, value" if values else "key, length(value)"
        sql = (
            f"SELECT {cols}, version, mod_seq, create_seq FROM kv WHERE key {op} ? "
            "ORDER BY key LIMIT ?"
        )
        async with self._scan.execute(sql, (lower, limit + 1)) as cur:
            rows = await cur.fetchall()
        items: list[Entry] = []
        for key, val, version, mod_seq, create_seq in rows:
            if not key.startswith(prefix):
                break
            if values:
                items.append(Entry(key, val, version, mod_seq, create_seq, len(val)))
            else:
                items.append(Entry(key, b"", version, mod_seq, create_seq, val))
        more = len(items) > limit
        items = items[:limit]
        return items, (items[-1].key if more and items else None)

    async def read_changes(
        self, from_seq: int, limit: int = 1000, max_bytes: int = 8 << 20
    ) -> list[Change]:
        """Retained changes with seq >= from_seq: at most `limit`, and no more once `max_bytes`
        of keys and values are read (at least one change). Compacted when from_seq has left the
        log. The sizes are read first (`length()` reads no blob), so that no more rows than fit
        are ever loaded, however large their values."""
        self._check_open()
        assert self._scan is not None
        if from_seq < self.state.oldest_seq:
            raise Compacted(
                f"seq {from_seq} is older than the retained log, which starts at "
                f"{self.state.oldest_seq}",
                oldest=self.state.oldest_seq,
            )
        sizes_sql = (
            "SELECT seq, length(key) + ifnull(length(value), 0) FROM changes WHERE seq >= ? "
            "ORDER BY seq LIMIT ?"
        )
        async with self._scan.execute(sizes_sql, (from_seq, limit)) as cur:
            sizes = list(await cur.fetchall())
        if not sizes:
            return []
        last, total = sizes[0][0], 0
        for seq, size in sizes:
            total += size + CHANGE_OVERHEAD
            if total > max_bytes and seq != sizes[0][0]:
                break
            last = seq
        sql = (
            "SELECT seq, op, key, version, value, ts FROM changes WHERE seq >= ? AND seq <= ? "
            "ORDER BY seq"
        )
        async with self._scan.execute(sql, (from_seq, last)) as cur:
            changes = [Change(*row) for row in await cur.fetchall()]
        if not changes or changes[0].seq != from_seq:  # pruned while we read
            oldest = changes[0].seq if changes else self.state.oldest_seq
            raise Compacted(f"seq {from_seq} left the retained log", oldest=oldest)
        return changes

    # --- the write path: group commit ---------------------------------------------------------
    async def write(self, request: WriteRequest) -> list[OpResult]:
        """Queue a write; answered once its batch has committed (fsynced under `full`)."""
        self._check_open()
        if self._closing:
            raise ShuttingDown("the server is shutting down; retry on another replica or later")
        fut: asyncio.Future[list[OpResult]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(request, fut))
        return await fut

    async def _write_loop(self) -> None:
        while True:
            batch = [await self._queue.get()]
            ops = len(batch[0].request.ops)
            while not self._queue.empty() and ops < MAX_BATCH_OPS:
                batch.append(self._queue.get_nowait())
                ops += len(batch[-1].request.ops)
            try:
                await self._commit(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _commit(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            txn = await self._staged(stage_requests, [p.request for p in batch])
        except Exception as exc:  # the database failed: every request in the batch fails
            for p in batch:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        self._committed(txn.changes, started)
        for p, outcome in zip(batch, txn.outcomes, strict=True):
            if p.future.done():
                continue
            if isinstance(outcome, KVError):
                p.future.set_exception(outcome)
            else:
                p.future.set_result(outcome)

    async def _staged(self, work: Callable[[Txn, T], Awaitable[None]], items: T) -> Txn:
        """A transaction staged by `work` on a `Txn` (rows, log, pruning and meta written by
        `_finish`), run by the one runner."""
        staged: list[Txn] = []

        async def stage(conn: sqlite3.Connection) -> State:
            txn = Txn(conn, self.state)
            staged.append(txn)
            await work(txn, items)
            txn.pruned = await self._finish(conn, txn)
            return txn.state(txn.epoch)

        await self.run_transaction(stage)
        return staged[0]

    async def run_transaction(self, stage: Stage) -> State:
        """The one write-transaction runner (group commits, a follower's applies, snapshot
        installs): `stage(conn)` runs on the event loop inside BEGIN IMMEDIATE on the writer
        connection and returns the state the store will have; the COMMIT (the fsync under
        `full`) runs in the writer thread, which then adopts that state. Nothing is kept if
        `stage` or the COMMIT fails. Statements stay on the loop because each one hands the GIL
        over: a writer thread would wait for it once per statement while the loop is busy, and
        only once per transaction this way."""
        self._check_open()
        await self._wlock.acquire()
        self._release_reads()
        conn = self._wc
        try:
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    state = await stage(conn)
                except BaseException:
                    _rollback(conn)
                    raise
            except BaseException:
                self._unlock()
                raise
            await self._commit_releasing(self._commit_adopting, conn, state)
        except sqlite3.Error as exc:
            full = storage_full(exc)
            if full is None:
                raise
            raise full from exc
        return state

    def _release_reads(self) -> None:
        """Before a write transaction: end the shared read transaction, and start none until it
        has committed. Its COMMIT may then checkpoint the whole WAL (no reader pins a part of
        it), and the read after it sees it."""
        self._hold_reads = False
        if self._rconn is not None and self._rconn.in_transaction:
            self._rconn.execute("COMMIT")

    def _unlock(self) -> None:
        """After a write transaction (committed or not): the next read starts afresh."""
        self._hold_reads = True
        self._wlock.release()

    async def _commit_releasing(self, fn: Callable[..., None], *args: Any) -> None:
        """Run the COMMIT `fn(*args)` in the writer thread, then release the writer lock. One
        transaction at a time holds the writer connection (the lock); once staged, a transaction
        commits (or rolls back) even if its caller is cancelled meanwhile, before the next one
        begins."""

        def done(fut: asyncio.Future[None]) -> None:
            self._unlock()
            if not fut.cancelled():
                fut.exception()  # retrieved: the caller, if still there, gets it too

        # Submitted at once (no task to wait for the next loop turn), shielded from the caller.
        fut = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        fut.add_done_callback(done)
        await asyncio.shield(fut)

    def _commit_adopting(self, conn: sqlite3.Connection, state: State) -> None:
        """In the writer thread: COMMIT, then adopt the new state, here, so that it holds even
        if the task that waits for it is cancelled meanwhile. A failed COMMIT is rolled back."""
        try:
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
        self.state = state

    async def _finish(self, conn: sqlite3.Connection, txn: Txn) -> int:
        """Write the rows, log the changes, prune the log a bounded step and write meta (the
        COMMIT follows)."""
        await txn.flush()
        conn.executemany(schema.INSERT_CHANGE, _with_terms(txn.changes, txn.start.terms))
        pruned = txn.start.pruned_upto
        target = txn.seq - self.retention
        if target > pruned:
            pruned = min(target, pruned + 2 * len(txn.changes) + 256)
            conn.execute("DELETE FROM changes WHERE seq <= ?", (pruned,))
        meta = (txn.epoch, txn.seq, digest_hex(txn.digest % DIGEST_MOD), txn.keys)
        conn.execute(schema.UPDATE_META, meta)
        return pruned

    # --- followers: apply the manager's changes -------------------------------------------------
    async def apply(self, changes: list[Change], epoch: str) -> None:
        """Apply replicated changes in one transaction with the new applied seq."""
        self._check_open()
        st = self.state
        if st.epoch != epoch:
            raise EpochMismatch(
                f"changes of epoch {epoch} cannot apply to a store of epoch {st.epoch}",
                ours=st.epoch,
                theirs=epoch,
            )
        fresh = [c for c in changes if c.seq > st.seq]
        if not fresh:
            return
        started = time.perf_counter()
        skip = self.skip_change

        async def work(txn: Txn, items: list[Change]) -> None:
            await stage_changes(txn, items, skip)

        txn = await self._staged(work, fresh)
        self._committed(txn.changes, started)

    async def set_epoch(self, epoch: str) -> None:
        """Give an empty store its epoch (a new manager, or a follower before its snapshot)."""
        self._check_open()
        await self._in_writer(self._set_epoch, epoch)

    def _set_epoch(self, epoch: str) -> None:
        st = self.state
        self._wc.execute(schema.UPDATE_META, (epoch, st.seq, digest_hex(st.digest), st.keys))
        self.state = dataclasses.replace(st, epoch=epoch)

    # --- terms (kvstore/store/terms.py) ------------------------------------------------------
    async def begin_term(self, at_least: int = 0) -> int:
        """The manager: start a new term (at each process start and each restore), above every
        term this store knows and `at_least`; its first change will be seq+1."""
        st = self.state
        term = next_term(st.terms, st.term, at_least)
        await self._write_terms((*st.terms, (term, st.seq + 1)), term)
        return term

    async def adopt_terms(self, terms: Terms) -> None:
        """A follower: take the manager's term table (its history contains ours, the history
        check said so), before applying the manager's changes."""
        if terms and terms != self.state.terms:
            await self._write_terms(terms, max(self.state.term, *(t for t, _ in terms)))

    async def _write_terms(self, terms: Terms, term: int) -> None:
        async def stage(conn: sqlite3.Connection) -> State:
            conn.execute("DELETE FROM terms")
            conn.executemany(schema.INSERT_TERM, terms)
            conn.execute(schema.SET_TERM, (term,))
            return dataclasses.replace(self.state, term=term, terms=tuple(sorted(terms)))

        await self.run_transaction(stage)

    # --- snapshots ---------------------------------------------------------------------------
    def installed(self) -> None:
        """Called after a snapshot committed: tell the listeners (with no changes: what they
        hold is history) and wake the waiters."""
        for listener in list(self._listeners):
            listener([])
        self._publish([])


def _with_terms(changes: list[Change], terms: Terms) -> Iterable[tuple[Any, ...]]:
    """Each change's row for the log, with the term in force at its seq."""
    last_start = max((s for _, s in terms), default=0)
    last = term_at(terms, last_start)
    for c in changes:
        yield (*c, last if c.seq >= last_start else term_at(terms, c.seq))


def storage_full(exc: sqlite3.Error) -> InsufficientStorage | None:
    """For a write that failed because the disk (or the database's page limit) is full: the
    domain error, 507 with Retry-After (the caller keeps `exc` as its cause); else None."""
    if getattr(exc, "sqlite_errorcode", None) != sqlite3.SQLITE_FULL:
        return None
    return InsufficientStorage(
        f"the database cannot grow ({exc}): nothing of the write was kept; free disk space "
        "or grow the volume, and retry",
        retry_after=5,
    )


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is left: SQLite may have rolled back by itself (a full disk, an I/O
    error), and a ROLLBACK then would only hide the real error behind 'no transaction'."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")
