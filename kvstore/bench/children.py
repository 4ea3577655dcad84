"""Work in spawned child processes, apart from the process that measures and prints.

On a 2-core machine one Python process generating load already takes a whole core, so the load
and the lag measurement each run in processes of their own (spawned: nothing of this process
leaks into them), and this one only waits, shows progress and reads the results. Each child runs
`asyncio.run(work(arg, counter))`, adds one to its counter per request, and sends its result
back through a pipe. Ctrl-C is this process's to handle: it stops the children.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from typing import Any, Generic, TypeAlias, TypeVar, cast

from kvstore.bench.console import Console

Counter: TypeAlias = "Synchronized[int]"
A = TypeVar("A")
R = TypeVar("R")
Work: TypeAlias = Callable[[A, Counter], Coroutine[Any, Any, R]]
POLL = 0.25  # seconds between progress updates


class BenchError(RuntimeError):
    """A figure could not be measured: a child process failed, a system did not start or
    answer. The command prints it as one line and exits 1."""


async def in_children(
    work: Work[A, R],
    args: Sequence[A],
    what: str,
    console: Console | None = None,
    timeout: float | None = None,
) -> list[R]:
    """`work(arg, counter)` in one child process per arg; their results in the order of
    `args`. The children's counters show live as `what: N requests in S s, R/s`. BenchError
    naming `what` when a child fails, ends without a result or is not done within `timeout`."""
    with _Children(work, args) as children:
        while not children.collect():
            if timeout is not None and children.elapsed() > timeout:
                raise BenchError(f"{what}: not done within {timeout:g} s")
            if console is not None:
                console.show(children.progress_text(what))
            await asyncio.sleep(POLL)
    if console is not None:
        console.clear()
    return children.results(what)


@dataclass(frozen=True)
class _Failed:
    reason: str


def _child_main(work: Work[A, R], arg: A, counter: Counter, conn: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result: object = asyncio.run(work(arg, counter))
    except BenchError as exc:  # reported by the parent, which owns the terminal
        result = _Failed(str(exc))
    except Exception as exc:
        result = _Failed(f"{type(exc).__name__}: {exc}")
    conn.send(result)
    conn.close()


class _Children(Generic[A, R]):
    """The running children; leaving the `with` block stops any still running."""

    def __init__(self, work: Work[A, R], args: Sequence[A]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.counters: list[Counter] = [ctx.Value("q", 0) for _ in args]
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.pending: dict[Connection, int] = {}
        self.received: dict[int, object] = {}
        self.start = time.monotonic()
        for index, (arg, counter) in enumerate(zip(args, self.counters, strict=True)):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child_main, args=(work, arg, counter, send), daemon=True)
            proc.start()
            send.close()
            self.procs.append(proc)
            self.pending[recv] = index

    def __enter__(self) -> _Children[A, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()

    def collect(self) -> bool:
        """Take the results that have arrived; True once every child reported."""
        for ready in multiprocessing.connection.wait(list(self.pending), timeout=0):
            conn = cast(Connection, ready)
            index = self.pending.pop(conn)
            try:
                self.received[index] = conn.recv()
            except EOFError:
                self.received[index] = _Failed("it ended without a result")
        return not self.pending

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def progress_text(self, what: str) -> str:
        n, elapsed = sum(c.value for c in self.counters), self.elapsed()
        return f"{what}: {n} requests in {elapsed:.1f} s, {n / elapsed:.0f}/s"

    def results(self, what: str) -> list[R]:
        for index, result in sorted(self.received.items()):
            if isinstance(result, _Failed):
                which = f" process {index}:" if len(self.procs) > 1 else ""
                raise BenchError(f"{what}:{which} {result.reason}")
        return [cast(R, self.received[i]) for i in range(len(self.procs))]
