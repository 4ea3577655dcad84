"""The CLI's global flags wherever they stand, --retry/--wait against a stand-in pod, --json and
-v on get/put/delete, the txn value forms (CLI and API), completion, and the version on every
answer."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from kvstore import __version__
from kvstore.cli import exits
from kvstore.cli import main as cli
from kvstore.cli.connection import connection_of, token_of
from kvstore.cli.exits import UsageError
from kvstore.cli.kv import parse_txn, served_line
from kvstore.cli.retry import RetryPolicy, retryable, with_retries
from kvstore.client import ClientError, ConnectionFailed, TxnOp, Unavailable, error_for
from tests.test_client import Server, running_server

Capture = pytest.CaptureFixture[bytes]
KVSTORE = [sys.executable, "-m", "kvstore"]


@pytest.fixture(autouse=True)
def _no_kv_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KV_URL", "KV_AUTH_TOKEN"):
        monkeypatch.delenv(name, raising=False)


# --- the global flags --------------------------------------------------------------------------
# Every command that takes a token, with the arguments it needs to parse.
TOKEN_COMMANDS = [
    ["get", "a"],
    ["put", "a", "1"],
    ["delete", "a"],
    ["list"],
    ["watch"],
    ["txn", "-"],
    ["status"],
    ["backup", "--out", "x.db"],
    ["bench"],
    ["chaos"],
    ["local", "status"],
]


@pytest.mark.parametrize("argv", TOKEN_COMMANDS, ids=" ".join)
def test_the_token_reaches_every_command_before_or_after_its_name(argv: list[str]) -> None:
    before = cli.build_parser(argv).parse_args(["--token", "T1", *argv])
    assert token_of(before, env={}) == "T1"
    after = cli.build_parser(argv).parse_args([*argv, "--token", "T2"])
    assert token_of(after, env={}) == "T2"
    assert token_of(cli.build_parser(argv).parse_args(argv), env={"KV_AUTH_TOKEN": "E"}) == "E"
    assert cli.flags_refused(before) is None


@pytest.mark.parametrize("argv", [c for c in TOKEN_COMMANDS if c[0] not in ("chaos", "local")])
def test_the_url_reaches_every_client_command(argv: list[str]) -> None:
    args = cli.build_parser(argv).parse_args(["--url", "http://u:1", *argv])
    assert connection_of(args, env={}).url == "http://u:1"
    assert cli.flags_refused(args) is None


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--url", "http://x:1", "chaos"], "--url"),
        (["chaos", "--retry", "2"], None),  # not an option of chaos: argparse refuses it
        (["--url", "http://x:1", "local", "status"], "--url"),
        (["--wait", "3", "local", "status"], "--wait"),
        (["--token", "t", "serve"], "--token"),
        (["--url", "http://x:1", "completion", "bash"], "--url"),
        (["--retry", "2", "watch"], "--retry"),
        (["--retry", "2", "backup", "--out", "x"], "--retry"),
    ],
)
def test_a_flag_a_command_does_not_take_is_refused(
    argv: list[str], flag: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    with contextlib.suppress(SystemExit):
        assert cli.main(argv) == exits.EXIT_USAGE
    err = capsys.readouterr().err
    if flag is None:
        assert "unrecognized arguments: --retry" in err
    else:
        assert f"{flag} does not apply to this command" in err


def test_a_token_before_the_command_reaches_the_server(tmp_path: Path) -> None:
    with running_server(tmp_path, {"KV_AUTH_TOKEN": "sekret"}) as srv:
        base = [*KVSTORE, "--url", srv.url]
        without = subprocess.run([*base, "put", "a", "1"], capture_output=True, timeout=60)
        assert without.returncode == exits.EXIT_USAGE and b"401" in without.stderr
        for argv in (
            [*base, "--token", "sekret", "put", "a", "1"],
            [*KVSTORE, "put", "a", "2", "--url", srv.url, "--token", "sekret"],
        ):
            assert subprocess.run(argv, capture_output=True, timeout=60).returncode == 0
        got = subprocess.run(
            [*base, "--token", "sekret", "get", "a"], capture_output=True, timeout=60
        )
        assert (got.returncode, got.stdout) == (0, b"2")


# --- --retry and --wait: the policy ------------------------------------------------------------
def _unavailable(retry_after: str | None = "2") -> ClientError:
    body = b'{"error": {"code": "no_manager", "message": "the manager is unreachable"}}'
    return error_for(503, body, retry_after)


def _unknown() -> ClientError:
    body = b'{"error": {"code": "unknown_outcome", "message": "sent, no answer"}}'
    return error_for(504, body)


def test_an_error_code_the_client_has_no_class_for_keeps_its_code_and_message() -> None:
    exc = _unknown()
    assert (exc.status, exc.code, exc.message) == (504, "unknown_outcome", "sent, no answer")
    assert error_for(502, b"<html>bad gateway</html>").code == "http_502"


def test_what_is_retried() -> None:
    assert retryable(_unavailable(), write=True)
    assert retryable(error_for(507, b'{"error": {"code": "insufficient_storage"}}'), write=True)
    assert not retryable(_unknown(), write=True) and not retryable(_unknown(), write=False)
    assert retryable(ConnectionFailed("refused", sent=False), write=True)
    assert not retryable(ConnectionFailed("cut off"), write=True)
    assert retryable(ConnectionFailed("cut off"), write=False)
    assert not retryable(error_for(412, b""), write=True)
    assert not retryable(error_for(500, b""), write=False)


def _flaky(errors: list[ClientError]) -> tuple[Callable[[], asyncio.Future[str]], list[int]]:
    calls: list[int] = []

    def call() -> asyncio.Future[str]:
        calls.append(1)
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if len(calls) <= len(errors):
            fut.set_exception(errors[len(calls) - 1])
        else:
            fut.set_result("ok")
        return fut

    return call, calls


async def test_retries_wait_as_retry_after_says() -> None:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    said: list[str] = []
    call, calls = _flaky([_unavailable("2"), _unavailable(None), _unavailable(None)])
    got = await with_retries(call, RetryPolicy(retries=3), write=True, say=said.append, sleep=sleep)
    assert got == "ok" and len(calls) == 4
    assert slept == [2.0, 0.5, 1.0]  # Retry-After, then backoff from 0.25 s doubled per try
    assert said[0] == "the manager is unreachable (503 no_manager); try 2 of 4 in 2 s"


async def test_retries_stop_at_the_count_the_deadline_and_an_unknown_outcome() -> None:
    async def sleep(seconds: float) -> None:
        pass

    call, calls = _flaky([_unavailable("1")] * 5)
    with pytest.raises(Unavailable):
        await with_retries(call, RetryPolicy(retries=2), write=True, say=print, sleep=sleep)
    assert len(calls) == 3
    call, calls = _flaky([_unavailable("30")])
    with pytest.raises(Unavailable):  # Retry-After past --wait: give up at once
        await with_retries(call, RetryPolicy(within=5), write=True, say=print, sleep=sleep)
    assert len(calls) == 1
    call, calls = _flaky([_unknown()])
    with pytest.raises(ClientError, match="unknown_outcome"):
        await with_retries(call, RetryPolicy(retries=9), write=True, say=print, sleep=sleep)
    assert len(calls) == 1
    call, calls = _flaky([_unavailable("1")])
    with pytest.raises(Unavailable):  # no --retry, no --wait: one try
        await with_retries(call, RetryPolicy(), write=False, say=print, sleep=sleep)
    assert len(calls) == 1


# --- --retry against a stand-in pod ------------------------------------------------------------
@dataclass
class StandIn:
    """An aiohttp server in a thread of its own, answering each request from a script of
    (status, headers, body) replies; it records when each request came."""

    replies: list[tuple[int, dict[str, str], bytes]]
    url: str = ""
    seen: list[tuple[float, str, str]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((time.monotonic(), request.method, request.path))
        status, headers, body = self.replies[min(len(self.seen), len(self.replies)) - 1]
        return web.Response(status=status, headers=headers, body=body)


@contextlib.contextmanager
def stand_in(replies: list[tuple[int, dict[str, str], bytes]]) -> Iterator[StandIn]:
    pod = StandIn(replies)
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", pod.handle)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    pod.url = f"http://127.0.0.1:{port}"
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield pod
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.run_until_complete(runner.cleanup())
        loop.close()


NOT_READY = (
    503,
    {"Retry-After": "1", "Content-Type": "application/json"},
    b'{"error": {"code": "not_ready", "message": "this replica has no data yet"}}',
)
VALUE = (
    200,
    {
        "ETag": '"3"',
        "X-KV-Seq": "41",
        "X-KV-Served-By": "kv-1",
        "X-KV-Manager-Seq": "45",
        "X-KV-Lag-Seconds": "0.8",
    },
    b"hello",
)


def test_get_retry_waits_out_a_503_with_retry_after(capfdbinary: Capture) -> None:
    with stand_in([NOT_READY, VALUE]) as pod:
        code = cli.main(["get", "greeting", "--url", pod.url, "--retry", "3", "-v"])
        out, err = capfdbinary.readouterr()
    assert (code, out) == (0, b"hello")
    assert [path for _, _, path in pod.seen] == ["/v1/kv/greeting"] * 2
    assert pod.seen[1][0] - pod.seen[0][0] >= 1.0  # the Retry-After: 1 was waited out
    lines = err.decode().splitlines()
    assert lines[0] == (
        "kvstore get: this replica has no data yet (503 not_ready); try 2 of 4 in 1 s"
    )
    assert lines[1] == (
        "kvstore get: served by kv-1: version 3, seq 41; manager seq 45 (4 behind), lag 0.8 s"
    )


def test_without_retry_a_503_fails_at_once(capfdbinary: Capture) -> None:
    with stand_in([NOT_READY, VALUE]) as pod:
        code = cli.main(["get", "greeting", "--url", pod.url])
        _, err = capfdbinary.readouterr()
    assert code == exits.EXIT_FAILED and len(pod.seen) == 1
    assert err.decode() == "kvstore get: this replica has no data yet (503 not_ready)\n"


def test_a_put_with_an_unknown_outcome_is_never_sent_again(capfdbinary: Capture) -> None:
    unknown = (
        504,
        {"Content-Type": "application/json"},
        b'{"error": {"code": "unknown_outcome", "message": "the manager took the write and '
        b'did not answer: it may have been applied"}}',
    )
    written = (200, {"X-KV-Served-By": "kv-0"}, b'{"key": "a", "version": 1, "seq": 9}')
    with stand_in([unknown, written]) as pod:
        code = cli.main(["--retry", "5", "--wait", "30", "put", "a", "1", "--url", pod.url])
        _, err = capfdbinary.readouterr()
    assert code == exits.EXIT_UNKNOWN and [m for _, m, _ in pod.seen] == ["PUT"]
    assert "504 unknown_outcome" in err.decode() and "not retried" in err.decode()


def test_put_retry_then_json(capfdbinary: Capture) -> None:
    written = (201, {"X-KV-Served-By": "kv-0"}, b'{"key": "a", "version": 1, "seq": 9}')
    with stand_in([NOT_READY, written]) as pod:
        code = cli.main(["put", "a", "1", "--url", pod.url, "--wait", "10", "--json"])
        out, _ = capfdbinary.readouterr()
    assert code == 0 and len(pod.seen) == 2
    assert json.loads(out) == {
        "key": "a",
        "version": 1,
        "seq": 9,
        "created": True,
        "served_by": "kv-0",
    }


def test_get_json_from_a_follower_says_how_stale(capfdbinary: Capture) -> None:
    with stand_in([VALUE]) as pod:
        assert cli.main(["get", "greeting", "--url", pod.url, "--json"]) == 0
        out, err = capfdbinary.readouterr()
    assert err == b""
    assert json.loads(out) == {
        "key": "greeting",
        "value": base64.b64encode(b"hello").decode(),
        "version": 3,
        "seq": 41,
        "served_by": "kv-1",
        "manager_seq": 45,
        "lag_seconds": 0.8,
    }


def test_served_line_from_the_manager() -> None:
    doc = {"key": "a", "version": 2, "seq": 7, "served_by": "kv-0"}
    assert served_line(doc) == "served by kv-0: version 2, seq 7"
    assert served_line({"key": "a", "seq": 8, "served_by": "kv-0"}) == "served by kv-0: seq 8"


# --- against a real server: --json, -v, txn forms, the version ----------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("kv")) as srv:
        yield srv


def kv(capfdbinary: Capture, server: Server, *argv: str) -> tuple[int, bytes, str]:
    code = cli.main([*argv, "--url", server.url])
    out, err = capfdbinary.readouterr()
    return code, out, err.decode()


def test_put_get_delete_json_and_verbose(capfdbinary: Capture, server: Server) -> None:
    code, out, err = kv(capfdbinary, server, "put", "j/a", "v1", "--json", "-v")
    put = json.loads(out)
    assert code == 0 and put["key"] == "j/a" and put["version"] == 1 and put["created"] is True
    assert put["served_by"] == "kv-0" and isinstance(put["seq"], int)
    assert err == f"kvstore put: served by kv-0: version 1, seq {put['seq']}\n"
    code, out, err = kv(capfdbinary, server, "get", "j/a", "--json")
    got = json.loads(out)
    assert got == {
        "key": "j/a",
        "value": base64.b64encode(b"v1").decode(),
        "version": 1,
        "seq": got["seq"],
        "served_by": "kv-0",
    }
    assert got["seq"] >= put["seq"] and err == ""
    code, out, err = kv(capfdbinary, server, "get", "j/a", "-v")
    assert (code, out) == (0, b"v1") and err.startswith("kvstore get: served by kv-0: version 1")
    code, out, _ = kv(capfdbinary, server, "delete", "j/a", "--json")
    assert json.loads(out) == {"key": "j/a", "seq": put["seq"] + 1, "served_by": "kv-0"}


def test_txn_value_forms_in_the_cli() -> None:
    doc = {
        "ops": [
            {"op": "put", "key": "a", "value_text": "héllo"},
            {"op": "put", "key": "b", "value": "AAE=", "if_version": 2},
            {"op": "delete", "key": "c"},
        ]
    }
    assert parse_txn(json.dumps(doc)) == [
        TxnOp.put("a", "héllo".encode()),
        TxnOp.put("b", b"\x00\x01", 2),
        TxnOp.delete("c"),
    ]


@pytest.mark.parametrize(
    ("op", "reason"),
    [
        ({"op": "put", "key": "a", "value": "aGk=", "value_text": "hi"}, "not both"),
        ({"op": "put", "key": "a"}, "needs 'value' (base64) or 'value_text' (text)"),
        ({"op": "put", "key": "a", "value": "hello world"}, "'value' is not base64"),
        ({"op": "put", "key": "a", "value_b64": "aGk="}, "'value' is base64"),
        ({"op": "put", "key": "a", "value_text": 3}, "'value_text' must be a string"),
        ({"op": "delete", "key": "a", "value_text": "x"}, "a delete takes no value"),
        ({"op": "put", "key": "a", "value": "aGk=", "extra": 1}, "unknown field(s) extra"),
    ],
)
def test_txn_ambiguous_or_wrong_value_forms_fail_in_the_cli(
    op: dict[str, object], reason: str
) -> None:
    with pytest.raises(UsageError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        parse_txn(json.dumps({"ops": [op]}))


async def test_txn_value_forms_in_the_api(server: Server) -> None:
    async with aiohttp.ClientSession() as session:

        async def txn(*ops: dict[str, object]) -> tuple[int, dict[str, object]]:
            async with session.post(f"{server.url}/v1/txn", json={"ops": list(ops)}) as resp:
                return resp.status, await resp.json()

        status, _ = await txn(
            {"op": "put", "key": "api/t", "value_text": "héllo"},
            {"op": "put", "key": "api/b", "value": "AAE="},
        )
        assert status == 200
        async with session.get(f"{server.url}/v1/kv/api/t") as resp:
            assert await resp.read() == "héllo".encode()
        async with session.get(f"{server.url}/v1/kv/api/b") as resp:
            assert await resp.read() == b"\x00\x01"
        bad: list[tuple[dict[str, object], str]] = [
            ({"op": "put", "key": "api/x", "value": "aGk=", "value_text": "hi"}, "not both"),
            ({"op": "put", "key": "api/x"}, "needs value (base64) or value_text"),
            ({"op": "put", "key": "api/x", "value_text": 1}, "value_text: expected a string"),
            ({"op": "put", "key": "api/x", "value_text": "\ud800"}, "not valid Unicode"),
            ({"op": "delete", "key": "api/x", "value_text": "x"}, "a delete takes no value"),
        ]
        for op, words in bad:
            status, body = await txn(op)
            error = body["error"]
            assert status == 400 and isinstance(error, dict), body
            assert error["code"] == "invalid_request" and words in error["message"], body
        async with session.get(f"{server.url}/v1/kv/api/x") as resp:
            assert resp.status == 404


def test_a_txn_body_of_the_api_means_the_same_in_the_cli(
    capfdbinary: Capture, server: Server, tmp_path: Path
) -> None:
    body = {"ops": [{"op": "put", "key": "same/a", "value": base64.b64encode(b"\xff").decode()}]}
    (tmp_path / "ops.json").write_text(json.dumps(body))
    assert kv(capfdbinary, server, "txn", str(tmp_path / "ops.json"))[0] == 0
    assert kv(capfdbinary, server, "get", "same/a")[1] == b"\xff"  # not the base64 text


def test_kvstore_version() -> None:
    out = subprocess.run([*KVSTORE, "--version"], capture_output=True, text=True, timeout=60)
    assert out.stdout == f"kvstore {__version__}\n"


async def test_the_version_on_every_answer(server: Server) -> None:
    async with aiohttp.ClientSession() as session:
        for method, path in (
            ("GET", "/v1/status"),
            ("GET", "/v1/kv/no-such-key"),
            ("PUT", "/v1/kv/ver"),
            ("GET", "/metrics"),
            ("GET", "/readyz"),
            ("GET", "/"),
        ):
            async with session.request(method, server.url + path, data=b"x") as resp:
                assert resp.headers.get("X-KV-Version") == __version__, (method, path)
                if path == "/v1/status":
                    assert (await resp.json())["version"] == __version__


def test_status_shows_the_version(capfdbinary: Capture, server: Server) -> None:
    code, out, _ = kv(capfdbinary, server, "status")
    assert code == 0 and f"version      {__version__}" in out.decode().splitlines()


# --- completion and help -----------------------------------------------------------------------
@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts_know_every_command_and_option(shell: str) -> None:
    out = subprocess.run(
        [*KVSTORE, "completion", shell], capture_output=True, text=True, timeout=60, check=True
    )
    for word in ("serve", "txn", "local", "completion", "retry", "if-none-match", "logs"):
        assert word in out.stdout, (shell, word)


def test_bash_completion_completes_commands(tmp_path: Path) -> None:
    script = tmp_path / "kvstore.bash"
    script.write_text(
        subprocess.run(
            [*KVSTORE, "completion", "bash"], capture_output=True, text=True, check=True
        ).stdout
    )
    probe = (
        f"source {script}; COMP_WORDS=(kvstore lo); COMP_CWORD=1; COMP_LINE='kvstore lo'; "
        'COMP_POINT=10; _shtab_kvstore; echo "${COMPREPLY[@]}"; '
        "COMP_WORDS=(kvstore local s); COMP_CWORD=2; COMP_LINE='kvstore local s'; "
        'COMP_POINT=15; _shtab_kvstore; echo "${COMPREPLY[@]}"'
    )
    out = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines() == ["local", "status scale"], out.stderr


def test_only_the_completion_command_imports_shtab() -> None:
    probe = (
        "import sys; from kvstore.cli import main; main.build_parser(['get', 'a']); "
        "print('shtab' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.stdout == "False\n", out.stderr


def _every_parser() -> Iterator[tuple[str, argparse.ArgumentParser]]:
    def walk(
        name: str, parser: argparse.ArgumentParser
    ) -> Iterator[tuple[str, argparse.ArgumentParser]]:
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child_name, child in action.choices.items():
                    yield from walk(f"{name} {child_name}", child)

    yield from walk("kvstore", cli.build_parser(()))


def test_every_option_is_explained_and_every_command_has_examples() -> None:
    undocumented, no_examples = [], []
    for name, parser in _every_parser():
        for action in parser._actions:
            if action.help is None and not isinstance(action, argparse._SubParsersAction):
                undocumented.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
        if "examples:" not in (parser.epilog or ""):
            no_examples.append(name)
        text = parser.format_help()
        assert "SPEC" not in text and "§" not in text, name
    assert undocumented == [] and no_examples == []
