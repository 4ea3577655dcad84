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
    ts REAL NOT NULL,
    term INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    epoch TEXT,
    seq INTEGER NOT NULL,
    digest TEXT NOT NULL,
    keys INTEGER NOT NULL,
    term INTEGER NOT NULL DEFAULT 0
);
INSERT OR IGNORE INTO meta (id, epoch, seq, digest, keys) VALUES (1, NULL, 0, '0', 0);
CREATE TABLE IF NOT EXISTS terms (
    term INTEGER PRIMARY KEY,
    start_seq INTEGER NOT NULL
);
"""
# Columns added since the first schema: (table, column, definition). A database made before
# them gets them at open; its old rows take the default (term 0: before terms were recorded).
ADDED_COLUMNS = (
    ("changes", "term", "INTEGER NOT NULL DEFAULT 0"),
    ("meta", "term", "INTEGER NOT NULL DEFAULT 0"),
)

UPSERT = (
    "INSERT INTO kv (key, value, version, create_seq, mod_seq, hash) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version, "
    "mod_seq = excluded.mod_seq, hash = excluded.hash"
)
INSERT_KV = (
    "INSERT INTO kv (key, value, version, create_seq, mod_seq, hash) VALUES (?, ?, ?, ?, ?, ?)"
)
DELETE_KEY = "DELETE FROM kv WHERE key = ?"
INSERT_CHANGE = (
    "INSERT INTO changes (seq, op, key, version, value, ts, term) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
UPDATE_META = "UPDATE meta SET epoch = ?, seq = ?, digest = ?, keys = ? WHERE id = 1"
READ_META = "SELECT epoch, seq, digest, keys FROM meta WHERE id = 1"
READ_TERMS = "SELECT term, start_seq FROM terms ORDER BY term"
SET_TERM = "UPDATE meta SET term = ? WHERE id = 1"
INSERT_TERM = "INSERT OR REPLACE INTO terms (term, start_seq) VALUES (?, ?)"
GET = "SELECT value, version, mod_seq, create_seq FROM kv WHERE key = ?"
LOOKUP_CHUNK = 512  # keys per lookup_many statement (SQLite allows 32766 parameters)


def lookup_many(keys: list[str]) -> tuple[str, list[str]]:
    """A statement reading (key, version, hash, create_seq) of up to LOOKUP_CHUNK keys, and its
    parameters. The key list is padded to a power of two (repeating its last key) so that a
    handful of statements serve every size from the connection's statement cache."""
    size = 1 << max(0, len(keys) - 1).bit_length()
    params = keys + [keys[-1]] * (size - len(keys))
    marks = ",".join("?" * size)
    return f"SELECT key, version, hash, create_seq FROM kv WHERE key IN ({marks})", params


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
        migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Create what is missing: the tables of a new database, the columns added since an older
    one was made."""
    conn.executescript(SCHEMA)
    for table, column, definition in ADDED_COLUMNS:
        if column not in _columns(conn, table):
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
