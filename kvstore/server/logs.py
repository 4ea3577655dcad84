"""Logging: one line per event, with pod, role and seq; `KV_LOG_FORMAT=json` for machines."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

from kvstore.config import Settings


class _Context(logging.Filter):
    """Adds pod, role and seq to each record; seq is `-` (JSON: null) until the store is open."""

    def __init__(self, settings: Settings, seq: Callable[[], int] | None = None) -> None:
        super().__init__()
        self.pod, self.role, self.seq = settings.pod_name, settings.role, seq

    def filter(self, record: logging.LogRecord) -> bool:
        record.pod, record.role = self.pod, self.role
        record.seq = "-" if self.seq is None else self.seq()
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "pod": getattr(record, "pod", None),
            "role": getattr(record, "role", None),
            "seq": _seq(getattr(record, "seq", None)),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def _seq(value: object) -> int | None:
    return value if isinstance(value, int) else None


TEXT = "%(asctime)s %(levelname)-7s %(pod)s %(role)s seq=%(seq)s %(name)s: %(message)s"
# Control characters (a line break above all) and Unicode line separators in a message are
# written escaped: a value a client chose (`?pod=`, a key) can never start a line of its own.
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


def escape(text: str) -> str:
    return text.translate(_ESCAPES)


class TextFormatter(logging.Formatter):
    """The text format, one event per line: the message escaped; a traceback, ours, follows
    on lines of its own."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape(super().formatMessage(record))


_contexts: list[_Context] = []


def bind_seq(seq: Callable[[], int]) -> None:
    """Point the log lines' `seq` at the store, once it is open."""
    for context in _contexts:
        context.seq = seq


def setup(settings: Settings) -> None:
    """Configure the root logger once for `kvstore serve`."""
    handler = logging.StreamHandler(sys.stderr)
    context = _Context(settings)
    _contexts[:] = [context]
    handler.addFilter(context)
    if settings.log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        fmt = TextFormatter(TEXT)
        fmt.converter = time.gmtime
        handler.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("aiohttp.access").setLevel(
        logging.INFO if settings.access_log else logging.WARNING
    )
