"""`kvstore repair`: show and fix divergence and epoch disagreements.

- `repair status [--json]`: each pod DNS lists (asked through any pod's /v1/cluster): its epoch,
  term table, seq, and whether it is diverged and from which seq.
- `repair export --pod kv-2 --out F [--from N]`: the changes the pod holds past the fork point
  (its own log, GET /v1/replication/log), as a txn file that `kvstore txn F` replays on the
  manager: the last state of each key they touch.
- `repair resync --pod kv-2 [--out NAME]`: the pod writes a backup of its data (into its data
  directory, or PATH on its own filesystem), then takes a snapshot from the manager.
- `repair restore-from --pod kv-N`: a manager that waits because its peers hold different epochs
  restores from that peer.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp

from kvstore import wire
from kvstore.cli.connection import add_connection_arguments, resolve_url
from kvstore.cli.exits import EXIT_FAILED, EXIT_OK, Sub
from kvstore.cli.tables import format_table


class RepairError(Exception):
    """Something a repair command cannot do; the message says what and why."""


class _Api:
    def __init__(self, session: aiohttp.ClientSession, args: argparse.Namespace) -> None:
        self.session = session
        self.url = resolve_url(getattr(args, "url", None)).rstrip("/")
        token = getattr(args, "token", None) or os.environ.get("KV_AUTH_TOKEN") or None
        self.client = {"Authorization": f"Bearer {token}"} if token else {}
        rtoken = os.environ.get("KV_REPLICATION_TOKEN") or token
        self.replication = {"Authorization": f"Bearer {rtoken}"} if rtoken else {}

    async def json(
        self, method: str, url: str, body: dict[str, Any] | None = None, replication: bool = False
    ) -> Any:
        headers = self.replication if replication else self.client
        async with self.session.request(method, url, json=body, headers=headers) as resp:
            text = await resp.text()
            if resp.status >= 400:
                raise RepairError(f"{method} {url}: {resp.status} {_message(text)}")
            return json.loads(text)

    async def pods(self) -> list[dict[str, Any]]:
        view = await self.json("GET", self.url + "/v1/cluster")
        return list(view["pods"])

    async def pod(self, name: str) -> dict[str, Any]:
        pods = await self.pods()
        for entry in pods:
            if entry["name"] == name:
                if not entry.get("reachable"):
                    raise RepairError(f"{name} does not answer: {entry.get('error')}")
                return entry
        names = ", ".join(str(e["name"]) for e in pods)
        raise RepairError(f"no pod {name} among those DNS lists ({names})")


def _message(text: str) -> str:
    try:
        return str(json.loads(text)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return text[:200]


# --- status ----------------------------------------------------------------------------------
def describe(entry: dict[str, Any]) -> dict[str, Any]:
    st = entry.get("status") or {}
    diverged = st.get("diverged") or None
    return {
        "pod": entry["name"],
        "url": entry.get("url"),
        "reachable": bool(entry.get("reachable")),
        "error": entry.get("error"),
        "role": st.get("role"),
        "ready": st.get("ready"),
        "epoch": st.get("epoch"),
        "seq": st.get("applied_seq"),
        "term": st.get("last_term"),
        "terms": st.get("terms"),
        "diverged_from": diverged.get("seq") if isinstance(diverged, dict) else None,
        "epoch_mismatch": st.get("epoch_mismatch"),
        "restore": (st.get("restore") or {}).get("note") if st.get("restoring") else None,
    }


def _terms_text(terms: list[list[int]] | None) -> str:
    if not terms:
        return "-"
    return ", ".join(f"{t}@{s}" for t, s in terms)


def status_table(rows: list[dict[str, Any]]) -> str:
    headers = ["POD", "ROLE", "READY", "EPOCH", "SEQ", "TERM", "TERMS (term@first seq)", "STATE"]
    out = []
    for r in rows:
        if not r["reachable"]:
            out.append([r["pod"], "-", "-", "-", "-", "-", "-", f"unreachable: {r['error']}"])
            continue
        state = "ok"
        if r["diverged_from"] is not None:
            state = f"DIVERGED from seq {r['diverged_from']}"
        elif r["epoch_mismatch"]:
            state = f"EPOCH MISMATCH (manager's: {r['epoch_mismatch']})"
        elif r["restore"]:
            state = f"restoring: {r['restore']}"
        out.append(
            [
                r["pod"],
                str(r["role"]),
                "yes" if r["ready"] else "no",
                str(r["epoch"] or "-"),
                str(r["seq"]),
                str(r["term"]),
                _terms_text(r["terms"]),
                state,
            ]
        )
    return format_table(headers, out, right={4, 5})


async def _status(api: _Api, args: argparse.Namespace) -> int:
    rows = [describe(e) for e in await api.pods()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(status_table(rows))
    return EXIT_OK


# --- export ----------------------------------------------------------------------------------
def txn_of(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The txn ops that leave each key as the changes leave it (last change per key wins)."""
    final: dict[str, dict[str, Any]] = {}
    for msg in lines:
        if msg.get("t") != "c":
            continue
        for change in wire.decode_changes(msg):
            final.pop(change.key, None)  # keep the order of each key's last change
            if change.value is None:
                final[change.key] = {"op": "delete", "key": change.key}
            else:
                value = base64.b64encode(change.value).decode()
                final[change.key] = {"op": "put", "key": change.key, "value": value}
    return list(final.values())


async def _read_log(api: _Api, url: str, from_seq: int) -> list[dict[str, Any]]:
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    params = {"from": str(from_seq)}
    async with api.session.get(
        url + wire.LOG_PATH, params=params, headers=api.replication, timeout=timeout
    ) as resp:
        if resp.status >= 400:
            raise RepairError(f"{url}{wire.LOG_PATH}: {resp.status} {_message(await resp.text())}")
        out = [json.loads(line) async for line in wire.iter_lines(resp.content)]
    if not out or out[-1].get("t") != "end":
        raise RepairError(f"{url}{wire.LOG_PATH}: the answer ended before its end line")
    return out


async def _export(api: _Api, args: argparse.Namespace) -> int:
    entry = await api.pod(args.pod)
    status = entry.get("status") or {}
    from_seq = args.from_seq
    if from_seq is None:
        diverged = status.get("diverged")
        if not isinstance(diverged, dict) or diverged.get("seq") is None:
            raise RepairError(
                f"{args.pod} is not diverged: nothing to export (name a seq with --from)"
            )
        from_seq = int(diverged["seq"])
    lines = await _read_log(api, str(entry["url"]), from_seq)
    changes = sum(len(m.get("c", ())) for m in lines)
    ops = txn_of(lines)
    end = lines[-1]
    doc = {
        "ops": ops,
        "from": {"pod": args.pod, "epoch": status.get("epoch"), "seqs": [from_seq, end["seq"]]},
    }
    await asyncio.to_thread(Path(args.out).write_text, json.dumps(doc, indent=1) + "\n")
    print(
        f"{args.out}: {len(ops)} ops ({changes} changes of {args.pod}, seq {from_seq} to "
        f"{end['seq']}); replay them on the manager with `kvstore txn {args.out}`"
    )
    if not ops:
        print(f"{args.pod} holds no change past seq {from_seq - 1}")
    return EXIT_OK


# --- resync and restore-from -----------------------------------------------------------------
async def _resync(api: _Api, args: argparse.Namespace) -> int:
    entry = await api.pod(args.pod)
    body = {"backup": args.out} if args.out else {}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with api.session.post(
        str(entry["url"]) + wire.RESYNC_PATH, json=body, headers=api.client, timeout=timeout
    ) as resp:
        text = await resp.text()
        if resp.status >= 400:
            raise RepairError(f"resync of {args.pod}: {resp.status} {_message(text)}")
        doc = json.loads(text)
    before, after = doc["before"], doc["after"]
    print(
        f"{args.pod}: data at seq {before['seq']} (epoch {before['epoch']}) backed up to "
        f"{doc['backup']} ({doc['backup_bytes']} bytes) on the pod; now at seq {after['seq']} "
        f"of epoch {after['epoch']}, {after['keys']} keys, from the manager's snapshot"
    )
    return EXIT_OK


async def _restore_from(api: _Api, args: argparse.Namespace) -> int:
    pods = await api.pods()
    manager = next(
        (e for e in pods if (e.get("status") or {}).get("role") == "manager"),
        next((e for e in pods if e.get("ordinal") == 0), None),
    )
    if manager is None:
        raise RepairError("no manager among the pods DNS lists")
    url = str(manager["url"]) + wire.RESTORE_FROM_PATH
    doc = await api.json("POST", url, {"pod": args.pod})
    print(f"{manager['name']} restores from {doc['pod']} ({doc.get('note', '')})")
    return EXIT_OK


COMMANDS = {"status": _status, "export": _export, "resync": _resync, "restore-from": _restore_from}


async def _main(args: argparse.Namespace) -> int:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        return await COMMANDS[args.action](_Api(session, args), args)


def _run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_main(args))
    except RepairError as exc:
        print(f"kvstore repair {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
        print(f"kvstore repair {args.action}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


EXAMPLES = {
    "repair": """\
examples:
  kvstore repair status
  kvstore repair export --pod kv-2 --out kv-2-extra.json && kvstore txn kv-2-extra.json
  kvstore repair resync --pod kv-2
  kvstore repair restore-from --pod kv-1
""",
    "status": """\
examples:
  kvstore repair status
  kvstore repair status --json
""",
    "export": """\
The file is a txn file: replay it on the manager with `kvstore txn FILE` (after reading it).

examples:
  kvstore repair export --pod kv-2 --out kv-2-extra.json
  kvstore repair export --pod kv-2 --out kv-2-extra.json --from 120
""",
    "resync": """\
examples:
  kvstore repair resync --pod kv-2
  kvstore repair resync --pod kv-2 --out /data/before-resync.db
""",
    "restore-from": """\
examples:
  kvstore repair restore-from --pod kv-1
""",
}


def register(sub: Sub) -> None:
    p = sub.add_parser(
        "repair",
        help="show and fix divergence and epoch disagreements",
        description="Show each pod's history (epoch, terms, seq, divergence), export what a "
        "diverged pod holds past the fork as a txn file, resync a pod from the manager (after "
        "a backup of its data), or tell a waiting manager which peer to restore from.",
        epilog=EXAMPLES["repair"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    status = actions.add_parser("status", help="each pod's epoch, terms, seq and divergence")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    export = actions.add_parser("export", help="a diverged pod's changes past the fork, as a txn")
    export.add_argument("--pod", required=True, help="the pod, e.g. kv-2")
    export.add_argument("--out", required=True, help="the txn file to write")
    export.add_argument(
        "--from", dest="from_seq", type=int, help="the first seq (default: the fork point)"
    )
    resync = actions.add_parser("resync", help="back up a pod's data, then resync it")
    resync.add_argument("--pod", required=True, help="the pod, e.g. kv-2")
    resync.add_argument(
        "--out",
        metavar="NAME",
        help="the backup's file name in the pod's data directory (default: "
        "resync-backup-seq<N>-<time>.db)",
    )
    restore = actions.add_parser("restore-from", help="tell a waiting manager which peer to use")
    restore.add_argument("--pod", required=True, help="the peer to restore from, e.g. kv-1")
    for name, action in (
        ("status", status),
        ("export", export),
        ("resync", resync),
        ("restore-from", restore),
    ):
        action.epilog = EXAMPLES[name]
        action.formatter_class = argparse.RawDescriptionHelpFormatter
        add_connection_arguments(action)
    p.set_defaults(func=_run)
