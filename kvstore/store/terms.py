"""Terms: which manager lifetime wrote each change, and the history check built on them.

The manager raises its term each time its process starts and each time it restores; the term
table holds, for each term, the first seq written in it (`start_seq`). The term of a change is
the term in force at its seq: the highest term whose start_seq is at or below it (0 before the
first: changes written before terms were recorded). The table is a few rows, never pruned, and
travels with the stream's hello line and the snapshot header.

All changes of one term were written by one manager process, one after the other, on top of
one history: so two replicas whose tables give the same term at seq N hold the same changes up
to N (Raft's log matching property). A new term is never below the clock in milliseconds, so a
manager that lost its volume, and with it the memory of its last term, does not hand out a term
that a replica it could not reach may still hold.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

Terms = tuple[tuple[int, int], ...]  # ((term, start_seq), ...) in term order


def normalize(rows: Iterable[Sequence[int]]) -> Terms:
    """A table from rows of (term, start_seq) (as stored or as sent): sorted, one row per term;
    ValueError for anything else."""
    table: dict[int, int] = {}
    for row in rows:
        term, start = (int(x) for x in row)
        if term < 0 or start < 1:
            raise ValueError(f"not a term row: {list(row)!r}")
        table[term] = start
    return tuple(sorted(table.items()))


def term_at(terms: Terms, seq: int) -> int:
    """The term in force at `seq`: the highest term that began at or before it."""
    best = 0
    for term, start in terms:
        if start <= seq and term > best:
            best = term
    return best


def starts(terms: Terms) -> list[int]:
    return sorted({start for _, start in terms})


def fork_point(ours: Terms, our_seq: int, theirs: Terms, their_seq: int) -> int | None:
    """The first seq at which two histories part, None when one is a prefix of the other.

    They agree up to N when both tables give the same term at every seq up to N; the term can
    change only at a start_seq of either table, so those are the only seqs to compare."""
    limit = min(our_seq, their_seq)
    for seq in sorted({1, *starts(ours), *starts(theirs)}):
        if seq > limit:
            return None
        if term_at(ours, seq) != term_at(theirs, seq):
            return seq
    return None


def resume_fork(terms: Terms, seq: int, last_seq: int, last_term: int | None) -> int | None:
    """The manager's side of the history check: a follower whose last applied change is
    (`last_seq`, `last_term`) asks to resume. None when that change is in our history (the term
    in force at last_seq is last_term, and last_seq is not beyond our seq); else our best figure
    for the first seq where the histories part (the follower, which knows its own table, makes
    it exact with `fork_point`). `last_term` None: an older follower that sends no term; only
    the seq is checked."""
    if last_seq <= 0:
        return None
    if last_term is None:
        return seq + 1 if last_seq > seq else None
    if last_seq <= seq and term_at(terms, last_seq) == last_term:
        return None
    # Where did their term last_term stand in our history? Up to its end we agree at most.
    ours = dict(terms)
    if last_term in ours and ours[last_term] <= last_seq:
        later = [start for term, start in terms if term > last_term and start > ours[last_term]]
        end = min([*later, seq + 1]) - 1
        return min(end, last_seq) + 1
    # A term we never had: we part no later than where our history leaves the highest term we
    # share below it.
    below = [(term, start) for term, start in terms if term < last_term]
    if not below:
        return 1
    shared = max(below)[0]
    later = [start for term, start in terms if term > shared and start > ours[shared]]
    return min([*later, seq + 1, last_seq + 1])


def next_term(terms: Terms, current: int, at_least: int = 0) -> int:
    """A term above every term known here (and `at_least`), never below the clock in ms."""
    known = max([current, at_least - 1, *(t for t, _ in terms)])
    return max(known + 1, int(time.time() * 1000))
