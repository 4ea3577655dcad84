"""The client commands: `kvstore get | put | delete | list | watch | txn | status`.

Each command talks to one server (`kvstore.cli.connection`: `--url`, `$KV_URL`, the local
cluster, the default; `--token` or `$KV_AUTH_TOKEN`). Failures print one line on stderr and
exit with a documented code (see `exit_code`); `--retry`/`--wait` try again while the server
says "not now" (`kvstore.cli.retry`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from kvstore.cli.connection import add_connection_arguments, add_retry_arguments, client_for
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
from kvstore.cli.retry import RetryPolicy, is_unknown_outcome, with_retries
from kvstore.cli.tables import format_pairs, format_table, human_size
from kvstore.client import (
    ClientError,
    DeleteResult,
    Event,
    InvalidRequest,
    Item,
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
    WriteResult,
)

PAGE_SIZE = 1000  # the server's largest page
TXN_FIELDS = {"op", "key", "value", "value_text", "if_version"}
UNKNOWN_OUTCOME_HINT = (
    "not retried: the write may or may not have been applied; read the key (kvstore get "
    "--manager) to find out before writing again"
)

Action = Callable[[KVClient, argparse.Namespace], Awaitable[int]]
T = TypeVar("T")


def exit_code(exc: ClientError) -> int:
    """3 not found; 4 a condition did not hold (If-Match, If-None-Match, ack, min_seq);
    5 the write may or may not have been applied (unknown_outcome);
    2 the request cannot be taken as written (bad key, too large, no or wrong token);
    1 anything else (unreachable, unavailable, server error)."""
    if isinstance(exc, UnknownOutcome) or is_unknown_outcome(exc):
        return EXIT_UNKNOWN
    if isinstance(exc, KeyNotFound):
        return EXIT_NOT_FOUND
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
            code = _fail(args, str(exc), exit_code(exc))
            if is_unknown_outcome(exc):
                print(f"kvstore {args.command}: {UNKNOWN_OUTCOME_HINT}", file=sys.stderr)
            return code
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


def policy_of(args: argparse.Namespace) -> RetryPolicy:
    return RetryPolicy(getattr(args, "retry", None), getattr(args, "retry_wait", None))


async def _try(
    args: argparse.Namespace, call: Callable[[], Awaitable[T]], *, write: bool = False
) -> T:
    """One request under the line's --retry / --wait."""
    prefix = f"kvstore {args.command}: "
    return await with_retries(
        call, policy_of(args), write=write, say=lambda line: print(prefix + line, file=sys.stderr)
    )


# --- what answered: --json and -v --------------------------------------------------------------
def item_json(item: Item) -> dict[str, Any]:
    """`get --json`: the value as base64 (as in the HTTP API), and who answered how fresh."""
    out: dict[str, Any] = {
        "key": item.key,
        "value": base64.b64encode(item.value).decode("ascii"),
        "version": item.version,
        "seq": item.seq,
        "served_by": item.served_by,
    }
    return out | _staleness(item.manager_seq, item.lag_seconds)


def _staleness(manager_seq: int | None, lag_seconds: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if manager_seq is not None:
        out["manager_seq"] = manager_seq
    if lag_seconds is not None:
        out["lag_seconds"] = lag_seconds
    return out


def write_json(res: WriteResult) -> dict[str, Any]:
    return {
        "key": res.key,
        "version": res.version,
        "seq": res.seq,
        "created": res.created,
        "served_by": res.served_by,
    }


def delete_json(res: DeleteResult) -> dict[str, Any]:
    return {"key": res.key, "seq": res.seq, "served_by": res.served_by}


def served_line(doc: Mapping[str, Any]) -> str:
    """`-v`'s line: `served by kv-1: version 3, seq 42; manager seq 45, lag 0.8 s`."""
    parts = [f"version {doc['version']}"] if "version" in doc else []
    parts.append(f"seq {doc['seq']}")
    line = f"served by {doc['served_by'] or 'an unnamed server'}: {', '.join(parts)}"
    if "manager_seq" in doc or "lag_seconds" in doc:
        behind = doc.get("manager_seq", doc["seq"]) - doc["seq"]
        lag = doc.get("lag_seconds")
        line += f"; manager seq {doc.get('manager_seq', '?')} ({behind} behind)"
        line += f", lag {_seconds(lag)}"
    return line


def _report(args: argparse.Namespace, doc: dict[str, Any], text: str | None) -> None:
    """--json: the document on stdout; else `text` (if any); -v: one line on stderr."""
    if args.verbose:
        print(f"kvstore {args.command}: {served_line(doc)}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(doc))
    elif text is not None:
        print(text)


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
        *([("version", str(st["version"]))] if "version" in st else []),
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
    """`{"ops": [...]}` (the HTTP API's body) or a bare list. Each op: `{"op": "put", "key": K,
    "value": "<base64>"}`, as in the HTTP API, or `"value_text": "text"` for UTF-8 text;
    `{"op": "delete", "key": K}`; either may add `"if_version": N`."""
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
    if "value_b64" in op:
        raise UsageError(
            f"{where}: 'value_b64' is not a field: 'value' is base64 (as in the HTTP API), "
            "'value_text' is text"
        )
    unknown = set(op) - TXN_FIELDS
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    key, if_version = op.get("key"), op.get("if_version")
    if not isinstance(key, str):
        raise UsageError(f"{where}: 'key' must be a string")
    if if_version is not None and (not isinstance(if_version, int) or isinstance(if_version, bool)):
        raise UsageError(f"{where}: 'if_version' must be an integer")
    if op["op"] == "delete":
        if "value" in op or "value_text" in op:
            raise UsageError(f"{where}: a delete takes no value")
        return TxnOp.delete(key, if_version)
    return TxnOp.put(key, _txn_value(where, op), if_version)


def _txn_value(where: str, op: dict[str, Any]) -> bytes:
    if "value" in op and "value_text" in op:
        raise UsageError(f"{where}: give 'value' (base64) or 'value_text' (text), not both")
    if "value_text" in op:
        if not isinstance(op["value_text"], str):
            raise UsageError(f"{where}: 'value_text' must be a string")
        try:
            return str(op["value_text"]).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UsageError(f"{where}: 'value_text' is not valid Unicode text") from exc
    if "value" not in op:
        raise UsageError(f"{where}: a put needs 'value' (base64) or 'value_text' (text)")
    if not isinstance(op["value"], str):
        raise UsageError(f"{where}: 'value' must be a base64 string")
    try:
        return base64.b64decode(op["value"], validate=True)
    except ValueError as exc:
        raise UsageError(
            f"{where}: 'value' is not base64 (as in the HTTP API, 'value' holds base64; give "
            "text as 'value_text')"
        ) from exc


# --- commands ------------------------------------------------------------------------------
def _write_out(data: bytes) -> None:
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


async def _get(kv: KVClient, args: argparse.Namespace) -> int:
    consistency: Literal["manager"] | None = "manager" if args.manager else None
    item = await _try(
        args,
        lambda: kv.get(
            args.key, min_seq=args.min_seq, timeout=args.timeout, consistency=consistency
        ),
    )
    doc = item_json(item)
    if args.verbose:
        print(f"kvstore get: {served_line(doc)}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps(doc))
        return EXIT_OK
    newline = sys.stdout.isatty() and not item.value.endswith(b"\n")
    _write_out(item.value + (b"\n" if newline else b""))
    return EXIT_OK


async def _put(kv: KVClient, args: argparse.Namespace) -> int:
    value = sys.stdin.buffer.read() if args.value == "-" else os.fsencode(args.value)
    res = await _try(
        args,
        lambda: kv.put(
            args.key,
            value,
            if_match=args.if_match,
            if_none_match=args.if_none_match,
            ack=args.ack,
            timeout=args.timeout,
        ),
        write=True,
    )
    created = ", created" if res.created else ""
    _report(args, write_json(res), f"{res.key}: version {res.version}, seq {res.seq}{created}")
    return EXIT_OK


async def _delete(kv: KVClient, args: argparse.Namespace) -> int:
    res = await _try(args, lambda: kv.delete(args.key, if_match=args.if_match), write=True)
    _report(args, delete_json(res), f"{res.key}: deleted, seq {res.seq}")
    return EXIT_OK


async def _list(kv: KVClient, args: argparse.Namespace) -> int:
    items: list[ListItem] = []
    more: str | None = None
    start_after = args.start_after
    while args.limit is None or len(items) < args.limit:
        want = PAGE_SIZE if args.limit is None else min(PAGE_SIZE, args.limit - len(items))
        page = await _try(
            args, functools.partial(kv.list, args.prefix, start_after=start_after, limit=want)
        )
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
    res = await _try(args, lambda: kv.txn(ops), write=True)
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
    st = await _try(args, kv.status)
    print(json.dumps(st, indent=2) if args.json else format_status(st))
    return EXIT_OK


# --- registration --------------------------------------------------------------------------
def _version(text: str) -> int:
    value = int(text.strip('"'))
    if value < 1:
        raise ValueError(text)
    return value


_version.__name__ = "version"  # argparse says "invalid version value: 'x'"

EXIT_CODES = """\
exit codes: 0 done; 1 failed (unreachable, unavailable, unknown outcome); 2 usage (bad key,
too large, no or wrong token); 3 key not found; 4 a condition did not hold (--if-match,
--if-none-match, --ack, --min-seq)."""

GET_EXAMPLES = """\
The value is written to stdout as raw bytes (a newline is added only on a terminal).
With --json: {"key", "value" (base64), "version", "seq", "served_by"} and, from a follower,
"manager_seq" and "lag_seconds": how far behind the manager this answer may be.

examples:
  kvstore get greeting
  kvstore get greeting -v                  # stderr: served by kv-1: version 2, seq 41; ...
  kvstore get greeting --json
  kvstore get greeting --min-seq 41 --timeout 2 --url http://127.0.0.3:8080
  kvstore get greeting --manager           # the manager's answer, never stale
  kvstore get config.bin > config.bin
  kvstore get greeting --retry 5           # wait out a replica that is not ready yet
"""

PUT_EXAMPLES = """\
Writes go to the manager (a follower forwards them). The answer: key, version, seq.
With --json: {"key", "version", "seq", "created", "served_by"}.

examples:
  kvstore put greeting hello
  kvstore put config.bin - < config.bin    # the value from stdin, bytes as they are
  kvstore put greeting hi --if-match 3     # only if the key is at version 3
  kvstore put lock me --if-none-match      # only if the key does not exist
  kvstore put greeting hi --ack 2 --timeout 5   # answer once 2 followers applied it
  kvstore put greeting hi --retry 10 --wait 30  # ride out a manager restart
"""

DELETE_EXAMPLES = """\
With --json: {"key", "seq", "served_by"}.

examples:
  kvstore delete greeting
  kvstore delete greeting --if-match 4 --json
"""

LIST_EXAMPLES = """\
examples:
  kvstore list
  kvstore list --prefix users/ --limit 20
  kvstore list --prefix users/ --start-after users/bob --json
"""

WATCH_EXAMPLES = """\
Prints one line per change, live, until interrupted:
  42 put users/bob = "hello" (version 3)
  43 delete users/bob

examples:
  kvstore watch
  kvstore watch --prefix users/ --since 40
  kvstore watch --json | jq .key
"""

TXN_EXAMPLES = """\
The ops are JSON, the same body as the HTTP API's POST /v1/txn:
  {"ops": [{"op": "put", "key": "a", "value_text": "hello"},
           {"op": "put", "key": "b", "value": "AAE="},
           {"op": "delete", "key": "c", "if_version": 3}]}
"value" is base64 (any bytes) and "value_text" is UTF-8 text; a put takes exactly one of
them. "if_version": the op (and so the whole txn) applies only if the key is at that version.
All ops commit together or none does.

examples:
  kvstore txn ops.json
  echo '[{"op": "put", "key": "a", "value_text": "1"}]' | kvstore txn -
  kvstore txn ops.json --json
"""

STATUS_EXAMPLES = """\
examples:
  kvstore status                               # the manager (or --url's pod)
  kvstore status --url http://127.0.0.3:8080   # a follower: its lag and its manager
  kvstore status --json | jq .applied_seq
"""


def _parser(
    sub: Sub, name: str, common: argparse.ArgumentParser, help_text: str, epilog: str
) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        parents=[common],
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=epilog + "\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _add_output(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as one JSON object")
    p.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also print on stderr which pod answered, the version and seq and, from a "
        "follower, the manager's seq and the lag",
    )


def register(sub: Sub) -> None:
    common = argparse.ArgumentParser(add_help=False)
    add_connection_arguments(common)
    add_retry_arguments(common)
    for add in (_add_get, _add_put, _add_delete, _add_list, _add_watch, _add_txn, _add_status):
        add(sub, common)


def _add_get(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = _parser(sub, "get", common, "print a key's value (raw bytes)", GET_EXAMPLES)
    p.add_argument("key", help="the key (any UTF-8 without control characters)")
    p.add_argument(
        "--min-seq",
        type=int,
        metavar="SEQ",
        help="wait until the answering replica applied SEQ (read your own write: pass the seq "
        "`put` printed)",
    )
    p.add_argument(
        "--timeout", type=float, metavar="S", help="seconds to wait for --min-seq (default 5)"
    )
    p.add_argument("--manager", action="store_true", help="have the manager answer (never stale)")
    _add_output(p, "the value (base64) with its version, seq and the pod that answered")
    p.set_defaults(func=_command(_get))


def _add_put(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = _parser(sub, "put", common, "set a key's value", PUT_EXAMPLES)
    p.add_argument("key", help="the key (any UTF-8 without control characters)")
    p.add_argument("value", help="the value; - reads it from stdin (bytes as they are)")
    p.add_argument(
        "--if-match",
        type=_version,
        metavar="VERSION",
        help="only if the key is at VERSION (else exit 4, nothing written)",
    )
    p.add_argument(
        "--if-none-match",
        action="store_true",
        help="only if the key does not exist (else exit 4, nothing written)",
    )
    p.add_argument(
        "--ack",
        type=int,
        metavar="N",
        help="answer only once N followers applied the write (exit 4 if not within --timeout; "
        "the write stays committed)",
    )
    p.add_argument(
        "--timeout", type=float, metavar="S", help="seconds to wait for --ack (default 5)"
    )
    _add_output(p, "the result")
    p.set_defaults(func=_command(_put))


def _add_delete(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = _parser(sub, "delete", common, "delete a key", DELETE_EXAMPLES)
    p.add_argument("key", help="the key")
    p.add_argument(
        "--if-match",
        type=_version,
        metavar="VERSION",
        help="only if the key is at VERSION (else exit 4, nothing deleted)",
    )
    _add_output(p, "the result")
    p.set_defaults(func=_command(_delete))


def _add_list(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = _parser(sub, "list", common, "list keys in order (a table)", LIST_EXAMPLES)
    p.add_argument("--prefix", default="", help="only keys starting with this")
    p.add_argument("--start-after", metavar="KEY", help="begin after this key")
    p.add_argument("--limit", type=int, metavar="N", help="show at most N keys (default: all)")
    p.add_argument("--json", action="store_true", help='print {"items": [...], "next": ...}')
    p.set_defaults(func=_command(_list))


def _add_watch(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = _parser(sub, "watch", common, "print a line per change, live", WATCH_EXAMPLES)
    p.add_argument("--prefix", default="", help="only keys starting with this")
    p.add_argument(
        "--since",
        type=int,
        metavar="SEQ",
        help="first replay the changes after SEQ (default: only new ones)",
    )
    p.add_argument("--json", action="store_true", help="print each change as JSON (value base64)")
    p.set_defaults(func=_command(_watch))


def _add_txn(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = _parser(sub, "txn", common, "apply several puts and deletes all or nothing", TXN_EXAMPLES)
    p.add_argument("file", help="the JSON ops; - reads them from stdin")
    p.add_argument("--json", action="store_true", help="print the server's answer as JSON")
    p.set_defaults(func=_command(_txn))


def _add_status(sub: Sub, common: argparse.ArgumentParser) -> None:
    p = _parser(
        sub, "status", common, "a pod's role, version, seqs, lag and followers", STATUS_EXAMPLES
    )
    p.add_argument("--json", action="store_true", help="print the server's JSON")
    p.set_defaults(func=_command(_status))
