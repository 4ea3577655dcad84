"""Closed-loop load by `wrk` (one thread, so that the other core stays with the server): a Lua
script written here sends the same requests as `kvstore.bench.workload.requests_for` and prints
wrk's figures as one JSON line, read back into a LoadResult.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path

from kvstore.bench.children import BenchError
from kvstore.bench.load import LoadResult
from kvstore.bench.stats import Latency
from kvstore.bench.workload import Load, aligned, b64, value_of

WRK_MARK = "WRKJSON "
WRK_TIMEOUT = "10s"
GENERATOR = "wrk (Lua script), 1 thread"

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
    """Run wrk with the load's script for the load's duration."""
    if load.duration is None or load.rate is not None or load.acks:
        raise ValueError("wrk runs closed-loop loads of a fixed duration only")
    script = workdir / f"{load.kind}.lua"
    script.write_text(lua_script(load))
    cmd = ["wrk", "-t1", f"-c{load.connections}", f"-d{max(1, math.ceil(load.duration))}s"]
    cmd += ["--timeout", WRK_TIMEOUT, "-s", str(script), load.url]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=load.duration + 60)
    return parse_wrk(done.stdout, done.stderr, done.returncode)


def parse_wrk(stdout: str, stderr: str = "", returncode: int = 0) -> LoadResult:
    line = next((ln for ln in stdout.splitlines() if ln.startswith(WRK_MARK)), None)
    if line is None:
        raise BenchError(f"wrk exited {returncode} without figures: {stderr.strip() or stdout}")
    doc = json.loads(line[len(WRK_MARK) :])
    ok = doc["requests"] - doc["status_errors"]
    latency = Latency(ok, doc["p50_us"] / 1000, doc["p99_us"] / 1000, doc["max_us"] / 1000)
    return LoadResult(
        generator=GENERATOR,
        ok=ok,
        failed=doc["status_errors"] + doc["socket_errors"],
        seconds=doc["duration_us"] / 1e6,
        latency=latency if ok else Latency.of([]),
    )
