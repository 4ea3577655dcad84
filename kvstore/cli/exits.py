"""Exit codes shared by every command, and the type the command modules register with.

0 success; 1 the operation failed (server error, unreachable, a chaos violation); 2 usage or
configuration error; 3 key not found; 4 a condition (If-Match, ack, min_seq) did not hold;
5 the outcome is unknown: a follower sent the write on to the manager and had no answer (504
unknown_outcome), so it may have been applied: read the key, or retry with --if-match /
--if-none-match.
"""

from __future__ import annotations

import argparse
from typing import TypeAlias

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONDITION = 4
EXIT_UNKNOWN = 5

Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class UsageError(Exception):
    """The command line or its input cannot be used; exit code 2."""
