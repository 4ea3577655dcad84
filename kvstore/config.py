"""The settings table: every setting is an environment variable and a `kvstore serve` flag.

`SETTINGS` is the single source of truth. `--help`, the README table and the k8s manifests are
checked against it by tests. Values are read once into the frozen `Settings` object.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class Setting:
    env: str
    kind: type
    default: Any
    help: str
    default_text: str = ""
    choices: tuple[str, ...] = ()
    secret: bool = False
    minimum: float | None = None

    @property
    def field(self) -> str:
        return self.env.removeprefix("KV_").lower()

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")

    def shown_default(self) -> str:
        if self.default_text:
            return self.default_text
        if self.default is None:
            return "unset"
        if isinstance(self.default, bool):
            return "true" if self.default else "false"
        return str(self.default)


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "KV_POD_NAME", str, None, "`<set>-<ordinal>`, e.g. `kv-2`", "$POD_NAME, else the hostname"
    ),
    Setting(
        "KV_ORDINAL",
        int,
        None,
        "ordinal override (k8s: label apps.kubernetes.io/pod-index)",
        "parsed from the pod name",
        minimum=0,
    ),
    Setting("KV_SERVICE", str, "kv", "the governing headless Service"),
    Setting("KV_NAMESPACE", str, None, "the pod's namespace", "$POD_NAMESPACE, else default"),
    Setting("KV_CLUSTER_DOMAIN", str, "cluster.local", "the cluster's DNS domain"),
    Setting("KV_MANAGER_ORDINAL", int, 0, "ordinal of the manager, the only writer", minimum=0),
    Setting("KV_HOST", str, "0.0.0.0", "address to listen on"),
    Setting("KV_PORT", int, 8080, "one port: clients, replication, probes, metrics", minimum=1),
    Setting("KV_DATA_DIR", str, "/data", "the volume: SQLite files and nothing else of ours"),
    Setting(
        "KV_DNS_SERVER", str, None, "`host:port` of the DNS server to ask", "the system resolver"
    ),
    Setting(
        "KV_DURABILITY",
        str,
        "full",
        "`full`: fsync before any ack; `normal`: WAL synchronous=NORMAL",
        choices=("full", "normal"),
    ),
    Setting(
        "KV_LOG_RETENTION",
        int,
        100000,
        "changes (seqs) kept in the log for followers to resume from",
        minimum=1,
    ),
    Setting("KV_MAX_KEY_BYTES", int, 1024, "largest key; over it: 413", minimum=1),
    Setting("KV_MAX_VALUE_BYTES", int, 1048576, "largest value; over it: 413", minimum=0),
    Setting("KV_MAX_TXN_OPS", int, 1000, "most ops in one txn; over it: 413", minimum=1),
    Setting(
        "KV_MAX_TXN_BYTES",
        int,
        16777216,
        "largest txn body; over it: 413, refused before it is parsed",
        minimum=1,
    ),
    Setting(
        "KV_MAX_WATCHES",
        int,
        1000,
        "most watches open at once on this pod; over it: 429",
        minimum=0,
    ),
    Setting(
        "KV_WRITE_TIMEOUT",
        float,
        30.0,
        "seconds a long response (watch, replication stream, snapshot, backup) may go without "
        "its reader taking a byte before it is cut off",
        "30",
        minimum=0.1,
    ),
    Setting(
        "KV_AUTH_TOKEN",
        str,
        None,
        "when set, client API requests need `Authorization: Bearer <token>`",
        secret=True,
    ),
    Setting(
        "KV_REPLICATION_TOKEN",
        str,
        None,
        "when set, replication endpoints need it, and followers send it",
        secret=True,
    ),
    Setting(
        "KV_SHUTDOWN_TIMEOUT",
        float,
        10.0,
        "seconds to drain on SIGTERM; below the pod's terminationGracePeriodSeconds",
        "10",
        minimum=0,
    ),
    Setting(
        "KV_RESTORE_WAIT",
        float,
        30.0,
        "seconds an empty manager waits for every peer DNS lists to answer before it restores",
        "30",
        minimum=0,
    ),
    Setting(
        "KV_FORWARD_TIMEOUT",
        float,
        30.0,
        "seconds a follower waits for the manager's answer to a forwarded write; past it: 504"
        " unknown_outcome",
        "30",
        minimum=0.1,
    ),
    Setting(
        "KV_READY_MAX_LAG",
        int,
        1000,
        "a follower more entries behind than this is not ready",
        minimum=0,
    ),
    Setting(
        "KV_LOG_FORMAT", str, "text", "log lines as `text` or `json`", choices=("text", "json")
    ),
    Setting(
        "KV_LOG_LEVEL", str, "info", "log level", choices=("debug", "info", "warning", "error")
    ),
    Setting("KV_ACCESS_LOG", bool, False, "log a line per HTTP request (costs throughput)"),
    Setting(
        "KV_RESTORE_FROM",
        str,
        None,
        "a backup file (`kvstore backup`) to start from when the volume holds no database",
    ),
    Setting(
        "KV_REVISION",
        str,
        None,
        "the pod template's revision, shown in status and on the page",
    ),
    Setting(
        "KV_FAULT_SKIP_SEQ",
        int,
        None,
        "TEST ONLY: a follower silently skips the change "
        "with this seq (shows that `kvstore chaos` catches a lost write)",
        minimum=1,
    ),
)

BY_ENV: dict[str, Setting] = {s.env: s for s in SETTINGS}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_POD_RE = re.compile(r"^(?P<set>[a-z0-9]([-a-z0-9]*[a-z0-9])?)-(?P<ordinal>\d+)$")


@dataclass(frozen=True)
class Settings:
    pod_name: str
    ordinal: int
    service: str
    namespace: str
    cluster_domain: str
    manager_ordinal: int
    host: str
    port: int
    data_dir: str
    dns_server: str | None
    durability: str
    log_retention: int
    max_key_bytes: int
    max_value_bytes: int
    max_txn_ops: int
    max_txn_bytes: int
    max_watches: int
    write_timeout: float
    auth_token: str | None
    replication_token: str | None
    shutdown_timeout: float
    restore_wait: float
    forward_timeout: float
    ready_max_lag: int
    log_format: str
    log_level: str
    access_log: bool
    restore_from: str | None
    revision: str | None
    fault_skip_seq: int | None

    @property
    def set_name(self) -> str:
        """The StatefulSet's name: the pod name without its ordinal."""
        m = _POD_RE.match(self.pod_name)
        return m.group("set") if m else self.pod_name

    @property
    def is_manager(self) -> bool:
        return self.ordinal == self.manager_ordinal

    @property
    def role(self) -> str:
        return "manager" if self.is_manager else "follower"

    @property
    def service_domain(self) -> str:
        return f"{self.service}.{self.namespace}.svc.{self.cluster_domain}"

    def pod_fqdn(self, ordinal: int) -> str:
        return f"{self.set_name}-{ordinal}.{self.service_domain}"

    @property
    def manager_name(self) -> str:
        return f"{self.set_name}-{self.manager_ordinal}"

    @property
    def manager_fqdn(self) -> str:
        return self.pod_fqdn(self.manager_ordinal)

    @property
    def srv_name(self) -> str:
        return f"_http._tcp.{self.service_domain}"

    @property
    def replication_secret(self) -> str | None:
        """The token the replication endpoints need and followers send: KV_REPLICATION_TOKEN,
        else KV_AUTH_TOKEN (a store with a client token never serves its data without one)."""
        return self.replication_token or self.auth_token


def _convert(setting: Setting, raw: str) -> Any:
    if setting.kind is bool:
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{setting.env}={raw!r}: expected true or false")
    try:
        value = setting.kind(raw)
    except ValueError:
        word = {int: "a whole number", float: "a number"}.get(setting.kind, setting.kind.__name__)
        raise ConfigError(f"{setting.env}={raw!r}: expected {word}") from None
    if setting.choices and value not in setting.choices:
        raise ConfigError(f"{setting.env}={raw!r}: expected one of {', '.join(setting.choices)}")
    if setting.minimum is not None and value < setting.minimum:
        raise ConfigError(f"{setting.env}={raw!r}: must be at least {setting.minimum:g}")
    return value


def _raw_values(env: Mapping[str, str], flags: Mapping[str, str | None]) -> dict[str, str]:
    """Flags win over environment variables; empty env values count as unset."""
    raw: dict[str, str] = {}
    for s in SETTINGS:
        value = flags.get(s.field)
        if value is None:
            value = env.get(s.env) or None
        if value is not None:
            raw[s.env] = value
    return raw


def _derived_defaults(env: Mapping[str, str]) -> dict[str, Callable[[], Any]]:
    return {
        "KV_POD_NAME": lambda: env.get("POD_NAME") or socket.gethostname(),
        "KV_NAMESPACE": lambda: env.get("POD_NAMESPACE") or "default",
    }


def _parse_ordinal(pod_name: str) -> int:
    m = _POD_RE.match(pod_name)
    if not m:
        raise ConfigError(
            f"pod name {pod_name!r} has no ordinal: expected <set>-<ordinal> such as kv-0 "
            "(set KV_POD_NAME, or KV_ORDINAL to override)"
        )
    return int(m.group("ordinal"))


def _check(settings: Settings) -> None:
    if settings.dns_server is not None:
        host, sep, port = settings.dns_server.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigError(f"KV_DNS_SERVER={settings.dns_server!r}: expected host:port")
    if settings.port > 65535:
        raise ConfigError(f"KV_PORT={settings.port}: must be at most 65535")


def load(
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, str | None] | None = None,
) -> Settings:
    """Read every setting once: flags, then KV_* variables, then the defaults."""
    env = os.environ if env is None else env
    raw = _raw_values(env, flags or {})
    derived = _derived_defaults(env)
    values: dict[str, Any] = {}
    for s in SETTINGS:
        if s.env in raw:
            values[s.field] = _convert(s, raw[s.env])
        elif s.env in derived:
            values[s.field] = derived[s.env]()
        else:
            values[s.field] = s.default
    if values["ordinal"] is None:
        values["ordinal"] = _parse_ordinal(values["pod_name"])
    settings = Settings(**values)
    _check(settings)
    return settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, with the help generated from the table."""
    for s in SETTINGS:
        text = f"{s.help} [env {s.env}; default: {s.shown_default()}]"
        if s.choices:
            text += f" (one of: {', '.join(s.choices)})"
        parser.add_argument(
            s.flag,
            dest=s.field,
            metavar=s.env.removeprefix("KV_"),
            default=None,
            help=text.replace("%", "%%"),
        )


def flags_from(namespace: argparse.Namespace) -> dict[str, str | None]:
    return {s.field: getattr(namespace, s.field, None) for s in SETTINGS}


def settings_table() -> str:
    """The README's settings table, in Markdown; a test keeps the README equal to it."""
    rows = ["| variable | flag | default | meaning |", "| --- | --- | --- | --- |"]
    for s in SETTINGS:
        meaning = s.help + (f" (one of: {', '.join(s.choices)})" if s.choices else "")
        rows.append(f"| `{s.env}` | `{s.flag}` | {s.shown_default()} | {meaning} |")
    return "\n".join(rows) + "\n"
