"""The client commands: `kvstore get | put | delete | list | watch | txn | status` (SPEC §6).

Each command talks to one server: `--url`, else `$KV_URL`, else the local cluster started in the
current directory (`.kvstore/cluster.json`), else http://127.0.0.1:8080. `--token`, else
`$KV_AUTH_TOKEN`, is sent as `Authorization: Bearer`. Failures print one line on stderr and
exit with a documented code (see `exit_code`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from kvstore.cli.connection import add_connection_arguments, client_for
from kvstore.cli.exits import (
    EXIT_CONDITION,
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNKNOWN,
    EXIT_USAGE,
    Sub,
    UsageError,
)
from kvstore.cli.tables import format_pairs, format_table, human_size
from kvstore.client import (
    ClientError,
    Event,
    InvalidRequest,
    KeyNotFound,
    KVClient,
    ListItem,
    PreconditionFailed,
    Status,
    TooLarge,
    TxnOp,
    Unauthorized,
    UnknownOutcome,
    UnsupportedMediaType,
    WaitTimeout,
)

PAGE_SIZE = 1000  # the server's largest page

Action = Callable[[KVClient, argparse.Namespace], Awaitable[int]]


def exit_code(exc: ClientError) -> int:
    """3 not found; 4 a condition did not hold (If-Match, If-None-Match, ack, min_seq);
    5 the write may or may not have been applied (unknown_outcome);
    2 the request cannot be taken as written (bad key, too large, no or wrong token);
    1 anything else (unreachable, unavailable, server error)."""
    if isinstance(exc, KeyNotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, UnknownOutcome):
        return EXIT_UNKNOWN
    if isinstance(exc, PreconditionFailed | WaitTimeout):
        return EXIT_CONDITION
    if isinstance(exc, InvalidRequest | TooLarge | Unauthorized | UnsupportedMediaType):
        return EXIT_USAGE
    return EXIT_FAILED


def _command(action: Action) -> Callable[[argparse.Namespace], int]:
    """Run `action` with an open client; turn every expected failure into one line + a code."""

    async def with_client(args: argparse.Namespace) -> int:
        async with client_for(args) as kv:
            return await action(kv, args)

    def run(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(with_client(args))
        except ClientError as exc:
            return _fail(args, str(exc), exit_code(exc))
        except UsageError as exc:
            return _fail(args, str(exc), EXIT_USAGE)
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, and keep the final flush quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK

    return run


def _fail(args: argparse.Namespace, reason: str, code: int) -> int:
    print(f"kvstore {args.command}: {' '.join(reason.split())}", file=sys.stderr)
    return code


def format_items(items: Sequence[ListItem]) -> str:
    rows = [[i.key, str(i.version), str(i.seq), human_size(i.size)] for i in items]
    return format_table(["KEY", "VERSION", "SEQ", "SIZE"], rows, right=(1, 2, 3))


def preview(value: bytes, limit: int = 60) -> str:
    """A value as a person reads it: quoted text when it is short printable UTF-8, else its
    size."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return f"<{human_size(len(value))} binary>"
    if not text.isprintable():
        return f"<{human_size(len(value))} binary>"
    if len(text) > limit:
        return f"{json.dumps(text[:limit] + '…', ensure_ascii=False)} ({human_size(len(value))})"
    return json.dumps(text, ensure_ascii=False)


def format_event(ev: Event) -> str:
    if ev.op == "delete":
        return f"{ev.seq} delete {ev.key}"
    value = preview(ev.value) if ev.value is not None else ""
    return f"{ev.seq} {ev.op} {ev.key} = {value} (version {ev.version})"


def format_txn_result(r: Mapping[str, Any]) -> str:
    """One op's outcome, e.g. `put a: version 2, seq 9` or `delete b: absent, no change`."""
    head = f"{r.get('op')} {r.get('key')}"
    if r.get("op") == "delete" and r.get("deleted") is False:
        return f"{head}: absent, no change"
    version = f"version {r['version']}, " if r.get("op") == "put" and "version" in r else ""
    created = ", created" if r.get("created") else ""
    return f"{head}: {version}seq {r.get('seq')}{created}"


def format_status(st: Status, now: float | None = None) -> str:
    manager, lag = st["manager"], st["lag"]
    pairs = [
        ("pod", f"{st['pod']} (ordinal {st['ordinal']}, {st['role']})"),
        ("ready", "yes" if st["ready"] else "no"),
        ("epoch", str(st["epoch"])),
        ("applied seq", str(st["applied_seq"])),
        *([("oldest seq", str(st["oldest_seq"]))] if "oldest_seq" in st else []),
        ("keys", str(st["keys"])),
        ("digest", str(st["digest"])),
    ]
    if st["role"] != "manager":
        link = "connected" if manager.get("connected") else "not connected"
        pairs.append(("manager", f"{manager.get('url')} at seq {manager.get('seq')}, {link}"))
        pairs.append(("lag", f"{lag.get('entries')} entries, {_seconds(lag.get('seconds'))}"))
    text = format_pairs(pairs)
    followers = st.get("followers")
    if followers is None:
        return text
    now = time.time() if now is None else now
    rows = [
        [f["pod"], str(f["acked_seq"]), str(f["lag_entries"]), _since(f["since"], now)]
        for f in followers
    ]
    table = format_table(["FOLLOWER", "ACKED SEQ", "LAG", "SINCE"], rows, right=(1, 2))
    return text + "\n\n" + (table if rows else "no followers connected")


def _since(value: float | str | None, now: float) -> str:
    """A unix time as an age ("12s ago", "3m ago"); anything else as it is."""
    if not isinstance(value, int | float):
        return "-" if value is None else value
    age = max(0.0, now - value)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if age >= size:
            return f"{int(age // size)}{unit} ago"
    return f"{int(age)}s ago"


def _seconds(value: float | None) -> str:
    return "unknown" if value is None else f"{value:.1f} s"


# --- txn input -------------------------------------------------------------------------------
def parse_txn(text: str) -> list[TxnOp]:
    """`{"ops": [...]}` or a bare list. Each op: `{"op": "put", "key": K, "value": "text"}`
    (a UTF-8 string) or `"value_b64": "<base64>"` for binary; `{"op": "delete", "key": K}`;
    either may add `"if_version": N`."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"the txn is not JSON: {exc}") from exc
    ops = doc.get("ops") if isinstance(doc, dict) else doc
    if not isinstance(ops, list) or not ops:
        raise UsageError('the txn needs a non-empty list of ops: {"ops": [{"op": ...}, ...]}')
    return [_txn_op(i, op) for i, op in enumerate(ops)]


def _txn_op(index: int, op: Any) -> TxnOp:
    where = f"op {index}"
    if not isinstance(op, dict) or op.get("op") not in ("put", "delete"):
        raise UsageError(f'{where}: expected {{"op": "put" or "delete", "key": ...}}')
    key, if_version = op.get("key"), op.get("if_version")
    if not isinstance(key, str):
        raise UsageError(f"{where}: 'key' must be a string")
    if if_version is not None and (not isinstance(if_version, int) or isinstance(if_version, bool)):
        raise UsageError(f"{where}: 'if_version' must be an integer")
    if op["op"] == "delete":
        return TxnOp.delete(key, if_version)
    return TxnOp.put(key, _txn_value(where, op), if_version)


def _txn_value(where: str, op: dict[str, Any]) -> bytes:
    if isinstance(op.get("value"), str) and "value_b64" not in op:
        return str(op["value"]).encode("utf-8")
    if isinstance(op.get("value_b64"), str) and "value" not in op:
        try:
            return base64.b64decode(op["value_b64"], validate=True)
        except ValueError as exc:
            raise UsageError(f"{where}: 'value_b64' is not base64") from exc
    raise UsageError(f"{where}: a put needs 'value' (text) or 'value_b64' (base64), not both")


# --- commands ------------------------------------------------------------------------------
def _write_out(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


async def _get(kv: KVClient, args: argparse.Namespace) -> int:
    consistency: Literal["manager"] | None = "manager" if args.manager else None
    item = await kv.get(
        args.key, min_seq=args.min_seq, timeout=args.timeout, consistency=consistency
    )
    newline = sys.stdout.isatty() and not item.value.endswith(b"\n")
    _write_out(item.value + (b"\n" if newline else b""))
    return EXIT_OK


async def _put(kv: KVClient, args: argparse.Namespace) -> int:
    value = sys.stdin.buffer.read() if args.value == "-" else os.fsencode(args.value)
    res = await kv.put(
        args.key,
        value,
        if_match=args.if_match,
        if_none_match=args.if_none_match,
        ack=args.ack,
        timeout=args.timeout,
    )
    created = ", created" if res.created else ""
    print(f"{res.key}: version {res.version}, seq {res.seq}{created}")
    return EXIT_OK


async def _delete(kv: KVClient, args: argparse.Namespace) -> int:
    res = await kv.delete(args.key, if_match=args.if_match)
    print(f"{res.key}: deleted, seq {res.seq}")
    return EXIT_OK


async def _list(kv: KVClient, args: argparse.Namespace) -> int:
    items: list[ListItem] = []
    more: str | None = None
    start_after = args.start_after
    while args.limit is None or len(items) < args.limit:
        want = PAGE_SIZE if args.limit is None else min(PAGE_SIZE, args.limit - len(items))
        page = await kv.list(args.prefix, start_after=start_after, limit=want)
        items += page.items
        more = start_after = page.next
        if page.next is None:
            break
    if args.json:
        rows = [{"key": i.key, "version": i.version, "seq": i.seq, "size": i.size} for i in items]
        print(json.dumps({"items": rows, "next": more}))
    elif items:
        print(format_items(items))
    if more is not None and not args.json:
        print(f"(more keys: --start-after {json.dumps(more)} to go on)", file=sys.stderr)
    return EXIT_OK


async def _watch(kv: KVClient, args: argparse.Namespace) -> int:
    async with contextlib.aclosing(kv.watch(args.prefix, since=args.since)) as events:
        async for ev in events:
            print(json.dumps(ev.to_json()) if args.json else format_event(ev), flush=True)
    print(f"kvstore watch: {kv.url} closed the stream", file=sys.stderr)
    return EXIT_FAILED


async def _txn(kv: KVClient, args: argparse.Namespace) -> int:
    ops = parse_txn(_read_input(args.file))
    res = await kv.txn(ops)
    if args.json:
        print(json.dumps({"seq": res.seq, "results": res.results}))
        return EXIT_OK
    print(f"committed {len(ops)} ops, seq {res.seq}")
    for result in res.results:
        print("  " + format_txn_result(result))
    return EXIT_OK


def _read_input(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    try:
        return Path(name).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror}") from exc


async def _status(kv: KVClient, args: argparse.Namespace) -> int:
    st = await kv.status()
    print(json.dumps(st, indent=2) if args.json else format_status(st))
    return EXIT_OK


# --- registration --------------------------------------------------------------------------
def _version(text: str) -> int:
    value = int(text.strip('"'))
    if value < 1:
        raise ValueError(text)
    return value


_version.__name__ = "version"  # argparse says "invalid version value: 'x'"


def register(sub: Sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_connection_arguments(common)
    for add in (_add_get, _add_put, _add_delete, _add_list, _add_watch, _add_txn, _add_status):
        add(sub, common)


def _add_get(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("get", parents=[common], help="print a key's value (raw bytes)")
    p.add_argument("key")
    p.add_argument("--min-seq", type=int, help="wait until the replica applied this seq")
    p.add_argument("--timeout", type=float, help="seconds to wait for --min-seq")
    p.add_argument("--manager", action="store_true", help="read from the manager")
    p.set_defaults(func=_command(_get))


def _add_put(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("put", parents=[common], help="set a key (VALUE, or - for stdin)")
    p.add_argument("key")
    p.add_argument("value", help="the value; - reads it from stdin")
    p.add_argument("--if-match", type=_version, metavar="VERSION", help="only if at VERSION")
    p.add_argument("--if-none-match", action="store_true", help="only if the key is absent")
    p.add_argument("--ack", type=int, metavar="N", help="wait until N followers applied it")
    p.add_argument("--timeout", type=float, help="seconds to wait for --ack")
    p.set_defaults(func=_command(_put))


def _add_delete(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("delete", parents=[common], help="delete a key")
    p.add_argument("key")
    p.add_argument("--if-match", type=_version, metavar="VERSION", help="only if at VERSION")
    p.set_defaults(func=_command(_delete))


def _add_list(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("list", parents=[common], help="list keys in order (a table)")
    p.add_argument("--prefix", default="", help="only keys starting with this")
    p.add_argument("--start-after", metavar="KEY", help="begin after this key")
    p.add_argument("--limit", type=int, metavar="N", help="show at most N keys (default: all)")
    p.add_argument("--json", action="store_true", help='print {"items": [...], "next": ...}')
    p.set_defaults(func=_command(_list))


def _add_watch(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("watch", parents=[common], help="print a line per change, live")
    p.add_argument("--prefix", default="", help="only keys starting with this")
    p.add_argument("--since", type=int, metavar="SEQ", help="first replay changes after SEQ")
    p.add_argument("--json", action="store_true", help="print each change as JSON (value base64)")
    p.set_defaults(func=_command(_watch))


def _add_txn(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "txn",
        parents=[common],
        help="apply ops all or nothing (JSON file, or - for stdin)",
        description='Ops as JSON: {"ops": [{"op": "put", "key": "a", "value": "text"}, '
        '{"op": "put", "key": "b", "value_b64": "AAE="}, {"op": "delete", "key": "c", '
        '"if_version": 3}]}. "value" is UTF-8 text; "value_b64" is base64 for binary values.',
    )
    p.add_argument("file", help="the JSON ops; - reads them from stdin")
    p.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    p.set_defaults(func=_command(_txn))


def _add_status(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", parents=[common], help="the replica's role, seq, lag, followers")
    p.add_argument("--json", action="store_true", help="print the server's JSON")
    p.set_defaults(func=_command(_status))
