"""The client commands: formatting and input parsing, then each command against a real server,
in-process through `kvstore.cli.main` and as a real `kvstore` process for exit codes."""

from __future__ import annotations

import io
import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kvstore.cli import exits
from kvstore.cli import main as cli
from kvstore.cli.connection import DEFAULT_URL, resolve_url
from kvstore.cli.exits import UsageError
from kvstore.cli.kv import (
    exit_code,
    format_event,
    format_items,
    format_status,
    format_txn_result,
    parse_txn,
    preview,
)
from kvstore.cli.tables import format_table, human_size
from kvstore.client import (
    ConnectionFailed,
    Event,
    InvalidKey,
    KeyNotFound,
    ListItem,
    PreconditionFailed,
    Status,
    TooLarge,
    TxnOp,
    Unavailable,
    UnknownOutcome,
    WaitTimeout,
    error_for,
)
from tests.test_client import Server, free_port, running_server

Capture = pytest.CaptureFixture[bytes]
KVSTORE = [sys.executable, "-m", "kvstore"]
DOCS_CLI = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


# --- pure parts --------------------------------------------------------------------------------
def test_resolve_url_order(tmp_path: Path) -> None:
    (tmp_path / ".kvstore").mkdir()
    (tmp_path / ".kvstore" / "cluster.json").write_text('{"url": "http://127.0.0.9:7000"}')
    env = {"KV_URL": "http://env:1"}
    assert resolve_url("http://flag:1", env, tmp_path) == "http://flag:1"
    assert resolve_url(None, env, tmp_path) == "http://env:1"
    assert resolve_url(None, {}, tmp_path) == "http://127.0.0.9:7000"
    assert resolve_url(None, {}, tmp_path / "elsewhere") == DEFAULT_URL
    (tmp_path / ".kvstore" / "cluster.json").write_text("not json")
    assert resolve_url(None, {}, tmp_path) == DEFAULT_URL


def test_human_size() -> None:
    assert [human_size(n) for n in (0, 1023, 1024, 1536, 2 * 1024**2, 5 * 1024**4)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "1.5 KiB",
        "2.0 MiB",
        "5.0 TiB",
    ]


def test_list_table_reads_at_a_glance() -> None:
    items = [ListItem("a", 1, 7, 1), ListItem("users/bob", 12, 1042, 2048)]
    assert format_items(items).splitlines() == [
        "KEY        VERSION   SEQ     SIZE",
        "a                1     7      1 B",
        "users/bob       12  1042  2.0 KiB",
    ]
    assert format_table(["A", "B"], []) == "A  B"


def test_preview_and_event_lines() -> None:
    assert preview(b"hello") == '"hello"'
    assert preview(b"\x00\xff") == "<2 B binary>"
    assert preview(b"x" * 100, limit=3) == '"xxx…" (100 B)'
    assert format_event(Event(5, "put", "a", 2, b"hi")) == '5 put a = "hi" (version 2)'
    assert format_event(Event(6, "delete", "a", 0, None)) == "6 delete a"


def _status(role: str) -> Status:
    return {
        "pod": "kv-1" if role == "follower" else "kv-0",
        "ordinal": 1 if role == "follower" else 0,
        "role": role,
        "epoch": "e1",
        "applied_seq": 40,
        "ready": True,
        "manager": {"url": "http://kv-0:8080", "seq": 42, "connected": True},
        "lag": {"entries": 2, "seconds": 0.5},
        "keys": 3,
        "digest": "ab12",
    }


def test_status_tables() -> None:
    follower = format_status(_status("follower")).splitlines()
    assert follower[0] == "pod          kv-1 (ordinal 1, follower)"
    assert "manager      http://kv-0:8080 at seq 42, connected" in follower
    assert "lag          2 entries, 0.5 s" in follower
    manager = _status("manager")
    manager["followers"] = [
        {"pod": "kv-1", "acked_seq": 40, "lag_entries": 2, "since": 1000.0},
        {"pod": "kv-2", "acked_seq": 9, "lag_entries": 33, "since": 10.0},
    ]
    text = format_status(manager, now=1012.5)
    assert "manager  " not in text
    assert text.splitlines()[-3:] == [
        "FOLLOWER  ACKED SEQ  LAG  SINCE",
        "kv-1             40    2  12s ago",
        "kv-2              9   33  16m ago",
    ]


def test_txn_result_lines() -> None:
    put = {"op": "put", "key": "a", "version": 1, "seq": 7, "created": True}
    assert format_txn_result(put) == "put a: version 1, seq 7, created"
    assert format_txn_result({"op": "delete", "key": "b", "seq": 8, "deleted": True}) == (
        "delete b: seq 8"
    )
    absent = {"op": "delete", "key": "c", "deleted": False}
    assert format_txn_result(absent) == "delete c: absent, no change"


def test_parse_txn_takes_text_or_base64_values() -> None:
    text = json.dumps(
        {
            "ops": [
                {"op": "put", "key": "a", "value": "héllo"},
                {"op": "put", "key": "b", "value_b64": "AAE=", "if_version": 2},
                {"op": "delete", "key": "c"},
            ]
        }
    )
    assert parse_txn(text) == [
        TxnOp.put("a", "héllo".encode()),
        TxnOp.put("b", b"\x00\x01", 2),
        TxnOp.delete("c"),
    ]
    assert parse_txn('[{"op": "delete", "key": "x"}]') == [TxnOp.delete("x")]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{", "not JSON"),
        ('{"ops": []}', "non-empty list"),
        ('[{"op": "get", "key": "a"}]', "op 0"),
        ('[{"op": "put", "key": 1, "value": "x"}]', "'key' must be a string"),
        ('[{"op": "put", "key": "a"}]', "'value' (text) or 'value_b64'"),
        ('[{"op": "put", "key": "a", "value_b64": "!!"}]', "not base64"),
        ('[{"op": "delete", "key": "a", "if_version": "2"}]', "'if_version' must be an integer"),
    ],
)
def test_parse_txn_rejects_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(UsageError, match=re.escape(reason)):
        parse_txn(text)


def test_exit_codes_follow_the_documented_table() -> None:
    assert exit_code(KeyNotFound(404, "not_found", "x")) == exits.EXIT_NOT_FOUND
    assert exit_code(PreconditionFailed(412, "precondition_failed", "x")) == exits.EXIT_CONDITION
    assert exit_code(WaitTimeout(504, "timeout", "x")) == exits.EXIT_CONDITION
    unknown = error_for(504, b'{"error":{"code":"unknown_outcome","message":"may have been"}}')
    assert isinstance(unknown, UnknownOutcome) and exit_code(unknown) == exits.EXIT_UNKNOWN == 5
    assert "| 5 | unknown outcome (504 `unknown_outcome`)" in DOCS_CLI.read_text()
    assert exit_code(InvalidKey(400, "invalid_key", "x")) == exits.EXIT_USAGE
    assert exit_code(TooLarge(413, "too_large", "x")) == exits.EXIT_USAGE
    assert exit_code(Unavailable(503, "not_ready", "x")) == exits.EXIT_FAILED
    assert exit_code(ConnectionFailed("x")) == exits.EXIT_FAILED


# --- against the real server -------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("kv")) as srv:
        yield srv


@pytest.fixture(autouse=True)
def _no_kv_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KV_URL", "KV_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def kv(capfdbinary: Capture, server: Server, *argv: str) -> tuple[int, bytes, str]:
    """Run `kvstore ARGV --url URL` in this process: (exit code, stdout bytes, stderr text)."""
    code = cli.main([*argv, "--url", server.url])
    out, err = capfdbinary.readouterr()
    return code, out, err.decode()


def test_put_then_get_prints_the_value(capfdbinary: Capture, server: Server) -> None:
    code, out, _ = kv(capfdbinary, server, "put", "a", "1")
    assert code == 0 and out.startswith(b"a: version 1, seq ") and out.endswith(b", created\n")
    assert kv(capfdbinary, server, "get", "a") == (0, b"1", "")


def test_put_from_stdin_keeps_bytes(
    capfdbinary: Capture, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = bytes(range(256)) * 4
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(value)))
    assert kv(capfdbinary, server, "put", "bin", "-")[0] == 0
    assert kv(capfdbinary, server, "get", "bin") == (0, value, "")


def test_list_table_and_json(capfdbinary: Capture, server: Server) -> None:
    for key, value in (("ls/b", "22"), ("ls/a", "1"), ("ls/c", "333")):
        kv(capfdbinary, server, "put", key, value)
    code, out, _ = kv(capfdbinary, server, "list", "--prefix", "ls/")
    lines = out.decode().splitlines()
    assert code == 0 and lines[0].split() == ["KEY", "VERSION", "SEQ", "SIZE"]
    assert [line.split()[0] for line in lines[1:]] == ["ls/a", "ls/b", "ls/c"]
    assert lines[3].split()[-2:] == ["3", "B"]
    code, out, _ = kv(capfdbinary, server, "list", "--prefix", "ls/", "--limit", "2", "--json")
    doc = json.loads(out)
    assert [i["key"] for i in doc["items"]] == ["ls/a", "ls/b"] and doc["next"] == "ls/b"
    assert doc["items"][0]["version"] == 1 and doc["items"][0]["size"] == 1


def test_delete_then_get_is_not_found(capfdbinary: Capture, server: Server) -> None:
    kv(capfdbinary, server, "put", "gone", "x")
    code, out, _ = kv(capfdbinary, server, "delete", "gone")
    assert code == 0 and out.startswith(b"gone: deleted, seq ")
    code, out, err = kv(capfdbinary, server, "get", "gone")
    assert (code, out) == (exits.EXIT_NOT_FOUND, b"")
    assert err.startswith("kvstore get: ") and "404 not_found" in err and err.count("\n") == 1
    assert kv(capfdbinary, server, "delete", "gone")[0] == exits.EXIT_NOT_FOUND


def test_conditions_exit_4(capfdbinary: Capture, server: Server) -> None:
    assert kv(capfdbinary, server, "put", "cond", "v1", "--if-none-match")[0] == 0
    code, _, err = kv(capfdbinary, server, "put", "cond", "v2", "--if-none-match")
    assert code == exits.EXIT_CONDITION and "412 precondition_failed" in err
    code, _, err = kv(capfdbinary, server, "put", "cond", "v2", "--if-match", "7")
    assert code == exits.EXIT_CONDITION and "412" in err
    assert kv(capfdbinary, server, "put", "cond", "v2", "--if-match", "1")[0] == 0
    assert kv(capfdbinary, server, "delete", "cond", "--if-match", "1")[0] == exits.EXIT_CONDITION
    assert kv(capfdbinary, server, "get", "cond")[1] == b"v2"


def test_bad_key_and_large_value_exit_2(
    capfdbinary: Capture, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = kv(capfdbinary, server, "put", "bad\x01key", "x")
    assert code == exits.EXIT_USAGE and "400 invalid_key" in err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"x" * (2 * 1024 * 1024))))
    code, _, err = kv(capfdbinary, server, "put", "big", "-")
    assert code == exits.EXIT_USAGE and "413 too_large" in err


def test_txn_from_stdin(
    capfdbinary: Capture, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    ops = {"ops": [{"op": "put", "key": "tx/a", "value": "A"}, {"op": "delete", "key": "tx/z"}]}
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(ops)))
    code, out, _ = kv(capfdbinary, server, "txn", "-")
    assert code == 0 and out.startswith(b"committed 2 ops, seq ")
    put_line, delete_line = out.decode().splitlines()[1:]
    assert put_line.startswith("  put tx/a: version 1, seq ") and put_line.endswith(", created")
    assert delete_line == "  delete tx/z: absent, no change"
    assert kv(capfdbinary, server, "get", "tx/a")[1] == b"A"
    bad = {"ops": [{"op": "put", "key": "tx/b", "value": "B"}, {"op": "put", "key": "tx/a",
           "value": "A2", "if_version": 5}]}  # fmt: skip
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(bad)))
    assert kv(capfdbinary, server, "txn", "-")[0] == exits.EXIT_CONDITION
    assert kv(capfdbinary, server, "get", "tx/b")[0] == exits.EXIT_NOT_FOUND


def test_txn_file_problems_exit_2(capfdbinary: Capture, server: Server, tmp_path: Path) -> None:
    code, _, err = kv(capfdbinary, server, "txn", str(tmp_path / "missing.json"))
    assert code == exits.EXIT_USAGE and "cannot read" in err
    (tmp_path / "ops.json").write_text('[{"op": "put", "key": "a"}]')
    assert kv(capfdbinary, server, "txn", str(tmp_path / "ops.json"))[0] == exits.EXIT_USAGE


def test_status_table_and_json(capfdbinary: Capture, server: Server) -> None:
    code, out, _ = kv(capfdbinary, server, "status")
    assert code == 0 and out.decode().splitlines()[0].split() == [
        "pod",
        "kv-0",
        "(ordinal",
        "0,",
        "manager)",
    ]
    doc = json.loads(kv(capfdbinary, server, "status", "--json")[1])
    assert doc["role"] == "manager" and doc["pod"] == "kv-0"


def test_watch_prints_a_line_per_change(capfdbinary: Capture, server: Server) -> None:
    start = json.loads(kv(capfdbinary, server, "status", "--json")[1])["applied_seq"]
    kv(capfdbinary, server, "put", "wt/a", "1")
    kv(capfdbinary, server, "delete", "wt/a")
    watcher = subprocess.Popen(
        [*KVSTORE, "watch", "--url", server.url, "--prefix", "wt/", "--since", str(start)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        lines = read_lines(watcher, 2)
    finally:
        watcher.terminate()
        watcher.communicate(timeout=10)
    assert lines == [f'{start + 1} put wt/a = "1" (version 1)', f"{start + 2} delete wt/a"]


def read_lines(proc: subprocess.Popen[bytes], count: int, deadline: float = 20.0) -> list[str]:
    """The first `count` lines a process prints, waiting at most `deadline` seconds."""
    assert proc.stdout is not None
    fd, buf, end = proc.stdout.fileno(), b"", time.monotonic() + deadline
    while buf.count(b"\n") < count:
        ready, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        chunk = os.read(fd, 65536) if ready else b""
        if not chunk:
            raise AssertionError(f"wanted {count} lines, got {buf!r} (exit {proc.poll()})")
        buf += chunk
    return buf.decode().splitlines()[:count]


def test_the_real_command_exit_codes_and_no_traceback(server: Server, tmp_path: Path) -> None:
    def run(*argv: str) -> subprocess.CompletedProcess[bytes]:
        cmd = [*KVSTORE, *argv]
        return subprocess.run(cmd, capture_output=True, cwd=tmp_path, timeout=60, check=False)

    (tmp_path / ".kvstore").mkdir()
    (tmp_path / ".kvstore" / "cluster.json").write_text(json.dumps({"url": server.url}))
    assert run("put", "real", "1").returncode == 0  # the URL of the local cluster file
    got = run("get", "real")
    assert (got.returncode, got.stdout) == (0, b"1")
    missing = run("get", "no-such-key")
    assert missing.returncode == exits.EXIT_NOT_FOUND and b"Traceback" not in missing.stderr
    nobody = f"http://127.0.0.1:{free_port()}"
    down = run("get", "a", "--url", nobody)
    assert down.returncode == exits.EXIT_FAILED
    assert down.stderr.decode() == f"kvstore get: cannot reach {nobody}: connection refused\n"
    assert run("put", "a", "1", "--if-match", "x").returncode == exits.EXIT_USAGE
