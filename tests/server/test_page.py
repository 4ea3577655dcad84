"""The page at `/` and `GET /v1/cluster`, the view of the set behind it.

In-process (a manager and a follower, see tests/test_metrics.py) for what one request shows;
with real processes (tests/harness.py) for pods that die, come back elsewhere, or leave DNS.
The page itself, in a browser, is tests/test_page_browser.py.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kvstore.server.page import ASSETS
from tests.harness import Cluster
from tests.server.test_metrics import eventually, running_pair

# What a page may name: its own files; nothing from another origin.
REFERENCE = re.compile(r"""(?:src|href)=["']([^"']+)["']""")
ELSEWHERE = re.compile(r"""(?:https?:)?//[a-z0-9.-]+""", re.IGNORECASE)


async def test_the_page_and_its_files_come_from_the_pod(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as pair:
        for base in (pair.manager, pair.follower):
            async with pair.session.get(f"{base}/") as resp:
                assert resp.status == 200
                assert resp.content_type == "text/html"
                html = await resp.text()
                csp = resp.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp
            referenced = REFERENCE.findall(html)
            assert sorted(referenced) == sorted(f"/web/{n}" for n in ASSETS if n != "index.html")
            for path in referenced:
                async with pair.session.get(base + path) as resp:
                    assert resp.status == 200, path
                    assert resp.content_type == ASSETS[path.removeprefix("/web/")]
                    text = await resp.text()
                if path.endswith(".svg"):
                    text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
                assert not ELSEWHERE.search(text), f"{path} refers to another origin"
            assert not ELSEWHERE.search(html)
        async with pair.session.get(f"{pair.manager}/web/..%2Fweb.py") as resp:
            assert resp.status == 404
        async with pair.session.get(f"{pair.manager}/web/nothing.js") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "not_found"


async def test_cluster_lists_every_pod_with_its_status(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as pair:
        for base, me in ((pair.manager, "kv-0"), (pair.follower, "kv-1")):
            async with pair.session.get(f"{base}/v1/cluster", headers={"Origin": "x"}) as resp:
                assert resp.status == 200
                assert resp.headers["Access-Control-Allow-Origin"] == "*"
                doc: dict[str, Any] = await resp.json()
            assert doc["pod"] == me
            assert doc["service"] == "kv.default.svc.cluster.local"
            pods = doc["pods"]
            assert [(p["name"], p["ordinal"], p["listed"], p["reachable"]) for p in pods] == [
                ("kv-0", 0, True, True),
                ("kv-1", 1, True, True),
            ]
            assert [p["self"] for p in pods] == [me == "kv-0", me == "kv-1"]
            assert [p["status"]["role"] for p in pods] == ["manager", "follower"]
            assert [p["url"] for p in pods] == [pair.manager, pair.follower]
            assert all(p["status"]["ready"] for p in pods)
            assert pods[0]["status"]["followers"][0]["pod"] == "kv-1"


async def test_cluster_needs_the_client_token_and_sends_it_on(tmp_path: Path) -> None:
    async with running_pair(tmp_path, env={"KV_AUTH_TOKEN": "s3cret"}) as pair:
        async with aiohttp.ClientSession() as anonymous:
            async with anonymous.get(f"{pair.follower}/v1/cluster") as resp:
                assert resp.status == 401
                assert resp.headers["Access-Control-Allow-Origin"] == "*"
                assert (await resp.json())["error"]["code"] == "unauthorized"
            async with anonymous.options(f"{pair.follower}/v1/cluster") as resp:
                assert resp.status == 204  # the browser's preflight carries no token
                assert resp.headers["Access-Control-Allow-Headers"] == "Authorization"
            async with anonymous.get(f"{pair.follower}/") as resp:
                assert resp.status == 200  # the page itself holds nothing secret
        async with pair.session.get(f"{pair.follower}/v1/cluster") as resp:
            doc = await resp.json()
        assert [p["reachable"] for p in doc["pods"]] == [True, True]  # the token went along


def names_and_states(doc: dict[str, Any]) -> list[tuple[str, bool, bool]]:
    return [(p["name"], p["listed"], p["reachable"]) for p in doc["pods"]]


@pytest.mark.e2e
async def test_cluster_shows_pods_going_and_coming_back(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=3) as cluster:
        before = await cluster.get_json(1, "/v1/cluster")
        assert names_and_states(before) == [(f"kv-{n}", True, True) for n in range(3)]
        assert [p["status"]["role"] for p in before["pods"]] == ["manager", "follower", "follower"]

        await cluster.kill(2)  # still in DNS, not answering
        doc = await cluster.get_json(1, "/v1/cluster")
        assert names_and_states(doc) == [
            ("kv-0", True, True),
            ("kv-1", True, True),
            ("kv-2", True, False),
        ]
        assert doc["pods"][2]["error"].startswith("cannot connect")
        assert doc["pods"][2]["ordinal"] == 2

        await cluster.restart(2, new_address=True)  # rescheduled: a new address
        await cluster.wait_ready(2)
        after = await cluster.get_json(1, "/v1/cluster")
        assert names_and_states(after) == [(f"kv-{n}", True, True) for n in range(3)]
        assert after["pods"][2]["url"] == cluster.url(2) != before["pods"][2]["url"]
        assert after["pods"][2]["started_at"] > before["pods"][2]["started_at"]

        cluster.table.remove_pod("kv-1")  # e.g. terminating: DNS no longer has it
        doc = await cluster.get_json(1, "/v1/cluster")
        assert names_and_states(doc) == [
            ("kv-0", True, True),
            ("kv-1", False, True),
            ("kv-2", True, True),
        ]
        assert doc["pods"][1]["self"] is True and doc["pods"][1]["url"] == cluster.url(1)


async def test_one_key_on_every_pod(tmp_path: Path) -> None:
    async with running_pair(tmp_path) as pair:
        put = await pair.request("PUT", f"{pair.manager}/v1/kv/a%2Fkey", 201, data=b"v" * 300)
        put = await pair.request("PUT", f"{pair.manager}/v1/kv/a%2Fkey", 200, data=b"hello")

        async def applied() -> bool:
            return bool((await pair.status(pair.follower))["applied_seq"] >= put["seq"])

        await eventually(applied, "kv-1 to apply the put")
        for base, me in ((pair.manager, "kv-0"), (pair.follower, "kv-1")):
            async with pair.session.get(f"{base}/v1/cluster/kv/a%2Fkey") as resp:
                assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
                doc: dict[str, Any] = await resp.json()
            assert doc["key"] == "a/key" and doc["pod"] == me
            pods = {p["name"]: p for p in doc["pods"]}
            assert list(pods) == ["kv-0", "kv-1"] and pods[me]["self"] is True
            for pod in pods.values():
                assert pod["reachable"] and pod["found"], pod
                assert pod["version"] == 2 and pod["size"] == 5 and pod["seq"] >= put["seq"]
                assert base64.b64decode(pod["preview"]) == b"hello"
            assert pods["kv-0"]["digest"] == pods["kv-1"]["digest"]
            assert "lag_seconds" not in pods["kv-0"]
            if me == "kv-1":  # its own copy: the lag it knows
                assert pods["kv-1"]["lag_seconds"] == 0 and pods["kv-1"]["manager_seq"] >= 2
        async with pair.session.get(f"{pair.follower}/v1/cluster/kv/missing") as resp:
            doc = await resp.json()
        assert [(p["name"], p["found"]) for p in doc["pods"]] == [("kv-0", False), ("kv-1", False)]
        async with pair.session.get(f"{pair.follower}/v1/cluster/kv/bad%01key") as resp:
            assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_key"
