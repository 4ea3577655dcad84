"""The settings table: one source for defaults, flags, `--help` and the README."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kvstore import config
from kvstore.cli import exits
from kvstore.cli import main as cli

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_and_identity() -> None:
    s = config.load(env={"POD_NAME": "kv-2", "POD_NAMESPACE": "shop"})
    assert (s.pod_name, s.ordinal, s.role, s.port, s.data_dir) == (
        "kv-2",
        2,
        "follower",
        8080,
        "/data",
    )
    assert s.manager_fqdn == "kv-0.kv.shop.svc.cluster.local"
    assert s.srv_name == "_http._tcp.kv.shop.svc.cluster.local"
    assert config.load(env={"KV_POD_NAME": "kv-0"}).is_manager


def test_flags_win_over_environment() -> None:
    s = config.load(env={"KV_POD_NAME": "kv-1", "KV_PORT": "9000"}, flags={"port": "9100"})
    assert s.port == 9100


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KV_PORT": "abc"}, "KV_PORT='abc': expected a whole number"),
        ({"KV_DURABILITY": "sometimes"}, "expected one of full, normal"),
        ({"KV_SHUTDOWN_TIMEOUT": "-1"}, "must be at least 0"),
        ({"KV_DNS_SERVER": "nope"}, "expected host:port"),
        ({"KV_ACCESS_LOG": "maybe"}, "expected true or false"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.load(env={"KV_POD_NAME": "kv-0", **env})


def test_pod_name_without_ordinal_stops_startup() -> None:
    with pytest.raises(config.ConfigError, match="has no ordinal"):
        config.load(env={"KV_POD_NAME": "laptop"})
    assert config.load(env={"KV_POD_NAME": "laptop", "KV_ORDINAL": "0"}).is_manager


def test_serve_with_a_bad_value_exits_2_with_one_line() -> None:
    env = {"KV_PORT": "abc", "KV_POD_NAME": "kv-0", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "kvstore", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == exits.EXIT_USAGE
    assert proc.stderr.strip() == "kvstore serve: KV_PORT='abc': expected a whole number"


def test_help_lists_every_setting(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    text = capsys.readouterr().out
    for s in config.SETTINGS:
        assert s.flag in text and s.env in text


def test_readme_settings_table_is_the_code_table() -> None:
    readme = (ROOT / "README.md").read_text()
    begin, end = "<!-- settings:begin -->\n", "<!-- settings:end -->"
    section = readme[readme.index(begin) + len(begin) : readme.index(end)]
    assert section == config.settings_table(), "regenerate the README table from config"


def test_global_url_before_the_command(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    code = cli.main(["--url", "http://127.0.0.1:1", "get", "a"])
    err = capfdbinary.readouterr().err.decode()
    assert code == exits.EXIT_FAILED and "http://127.0.0.1:1" in err


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--access-log"], {}, True),  # bare
        (["--access-log=false"], {"KV_ACCESS_LOG": "true"}, False),
        (["--access-log", "no"], {}, False),
        ([], {"KV_ACCESS_LOG": "1"}, True),  # left out: the environment decides
        ([], {}, False),
    ],
)
def test_a_boolean_flag_works_bare_and_takes_a_value(
    argv: list[str], env: dict[str, str], expected: bool
) -> None:
    args = cli.build_parser(["serve"]).parse_args(["serve", *argv])
    settings = config.load(env={"KV_POD_NAME": "kv-0", **env}, flags=config.flags_from(args))
    assert settings.access_log is expected
