"""Domain errors. Each has a `code` word that clients see and fixed detail keys; the server
maps each class to one HTTP status in one place (kvstore/server/httputil.py). Errors that come
back over the wire are decoded here, once (`from_wire`), for the client, the peer client and the
manager's restore alike. Nothing here knows about HTTP.
"""

from __future__ import annotations

import json
from typing import Any


class KVError(Exception):
    """Base of every error a client may see. `code` is the JSON error code."""

    code = "error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.wire_code: str | None = None  # the code an answer carried, when not one of ours
        self.wire_status: int | None = None  # the status of the answer it was decoded from


# Each class says when it is raised; its `details` keys are fixed, listed per class.


# --- the client sent something we cannot take (400) ----------------------------------------
class InvalidKey(KVError):
    """The key is empty, too long, not UTF-8 or holds a control character."""

    code = "invalid_key"


class InvalidRequest(KVError):
    code = "invalid_request"


# --- too large (413) -------------------------------------------------------------------------
class TooLarge(KVError):
    code = "too_large"


# --- too many at once (429) -----------------------------------------------------------------
class TooManyWatches(KVError):
    code = "too_many_watches"


# --- the body is not of a type the endpoint takes (415) --------------------------------------
class UnsupportedMediaType(KVError):
    """A POST body whose Content-Type is not the one the endpoint reads (application/json, or
    application/x-ndjson for the acks stream). Details: `expected`."""

    code = "unsupported_media_type"


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
    """Two stores of different data sets met. Details: `ours` (the epoch of the store that
    raised it), `theirs` (the other one's)."""

    code = "epoch_mismatch"


class Diverged(KVError):
    """A follower's history is not the manager's. Details: `seq` (the first seq where they part)."""

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


# --- out of disk (507) ----------------------------------------------------------------------
class InsufficientStorage(KVError):
    """The database could not grow (SQLITE_FULL): nothing of the write was kept. The SQLite
    error is the exception's cause. Details: `retry_after`."""

    code = "insufficient_storage"


# --- an error of ours, not of the request (500) ----------------------------------------------
class Internal(KVError):
    """Something failed that no input should cause; the log has the traceback under the
    request id. Details: `request_id`."""

    code = "internal"


# --- waited and gave up (504) ----------------------------------------------------------------
class WaitTimeout(KVError):
    code = "timeout"


class UnknownOutcome(KVError):
    """A follower sent a write on to the manager and had no answer (it stalled past the forward
    timeout, or the connection broke once the request was sent): it may have been applied."""

    code = "unknown_outcome"


def _all(cls: type[KVError]) -> list[type[KVError]]:
    return [cls] + [sub for child in cls.__subclasses__() for sub in _all(child)]


# code -> class, for every error this module defines (a subclass elsewhere never replaces one).
BY_CODE: dict[str, type[KVError]] = {
    c.code: c for c in reversed(_all(KVError)) if c.__module__ == __name__
}


def from_wire(status: int, body: bytes, fallback: type[KVError] = KVError) -> KVError:
    """The domain error for an error answer `{"error": {"code", "message", ...}}`. An unknown
    code or a body that is not ours gives `fallback`, with the status and what the body said."""
    try:
        err = json.loads(body)["error"]
        code, message = str(err["code"]), str(err["message"])
        details = {k: v for k, v in err.items() if k not in ("code", "message")}
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        text = body[:200].decode("utf-8", "replace").strip()
        exc = fallback(f"answered {status}" + (f": {text}" if text else ""))
    else:
        cls = BY_CODE.get(code)
        exc = (cls or fallback)(message, **details)
        exc.wire_code = None if cls else code
    exc.wire_status = status
    return exc
