"""Hostile and careless clients against real processes (tests/harness.py): one token guards every
data path, forwarding is byte for byte, an unknown outcome is told as one, POST bodies say what
they are, HEAD sends headers only, and no input gets a 500.

Requests whose exact bytes matter are sent with `http.client` or a plain socket
(tests/server/hostile_util.py), so that the test itself normalizes nothing."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from kvstore import config
from kvstore.client import KVClient, UnknownOutcome
from kvstore.server.app import create_app
from tests.harness import Cluster
from tests.server.hostile_util import Answer, StandInManager, raw, raw_bytes

pytestmark = pytest.mark.e2e
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}


def assert_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, (answer.status, answer.body[:300])
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    assert answer.code == code, answer.body[:300]


# --- 1. one token guards every data path; only members' acks count -------------------------
async def test_with_only_the_client_token_replication_needs_it_too(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=2, env={"KV_AUTH_TOKEN": TOKEN}) as cluster:
        manager = cluster.url(0)
        await raw(manager, "PUT", "/v1/kv/secret", AUTH, b"value")
        refused = [
            await raw(manager, "GET", "/v1/replication/snapshot"),
            await raw(manager, "GET", "/v1/replication/stream?from=1"),
            await raw(manager, "POST", "/v1/replication/ack", JSON, b'{"pod":"kv-1","seq":1}'),
            await raw(
                manager,
                "POST",
                "/v1/replication/acks?pod=kv-1",
                {"Content-Type": "application/x-ndjson"},
                b'{"seq":1}\n',
            ),
        ]
        for answer in refused:
            assert_error(answer, 401, "unauthorized")
            assert b"secret" not in answer.body and b"dmFsdWU" not in answer.body
        taken = await raw(manager, "GET", "/v1/replication/snapshot", AUTH)
        assert taken.status == 200 and b'["secret","dmFsdWU="' in taken.body
        # The follower, which sends the token, still replicates.
        await cluster.wait_until(
            lambda: _has_key(cluster, 1, "secret"), 20, "the follower to apply the write"
        )


async def _has_key(cluster: Cluster, ordinal: int, key: str) -> bool:
    answer = await raw(cluster.url(ordinal), "GET", f"/v1/kv/{key}", AUTH)
    return answer.status == 200


async def test_only_members_of_the_set_count_as_followers(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=2) as cluster:
        manager = cluster.url(0)

        async def kv1_streams() -> bool:  # ready does not wait for the stream: poll for it
            return (await _metric_lines(cluster))[1] == {b"kv-1"}

        await cluster.wait_until(kv1_streams, 30, "kv-1 to stream from the manager")
        fake = await raw(manager, "POST", "/v1/replication/ack", JSON, b'{"pod":"kv-9","seq":1e15}')
        assert fake.status < 500 and fake.code != "internal"
        big = b'{"pod":"kv-9","seq":1000000000000000}'
        assert (await raw(manager, "POST", "/v1/replication/ack", JSON, big)).status == 200
        ndjson = {"Content-Type": "application/x-ndjson"}
        lines_before = 0
        for i in range(201):  # made-up pods, one long acks request each
            line = b'{"seq":%d}\n' % (10**15 + i)
            answer = await raw(manager, "POST", f"/v1/replication/acks?pod=fake-{i}", ndjson, line)
            assert answer.status == 200 and answer.json()["counted"] is False, answer.body
            if i == 0:  # every kind of request seen once: /metrics has its lines for them
                lines_before = (await _metric_lines(cluster))[0]
        lines_after, labels = await _metric_lines(cluster)
        assert labels == {b"kv-1"} and lines_after == lines_before
        # A stream opened under a made-up name is served but registers nobody.
        stream = f"{manager}/v1/replication/stream?from=1&pod=kv-7"
        async with cluster.session.get(stream) as reader:
            assert reader.status == 200 and b'"hello"' in await reader.content.readline()
            # Only kv-1 is a member: ack=2 cannot be met by kv-9's seq of 10^15.
            put = await raw(manager, "PUT", "/v1/kv/k?ack=2&timeout=1", body=b"v")
            assert_error(put, 504, "timeout")
            assert put.json()["error"]["acked"] == 1
            assert (await raw(manager, "PUT", "/v1/kv/k?ack=1&timeout=10", body=b"v")).status == 200
            status = await cluster.status(0)
            assert [f["pod"] for f in status["followers"]] == ["kv-1"]
            assert (await _metric_lines(cluster))[1] == {b"kv-1"}


async def _metric_lines(cluster: Cluster) -> tuple[int, set[bytes]]:
    """How many lines /metrics has, and the follower labels it names."""
    lines = (await raw(cluster.url(0), "GET", "/metrics")).body.splitlines()
    labels = {
        line.split(b'follower="')[1].split(b'"')[0] for line in lines if b'follower="' in line
    }
    return len(lines), labels


# --- 2. forwarding: the raw path, the raw query, the end-to-end headers --------------------
async def test_a_follower_forwards_the_request_as_it_came(tmp_path: Path) -> None:
    async with (
        Cluster(tmp_path, replicas=2, autostart=False) as cluster,
        StandInManager(cluster.address(0), cluster.port) as stand_in,
    ):
        cluster.table.set_pod("kv-0", cluster.address(0))
        await cluster.start(1)
        follower = cluster.url(1)
        await cluster.wait_until(lambda: _answers(follower), 20, "the follower to listen")
        sent = {
            "Content-Type": "text/plain;charset=x",
            "If-Match": '"3"',
            "X-Request-Id": "abc",
            "Connection": "keep-alive, X-Private",
            "X-Private": "hop",
            "Keep-Alive": "timeout=9",
            "TE": "trailers",
            "Trailer": "X-T",
            "Proxy-Authorization": "Basic eDp5",
            "Proxy-Connection": "keep-alive",
        }
        path = "/v1/kv/x/../victim/%2e%2E/./%41b?z=%41+b&empty=&plain"
        answer = await raw(follower, "PUT", path, sent, b"body\x00bytes")
        assert answer.status == 201 and answer.headers["x-kv-seq"] == "7"
        assert "keep-alive" not in answer.headers  # the manager's hop-by-hop stays there
        got = await stand_in.wait_request(1)
        assert got.line == f"PUT {path} HTTP/1.1"
        assert got.body == b"body\x00bytes"
        names = got.header_names()
        for hop in (
            "connection",
            "keep-alive",
            "te",
            "trailer",
            "proxy-authorization",
            "proxy-connection",
            "x-private",
            "transfer-encoding",
            "upgrade",
        ):
            assert hop not in names, (hop, got.headers)
        passed = {n.lower(): v for n, v in got.headers}
        assert passed["content-type"] == "text/plain;charset=x"
        assert passed["if-match"] == '"3"' and passed["x-request-id"] == "abc"
        assert passed["host"] != f"{cluster.address(1)}:{cluster.port}"  # not the client's
        # ?redirect=true is the follower's own business; the rest of the query stays put.
        redirect = await raw(follower, "DELETE", "/v1/kv/a/../b?x=%2F&redirect=true&y=1")
        assert redirect.status == 307
        location = redirect.headers["location"]
        assert location.endswith(f":{cluster.port}/v1/kv/a/../b?x=%2F&y=1")
        await raw(follower, "DELETE", "/v1/kv/a/../b?redirect=false&x=%2F")
        got = await stand_in.wait_request(2)
        assert got.line == "DELETE /v1/kv/a/../b?x=%2F HTTP/1.1"


async def _answers(base: str) -> bool:
    return (await raw(base, "GET", "/livez", timeout=2)).status == 200


async def test_dot_segment_keys_through_a_follower(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=2) as cluster:
        manager, follower = cluster.url(0), cluster.url(1)
        assert (await raw(manager, "PUT", "/v1/kv/victim", body=b"keep me")).status == 201
        # The key x/../victim does not exist: deleting it through a follower deletes nothing.
        assert_error(await raw(follower, "DELETE", "/v1/kv/x/../victim"), 404, "not_found")
        assert (await raw(manager, "GET", "/v1/kv/victim")).body == b"keep me"
        for key in (".", "..", "x/../victim", "a/./b"):
            put = await raw(follower, "PUT", f"/v1/kv/{key}", body=key.encode())
            assert put.status == 201, (key, put.body)
            assert put.json()["key"] == key
            got = await raw(manager, "GET", f"/v1/kv/{key}")
            assert got.status == 200 and got.body == key.encode(), key
            read = await raw(follower, "GET", f"/v1/kv/{key}?consistency=manager")
            assert read.status == 200 and read.body == key.encode(), key
        assert (await raw(manager, "GET", "/v1/kv/victim")).body == b"keep me"
        # Not a way around the replication group's token either.
        escape = "/v1/kv/a/../../replication/snapshot?consistency=manager"
        answer = await raw(follower, "GET", escape)
        assert_error(answer, 404, "not_found")
        assert answer.json()["error"]["key"] == "a/../../replication/snapshot"


async def test_duplicate_parameters_are_refused_alike(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=2) as cluster:
        for base in (cluster.url(0), cluster.url(1)):
            for method, path in (
                ("PUT", "/v1/kv/k?ack=0&ack=1"),
                ("DELETE", "/v1/kv/k?timeout=1&timeout=2"),
                ("GET", "/v1/kv?limit=1&limit=1000"),
                ("GET", "/v1/kv/k?consistency=manager&consistency=local"),
                ("POST", "/v1/txn?ack=1&ack=0"),
            ):
                body = b'{"ops":[{"op":"delete","key":"k"}]}' if method == "POST" else b""
                answer = await raw(base, method, path, JSON, body)
                assert_error(answer, 400, "invalid_request")
                assert "more than once" in answer.json()["error"]["message"]
            # A follower's own parameter is checked alike on the manager, which ignores it.
            for method, path in (
                ("PUT", "/v1/kv/k?redirect=maybe"),
                ("DELETE", "/v1/kv/k?redirect=2"),
            ):
                assert_error(await raw(base, method, path, JSON, b""), 400, "invalid_request")


# --- 3. a forwarded write with no answer: the outcome is unknown ----------------------------
async def test_a_stalled_manager_makes_the_outcome_unknown(tmp_path: Path) -> None:
    env = {"KV_FORWARD_TIMEOUT": "1"}
    async with Cluster(tmp_path, replicas=2, env=env) as cluster:
        follower = cluster.url(1)
        os.kill(cluster.pods[0].pid, signal.SIGSTOP)
        try:
            answer = await raw(follower, "PUT", "/v1/kv/stalled", body=b"once")
            assert_error(answer, 504, "unknown_outcome")
            message = answer.json()["error"]["message"]
            assert "may have been applied" in message and "If-Match" in message
            assert "retry-after" not in answer.headers
            async with KVClient(follower) as kv:
                with pytest.raises(UnknownOutcome) as caught:
                    await kv.put("stalled2", b"twice?")
            assert caught.value.status == 504 and caught.value.code == "unknown_outcome"
            cli = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "kvstore",
                "put",
                "--url",
                follower,
                "stalled3",
                "v",
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await cli.communicate()
            assert cli.returncode == 5, (out, err)
            assert b"may have been applied" in err
        finally:
            os.kill(cluster.pods[0].pid, signal.SIGCONT)
        # It was applied once the manager resumed: retrying blindly would have applied it twice.
        await cluster.wait_until(
            lambda: _has_key(cluster, 0, "stalled"), 20, "the stalled write to land"
        )
        again = await raw(follower, "PUT", "/v1/kv/stalled", {"If-None-Match": "*"}, b"once")
        assert_error(again, 412, "precondition_failed")


async def test_an_answer_cut_off_is_unknown_and_a_refused_connection_is_not(
    tmp_path: Path,
) -> None:
    async with Cluster(tmp_path, replicas=2, autostart=False) as cluster:
        follower = cluster.url(1)
        cluster.table.set_pod("kv-0", cluster.address(0))
        async with StandInManager(cluster.address(0), cluster.port, reply=b"") as stand_in:
            await cluster.start(1)
            await cluster.wait_until(lambda: _answers(follower), 20, "the follower to listen")
            answer = await raw(follower, "PUT", "/v1/kv/cut", body=b"v")
            await stand_in.wait_request(1)
            assert_error(answer, 504, "unknown_outcome")
            txn = b'{"ops":[{"op":"delete","key":"cut"}]}'
            assert_error(await raw(follower, "POST", "/v1/txn", JSON, txn), 504, "unknown_outcome")
        # Nobody listens on the manager's address now: nothing was sent, a retry is safe.
        answer = await raw(follower, "PUT", "/v1/kv/refused", body=b"v")
        assert_error(answer, 503, "manager_unavailable")
        assert answer.headers["retry-after"].isdigit()
        assert "was not applied" in answer.json()["error"]["message"]
        # No DNS record at all: the same.
        cluster.table.remove_pod("kv-0")
        answer = await raw(follower, "DELETE", "/v1/kv/refused")
        assert_error(answer, 503, "manager_unavailable")


# --- 4. POST bodies say what they are -------------------------------------------------------
async def test_a_body_that_is_not_declared_json_is_refused(tmp_path: Path) -> None:
    txn = b'{"ops":[{"op":"put","key":"csrf","value":"eA=="}]}'
    async with Cluster(tmp_path, replicas=2) as cluster:
        for base in (cluster.url(0), cluster.url(1)):
            for headers in (
                {"Content-Type": "text/plain"},
                {"Content-Type": "application/x-www-form-urlencoded"},
                {"Content-Type": "multipart/form-data; boundary=x"},
                {},
            ):
                answer = await raw(base, "POST", "/v1/txn", headers, txn)
                assert_error(answer, 415, "unsupported_media_type")
        assert (await raw(cluster.url(0), "GET", "/v1/kv/csrf")).status == 404
        typed = {"Content-Type": "application/json; charset=utf-8"}
        assert (await raw(cluster.url(1), "POST", "/v1/txn", typed, txn)).status == 200
        manager = cluster.url(0)
        ack = b'{"pod":"kv-1","seq":1}'
        plain = {"Content-Type": "text/plain"}
        assert_error(
            await raw(manager, "POST", "/v1/replication/ack", plain, ack),
            415,
            "unsupported_media_type",
        )
        assert_error(
            await raw(manager, "POST", "/v1/replication/acks?pod=kv-1", JSON, b'{"seq":1}\n'),
            415,
            "unsupported_media_type",
        )


# --- 5. HEAD sends headers only, on every GET route -----------------------------------------
def _concrete(path: str) -> str:
    return {
        "/v1/kv/{key}": "/v1/kv/k",
        "/web/{name}": "/web/app.js",
        "/v1/replication/stream": "/v1/replication/stream?from=1",
    }.get(path, path)


def get_routes() -> list[str]:
    app = create_app(config.load(env={"KV_POD_NAME": "kv-0", "KV_DATA_DIR": "/nonexistent"}))
    paths = set()
    for route in app.router.routes():
        if route.method == "GET":
            info = route.resource.get_info() if route.resource else {}
            paths.add(str(info.get("path") or info.get("formatter")))
    return sorted(paths)


def _head_then_get(base: str, paths: list[str]) -> list[tuple[str, int, dict[str, str]]]:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    seen = []
    try:
        for path in paths:
            conn.request("HEAD", path)
            resp = conn.getresponse()
            assert resp.read() == b""
            seen.append((path, resp.status, {k.lower(): v for k, v in resp.getheaders()}))
            conn.request("GET", "/livez")  # on the same connection: must parse cleanly
            after = conn.getresponse()
            assert after.status == 200 and after.read() == b"ok\n", path
    finally:
        conn.close()
    return seen


async def test_head_sends_headers_only_on_every_get_route(tmp_path: Path) -> None:
    paths = [_concrete(p) for p in get_routes()]
    assert {"/v1/watch", "/v1/backup", "/v1/replication/snapshot"} <= set(paths)
    async with Cluster(tmp_path, replicas=2) as cluster:
        await raw(cluster.url(0), "PUT", "/v1/kv/k", body=b"v" * 5000)
        for ordinal in (0, 1):
            seen = await asyncio.to_thread(_head_then_get, cluster.url(ordinal), paths)
            by_path = {path: (status, headers) for path, status, headers in seen}
            assert by_path["/v1/watch"][0] == 200
            assert by_path["/v1/watch"][1]["content-type"] == "application/x-ndjson"
            assert by_path["/v1/backup"][0] == 200
            assert by_path["/v1/replication/snapshot"][0] == 200
            assert by_path["/v1/kv/k"][0] == 200
            assert all(status < 500 for status, _ in by_path.values()), by_path
        assert cluster.running(0) and cluster.running(1)


# --- 6. no 500 from input -------------------------------------------------------------------
async def test_hostile_input_gets_a_4xx_never_a_500(tmp_path: Path) -> None:
    env = {"KV_AUTH_TOKEN": TOKEN}
    async with Cluster(tmp_path, replicas=2, env=env) as cluster:
        manager, follower = cluster.url(0), cluster.url(1)
        await raw(manager, "PUT", "/v1/kv/k", AUTH, b"v")
        deep = b'{"ops":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
        cases: list[tuple[str, str, str, Mapping[str, str | bytes], bytes | None, int]] = []
        for base in (manager, follower):
            cases += [
                (base, "POST", "/v1/txn", AUTH | JSON, deep, 400),
                (
                    base,
                    "POST",
                    "/v1/txn",
                    AUTH | JSON,
                    b'{"ops":[{"op":"put","key":"k","value":"eA==","if_version":1e400}]}',
                    400,
                ),
                (base, "PUT", "/v1/kv/k", AUTH | {"If-Match": '"²"'.encode()}, b"v", 400),
                (base, "PUT", "/v1/kv/k", AUTH | {"If-Match": '"\u0661"'.encode()}, b"v", 400),
                (base, "PUT", "/v1/kv/k", AUTH | {"If-Match": '"' + "9" * 5000 + '"'}, b"v", 400),
                (base, "PUT", "/v1/kv/k", AUTH | {"If-Match": '"+1"'}, b"v", 400),
                (base, "GET", "/v1/kv?limit=%D9%A1", AUTH, None, 400),  # Arabic-Indic one
                (base, "GET", "/v1/kv?limit=1_0", AUTH, None, 400),
                (base, "GET", "/v1/kv?limit=+5", AUTH, None, 400),
                (base, "GET", "/v1/kv?limit=" + "9" * 5000, AUTH, None, 400),
                (base, "PUT", "/v1/kv/k?timeout=1e400&ack=1", AUTH, b"v", 400),
                (base, "PUT", "/v1/kv/k?timeout=nan&ack=1", AUTH, b"v", 400),
                (base, "GET", "/v1/kv/k?min_seq=%EF%BC%91", AUTH, None, 400),  # fullwidth 1
                (base, "GET", "/v1/watch?since=-1", AUTH, None, 400),
                (base, "GET", "/v1/kv/%FF", AUTH, None, 400),
            ]
        for seq in (b"Infinity", b"-Infinity", b"NaN", b"1e400", b"1.5", b'"1"', b"true", b"-1"):
            ack = b'{"pod":"kv-1","seq":%s}' % seq
            cases.append((manager, "POST", "/v1/replication/ack", AUTH | JSON, ack, 400))
        for base, method, path, headers, body, status in cases:
            answer = await raw(base, method, path, headers, body)
            assert answer.status == status, (
                method,
                path,
                headers,
                answer.status,
                answer.body[:300],
            )
            assert answer.code is not None, (path, answer.body[:300])
        for seq in (b"Infinity", b"1e400", b'"x"'):
            ndjson = {"Content-Type": "application/x-ndjson"}
            answer = await raw(
                manager,
                "POST",
                "/v1/replication/acks?pod=kv-1",
                AUTH | ndjson,
                b'{"seq":%s}\n' % seq,
            )
            assert_error(answer, 400, "invalid_request")
        for base in (manager, follower):
            for value in (b"Bearer \xff\xfe\x80", b"\xc3\x28 s3cret", b"Bearer s3cret\xff"):
                request = (
                    b"GET /v1/kv/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    b"Authorization: " + value + b"\r\n\r\n"
                )
                assert_error(await raw_bytes(base, request), 401, "unauthorized")
        assert cluster.running(0) and cluster.running(1)
        for ordinal in (0, 1):
            assert "Traceback" not in cluster.log(ordinal), cluster.log(ordinal)[-3000:]


# --- 7. logs and status ---------------------------------------------------------------------
async def test_a_pod_name_cannot_forge_a_log_line(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=2) as cluster:
        forged = "kv-1%0A2026-01-01%2000:00:00,000%20INFO%20kv-0%20manager%20seq=1%20x:%20FORGED%0D"
        ndjson = {"Content-Type": "application/x-ndjson"}
        await raw(
            cluster.url(0), "POST", f"/v1/replication/acks?pod={forged}", ndjson, b'{"seq":1}\n'
        )
        async with cluster.session.get(
            f"{cluster.url(0)}/v1/replication/stream?from=1&pod={forged}"
        ) as reader:
            assert reader.status == 200 and await reader.content.readline()
        await cluster.wait_until(
            lambda: _logged(cluster, "FORGED"), 10, "the made-up pod name in the log"
        )
        for line in cluster.log(0).splitlines():
            assert not line.startswith("2026-01-01"), line
            if "FORGED" in line:
                assert "\\n2026-01-01" in line, line


async def _logged(cluster: Cluster, text: str) -> bool:
    return text in cluster.log(0)


async def test_status_names_the_manager_by_its_stable_name(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=2) as cluster:
        want = f"http://kv-0.kv.default.svc.cluster.local:{cluster.port}"
        assert (await cluster.status(0))["manager"]["url"] == want
        async with cluster.session.get(cluster.url(0) + "/v1/status") as resp:
            assert "0.0.0.0" not in await resp.text()


async def test_a_resync_backup_is_never_written_outside_the_data_directory(tmp_path: Path) -> None:
    """The backup name a client gives is a plain file name: a path (absolute, relative, with
    dot segments) is refused before anything is written or replaced."""
    async with Cluster(tmp_path, replicas=2) as cluster:
        follower = cluster.url(1)
        outside = tmp_path / "outside.db"
        for name in (str(outside), "../outside.db", "a/b.db", ".hidden", "x" * 200, "ü.db"):
            body = json.dumps({"backup": name}).encode()
            answer = await raw(follower, "POST", "/v1/repair/resync", JSON, body)
            assert_error(answer, 400, "invalid_request")
        assert not outside.exists()
        assert not list(cluster.data_dir(1).glob("*outside*"))
