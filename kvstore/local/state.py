"""The files of a local cluster, all under its directory (`.kvstore` by default):

cluster.json      how to reach the running cluster: the manager's `url` (what the client
                  commands use without flags), the supervisor's `control` address and token,
                  every pod's url; removed by `kvstore local down`
events.jsonl      one line per pod event (created, ready, deleting, deleted, exited, ...)
supervisor.lock   held by the running supervisor
supervisor.log    the supervisor's output when started with --detach
data/kv-N/        each pod's volume
logs/kv-N.log     each pod's log
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

DEFAULT_DIR = ".kvstore"
SET_NAME = "kv"


@dataclass(frozen=True)
class Layout:
    """Where each file of the local cluster in `root` lives."""

    root: Path

    @property
    def cluster_file(self) -> Path:
        return self.root / "cluster.json"

    @property
    def events_file(self) -> Path:
        return self.root / "events.jsonl"

    @property
    def lock_file(self) -> Path:
        return self.root / "supervisor.lock"

    @property
    def supervisor_log(self) -> Path:
        return self.root / "supervisor.log"

    def data_dir(self, pod: str) -> Path:
        return self.root / "data" / pod

    def volumes(self) -> list[str]:
        """The pods that have a data directory (a volume), by ordinal."""
        dirs = (p.name for p in (self.root / "data").glob(f"{SET_NAME}-*") if p.is_dir())
        found = {ordinal: name for name in dirs if (ordinal := ordinal_of(name)) is not None}
        return [found[o] for o in sorted(found)]

    def log_path(self, pod: str) -> Path:
        return self.root / "logs" / f"{pod}.log"


def pod_name(ordinal: int) -> str:
    return f"{SET_NAME}-{ordinal}"


def ordinal_of(name: str) -> int | None:
    """`kv-3` -> 3; None if `name` is not a pod of this set."""
    prefix, _, number = name.rpartition("-")
    if prefix != SET_NAME or not number.isdigit():
        return None
    return int(number)


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` with `data` in one rename, readable only by its owner."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out, indent=2)
        out.write("\n")
    os.replace(tmp, path)


def read_cluster_file(root: Path) -> dict[str, Any] | None:
    """The running cluster's cluster.json, or None if there is none (or it is unreadable)."""
    try:
        data = json.loads(Layout(root).cluster_file.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EventLog:
    """Pod events, appended to events.jsonl and kept in memory for the control channel."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.events: list[dict[str, Any]] = []

    def record(self, pod: str, event: str, **details: Any) -> dict[str, Any]:
        entry = {"time": round(time.time(), 3), "pod": pod, "event": event}
        entry.update((k, v) for k, v in details.items() if v is not None)
        self.events.append(entry)
        with self.path.open("a") as out:
            out.write(json.dumps(entry) + "\n")
        return entry


def read_events(root: Path) -> list[dict[str, Any]]:
    """Every event recorded in `root` (all supervisors that ran there, oldest first)."""
    try:
        lines = Layout(root).events_file.read_text().splitlines()
    except OSError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


class SupervisorLock:
    """An exclusive lock on `supervisor.lock`: one supervisor per directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self) -> bool:
        """Take the lock; False if another supervisor holds it."""
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._file = handle
        return True

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
