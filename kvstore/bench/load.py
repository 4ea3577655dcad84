"""Closed-loop HTTP load, the same requests for kvstore and for etcd's HTTP gateway, generated
by `wrk` (a Lua script written here) or, without wrk, by a Python process of its own.

A `Load` names the request kind and its size; `requests_for` (Python) and `lua_script` (wrk)
build the same requests from it: request number n goes to key `key(prefix, n % keyspace)`.
Keys are a prefix padded to a multiple of 3 bytes and 8 digits, so that the Lua script can
base64-encode a key for etcd from precomputed pieces instead of encoding each one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import multiprocessing
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from kvstore.bench.bench import percentile

KINDS = ("kv_put", "kv_get", "kv_txn", "etcd_put", "etcd_range", "etcd_txn")
WRK_MARK = "WRKJSON "
DIGITS = 8  # key numbers: zero-padded to 8 digits (two pieces of 3 and one of 2, for base64)
WRK_TIMEOUT = "10s"

Request = tuple[str, str, bytes, dict[str, str]]  # method, path, body, headers


@dataclass(frozen=True)
class Load:
    """`connections` clients, each sending its next request once the last one is answered,
    for `duration` seconds."""

    url: str  # http://host:port
    kind: str
    connections: int
    duration: float
    prefix: str = "bench/"
    keyspace: int = 10_000  # request n uses key number n % keyspace (+ n * ops for txns)
    value_size: int = 100
    ops: int = 1  # puts per txn
    token: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown load kind {self.kind!r}")


@dataclass
class LoadResult:
    generator: str  # which tool made the load
    requests: int  # answered with 2xx
    errors: int  # error statuses, socket errors, timeouts
    seconds: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    error_samples: list[str] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


# --- the requests -------------------------------------------------------------------------------
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


# --- wrk ------------------------------------------------------------------------------------------
LUA_COMMON = """
local prefix = "%(prefix)s"
local prefix64 = "%(prefix64)s"
local keyspace = %(keyspace)d
local ops = %(ops)d
local value = "%(value)s"
local value64 = "%(value64)s"
local headers = %(headers)s
local n = -1
local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function enc3(s)  -- base64 of a 2- or 3-byte string
  local a, b, c = s:byte(1, 3)
  local bits = a * 65536 + b * 256 + (c or 0)
  local out = ""
  for i = 3, 0, -1 do
    local d = math.floor(bits / 64 ^ i) %% 64
    out = out .. alphabet:sub(d + 1, d + 1)
  end
  if c == nil then out = out:sub(1, 3) .. "=" end
  return out
end
local pieces = {}
for i = 0, 999 do pieces[i] = enc3(string.format("%%03d", i)) end
local tails = {}
for i = 0, 99 do tails[i] = enc3(string.format("%%02d", i)) end
local function number(i)
  return string.format("%%08d", i %% keyspace)
end
local function key64(i)  -- base64 of prefix .. number(i), from precomputed pieces
  local k = i %% keyspace
  local hi, mid, lo = math.floor(k / 100000), math.floor(k / 100) %% 1000, k %% 100
  return prefix64 .. pieces[hi] .. pieces[mid] .. tails[lo]
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%(mark)s{"requests":%%d,"duration_us":%%d,"socket_errors":%%d,"status_errors":%%d,'
    .. '"p50_us":%%d,"p99_us":%%d,"max_us":%%d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""

LUA_REQUEST = {
    "kv_put": """
request = function()
  n = n + 1
  return wrk.format("PUT", "/v1/kv/" .. prefix .. number(n), headers, value)
end
""",
    "kv_get": """
request = function()
  n = n + 1
  return wrk.format("GET", "/v1/kv/" .. prefix .. number(n), headers)
end
""",
    "kv_txn": """
request = function()
  n = n + 1
  local parts = {}
  for i = 0, ops - 1 do
    parts[#parts + 1] = '{"op":"put","key":"' .. prefix .. number(n * ops + i)
      .. '","value":"' .. value64 .. '"}'
  end
  return wrk.format("POST", "/v1/txn", headers, '{"ops":[' .. table.concat(parts, ",") .. ']}')
end
""",
    "etcd_put": """
request = function()
  n = n + 1
  return wrk.format("POST", "/v3/kv/put", headers,
    '{"key":"' .. key64(n) .. '","value":"' .. value64 .. '"}')
end
""",
    "etcd_range": """
request = function()
  n = n + 1
  return wrk.format("POST", "/v3/kv/range", headers,
    '{"key":"' .. key64(n) .. '","serializable":true}')
end
""",
    "etcd_txn": """
request = function()
  n = n + 1
  local parts = {}
  for i = 0, ops - 1 do
    parts[#parts + 1] = '{"requestPut":{"key":"' .. key64(n * ops + i)
      .. '","value":"' .. value64 .. '"}}'
  end
  return wrk.format("POST", "/v3/kv/txn", headers,
    '{"success":[' .. table.concat(parts, ",") .. ']}')
end
""",
}


def lua_script(load: Load) -> str:
    """A wrk script that sends the load's requests and prints its figures as one JSON line."""
    prefix = aligned(load.prefix)
    headers = {"Content-Type": "application/json"} if load.kind != "kv_put" else {}
    if load.token:
        headers["Authorization"] = f"Bearer {load.token}"
    lua_headers = "{" + ", ".join(f'["{k}"] = "{v}"' for k, v in headers.items()) + "}"
    value = value_of(load.value_size)
    common = LUA_COMMON % {
        "prefix": prefix,
        "prefix64": b64(prefix),
        "keyspace": load.keyspace,
        "ops": load.ops,
        "value": value.decode(),
        "value64": b64(value),
        "headers": lua_headers,
        "mark": WRK_MARK,
    }
    return common + LUA_REQUEST[load.kind]


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(load: Load, workdir: Path) -> LoadResult:
    """Run wrk (one thread: the other core stays with the server) with the load's script."""
    script = workdir / f"{load.kind}.lua"
    script.write_text(lua_script(load))
    cmd = ["wrk", "-t1", f"-c{load.connections}", f"-d{max(1, math.ceil(load.duration))}s"]
    cmd += ["--timeout", WRK_TIMEOUT, "-s", str(script), load.url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=load.duration + 60)
    return parse_wrk(done.stdout, done.stderr, done.returncode)


def parse_wrk(stdout: str, stderr: str = "", returncode: int = 0) -> LoadResult:
    line = next((ln for ln in stdout.splitlines() if ln.startswith(WRK_MARK)), None)
    if line is None:
        raise RuntimeError(f"wrk exited {returncode} without figures: {stderr.strip() or stdout}")
    doc = json.loads(line[len(WRK_MARK) :])
    seconds = doc["duration_us"] / 1e6
    ok = doc["requests"] - doc["status_errors"]
    return LoadResult(
        generator="wrk (Lua script), 1 thread",
        requests=ok,
        errors=doc["status_errors"] + doc["socket_errors"],
        seconds=seconds,
        p50_ms=doc["p50_us"] / 1000 if ok else None,
        p99_ms=doc["p99_us"] / 1000 if ok else None,
        max_ms=doc["max_us"] / 1000 if ok else None,
    )


# --- the Python load process --------------------------------------------------------------------
def run_python(load: Load) -> LoadResult:
    """The same load from one spawned Python process (aiohttp), apart from this one."""
    result = in_process(_python_load, load, load.duration + 120, "the Python load process")
    assert isinstance(result, LoadResult)
    return result


def in_process(
    work: Callable[[Any], Coroutine[Any, Any, object]], arg: object, timeout: float, what: str
) -> object:
    """Run `asyncio.run(work(arg))` in a spawned process (off this process's cores' GIL) and
    return its result; RuntimeError naming `what` if it fails or does not report in time."""
    ctx = multiprocessing.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(work, arg, send), daemon=True)
    proc.start()
    send.close()
    try:
        if not recv.poll(timeout):
            raise RuntimeError(f"{what} did not report in time")
        result = recv.recv()
    except EOFError:
        raise RuntimeError(f"{what} ended without a result") from None
    finally:
        if proc.is_alive():
            proc.terminate()
        proc.join()
    if isinstance(result, _Failed):
        raise RuntimeError(f"{what} failed: {result.reason}")
    return result


@dataclass(frozen=True)
class _Failed:
    reason: str


def _child(
    work: Callable[[Any], Coroutine[Any, Any, object]], arg: object, conn: Connection
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result: object = asyncio.run(work(arg))
    except Exception as exc:  # reported by the parent
        result = _Failed(f"{type(exc).__name__}: {exc}")
    conn.send(result)
    conn.close()


async def _python_load(load: Load) -> LoadResult:
    make = requests_for(load)
    numbers = iter(range(1 << 62))
    latencies: list[float] = []
    errors: list[str] = []
    connector = aiohttp.TCPConnector(limit=load.connections)
    start = time.monotonic()
    deadline = start + load.duration
    async with aiohttp.ClientSession(
        load.url, connector=connector, timeout=aiohttp.ClientTimeout(total=30)
    ) as session:

        async def client() -> None:
            while time.monotonic() < deadline:
                method, path, body, headers = make(next(numbers))
                t0 = time.monotonic()
                try:
                    async with session.request(method, path, data=body, headers=headers) as r:
                        await r.read()
                        if r.status >= 300:
                            errors.append(f"{method} {path}: HTTP {r.status}")
                            continue
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors.append(f"{method} {path}: {exc!r}")
                    continue
                latencies.append(time.monotonic() - t0)

        await asyncio.gather(*(client() for _ in range(load.connections)))
    return python_result(latencies, errors, time.monotonic() - start, load.connections)


def python_result(
    latencies: Sequence[float], errors: Sequence[str], seconds: float, connections: int
) -> LoadResult:
    ms = sorted(x * 1000 for x in latencies)
    return LoadResult(
        generator=f"Python process (aiohttp), {connections} connections",
        requests=len(ms),
        errors=len(errors),
        seconds=seconds,
        p50_ms=percentile(ms, 50) if ms else None,
        p99_ms=percentile(ms, 99) if ms else None,
        max_ms=ms[-1] if ms else None,
        error_samples=list(errors[:3]),
    )


def run(load: Load, workdir: Path, use_wrk: bool) -> LoadResult:
    return run_wrk(load, workdir) if use_wrk else run_python(load)


def describe_errors(result: LoadResult) -> dict[str, Any]:
    return {"errors": result.errors, "error_samples": result.error_samples}
