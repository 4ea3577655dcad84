"""What a pod tells its operators: `/metrics` (values, and the README's table of them, which must
be exactly what a manager and a follower expose) and its log lines (one per event, with pod,
role and seq).

The metrics tests run a manager and a follower in this process (`create_app` behind aiohttp's
`TestServer`), on two loopback addresses and one port, found through the local DNS server.
`python -m tests.test_metrics` prints the README table from such a pair.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from kvstore import __version__, config
from kvstore.local.dns import BackgroundDNSServer, RecordTable
from kvstore.local.pod import free_port, loopback_addresses
from kvstore.server.app import create_app
from tests.harness import Cluster

ROOT = Path(__file__).resolve().parents[2]
BEGIN, END = "<!-- metrics:begin -->\n", "<!-- metrics:end -->"
DEADLINE = 30.0
Families = dict[str, Metric]


@dataclass
class Pair:
    """A manager kv-0 and a follower kv-1, each an app in this process."""

    manager: str  # base URLs
    follower: str
    session: aiohttp.ClientSession

    async def scrape(self, url: str) -> Families:
        async with self.session.get(f"{url}/metrics") as resp:
            assert resp.status == 200
            assert resp.content_type == "text/plain"
            text = await resp.text()
        return {f.name: f for f in text_string_to_metric_families(text)}

    async def status(self, url: str) -> dict[str, Any]:
        async with self.session.get(f"{url}/v1/status") as resp:
            doc: dict[str, Any] = await resp.json()
            return doc

    async def request(self, method: str, url: str, expect: int, **kwargs: Any) -> Any:
        async with self.session.request(method, url, **kwargs) as resp:
            doc = await resp.json()
            assert resp.status == expect, doc
            return doc


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE:g}s waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running_pair(root: Path, env: Mapping[str, str] | None = None) -> AsyncIterator[Pair]:
    """Start kv-0 and kv-1 (with `env` added to their settings) and wait until kv-1 is ready
    (it took its snapshot at seq 0)."""
    port = free_port()
    table = RecordTable(port=port)
    addresses = loopback_addresses(first=40)
    servers: list[TestServer] = []
    with BackgroundDNSServer(table) as dns:
        try:
            for name in ("kv-0", "kv-1"):
                address = next(addresses)
                table.set_pod(name, address)
                settings = {
                    **(env or {}),
                    "KV_POD_NAME": name,
                    "KV_DATA_DIR": str(root / name),
                    "KV_HOST": address,
                    "KV_PORT": str(port),
                    "KV_DNS_SERVER": dns.address,
                    "KV_DURABILITY": "normal",
                }
                app = create_app(config.load(env=settings))
                server = TestServer(app, host=address, port=port)
                await server.start_server()
                servers.append(server)
            token = (env or {}).get("KV_AUTH_TOKEN")
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
                manager, follower = (str(s.make_url("")) for s in servers)
                pair = Pair(manager, follower, session)

                async def ready() -> bool:
                    async with session.get(f"{follower}/readyz") as resp:
                        return resp.status == 200

                await eventually(ready, "kv-1 to be ready")
                yield pair
        finally:
            for server in reversed(servers):
                await server.close()


async def exercise(pair: Pair) -> int:
    """Writes of every kind; returns the manager's seq after them.

    puts a, b, c (created), a again; delete b; a txn of 2 puts and a delete of a missing key
    (which takes no seq); a put sent to the follower (forwarded); a read with
    consistency=manager on the follower (forwarded, but not a write). 7 puts, 1 delete.
    """
    m, f = pair.manager, pair.follower
    for key in ("a", "b", "c"):
        await pair.request("PUT", f"{m}/v1/kv/{key}", 201, data=b"1")
    await pair.request("PUT", f"{m}/v1/kv/a", 200, data=b"2")
    await pair.request("DELETE", f"{m}/v1/kv/b", 200)
    value = base64.b64encode(b"v").decode()
    ops = [
        {"op": "put", "key": "x", "value": value},
        {"op": "put", "key": "y", "value": value},
        {"op": "delete", "key": "missing"},
    ]
    txn = await pair.request("POST", f"{m}/v1/txn", 200, json={"ops": ops})
    assert [r.get("seq") for r in txn["results"]] == [6, 7, None]
    forwarded = await pair.request("PUT", f"{f}/v1/kv/z", 201, data=b"z")
    async with pair.session.get(f"{f}/v1/kv/z", params={"consistency": "manager"}) as resp:
        assert resp.status == 200 and resp.headers["X-KV-Served-By"] == "kv-0"
    seq: int = forwarded["seq"]
    return seq


async def settle(pair: Pair, seq: int) -> None:
    """Wait until kv-1 applied `seq` and the manager heard it say so."""

    async def caught_up() -> bool:
        mine = await pair.status(pair.follower)
        followers = (await pair.status(pair.manager))["followers"]
        return mine["applied_seq"] == seq and [f["acked_seq"] for f in followers] == [seq]

    await eventually(caught_up, f"kv-1 to apply and ack seq {seq}")


def value(families: Families, sample: str, **labels: str) -> float:
    """The value of one sample, e.g. value(f, "kvstore_changes_committed_total", op="put")."""
    family = sample.removesuffix("_total").removesuffix("_sum").removesuffix("_count")
    found = [
        s.value
        for s in families[family].samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, f"{sample}{labels}: {len(found)} samples in {families[family]}"
    return float(found[0])


@pytest.fixture
async def scraped(tmp_path: Path) -> tuple[Families, Families, dict[str, Any]]:
    """A pair after `exercise`: the manager's families, the follower's, the manager's status."""
    async with running_pair(tmp_path) as pair:
        seq = await exercise(pair)
        await settle(pair, seq)
        status = await pair.status(pair.manager)
        return await pair.scrape(pair.manager), await pair.scrape(pair.follower), status


async def test_manager_counts_writes_txns_and_followers(
    scraped: tuple[Families, Families, dict[str, Any]],
) -> None:
    m, _, status = scraped
    assert status["applied_seq"] == 8
    assert value(m, "kvstore_changes_committed_total", op="put") == 7
    assert value(m, "kvstore_changes_committed_total", op="delete") == 1
    assert value(m, "kvstore_txns_committed_total") == 1
    assert value(m, "kvstore_txn_ops_committed_total") == 2
    assert value(m, "kvstore_commit_batch_changes_sum") == 8
    assert value(m, "kvstore_commit_duration_seconds_count") == value(
        m, "kvstore_commit_batch_changes_count"
    )
    assert value(m, "kvstore_applied_seq") == value(m, "kvstore_manager_seq") == 8
    assert value(m, "kvstore_keys") == 5  # a, c, x, y, z
    assert value(m, "kvstore_ready") == 1
    assert value(m, "kvstore_database_size_bytes") > 0
    assert value(m, "kvstore_followers_connected") == 1
    assert value(m, "kvstore_follower_acked_seq", follower="kv-1") == 8
    assert value(m, "kvstore_follower_lag_entries", follower="kv-1") == 0
    assert value(m, "kvstore_snapshots_sent_total") == 1
    info = {"pod": "kv-0", "role": "manager", "ordinal": "0", "epoch": status["epoch"]}
    assert value(m, "kvstore_info", **info, version=__version__) == 1
    route = "/v1/kv/{key}"
    assert value(m, "kvstore_http_requests_total", route=route, method="PUT", code="201") == 4
    assert value(m, "kvstore_http_requests_total", route=route, method="PUT", code="200") == 1
    assert value(m, "kvstore_http_request_duration_seconds_count", route=route, method="PUT") == 5


async def test_follower_counts_forwarded_writes_snapshots_and_lag(
    scraped: tuple[Families, Families, dict[str, Any]],
) -> None:
    m, f, status = scraped
    assert value(f, "kvstore_forwarded_writes_total") == 1  # the GET was not a write
    assert value(f, "kvstore_changes_committed_total", op="put") == 7  # applied
    assert value(f, "kvstore_changes_committed_total", op="delete") == 1
    assert value(f, "kvstore_applied_seq") == value(f, "kvstore_manager_seq") == 8
    assert value(f, "kvstore_replication_lag_entries") == 0
    assert value(f, "kvstore_replication_connected") == 1
    assert value(f, "kvstore_replication_epoch_mismatch") == 0
    assert value(f, "kvstore_replication_diverged") == 0
    assert value(f, "kvstore_replication_reconnects_total") == 0
    assert value(f, "kvstore_snapshots_installed_total") == 1
    installed = value(f, "kvstore_snapshot_installed_bytes_total")
    assert installed > 0 and installed == value(m, "kvstore_snapshot_sent_bytes_total")
    assert value(f, "kvstore_snapshot_install_seconds_total") > 0
    info = {"pod": "kv-1", "role": "follower", "ordinal": "1", "epoch": status["epoch"]}
    assert value(f, "kvstore_info", **info) == 1
    # Each role exposes what belongs to it.
    for family in ("kvstore_followers_connected", "kvstore_txns_committed"):
        assert family in m and family not in f
    for family in ("kvstore_replication_connected", "kvstore_forwarded_writes"):
        assert family in f and family not in m


def shown_name(family: Metric) -> str:
    return family.name + "_total" if family.type == "counter" else family.name


def metrics_table(manager: Families, follower: Families) -> str:
    """The README table: every family either pod exposes, its labels and which pods have it."""
    rows: dict[str, dict[str, Any]] = {}
    for role, families in (("manager", manager), ("follower", follower)):
        for family in families.values():
            row = rows.setdefault(
                shown_name(family),
                {"type": family.type, "help": family.documentation, "labels": set(), "on": []},
            )
            assert row["help"] == family.documentation, f"{family.name}: one meaning everywhere"
            row["labels"] |= {k for s in family.samples for k in s.labels if k != "le"}
            row["on"].append(role)
    lines = ["| metric | type | labels | pods | meaning |", "| --- | --- | --- | --- | --- |"]
    for name in sorted(rows):
        row = rows[name]
        labels = ", ".join(f"`{label}`" for label in sorted(row["labels"]))
        pods = "all" if len(row["on"]) == 2 else row["on"][0]
        lines.append(f"| `{name}` | {row['type']} | {labels} | {pods} | {row['help']} |")
    return "\n".join(lines) + "\n"


def test_readme_metrics_table_is_what_the_pods_expose(
    scraped: tuple[Families, Families, dict[str, Any]],
) -> None:
    m, f, _ = scraped
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index(BEGIN) + len(BEGIN) : readme.index(END)]
    expected = metrics_table(m, f)
    assert section == expected, (
        f"the README table should be (python -m tests.test_metrics):\n{expected}"
    )
    names = [shown_name(family) for family in (*m.values(), *f.values())]
    assert all(n.startswith("kvstore_") for n in names)
    for family in (*m.values(), *f.values()):
        name = shown_name(family)
        if family.type == "counter":
            assert name.endswith("_total"), name
        if "seconds" in name or "bytes" in name:
            assert name.removesuffix("_total").endswith(("_seconds", "_bytes")), name


# --- logs ------------------------------------------------------------------------------------
def json_lines(text: str) -> list[dict[str, Any]]:
    """A pod's JSON log lines (the harness writes a `# kv-N: starting` line before each start)."""
    return [json.loads(line) for line in text.splitlines() if line and not line.startswith("#")]


def count(lines: list[dict[str, Any]], words: str) -> int:
    return sum(1 for line in lines if words in line["msg"])


@pytest.mark.e2e
async def test_one_json_log_line_per_event_with_pod_role_and_seq(tmp_path: Path) -> None:
    async with Cluster(tmp_path, replicas=2, env={"KV_LOG_FORMAT": "json"}) as cluster:
        for i in range(3):
            async with cluster.session.put(f"{cluster.url(0)}/v1/kv/k{i}", data=b"v") as resp:
                assert resp.status == 201

        async def applied() -> bool:
            return int((await cluster.status(1))["applied_seq"]) == 3

        await cluster.wait_until(applied, 30, "kv-1 to apply seq 3")
        await cluster.stop(0)  # shutdown; kv-1 loses its stream
        cluster.wipe(0)  # the manager's volume is lost: it restores from kv-1
        await cluster.restart(0)
        await cluster.wait_ready(0)

        async def reconnected() -> bool:
            return count(json_lines(cluster.log(1)), "reconnected to the manager") == 1

        await cluster.wait_until(reconnected, 30, "kv-1 to reconnect")
    manager, follower = json_lines(cluster.log(0)), json_lines(cluster.log(1))
    for pod, role, lines in (("kv-0", "manager", manager), ("kv-1", "follower", follower)):
        assert lines, f"{pod} logged nothing"
        for line in lines:
            assert (line["pod"], line["role"]) == (pod, role), line
            assert line["seq"] is None or isinstance(line["seq"], int), line
        starts = 2 if pod == "kv-0" else 1
        assert count(lines, f"starting as {role}") == starts
        stopped = sum(1 for line in lines if line["msg"] == "stopped")
        assert count(lines, "shutting down") == stopped == starts
        assert not [line for line in lines if line["logger"] == "aiohttp.access"]
    assert count(follower, "snapshot: installed") == 1
    assert count(follower, "connected to the manager") == 2  # connected, then reconnected
    assert count(follower, "disconnected from the manager") == 2  # kv-0 stopped; kv-1 stopped
    assert count(manager, "follower kv-1 connected") == 2
    assert count(manager, "snapshot sent") == 1  # kv-1's first snapshot
    assert count(manager, "restore: took 3 keys at seq 3") == 1
    restored = next(line for line in manager if "restore: took" in line["msg"])
    assert restored["seq"] == 3  # the store's seq once it holds the restored data


async def _print_table() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with running_pair(Path(tmp)) as pair:
            await settle(pair, await exercise(pair))
            families = await pair.scrape(pair.manager), await pair.scrape(pair.follower)
    print(metrics_table(*families), end="")


if __name__ == "__main__":
    asyncio.run(_print_table())
