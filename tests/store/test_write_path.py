"""The write path split between the event loop (statements) and the writer thread (COMMIT):
a failed COMMIT fails its whole batch and leaves nothing behind; a transaction whose caller is
cancelled once it is staged still commits before the next one begins; seqs stay gapless."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kvstore.model import PUT, Change, Op, WriteRequest
from kvstore.store.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(str(tmp_path / "data"))
    await s.open()
    await s.set_epoch("e1")
    yield s
    await s.close()


def put(key: str, value: bytes = b"v") -> WriteRequest:
    return WriteRequest([Op(PUT, key, value)])


def change(seq: int, key: str) -> Change:
    return Change(seq, PUT, key, 1, b"x", 0.0)


async def test_a_failed_commit_fails_the_batch_and_keeps_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.write(put("before"))
    real = Store._commit_adopting
    failures = iter([sqlite3.OperationalError("disk I/O error")])

    def failing(self: Store, conn: sqlite3.Connection, state: Any) -> None:
        failure = next(failures, None)
        if failure is not None:
            conn.execute("ROLLBACK")
            raise failure
        real(self, conn, state)

    monkeypatch.setattr(Store, "_commit_adopting", failing)
    results = await asyncio.gather(
        *(store.write(put(f"k{i}")) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert store.state.seq == 1 and store.get("k0") is None
    after = await store.write(put("after"))
    assert after[0].seq == 2  # no gap: the failed batch took no seq
    assert store.get("after") is not None


async def test_a_cancelled_apply_still_commits_before_the_next(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Store._commit_adopting
    entered, release = threading.Event(), threading.Event()

    def slow(self: Store, conn: sqlite3.Connection, state: Any) -> None:
        entered.set()
        release.wait(10)
        real(self, conn, state)

    monkeypatch.setattr(Store, "_commit_adopting", slow)
    first = asyncio.create_task(store.apply([change(1, "a"), change(2, "b")], "e1"))
    await asyncio.to_thread(entered.wait, 10)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    second = asyncio.create_task(
        store.apply([change(1, "a"), change(2, "b"), change(3, "c")], "e1")
    )
    release.set()
    await second
    assert store.state.seq == 3
    assert [store.get(k) is not None for k in "abc"] == [True, True, True]
    assert store.state.keys == 3


async def test_reads_share_a_transaction_yet_see_every_commit(store: Store) -> None:
    await store.write(put("a", b"1"))
    item = store.get("a")  # begins the shared read transaction
    assert item is not None and item.value == b"1"
    await store.write(put("a", b"2"))
    item = store.get("a")
    assert item is not None and item.value == b"2"
    await store.apply([change(3, "b")], "e1")
    assert store.get("b") is not None


async def test_shared_reads_do_not_pin_the_wal(store: Store) -> None:
    """Each write ends the readers' transaction first, so the checkpoints in its COMMIT can
    copy the whole WAL back and the WAL restarts from its beginning instead of growing."""
    for i in range(3000):
        await store.write(put(f"k{i % 50}", b"x" * 100))
        store.get("k0")
    wal = await asyncio.to_thread(os.path.getsize, store.path + "-wal")
    assert wal < 8 << 20, f"the WAL grew to {wal} bytes"
