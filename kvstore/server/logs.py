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
        fmt = logging.Formatter(TEXT)
        fmt.converter = time.gmtime
        handler.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("aiohttp.access").setLevel(
        logging.INFO if settings.access_log else logging.WARNING
    )
