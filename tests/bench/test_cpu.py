"""kvstore.bench.cpu: server CPU time from /proc/<pid>/stat, its accounting per request, and
pinning the members' threads to cores."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kvstore.bench.cpu import (
    CpuSample,
    affinity,
    pin,
    process_ticks,
    sample,
    split_cores,
    stat_ticks,
    thread_ids,
    used,
)

# A real /proc/<pid>/stat line, its command name holding spaces and a ')'.
STAT = (
    "4242 (kv serve) x) S 1 4242 4242 0 -1 4194560 25000 0 3 0 "
    "1234 567 0 0 20 0 3 0 98765 300000000 20000 18446744073709551615 0 0 0 0 0 0 0 "
    "16781312 16386 0 0 0 17 1 0 0 0 0 0"
)


def test_stat_ticks_is_utime_plus_stime_after_the_last_parenthesis() -> None:
    assert stat_ticks(STAT) == 1234 + 567


def test_process_ticks_of_a_fake_proc_and_of_a_gone_process(tmp_path: Path) -> None:
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "stat").write_text(STAT)
    assert process_ticks(4242, tmp_path) == 1801
    assert process_ticks(4343, tmp_path) is None
    got = sample({"kv-0": 4242, "kv-1": 4343}, tmp_path)
    assert got.ticks == {"kv-0": 1801}  # a gone member has no sample


def _end(child: subprocess.Popen[str]) -> None:
    """Let the child's read of its input end, wait for it, close its pipes."""
    assert child.stdin is not None and child.stdout is not None
    child.stdin.close()
    child.wait(timeout=30)
    child.stdout.close()


def test_process_ticks_counts_every_thread_of_a_real_process() -> None:
    """A child burning CPU in two threads besides its main one: /proc/<pid>/stat of the
    process holds all of it (the threads' own stats add up to no more than it)."""
    code = (
        "import threading, time\n"
        "def spin():\n"
        "    end = time.thread_time() + 0.3\n"
        "    while time.thread_time() < end: pass\n"
        "ts = [threading.Thread(target=spin) for _ in range(2)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "print('done', flush=True); import sys; sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "done"
        ticks = process_ticks(child.pid)
        assert ticks is not None
        hz = os.sysconf("SC_CLK_TCK")
        # the two exited threads' CPU (0.6 s at least, tick rounding aside) is still counted
        assert ticks / hz >= 0.5
        main_thread = stat_ticks(Path(f"/proc/{child.pid}/task/{child.pid}/stat").read_text())
        assert main_thread < ticks
    finally:
        _end(child)


def test_used_accounts_new_and_gone_members() -> None:
    before = CpuSample({"kv-0": 100, "kv-1": 50, "kv-2": 10})
    after = CpuSample({"kv-0": 350, "kv-1": 50, "kv-3": 20})  # kv-2 gone, kv-3 new
    use = used(before, after, hz=100)
    assert use.seconds == {"kv-0": 2.5, "kv-1": 0.0, "kv-3": 0.2}
    assert use.total == pytest.approx(2.7)
    assert use.per_request_us(27_000) == pytest.approx(100.0)
    assert use.per_request_us(0) is None


def test_used_never_counts_less_than_nothing() -> None:
    # a member replaced by a process of the same name with fewer ticks: not negative
    assert used(CpuSample({"kv-0": 500}), CpuSample({"kv-0": 20}), hz=100).seconds == {"kv-0": 0}


def test_split_cores() -> None:
    p = split_cores({3, 1, 2})
    assert (p.servers, p.load) == (frozenset({1}), frozenset({2, 3}))
    assert p.describe() == "servers on core(s) 1, load on core(s) 2,3"
    with pytest.raises(ValueError, match="at least 2 cores"):
        split_cores({0})


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores to pin")
def test_pin_moves_every_thread_of_a_running_process() -> None:
    code = (
        "import threading, time\n"
        "ev = threading.Event()\n"
        "ts = [threading.Thread(target=ev.wait) for _ in range(3)]\n"
        "[t.start() for t in ts]\n"
        "print('ready', flush=True); import sys; sys.stdin.read(); ev.set()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        tids = thread_ids(child.pid)
        assert len(tids) == 4 and child.pid in tids
        target = frozenset({max(os.sched_getaffinity(0))})
        assert pin(child.pid, target) == 4
        assert all(os.sched_getaffinity(t) == target for t in tids)
        assert affinity(child.pid) == sorted(target)
    finally:
        _end(child)
    assert pin(child.pid, frozenset({0})) == 0 and affinity(child.pid) == []  # gone


def test_thread_ids_of_this_process() -> None:
    started = threading.Event()
    stop = threading.Event()

    def run() -> None:
        started.set()
        stop.wait()

    t = threading.Thread(target=run)
    t.start()
    try:
        started.wait()
        assert len(thread_ids(os.getpid())) >= 2
    finally:
        stop.set()
        t.join()
