"""What the bench tells the person running it while it measures, on stderr (stdout is the
report's): a live line redrawn in place, shown only on a terminal, and the suite's step lines,
each with the time since the start."""

from __future__ import annotations

import sys
import time


class Console:
    def __init__(self, live: bool, steps: bool = True) -> None:
        self.live = live  # redraw a progress line (a terminal only: it is made of \r)
        self.steps = steps  # print `step` lines
        self.start = time.monotonic()
        self._width = 0

    @classmethod
    def for_stderr(cls, steps: bool = True) -> Console:
        return cls(live=sys.stderr.isatty(), steps=steps)

    def show(self, text: str) -> None:
        """Replace the live line with `text`."""
        if self.live:
            self._width = max(self._width, len(text))
            sys.stderr.write("\r" + text.ljust(self._width))
            sys.stderr.flush()

    def clear(self) -> None:
        """Remove the live line, if one is shown."""
        if self.live and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()
            self._width = 0

    def step(self, text: str) -> None:
        """One line that stays: `[  12.3s] text`."""
        if self.steps:
            self.clear()
            print(f"[{time.monotonic() - self.start:6.1f}s] {text}", file=sys.stderr, flush=True)
