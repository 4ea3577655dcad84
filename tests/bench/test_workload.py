"""kvstore.bench.workload: the requests of a load, the same keys for kvstore and etcd."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from kvstore.bench import workload as wl


def test_keys_are_padded_for_base64_in_pieces() -> None:
    assert wl.aligned("bench/") == "bench/" and wl.aligned("bench/put/") == "bench/put/00"
    assert wl.key("bench/", 42) == "bench/00000042"
    # base64 of the whole key is base64 of the prefix followed by that of the digits
    k = wl.key("bench/put/", 12345678)
    assert wl.b64(k) == wl.b64(wl.aligned("bench/put/")) + wl.b64("123456")[:8] + wl.b64("78")


def _load(kind: str, **kw: Any) -> wl.Load:
    return wl.Load("http://x", kind, 1, 1.0, prefix="p/", keyspace=10, **kw)


def test_kvstore_and_etcd_requests_name_the_same_keys() -> None:
    assert wl.requests_for(_load("kv_put"))(13)[:2] == ("PUT", "/v1/kv/p/000000003")
    assert wl.requests_for(_load("kv_get"))(3)[:3] == ("GET", "/v1/kv/p/000000003", b"")
    method, path, body, headers = wl.requests_for(_load("etcd_range"))(13)
    assert (method, path, headers["Content-Type"]) == ("POST", "/v3/kv/range", "application/json")
    doc = json.loads(body)
    assert base64.b64decode(doc["key"]) == b"p/000000003" and doc["serializable"] is True
    _, _, body, _ = wl.requests_for(_load("kv_txn", ops=3))(1)
    assert [op["key"] for op in json.loads(body)["ops"]] == [wl.key("p/", n) for n in (3, 4, 5)]
    _, _, body, _ = wl.requests_for(_load("etcd_txn", ops=3))(1)
    puts = [p["requestPut"] for p in json.loads(body)["success"]]
    assert [base64.b64decode(p["key"]).decode() for p in puts] == [
        wl.key("p/", n) for n in (3, 4, 5)
    ]
    assert base64.b64decode(puts[0]["value"]) == wl.value_of(100)


def test_the_token_goes_with_every_request() -> None:
    for kind in wl.KINDS:
        headers = wl.requests_for(_load(kind, token="t0k"))(0)[3]
        assert headers["Authorization"] == "Bearer t0k"
    assert "Authorization" not in wl.requests_for(_load("kv_put"))(0)[3]


def test_a_load_is_checked() -> None:
    with pytest.raises(ValueError, match="unknown load kind"):
        _load("nope")
    with pytest.raises(ValueError, match="duration or a number of requests"):
        wl.Load("http://x", "kv_put", 1, None)


def test_write_positions() -> None:
    assert wl.position("kv_put", {"seq": 7, "version": 1}) == 7
    assert wl.position("etcd_put", {"header": {"revision": "12"}}) == 12
    with pytest.raises(ValueError):
        wl.position("kv_get", {})
