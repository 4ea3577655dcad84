"""Bounded in bytes, against a real Store on a temp dir: log reads, snapshot lines and stream
lines hold a bounded number of bytes whatever the values' size; a stalled subscriber's buffer
is bounded in bytes and it still gets every change; idle subscriptions are not fed; heartbeats
come while other keys are written; abandoned min_seq waits leave nothing behind."""

from __future__ import annotations

import asyncio
import gc
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from kvstore import config
from kvstore.cluster.follower import MAX_PENDING_BYTES, _ReadAhead
from kvstore.errors import StoreClosed, WaitTimeout
from kvstore.model import PUT, Change, Op, WriteRequest
from kvstore.server import httputil
from kvstore.server.api import TXN_VALUES_PER_OP
from kvstore.server.app import client_max_size
from kvstore.store import snapshot
from kvstore.store.feed import BUFFER_BYTES, READ_BYTES, feed_of, subscribe
from kvstore.store.store import Store
from kvstore.wire import (
    LINE_BYTES,
    MAX_LINE,
    ROW_FRAMING,
    decode_changes,
    encode_changes,
    longest_line,
)

MIB = 1 << 20


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = Store(str(tmp_path / "a"), durability="normal")
    await s.open()
    await s.set_epoch("e1")
    yield s
    await s.close()


def put(key: str, value: bytes) -> WriteRequest:
    return WriteRequest([Op(PUT, key, value)])


async def fill(store: Store, count: int, size: int, prefix: str = "big/") -> None:
    for i in range(count):
        await store.write(put(f"{prefix}{i:04d}", os.urandom(size)))


def raw_size(changes: list[Change]) -> int:
    return sum(len(c.key) + len(c.value or b"") + ROW_FRAMING for c in changes)


async def test_log_reads_stop_at_their_byte_limit(store: Store) -> None:
    await fill(store, 24, MIB)
    changes = await store.read_changes(1, limit=1000, max_bytes=3 * MIB)
    assert changes[0].seq == 1
    assert raw_size(changes[:-1]) <= 3 * MIB  # everything but the change that crossed it
    assert len(changes) < 24
    # and reading on from there returns the rest, in order, none twice
    seen = [c.seq for c in changes]
    while seen[-1] < 24:
        seen += [c.seq for c in await store.read_changes(seen[-1] + 1, 1000, 3 * MIB)]
    assert seen == list(range(1, 25))
    one = await store.read_changes(1, limit=1000, max_bytes=1)
    assert [c.seq for c in one] == [1]  # always at least one change


async def test_snapshot_lines_are_bounded_in_bytes(store: Store, tmp_path: Path) -> None:
    await fill(store, 24, MIB)
    lines = [line async for line in snapshot.produce(store)]
    rows_lines = [json.loads(line) for line in lines[1:-1]]
    assert len(rows_lines) > 1
    for line, msg in zip(lines[1:-1], rows_lines, strict=True):
        rows = msg["rows"]
        before_last = sum(len(k) + len(b64) * 3 // 4 + ROW_FRAMING for k, b64, *_ in rows[:-1])
        assert before_last < LINE_BYTES
        assert len(line) <= longest_line(1024, MIB)
    # the copy installs whole on another store
    other = Store(str(tmp_path / "b"))
    await other.open()
    try:

        async def rest() -> AsyncIterator[bytes]:
            for line in lines[1:]:
                yield line

        await snapshot.install(other, snapshot.parse_header(lines[0]), rest())
        assert (other.state.seq, other.state.digest) == (store.state.seq, store.state.digest)
    finally:
        await other.close()


def test_stream_lines_are_bounded_in_bytes() -> None:
    big = [Change(i, PUT, f"k{i}", 1, os.urandom(MIB), 0.0) for i in range(1, 13)]
    tiny = [Change(i, "delete", "\x01" * 1024, 0, None, 0.0) for i in range(1, 20_000)]
    for changes in (big, tiny):
        lines = encode_changes(changes, 99)
        assert len(lines) > 1
        back: list[Change] = []
        for line in lines:
            assert len(line) <= longest_line(1024, MIB)
            back += decode_changes(json.loads(line))
        assert back == changes


def test_the_followers_line_limit_is_above_the_longest_line_a_manager_sends() -> None:
    s = config.load(env={"KV_POD_NAME": "kv-1"})
    assert longest_line(s.max_key_bytes, s.max_value_bytes) < MAX_LINE


async def test_a_stalled_subscriber_holds_bounded_bytes_and_still_gets_everything(
    store: Store,
) -> None:
    with subscribe(store, "big/") as sub:
        await fill(store, 3 * BUFFER_BYTES // MIB, MIB)  # nobody reads: it stalls
        assert sub.bytes <= BUFFER_BYTES
        assert sub.overflows >= 1
        seen: list[int] = []
        async for batch in sub.follow(1, heartbeat=60):
            assert raw_size(batch[:-1]) <= max(READ_BYTES, BUFFER_BYTES)
            seen += [c.seq for c in batch]
            if seen[-1] == store.state.seq:
                break
    assert seen == list(range(1, store.state.seq + 1))


async def test_commits_feed_only_the_prefixes_they_match(store: Store) -> None:
    idle = [subscribe(store, f"idle-{i:04d}/", kind="watch") for i in range(1000)]
    busy, parent, other, everything = (
        subscribe(store, "busy/"),
        subscribe(store, "bu"),
        subscribe(store, "busy/y"),
        subscribe(store, ""),
    )
    try:
        for sub in idle:
            sub.event.clear()
        await fill(store, 5, 10, prefix="busy/x")
        assert not any(sub.event.is_set() or sub.batches for sub in idle)
        assert not other.batches
        for sub in (busy, parent, everything):
            assert [c.seq for b in sub.batches for c in b] == [1, 2, 3, 4, 5]
        assert feed_of(store).count("watch") == 1000
    finally:
        for sub in [*idle, busy, parent, other, everything]:
            sub.close()
    assert feed_of(store).count("watch") == 0
    assert not feed_of(store).by_prefix


async def test_heartbeats_come_while_other_keys_are_written(store: Store) -> None:
    stop = asyncio.Event()

    async def noise() -> None:
        i = 0
        while not stop.is_set():
            await store.write(put(f"noisy/{i}", b"x"))
            i += 1
            await asyncio.sleep(0.005)

    writer = asyncio.create_task(noise())
    got: list[list[Change]] = []
    try:
        with subscribe(store, "quiet/") as sub:
            async with asyncio.timeout(30):
                async for batch in sub.follow(1, heartbeat=0.2):
                    got.append(batch)
                    if len(got) == 3:
                        break
        assert not writer.done()  # the writes went on all along
        assert got == [[], [], []]
    finally:
        stop.set()
        await writer


async def test_a_snapshot_install_sends_watchers_back_to_the_log(
    store: Store, tmp_path: Path
) -> None:
    await fill(store, 3, 10)
    follower = Store(str(tmp_path / "f"))
    await follower.open()
    try:
        lines = [line async for line in snapshot.produce(store)]

        async def rest() -> AsyncIterator[bytes]:
            for line in lines[1:]:
                yield line

        with subscribe(follower, "") as sub:
            await snapshot.install(follower, snapshot.parse_header(lines[0]), rest())
            with pytest.raises(Exception, match="retained log"):
                async with asyncio.timeout(10):
                    async for _ in sub.follow(1, heartbeat=60):
                        pass
    finally:
        await follower.close()


async def test_abandoned_seq_waits_leave_nothing_behind(tmp_path: Path) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, ctx: reported.append(ctx))
    store = Store(str(tmp_path / "w"))
    await store.open()
    await store.set_epoch("e1")
    try:
        for outcome in await asyncio.gather(
            *(store.wait_for_seq(10 + i, 0.01) for i in range(2000)), return_exceptions=True
        ):
            assert isinstance(outcome, WaitTimeout)
        assert store.waiting == 0
        assert store._waiters == []  # freed, not just timed out
        tasks = [asyncio.create_task(store.wait_for_seq(5, 3600)) for _ in range(100)]
        await asyncio.sleep(0)
        assert store.waiting == 100
        for task in tasks[:99]:
            task.cancel()
        await asyncio.gather(*tasks[:99], return_exceptions=True)
        assert store.waiting == 1
        assert len(store._waiters) <= 2
        await store.write(put("a", b"1"))
        pending = asyncio.create_task(store.wait_for_seq(1000, 3600))
        await asyncio.sleep(0)
    finally:
        await store.close()
    with pytest.raises(StoreClosed):
        await pending
    assert not tasks[99].done() or isinstance(tasks[99].exception(), StoreClosed)
    await asyncio.gather(tasks[99], return_exceptions=True)
    gc.collect()
    await asyncio.sleep(0)
    assert reported == []  # no "Future exception was never retrieved"


def test_the_followers_read_ahead_is_bounded_in_bytes() -> None:
    ahead = _ReadAhead()
    ahead.add([Change(i, PUT, f"k{i}", 1, b"x" * MIB, 0.0) for i in range(1, 41)])
    assert ahead.bytes > MAX_PENDING_BYTES  # the reader waits for the applier here
    batch = ahead.take(5000)
    assert raw_size(batch[:-1]) < MAX_PENDING_BYTES // 4
    rest = []
    while ahead.changes:
        rest += ahead.take(5000)
    assert [c.seq for c in batch + rest] == list(range(1, 41))
    assert ahead.bytes == 0


@pytest.mark.parametrize(
    "body",
    [
        b'{"ops": [' + b",".join([b'{"op":"delete","key":"k"}'] * 300_000) + b"]}",
        b"[" * 200_000,
        b'{"ops": [' + b",".join([b"1"] * 1_000_000) + b"]}",
    ],
)
def test_a_txn_body_of_many_values_is_refused_before_it_is_parsed(body: bytes) -> None:
    assert httputil.more_json_values_than(body, TXN_VALUES_PER_OP * 1001)


def test_json_values_counts_values_outside_strings() -> None:
    ops = [{"op": "put", "key": 'a,b{[]}"\\,', "value": "AAAA", "if_version": 3}] * 1000
    body = json.dumps({"ops": ops}).encode()
    assert not httputil.more_json_values_than(body, TXN_VALUES_PER_OP * 1001)  # the most ops
    values = 2 + 1000 * 5  # the document, ops, and each op with its 4 members
    assert not httputil.more_json_values_than(body, values)
    assert httputil.more_json_values_than(body, values - 1)
    quoted = json.dumps({"ops": [{"op": "delete", "key": ",,,,[[[{{{"}] * 10}).encode()
    assert not httputil.more_json_values_than(quoted, 32)  # what strings hold does not count
    assert httputil.more_json_values_than(quoted, 31)


def test_aiohttps_own_body_limit_follows_the_settings() -> None:
    s = config.load(env={"KV_POD_NAME": "kv-0", "KV_MAX_TXN_BYTES": "2000000"})
    assert 2_000_000 <= client_max_size(s) < 3_000_000
    assert client_max_size(config.load(env={"KV_POD_NAME": "kv-0"})) < 32 * MIB
