"""Reading NDJSON streams. aiohttp's `readline` refuses lines over 512 KiB; a snapshot page or a
batch with large values is longer, so lines are split here from raw chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp

from kvstore.errors import TooLarge

MAX_LINE = 256 * 1024 * 1024
# A sender (snapshot pages, replication stream lines) closes a line once it holds this many
# bytes of keys and values (each change or row counted with ROW_FRAMING more).
LINE_BYTES = 4 << 20
ROW_FRAMING = 64


def longest_line(max_key_bytes: int, max_value_bytes: int) -> int:
    """An upper bound on a line a sender writes: LINE_BYTES and then one more row, with each
    value in base64 (4/3), each key JSON-escaped (at most 6 bytes a byte) and its framing."""
    raw = LINE_BYTES + ROW_FRAMING + max_key_bytes + max_value_bytes
    return 6 * raw + 4096


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
