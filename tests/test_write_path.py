"""The write path split between the event loop (statements) and the writer thread (COMMIT):
a failed COMMIT fails its whole batch and leaves nothing behind; a transaction whose caller is
cancelled once it is staged still commits before the next one begins; seqs stay gapless."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kvstore.model import PUT, Change, Op, WriteRequest
from kvstore.storage import Store


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
    real = Store._commit_txn
    failures = iter([sqlite3.OperationalError("disk I/O error")])

    def failing(self: Store, txn: Any, epoch: str | None) -> None:
        failure = next(failures, None)
        if failure is not None:
            txn.conn.execute("ROLLBACK")
            raise failure
        real(self, txn, epoch)

    monkeypatch.setattr(Store, "_commit_txn", failing)
    results = await asyncio.gather(
        *(store.write(put(f"k{i}")) for i in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)
    assert store.state.seq == 1 and store.get("k0") is None
    after = await store.write(put("after"))
    assert after[0]["seq"] == 2  # no gap: the failed batch took no seq
    assert store.get("after") is not None


async def test_a_cancelled_apply_still_commits_before_the_next(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = Store._commit_txn
    entered, release = threading.Event(), threading.Event()

    def slow(self: Store, txn: Any, epoch: str | None) -> None:
        entered.set()
        release.wait(10)
        real(self, txn, epoch)

    monkeypatch.setattr(Store, "_commit_txn", slow)
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
