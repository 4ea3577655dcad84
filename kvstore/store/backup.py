"""Backup files: a consistent SQLite copy of a store, what a copy holds, and starting a store
from one (`KV_RESTORE_FROM`: copied in, then renamed into place, so a crash leaves either
nothing or the whole copy)."""

from __future__ import annotations

import os
import shutil
import sqlite3

from kvstore.errors import InvalidRequest
from kvstore.store import schema

MAGIC = b"SQLite format 3\x00"


def copy_database(src_path: str, dest_path: str) -> int:
    """Copy the database consistently; returns the copy's size in bytes."""
    src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True)
    dest = sqlite3.connect(dest_path)
    try:
        src.backup(dest, pages=4096)
        dest.execute("PRAGMA journal_mode = DELETE")
    finally:
        dest.close()
        src.close()
    return os.path.getsize(dest_path)


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
