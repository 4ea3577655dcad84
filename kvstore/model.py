"""The data model shared by storage, replication and the API: ops, changes, key rules, digest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, NamedTuple

from kvstore.errors import InvalidKey, TooLarge

PUT = "put"
DELETE = "delete"
DIGEST_MOD = 1 << 128


class Change(NamedTuple):
    """One committed change: the unit of the change log, the replication stream and watch."""

    seq: int
    op: str
    key: str
    version: int  # the key's version after the change; 0 for a delete
    value: bytes | None
    ts: float  # manager's commit time (unix seconds)


@dataclass(frozen=True)
class Op:
    """One requested write. Conditions are checked against the state before the request."""

    op: str
    key: str
    value: bytes = b""
    if_version: int | None = None  # If-Match: "<version>"
    if_absent: bool = False  # If-None-Match: *
    if_exists: bool = False  # If-Match: *


@dataclass
class WriteRequest:
    ops: list[Op]
    txn: bool = False  # in a txn, a delete of a missing key is a no-op, not a 404


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A put that committed."""

    key: str
    version: int
    seq: int
    created: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "op": PUT,
            "key": self.key,
            "version": self.version,
            "seq": self.seq,
            "created": self.created,
        }


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """A delete: `seq` None when the key was missing (a no-op in a txn, taking no seq)."""

    key: str
    seq: int | None

    @property
    def deleted(self) -> bool:
        return self.seq is not None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": DELETE, "key": self.key, "deleted": self.deleted}
        if self.seq is not None:
            out["seq"] = self.seq
        return out


OpResult = WriteResult | DeleteResult


@dataclass(frozen=True)
class Entry:
    key: str
    value: bytes
    version: int
    mod_seq: int
    create_seq: int
    size: int


def validate_key(key: str, max_bytes: int) -> None:
    """1..max_bytes bytes of UTF-8 without control characters."""
    if not key:
        raise InvalidKey("the key is empty: keys are 1 or more bytes of UTF-8")
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise TooLarge(
            f"the key is {size} bytes, over the limit of {max_bytes} (KV_MAX_KEY_BYTES)",
            limit=max_bytes,
            size=size,
        )
    for ch in key:
        cp = ord(ch)
        if cp < 0x20 or cp == 0x7F or 0x80 <= cp < 0xA0:
            raise InvalidKey(f"the key contains the control character U+{cp:04X}: not allowed")
        if 0xD800 <= cp <= 0xDFFF:
            raise InvalidKey("the key is not valid UTF-8")


def entry_hash(key: str, value: bytes) -> int:
    """A key/value pair's share of the digest: 128 bits of BLAKE2b over (len, key, value)."""
    kb = key.encode("utf-8")
    h = hashlib.blake2b(len(kb).to_bytes(4, "big") + kb + value, digest_size=16)
    return int.from_bytes(h.digest(), "big")


def hash_bytes(value: int) -> bytes:
    return value.to_bytes(16, "big")


def hash_int(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def digest_hex(value: int) -> str:
    return f"{value:032x}"
