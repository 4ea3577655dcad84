"""Storage: group commit, gapless seq, digest, retention, conditions, apply, snapshots."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kvstore.errors import Compacted, Diverged, EpochMismatch, KeyNotFound, PreconditionFailed
from kvstore.model import DELETE, PUT, DeleteResult, Op, WriteRequest, WriteResult
from kvstore.store import snapshot
from kvstore.store.feed import follow
from kvstore.store.store import Store


async def open_store(path: Path, **kwargs: object) -> Store:
    store = Store(str(path), **kwargs)  # type: ignore[arg-type]
    await store.open()
    await store.set_epoch("e1")
    return store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await open_store(tmp_path / "a")
    yield s
    await s.close()


def put(key: str, value: bytes = b"v", **kw: object) -> WriteRequest:
    return WriteRequest([Op(PUT, key, value, **kw)])  # type: ignore[arg-type]


async def test_concurrent_writes_share_commits_and_get_gapless_seqs(store: Store) -> None:
    sizes: list[int] = []
    store.on_commit = lambda n, _: sizes.append(n)
    results = await asyncio.gather(*(store.write(put(f"k{i}")) for i in range(500)))
    seqs = sorted(r[0].seq or 0 for r in results)
    assert seqs == list(range(1, 501))
    assert store.state.seq == 500
    assert len(sizes) < 500  # grouped: fewer commits than writes
    assert sum(sizes) == 500


async def test_versions_and_conditions(store: Store) -> None:
    first = await store.write(put("a", b"1"))
    assert first[0] == WriteResult("a", version=1, seq=1, created=True)
    second = await store.write(put("a", b"2", if_version=1))
    assert second[0] == WriteResult("a", version=2, seq=2, created=False)
    with pytest.raises(PreconditionFailed):
        await store.write(put("a", b"3", if_version=1))
    with pytest.raises(PreconditionFailed):
        await store.write(put("a", b"3", if_absent=True))
    with pytest.raises(KeyNotFound):
        await store.write(WriteRequest([Op(DELETE, "missing")]))
    item = store.get("a")
    assert item is not None and item.value == b"2" and item.version == 2
    assert store.state.seq == 2  # failed writes took no seq


async def test_txn_is_all_or_nothing(store: Store) -> None:
    await store.write(put("x", b"1"))
    bad = WriteRequest([Op(PUT, "y", b"1"), Op(PUT, "x", b"2", if_version=7)], txn=True)
    with pytest.raises(PreconditionFailed) as info:
        await store.write(bad)
    assert info.value.details["op_index"] == 1
    assert store.get("y") is None and store.state.seq == 1
    ok = WriteRequest([Op(PUT, "y", b"1"), Op(DELETE, "nope"), Op(DELETE, "x")], txn=True)
    results = await store.write(ok)
    assert [r.seq for r in results] == [2, None, 3]
    assert results[1] == DeleteResult("nope", None) and not results[1].deleted


async def test_digest_is_independent_of_history(tmp_path: Path) -> None:
    a = await open_store(tmp_path / "a")
    b = await open_store(tmp_path / "b")
    try:
        for k in ["p", "q", "r"]:
            await a.write(put(k, k.encode()))
        for k in ["r", "gone", "q", "p"]:
            await b.write(put(k, b"old"))
        await b.write(WriteRequest([Op(DELETE, "gone")]))
        for k in ["q", "r", "p"]:
            await b.write(put(k, k.encode()))
        assert a.state.digest == b.state.digest
        assert a.state.seq != b.state.seq
        await a.write(put("p", b"different"))
        assert a.state.digest != b.state.digest
    finally:
        await a.close()
        await b.close()


async def test_digest_survives_reopen(tmp_path: Path) -> None:
    s = await open_store(tmp_path / "a")
    await s.write(put("k", b"v"))
    digest, seq = s.state.digest, s.state.seq
    await s.close()
    await s.close()  # idempotent
    again = Store(str(tmp_path / "a"))
    await again.open()
    try:
        assert (again.state.digest, again.state.seq, again.state.epoch) == (digest, seq, "e1")
    finally:
        await again.close()


async def test_retention_prunes_the_log(tmp_path: Path) -> None:
    s = await open_store(tmp_path / "a", retention=50)
    try:
        for i in range(40):
            await s.write(WriteRequest([Op(PUT, f"k{i % 7}", b"v")] * 5, txn=True))
        assert s.state.seq == 200
        assert s.state.oldest_seq == 151
        with pytest.raises(Compacted):
            await s.read_changes(100)
        changes = await s.read_changes(151)
        assert [c.seq for c in changes] == list(range(151, 201))
    finally:
        await s.close()


async def test_apply_checks_epoch_and_order(tmp_path: Path) -> None:
    m = await open_store(tmp_path / "m")
    f = await open_store(tmp_path / "f")
    try:
        for i in range(5):
            await m.write(put(f"k{i}"))
        changes = await m.read_changes(1)
        await f.apply(changes[:3], "e1")
        await f.apply(changes[1:], "e1")  # overlap is skipped, not applied twice
        assert (f.state.seq, f.state.digest) == (m.state.seq, m.state.digest)
        with pytest.raises(EpochMismatch):
            await f.apply(changes, "other")
        await m.write(put("a"))
        await m.write(put("b"))
        late = await m.read_changes(7)
        with pytest.raises(Diverged):
            await f.apply(late, "e1")
        assert f.state.seq == 5
    finally:
        await m.close()
        await f.close()


async def test_snapshot_round_trip_and_failed_install_keeps_old_data(tmp_path: Path) -> None:
    m = await open_store(tmp_path / "m")
    f = Store(str(tmp_path / "f"))
    await f.open()
    try:
        for i in range(30):
            await m.write(put(f"k{i}", bytes([i]) * 10))
        lines = [line async for line in snapshot.produce(m)]
        header = snapshot.parse_header(lines[0])

        async def gen(items: list[bytes]) -> AsyncIterator[bytes]:
            for item in items:
                yield item

        with pytest.raises(Exception, match="ended before"):
            await snapshot.install(f, header, gen(lines[1:-1]))
        assert f.state.seq == 0 and f.get("k1") is None
        await snapshot.install(f, header, gen(lines[1:]))
        assert (f.state.seq, f.state.digest, f.state.epoch) == (30, m.state.digest, "e1")
        item = f.get("k3")
        assert item is not None and item.value == bytes([3]) * 10
    finally:
        await m.close()
        await f.close()


async def test_follow_reads_log_then_live(store: Store) -> None:
    for i in range(10):
        await store.write(put(f"k{i}"))
    seen: list[int] = []

    async def reader() -> None:
        async for batch in follow(store, 4, heartbeat=0.05):
            seen.extend(c.seq for c in batch)
            if seen and seen[-1] >= 15:
                return

    task = asyncio.create_task(reader())
    for i in range(5):
        await store.write(put(f"n{i}"))
    await asyncio.wait_for(task, 10)
    assert seen == list(range(4, 16))
