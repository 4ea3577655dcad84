"""Terms: the table's arithmetic, the history check, an upgrade from a database without terms,
and the compatibility of the wire forms with a peer one version older."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from kvstore import wire
from kvstore.model import Op, WriteRequest
from kvstore.store import snapshot
from kvstore.store.store import Store
from kvstore.store.terms import fork_point, next_term, resume_fork, term_at

# The schema before terms (the first release), to upgrade from.
OLD_SCHEMA = """
CREATE TABLE kv (key TEXT NOT NULL UNIQUE, value BLOB NOT NULL, version INTEGER NOT NULL,
    create_seq INTEGER NOT NULL, mod_seq INTEGER NOT NULL, hash BLOB NOT NULL);
CREATE TABLE changes (seq INTEGER PRIMARY KEY, op TEXT NOT NULL, key TEXT NOT NULL,
    version INTEGER NOT NULL, value BLOB, ts REAL NOT NULL);
CREATE TABLE meta (id INTEGER PRIMARY KEY CHECK (id = 1), epoch TEXT, seq INTEGER NOT NULL,
    digest TEXT NOT NULL, keys INTEGER NOT NULL);
INSERT INTO meta (id, epoch, seq, digest, keys) VALUES (1, NULL, 0, '0', 0);
"""


def test_term_at_and_fork_point() -> None:
    terms = ((1, 1), (5, 11), (9, 31))
    assert [term_at(terms, s) for s in (0, 1, 10, 11, 30, 31, 99)] == [0, 1, 1, 5, 5, 9, 9]
    theirs = ((1, 1), (7, 11))
    assert fork_point(terms, 40, theirs, 15) == 11
    assert fork_point(terms, 40, theirs, 10) is None  # theirs is a prefix of ours
    assert fork_point(terms, 20, ((1, 1), (5, 11)), 20) is None
    assert fork_point((), 5, ((3, 1),), 5) == 1


def test_resume_fork_is_the_history_check() -> None:
    terms = ((1, 1), (5, 11))  # ours: seq 20
    assert resume_fork(terms, 20, 0, None) is None  # brand new
    assert resume_fork(terms, 20, 15, 5) is None  # in our history
    assert resume_fork(terms, 20, 10, 1) is None
    assert resume_fork(terms, 20, 15, 1) == 11  # their term 1 went on past where ours ended
    assert resume_fork(terms, 20, 25, 5) == 21  # ahead of us in our own term
    assert resume_fork(terms, 20, 25, None) == 21  # an older follower: the seq only
    assert resume_fork(terms, 20, 15, None) is None
    assert resume_fork(terms, 20, 15, 3) == 11  # a term we never had, after our term 1


def test_next_term_is_above_every_known_term() -> None:
    assert next_term(((10**15, 1),), 0) == 10**15 + 1
    assert next_term((), 3, at_least=10**15) == 10**15
    assert next_term((), 0) > 1_700_000_000_000  # never below the clock in ms


async def test_a_database_without_terms_is_upgraded_in_place(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "kv.db")
    conn.executescript(OLD_SCHEMA)
    conn.close()
    store = Store(str(tmp_path))
    await store.open()
    await store.set_epoch("old")
    await store.write(WriteRequest([Op("put", "a", b"1")]))
    await store.close()
    conn = sqlite3.connect(tmp_path / "kv.db")  # as the old version left it: no term columns
    conn.executescript(
        "CREATE TABLE c2 AS SELECT seq, op, key, version, value, ts FROM changes;"
        "DROP TABLE changes; ALTER TABLE c2 RENAME TO changes; DROP TABLE terms;"
        "CREATE TABLE m2 AS SELECT id, epoch, seq, digest, keys FROM meta;"
        "DROP TABLE meta; ALTER TABLE m2 RENAME TO meta;"
    )
    conn.close()

    store = Store(str(tmp_path))
    await store.open()
    try:
        st = store.state
        assert (st.epoch, st.seq, st.term, st.terms, st.last_term) == ("old", 1, 0, (), 0)
        term = await store.begin_term()
        await store.write(WriteRequest([Op("put", "b", b"2")]))
        assert store.state.terms == ((term, 2),) and store.state.last_term == term
    finally:
        await store.close()
    rows = sqlite3.connect(tmp_path / "kv.db").execute("SELECT seq, term FROM changes").fetchall()
    assert rows == [(1, 0), (2, term)]


def test_wire_forms_default_what_an_older_peer_lacks() -> None:
    old_hello = json.loads(b'{"t": "hello", "epoch": "e", "seq": 3, "pod": "kv-0"}')
    assert wire.hello_terms(old_hello) == ()
    new_hello = json.loads(wire.hello_line("e", 3, "kv-0", 7, ((7, 1),)))
    assert new_hello["seq"] == 3 and wire.hello_terms(new_hello) == ((7, 1),)
    old = b'{"type": "header", "epoch": "e", "seq": 3, "digest": "00", "keys": 1}'
    header = snapshot.parse_header(old)
    assert (header.term, header.terms) == (0, ())
    heartbeat = json.loads(wire.heartbeat_line(5, 9))
    assert (heartbeat["seq"], heartbeat["term"]) == (5, 9)
