"""SQLite schema and connection settings. One database file per pod: `<data dir>/kv.db`."""

from __future__ import annotations

import sqlite3

DB_NAME = "kv.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT NOT NULL UNIQUE,
    value BLOB NOT NULL,
    version INTEGER NOT NULL,
    create_seq INTEGER NOT NULL,
    mod_seq INTEGER NOT NULL,
    hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY,
    op TEXT NOT NULL,
    key TEXT NOT NULL,
    version INTEGER NOT NULL,
    value BLOB,
    ts REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch TEXT,
    seq INTEGER NOT NULL,
    digest TEXT NOT NULL,
    keys INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (id, epoch, seq, digest, keys) VALUES (1, NULL, 0, '0', 0);
"""

UPSERT = (
    "INSERT INTO kv (key, value, version, create_seq, mod_seq, hash) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version, "
    "mod_seq = excluded.mod_seq, hash = excluded.hash"
)
LOOKUP = "SELECT version, hash, create_seq FROM kv WHERE key = ?"
DELETE_KEY = "DELETE FROM kv WHERE key = ?"
INSERT_CHANGE = "INSERT INTO changes (seq, op, key, version, value, ts) VALUES (?, ?, ?, ?, ?, ?)"
UPDATE_META = "UPDATE meta SET epoch = ?, seq = ?, digest = ?, keys = ? WHERE id = 1"
READ_META = "SELECT epoch, seq, digest, keys FROM meta WHERE id = 1"
GET = "SELECT value, version, mod_seq, create_seq FROM kv WHERE key = ?"


def connect(path: str, durability: str, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit) with WAL and our pragmas."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode = WAL")
    sync = "FULL" if durability == "full" else "NORMAL"
    conn.execute(f"PRAGMA synchronous = {sync}")
    conn.execute("PRAGMA foreign_keys = OFF")
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    else:
        conn.executescript(SCHEMA)
    return conn
