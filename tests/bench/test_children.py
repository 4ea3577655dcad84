"""kvstore.bench.children: work in spawned processes, results in order, failures named."""

from __future__ import annotations

import asyncio
import os

import pytest

from kvstore.bench.children import BenchError, Counter, in_children


async def _square(n: int, counter: Counter) -> int:
    counter.value += n
    await asyncio.sleep(0)
    return n * n if n != 2 else os.getpid()  # 2: which process ran it


async def _fails(n: int, counter: Counter) -> int:
    if n == 1:
        raise ZeroDivisionError("no figures")
    return n


async def _vanishes(n: int, counter: Counter) -> int:
    os._exit(3)


async def _sleeps(n: int, counter: Counter) -> int:
    await asyncio.sleep(60)
    return n


async def test_results_come_back_in_order_from_other_processes() -> None:
    results = await in_children(_square, [3, 1, 2], "squares")
    assert results[:2] == [9, 1] and results[2] != os.getpid()


async def test_a_failing_child_is_named() -> None:
    with pytest.raises(BenchError, match=r"^sums: process 1: ZeroDivisionError: no figures$"):
        await in_children(_fails, [0, 1], "sums")


async def test_a_child_that_ends_without_a_result() -> None:
    with pytest.raises(BenchError, match=r"^exits: it ended without a result$"):
        await in_children(_vanishes, [0], "exits")


async def test_a_late_child_is_stopped() -> None:
    with pytest.raises(BenchError, match=r"not done within 0\.5 s"):
        await in_children(_sleeps, [0], "sleeps", timeout=0.5)
