"""What a load sends: the same requests for kvstore and for etcd's HTTP gateway, built from one
`Load` by `requests_for` (the Python load) and by the wrk Lua script (`kvstore.bench.wrk`).

Request number n goes to key `key(prefix, n % keyspace)`. Keys are a prefix padded to a
multiple of 3 bytes and 8 digits, so that the Lua script can base64-encode a key for etcd from
precomputed pieces instead of encoding each one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

KINDS = ("kv_put", "kv_get", "kv_txn", "etcd_put", "etcd_range", "etcd_txn")
DIGITS = 8  # key numbers: zero-padded to 8 digits (two pieces of 3 and one of 2, for base64)
KEYSPACE = 10_000

Request = tuple[str, str, bytes, dict[str, str]]  # method, path, body, headers


@dataclass(frozen=True)
class Load:
    """`connections` clients, each sending its next request once the last one is answered,
    until `requests` were sent or `duration` seconds passed (whichever comes first). With
    `rate`, open loop instead: request n goes out at start + n / rate whatever the answers do,
    with at most `connections` in flight."""

    url: str  # http://host:port
    kind: str
    connections: int
    duration: float | None
    prefix: str = "bench/"
    keyspace: int = KEYSPACE  # request n uses key number n % keyspace (+ n * ops for txns)
    value_size: int = 100
    ops: int = 1  # puts per txn
    token: str | None = None
    requests: int | None = None
    rate: float | None = None  # requests per second; None: closed loop
    acks: bool = False  # note each write's position (seq or revision) and answer time

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown load kind {self.kind!r}")
        if self.duration is None and self.requests is None:
            raise ValueError("a load needs a duration or a number of requests")


def aligned(prefix: str) -> str:
    """The prefix padded with "0" to a multiple of 3 bytes (base64 then splits at its end)."""
    return prefix + "0" * (-len(prefix.encode()) % 3)


def key(prefix: str, number: int) -> str:
    return f"{aligned(prefix)}{number:0{DIGITS}d}"


def value_of(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


def b64(raw: bytes | str) -> str:
    return base64.b64encode(raw.encode() if isinstance(raw, str) else raw).decode()


def kv_txn_body(keys: Sequence[str], value: bytes) -> bytes:
    ops = [{"op": "put", "key": k, "value": b64(value)} for k in keys]
    return json.dumps({"ops": ops}).encode()


def etcd_txn_body(keys: Sequence[str], value: bytes) -> bytes:
    puts = [{"requestPut": {"key": b64(k), "value": b64(value)}} for k in keys]
    return json.dumps({"success": puts}).encode()


def position(kind: str, answer: Any) -> int:
    """Where a write's answer says the change is: kvstore's seq, etcd's revision."""
    if kind == "kv_put":
        return int(answer["seq"])
    if kind == "etcd_put":
        return int(answer["header"]["revision"])
    raise ValueError(f"a {kind} load has no write positions")


def requests_for(load: Load) -> Callable[[int], Request]:
    """Request number n of the load, as (method, path, body, headers)."""
    value = value_of(load.value_size)
    headers = {"Authorization": f"Bearer {load.token}"} if load.token else {}
    json_headers = headers | {"Content-Type": "application/json"}

    def one_key(n: int) -> str:
        return key(load.prefix, n % load.keyspace)

    def txn_keys(n: int) -> list[str]:
        return [key(load.prefix, (n * load.ops + i) % load.keyspace) for i in range(load.ops)]

    def kv_put(n: int) -> Request:
        return "PUT", f"/v1/kv/{one_key(n)}", value, headers

    def kv_get(n: int) -> Request:
        return "GET", f"/v1/kv/{one_key(n)}", b"", headers

    def kv_txn(n: int) -> Request:
        return "POST", "/v1/txn", kv_txn_body(txn_keys(n), value), json_headers

    def etcd_put(n: int) -> Request:
        body = {"key": b64(one_key(n)), "value": b64(value)}
        return "POST", "/v3/kv/put", json.dumps(body).encode(), json_headers

    def etcd_range(n: int) -> Request:
        body = {"key": b64(one_key(n)), "serializable": True}
        return "POST", "/v3/kv/range", json.dumps(body).encode(), json_headers

    def etcd_txn(n: int) -> Request:
        return "POST", "/v3/kv/txn", etcd_txn_body(txn_keys(n), value), json_headers

    kinds: dict[str, Callable[[int], Request]] = {
        "kv_put": kv_put,
        "kv_get": kv_get,
        "kv_txn": kv_txn,
        "etcd_put": etcd_put,
        "etcd_range": etcd_range,
        "etcd_txn": etcd_txn,
    }
    return kinds[load.kind]
