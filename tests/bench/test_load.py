"""kvstore.bench.load: tallies combined into one LoadResult, then the Python load runner against
a real server: closed loop and paced, counted, with write positions, failures sampled."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kvstore.bench.load import LoadResult, Tally, combine, drive, run_python
from kvstore.bench.workload import Load
from tests.test_client import Server, running_server


def test_tallies_combine_into_one_result() -> None:
    a = Tally(2.0, [0.001 * n for n in range(1, 51)], failed=1, error_samples=["e1"])
    b = Tally(1.5, [0.001 * n for n in range(51, 101)], acks=[(7, 1.0)])
    r = combine("gen", [a, b])
    assert (r.ok, r.failed, r.seconds, r.per_second) == (100, 1, 2.0, 50.0)
    assert (r.latency.p50_ms, r.latency.p99_ms, r.latency.max_ms) == (50.0, 99.0, 100.0)
    assert (r.error_samples, r.acks, r.generator) == (["e1"], [(7, 1.0)], "gen")
    assert combine("gen", [Tally()]).latency.p50_ms is None


def test_error_samples_are_few() -> None:
    t = Tally()
    for i in range(10):
        t.fail(f"e{i}")
    assert (t.failed, t.error_samples) == (10, ["e0", "e1", "e2"])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("kv")) as srv:
        yield srv


def _ok(r: LoadResult, n: int) -> None:
    assert (r.ok, r.failed, r.latency.count) == (n, 0, n), r.error_samples
    assert r.latency.p50_ms is not None and r.latency.p99_ms is not None
    assert r.latency.max_ms is not None
    assert 0 < r.latency.p50_ms <= r.latency.p99_ms <= r.latency.max_ms


async def test_python_load_puts_then_gets(server: Server) -> None:
    put = await run_python(
        [Load(server.url, "kv_put", 2, 0.3, prefix="t/", keyspace=20)], "t", None
    )
    assert put.ok > 0 and put.failed == 0 and put.generator.startswith("Python process")
    get = await run_python(
        [Load(server.url, "kv_get", 2, 0.3, prefix="t/", keyspace=20)], "t", None
    )
    assert get.ok > 0 and get.failed == 0 and "2 connections" in get.generator


async def test_requests_are_shared_by_the_connections_and_processes(server: Server) -> None:
    loads = [Load(server.url, "kv_put", c, None, prefix=f"n{c}/", requests=7) for c in (1, 3)]
    result = await run_python(loads, "t")
    _ok(result, 14)
    assert result.generator == "2 Python processes (aiohttp), 4 connections in all"


async def test_paced_writes_note_their_seqs(server: Server) -> None:
    load = Load(server.url, "kv_put", 4, None, prefix="paced/", requests=12, rate=200.0, acks=True)
    tally = await drive(load)
    assert len(tally.latencies) == 12 and tally.failed == 0
    seqs = sorted(seq for seq, _ in tally.acks)
    assert len(set(seqs)) == 12 and seqs[-1] - seqs[0] == 11  # one write each, nothing between
    assert tally.seconds >= 11 / 200.0  # the last one went out at start + 11 / rate


async def test_error_answers_are_failures_with_samples(server: Server) -> None:
    load = Load(server.url, "kv_get", 2, None, prefix="never-written/", requests=5)
    result = await run_python([load], "t")
    assert (result.ok, result.failed, result.latency.count) == (0, 5, 0)
    assert len(result.error_samples) == 3 and "HTTP 404" in result.error_samples[0]


async def test_an_unreachable_server_is_a_failure_not_a_crash() -> None:
    result = await run_python(
        [Load("http://127.0.0.1:9", "kv_put", 1, None, requests=2)], "t", None
    )
    assert (result.ok, result.failed) == (0, 2) and "Connect" in result.error_samples[0]
