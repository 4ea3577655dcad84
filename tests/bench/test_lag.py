"""kvstore.bench.lag against real servers: every paced write seen on the watch, the token sent
on both ends, and a watch that cannot start is an error, not a figure."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.bench.children import BenchError
from kvstore.bench.lag import LagSpec, measure, run_lag
from tests.test_client import Server, running_server

TOKEN = "lag-test-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("kv")) as srv:
        yield srv


async def test_every_write_is_seen_on_the_watch(server: Server) -> None:
    spec = LagSpec("kvstore", server.url, server.url, 200.0, None, requests=25)
    result = await run_lag(spec, "lag", None)
    assert (result.writes.ok, result.writes.failed, result.seen, result.not_seen) == (25, 0, 25, 0)
    assert result.latency.count == 25 and result.latency.p50_ms is not None
    assert result.latency.p50_ms >= 0 and result.writes.generator.startswith("Python process")


async def test_the_token_goes_to_the_writer_and_the_watch(tmp_path: Path) -> None:
    with running_server(tmp_path, {"KV_AUTH_TOKEN": TOKEN}) as srv:
        spec = LagSpec("kvstore", srv.url, srv.url, 100.0, None, requests=5, token=TOKEN)
        result = await measure(spec)
        assert (result.writes.ok, result.seen) == (5, 5)
        without = LagSpec("kvstore", srv.url, srv.url, 100.0, None, requests=5)
        with pytest.raises(BenchError, match=f"the watch on {srv.url} failed: .*401"):
            await measure(without)


async def test_a_watch_that_cannot_start_is_an_error(server: Server) -> None:
    spec = LagSpec("kvstore", server.url, "http://127.0.0.1:9", 100.0, None, requests=5)
    with pytest.raises(BenchError, match=r"^lag: the watch on http://127\.0\.0\.1:9 failed: "):
        await run_lag(spec, "lag", None)
