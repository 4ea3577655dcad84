"""Domain errors. Each has a `code` word that clients see; api.py maps each class to one HTTP
status in one middleware. Nothing here knows about HTTP.
"""

from __future__ import annotations

from typing import Any


class KVError(Exception):
    """Base of every error a client may see. `code` is the JSON error code."""

    code = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


# --- the client sent something we cannot take (400) ----------------------------------------
class InvalidKey(KVError):
    code = "invalid_key"


class InvalidRequest(KVError):
    code = "invalid_request"


# --- too large (413) -------------------------------------------------------------------------
class TooLarge(KVError):
    code = "too_large"


# --- too many at once (429) -----------------------------------------------------------------
class TooManyWatches(KVError):
    code = "too_many_watches"


# --- missing (404) ---------------------------------------------------------------------------
class KeyNotFound(KVError):
    code = "not_found"


# --- a condition on the request did not hold (412) -------------------------------------------
class PreconditionFailed(KVError):
    code = "precondition_failed"


# --- authentication (401) --------------------------------------------------------------------
class Unauthorized(KVError):
    code = "unauthorized"


# --- the seq asked for is older than the retained log (410) ----------------------------------
class Compacted(KVError):
    code = "compacted"


# --- the stores disagree on history (409) ----------------------------------------------------
class EpochMismatch(KVError):
    code = "epoch_mismatch"


class Diverged(KVError):
    code = "diverged"


# --- this replica cannot answer now; try again (503) -----------------------------------------
class NotReady(KVError):
    code = "not_ready"


class ManagerUnavailable(KVError):
    code = "manager_unavailable"


class ShuttingDown(KVError):
    code = "shutting_down"


class StoreClosed(KVError):
    code = "closed"


# --- waited and gave up (504) ----------------------------------------------------------------
class WaitTimeout(KVError):
    code = "timeout"
