"""Backup files: a consistent SQLite copy of a store, what a copy holds, and starting a store
from one (`KV_RESTORE_FROM`: copied in, then renamed into place, so a crash leaves either
nothing or the whole copy)."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3

from kvstore.errors import InvalidRequest
from kvstore.store import schema

MAGIC = b"SQLite format 3\x00"


COPY_SUFFIX = ".backup-"  # <database>.backup-<random>: a copy being made or sent


class DatabaseCopy:
    """A consistent copy of a database by `VACUUM INTO`: one read transaction from start to end,
    so that commits meanwhile neither restart nor stop it (the backup API starts over at each
    one). `run` in a thread; `interrupt` from any other stops it."""

    def __init__(self, src_path: str, dest_path: str) -> None:
        self.src_path, self.dest_path = src_path, dest_path
        self.conn = sqlite3.connect(
            f"file:{src_path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )

    def run(self) -> int:
        """Make the copy; returns its size in bytes. sqlite3.OperationalError if interrupted."""
        self.conn.execute("VACUUM INTO ?", (self.dest_path,))
        return os.path.getsize(self.dest_path)

    def interrupt(self) -> None:
        self.conn.interrupt()

    def close(self) -> None:
        self.conn.close()


def copy_database(src_path: str, dest_path: str) -> int:
    """Copy the database consistently; returns the copy's size in bytes."""
    copy = DatabaseCopy(src_path, dest_path)
    try:
        return copy.run()
    finally:
        copy.close()


def copy_path(data_dir: str, token: str) -> str:
    """Where a copy for a backup is made: on the data volume, next to the database."""
    return os.path.join(data_dir, schema.DB_NAME + COPY_SUFFIX + token)


def remove_copies(data_dir: str) -> list[str]:
    """Remove what copies a process that stopped mid-backup left on the volume."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(data_dir):
            if name.startswith(schema.DB_NAME + COPY_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(data_dir, name))
                removed.append(name)
    return removed


def describe(path: str) -> dict[str, object]:
    """What a backup file holds; InvalidRequest if it is not a kvstore database."""
    with open(path, "rb") as f:
        if f.read(16) != MAGIC:
            raise InvalidRequest(f"{path} is not an SQLite database")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        epoch, seq, digest, keys = conn.execute(schema.READ_META).fetchone()
    except sqlite3.DatabaseError as exc:
        raise InvalidRequest(f"{path} is not a kvstore database: {exc}") from None
    finally:
        conn.close()
    return {"epoch": epoch, "seq": seq, "digest": digest, "keys": keys}


def restore_into(data_dir: str, backup: str) -> bool:
    """Copy `backup` in as the store's database if the volume has none. True if it did."""
    target = os.path.join(data_dir, schema.DB_NAME)
    if os.path.exists(target):
        return False
    describe(backup)
    os.makedirs(data_dir, exist_ok=True)
    partial = target + ".restoring"
    shutil.copyfile(backup, partial)
    with open(partial, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(partial, target)
    return True
