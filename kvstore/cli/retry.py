"""`--retry N` / `--wait S`: try a request again while the server says "not now".

Retried: 503 (not ready, no manager, shutting down) and 507 (disk full), which mean nothing was
applied, waiting as long as their `Retry-After` says (else a short backoff); a server that
cannot be reached, for a read, or for a write whose connection was never made. Never retried:
504 `unknown_outcome` (the write may have been applied: sending it again could apply it twice),
any other answer, and a write whose connection broke after it was sent.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from kvstore.client import ClientError, ConnectionFailed

T = TypeVar("T")
UNKNOWN_OUTCOME = "unknown_outcome"
RETRIED_STATUSES = (503, 507)
FIRST_BACKOFF = 0.25  # seconds, doubled each try up to MAX_BACKOFF, when no Retry-After is given
MAX_BACKOFF = 5.0


@dataclass(frozen=True)
class RetryPolicy:
    """`retries`: at most this many more tries (None: no count); `within`: seconds to keep
    trying in all (None: no deadline). Neither set: one try."""

    retries: int | None = None
    within: float | None = None

    @property
    def enabled(self) -> bool:
        return self.retries is not None or self.within is not None


def is_unknown_outcome(exc: ClientError) -> bool:
    return exc.code == UNKNOWN_OUTCOME


def retryable(exc: ClientError, *, write: bool) -> bool:
    if is_unknown_outcome(exc):
        return False
    if isinstance(exc, ConnectionFailed):
        return not write or not exc.sent
    return exc.status in RETRIED_STATUSES


def delay_for(exc: ClientError, attempt: int) -> float:
    """The server's Retry-After when it gave one, else FIRST_BACKOFF doubled per try."""
    if exc.retry_after is not None:
        return float(exc.retry_after)
    return min(MAX_BACKOFF, FIRST_BACKOFF * 2.0**attempt)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    write: bool,
    say: Callable[[str], None] = _say,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """`call()`, tried again as the policy allows; the last error is raised when it runs out."""
    deadline = None if policy.within is None else time.monotonic() + policy.within
    attempt = 0
    while True:
        try:
            return await call()
        except ClientError as exc:
            if not policy.enabled or not retryable(exc, write=write):
                raise
            if policy.retries is not None and attempt >= policy.retries:
                raise
            delay = delay_for(exc, attempt)
            if deadline is not None and time.monotonic() + delay > deadline:
                raise
            attempt += 1
            of = "" if policy.retries is None else f" of {policy.retries + 1}"
            say(f"{' '.join(str(exc).split())}; try {attempt + 1}{of} in {delay:g} s")
            await sleep(delay)
