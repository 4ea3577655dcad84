"""NDJSON lines of any length, split from raw chunks."""

from __future__ import annotations

import pytest

from kvstore.errors import TooLarge
from kvstore.wire import iter_lines


class _Chunks:
    """The part of aiohttp's StreamReader that iter_lines uses."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def readany(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


async def test_splits_chunks_and_keeps_long_lines_whole() -> None:
    big = b"x" * 600_000  # over aiohttp's readline() limit
    stream = _Chunks([b'{"a":1}\n{"b"', b":2}\n\n" + big[:100], big[100:] + b"\n", b"cut"])
    got = [line async for line in iter_lines(stream)]  # type: ignore[arg-type]
    assert got == [b'{"a":1}', b'{"b":2}', b"", big]  # a line cut off by the end is dropped


async def test_refuses_a_line_over_the_limit() -> None:
    stream = _Chunks([b"y" * 100])
    with pytest.raises(TooLarge):
        _ = [line async for line in iter_lines(stream, max_line=10)]  # type: ignore[arg-type]
