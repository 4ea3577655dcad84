"""KVClient: error mapping and parsing, then every SPEC §2 endpoint against a real server.

`running_server` starts `kvstore serve` as a subprocess and waits for /readyz with a deadline;
test_cli_client.py and test_bench.py use it too.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from kvstore import errors
from kvstore.client import (
    STREAM_TIMEOUT,
    ClientError,
    Compacted,
    ConnectionFailed,
    Event,
    InvalidKey,
    InvalidRequest,
    KeyNotFound,
    KVClient,
    PreconditionFailed,
    TooLarge,
    TxnOp,
    Unauthorized,
    Unavailable,
    error_for,
    stream_error,
)

READY_DEADLINE = 30.0
MIB = 1024 * 1024


# --- a real server -----------------------------------------------------------------------------
@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def running_server(root: Path, env: Mapping[str, str] | None = None) -> Iterator[Server]:
    """`kvstore serve` as kv-0 on a free port with its data under `root`; stopped on exit."""
    root.mkdir(parents=True, exist_ok=True)
    port, log = free_port(), root / "server.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("KV_")}
    cmd = [sys.executable, "-m", "kvstore", "serve", "--pod-name", "kv-0"]
    cmd += ["--data-dir", str(root / "data"), "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=clean | dict(env or {})
        )
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        wait_ready(server)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + READY_DEADLINE
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(server.url + "/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.05)  # poll interval, bounded by the deadline
    log = server.log.read_text(errors="replace")[-4000:]
    pytest.fail(f"kvstore serve was not ready (exit {server.process.poll()}); log:\n{log}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("kv")) as srv:
        yield srv


@pytest.fixture
async def kv(server: Server) -> AsyncIterator[KVClient]:
    async with KVClient(server.url) as client:
        yield client


# --- pure parts --------------------------------------------------------------------------------
def test_error_for_maps_codes_to_classes_that_are_also_domain_errors() -> None:
    err = error_for(404, b'{"error": {"code": "not_found", "message": "no key a"}}')
    assert isinstance(err, KeyNotFound) and isinstance(err, errors.KeyNotFound)
    assert (err.status, err.code, err.message) == (404, "not_found", "no key a")
    assert str(err) == "no key a (404 not_found)"
    bad_key = error_for(400, b'{"error": {"code": "invalid_key", "message": "control char"}}')
    assert isinstance(bad_key, InvalidKey) and isinstance(bad_key, InvalidRequest)
    assert isinstance(error_for(412, b"{}"), PreconditionFailed)


def test_error_for_copes_with_a_body_that_is_not_ours() -> None:
    err = error_for(503, b"<html>upstream gone</html>", retry_after="2")
    assert isinstance(err, Unavailable)
    assert (err.code, err.message, err.retry_after) == ("http_503", "<html>upstream gone</html>", 2)
    assert type(error_for(500, b"")) is ClientError


def test_stream_error_is_typed_by_code() -> None:
    err = stream_error({"code": "compacted", "message": "oldest is 7"})
    assert isinstance(err, Compacted) and err.status == 410


def test_txn_op_and_event_json() -> None:
    assert TxnOp.put("a", b"\x00\x01", if_version=2).to_json() == {
        "op": "put",
        "key": "a",
        "value": "AAE=",
        "if_version": 2,
    }
    assert TxnOp.delete("b").to_json() == {"op": "delete", "key": "b"}
    ev = Event.from_json({"seq": 3, "op": "put", "key": "k", "version": 1, "value": "aGk="})
    assert ev == Event(3, "put", "k", 1, b"hi")
    assert Event.from_json(ev.to_json()) == ev
    assert Event.from_json({"seq": 4, "op": "delete", "key": "k", "version": 0}).value is None


async def test_unreachable_server_is_a_connection_failure() -> None:
    async with KVClient(f"http://127.0.0.1:{free_port()}") as kv:
        with pytest.raises(ConnectionFailed, match="connection refused"):
            await kv.get("a")


async def test_a_closed_client_says_so() -> None:
    with pytest.raises(RuntimeError, match="not open"):
        await KVClient("http://127.0.0.1:1").get("a")


# --- against the real server -------------------------------------------------------------------
async def test_put_get_and_versions(kv: KVClient) -> None:
    first = await kv.put("c/a", b"1")
    assert (first.key, first.version, first.created, first.served_by) == ("c/a", 1, True, "kv-0")
    second = await kv.put("c/a", b"2")
    assert (second.version, second.created, second.seq) == (2, False, first.seq + 1)
    item = await kv.get("c/a")
    assert (item.value, item.version, item.served_by) == (b"2", 2, "kv-0")
    assert item.seq >= second.seq


async def test_keys_are_percent_encoded_and_values_any_bytes(kv: KVClient) -> None:
    key, value = "c/odd key/?#%+&=é", bytes(range(256))
    await kv.put(key, value)
    assert (await kv.get(key)).value == value
    assert [i.key for i in (await kv.list("c/odd key/")).items] == [key]


async def test_missing_key_is_key_not_found(kv: KVClient) -> None:
    with pytest.raises(KeyNotFound) as info:
        await kv.get("c/missing")
    assert (info.value.status, info.value.code) == (404, "not_found")
    with pytest.raises(errors.KeyNotFound):
        await kv.delete("c/missing")


async def test_if_match_and_if_none_match(kv: KVClient) -> None:
    created = await kv.put("c/cond", b"v1", if_none_match=True)
    assert created.created
    with pytest.raises(PreconditionFailed) as info:
        await kv.put("c/cond", b"again", if_none_match=True)
    assert (info.value.status, info.value.code) == (412, "precondition_failed")
    with pytest.raises(PreconditionFailed):
        await kv.put("c/cond", b"v2", if_match=created.version + 1)
    assert (await kv.put("c/cond", b"v2", if_match=created.version)).version == 2
    with pytest.raises(PreconditionFailed):
        await kv.delete("c/cond", if_match=1)
    assert (await kv.get("c/cond")).value == b"v2"
    await kv.delete("c/cond", if_match=2)


async def test_delete(kv: KVClient) -> None:
    put = await kv.put("c/del", b"x")
    deleted = await kv.delete("c/del")
    assert (deleted.key, deleted.seq) == ("c/del", put.seq + 1)
    with pytest.raises(KeyNotFound):
        await kv.get("c/del")


async def test_bad_key_and_too_large(kv: KVClient) -> None:
    with pytest.raises(InvalidKey) as bad:
        await kv.put("bad\x01key", b"x")
    assert (bad.value.status, bad.value.code) == (400, "invalid_key")
    with pytest.raises(TooLarge) as large:
        await kv.put("c/large", b"x" * (2 * MIB))
    assert (large.value.status, large.value.code) == (413, "too_large")
    assert "1048576" in large.value.message or "limit" in large.value.message
    with pytest.raises(KeyNotFound):
        await kv.get("c/large")


async def test_list_pages_in_key_order(kv: KVClient) -> None:
    keys = [f"l/{i}" for i in range(5)]
    for i, key in enumerate(reversed(keys)):
        await kv.put(key, b"v" * i)
    page = await kv.list("l/", limit=2)
    assert [i.key for i in page.items] == ["l/0", "l/1"] and page.next == "l/1"
    assert page.items[0].value is None and page.items[0].size == 4
    pages = [p async for p in kv.list_all("l/", limit=2)]
    assert [[i.key for i in p.items] for p in pages] == [keys[:2], keys[2:4], keys[4:]]
    assert pages[-1].next is None
    with_values = await kv.list("l/", start_after="l/3", values=True)
    assert [(i.key, i.value) for i in with_values.items] == [("l/4", b"")]


async def test_list_limit_over_1000_is_a_400(kv: KVClient) -> None:
    with pytest.raises(InvalidRequest) as info:
        await kv.list(limit=1001)
    assert info.value.status == 400


async def test_txn_is_all_or_nothing(kv: KVClient) -> None:
    await kv.put("t/old", b"o")
    res = await kv.txn([TxnOp.put("t/a", b"A"), TxnOp.put("t/b", b"B"), TxnOp.delete("t/old")])
    assert len(res.results) == 3
    assert (await kv.get("t/b")).value == b"B"
    assert (await kv.status())["applied_seq"] >= res.seq
    with pytest.raises(PreconditionFailed):
        await kv.txn([TxnOp.put("t/c", b"C"), TxnOp.put("t/a", b"A2", if_version=9)])
    with pytest.raises(KeyNotFound):
        await kv.get("t/c")
    assert (await kv.get("t/a")).value == b"A"


async def test_watch_replays_since_then_goes_live(kv: KVClient) -> None:
    start = (await kv.status())["applied_seq"]
    await kv.put("w/a", b"1")
    await kv.put("other", b"not watched")
    async with contextlib.aclosing(kv.watch("w/", since=start)) as events:
        first = await anext(events)
        await kv.delete("w/a")
        second = await anext(events)
    assert (first.op, first.key, first.version, first.value) == ("put", "w/a", 1, b"1")
    assert (second.op, second.key, second.value) == ("delete", "w/a", None)
    assert second.seq == first.seq + 2


async def test_status_digest_readyz(kv: KVClient) -> None:
    await kv.put("s/x", b"1")
    status = await kv.status()
    assert (status["pod"], status["ordinal"], status["role"]) == ("kv-0", 0, "manager")
    assert status["ready"] is True and status["followers"] == []
    digest = await kv.digest()
    assert digest.seq == status["applied_seq"] and digest.digest == status["digest"]
    ready = await kv.readyz()
    assert ready.ready and any(line.startswith("[+]") for line in ready.checks)


async def test_auth_token(tmp_path: Path) -> None:
    with running_server(tmp_path, {"KV_AUTH_TOKEN": "s3cret"}) as srv:
        async with KVClient(srv.url) as anonymous:
            with pytest.raises(Unauthorized) as info:
                await anonymous.get("a")
            assert (info.value.status, info.value.code) == (401, "unauthorized")
        async with KVClient(srv.url, token="wrong") as wrong:
            with pytest.raises(Unauthorized):
                await wrong.put("a", b"1")
        async with KVClient(srv.url, token="s3cret") as kv:
            await kv.put("a", b"1")
            assert (await kv.get("a")).value == b"1"


async def test_watch_on_a_compacted_seq_is_a_410(tmp_path: Path) -> None:
    with running_server(tmp_path, {"KV_LOG_RETENTION": "1"}) as srv:
        async with KVClient(srv.url) as kv:
            for i in range(5):
                await kv.put("k", str(i).encode())
            with pytest.raises(Compacted) as info:
                async with contextlib.aclosing(kv.watch(since=0)) as events:
                    await anext(events)
    assert (info.value.status, info.value.code) == (410, "compacted")


def test_streams_lift_the_default_total_timeout() -> None:
    assert aiohttp.client.DEFAULT_TIMEOUT.total == 300  # what a watch would otherwise die of
    assert STREAM_TIMEOUT.total is None and STREAM_TIMEOUT.sock_read is None
