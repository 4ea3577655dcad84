"""Reading NDJSON streams. aiohttp's `readline` refuses lines over 512 KiB; a snapshot page or a
batch with large values is longer, so lines are split here from raw chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from kvstore.errors import TooLarge

MAX_LINE = 256 * 1024 * 1024


async def iter_lines(
    stream: aiohttp.StreamReader, max_line: int = MAX_LINE
) -> AsyncIterator[bytes]:
    """Yield each complete line (without its newline); a final unterminated line is dropped,
    since a stream cut mid-line is a broken stream, not a short line."""
    buffer = bytearray()
    while True:
        chunk = await stream.readany()
        if not chunk:
            return
        start = len(buffer)
        buffer += chunk
        end = buffer.find(b"\n", start)
        begin = 0
        while end != -1:
            yield bytes(buffer[begin:end])
            begin = end + 1
            end = buffer.find(b"\n", begin)
        del buffer[:begin]
        if len(buffer) > max_line:
            raise TooLarge(f"a stream line is over {max_line} bytes", limit=max_line)
