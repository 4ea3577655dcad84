"""The PrometheusRule's alerts under `promtool test rules`: each fires on the series it is about,
after its `for`, with its labels and rendered annotations, and stays quiet on the healthy case.
promtool comes with Debian's `prometheus` package (.ci/run installs it)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import K8S

RULE = K8S / "components" / "monitoring" / "prometheusrule.yaml"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)"
)

NS = {"namespace": "kv"}


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    inner = ",".join(f'{k}="{v}"' for k, v in {**NS, **labels}.items())
    return {"series": f"{name}{{{inner}}}", "values": values}


def alert(labels: dict[str, str], **annotations: str) -> dict[str, Any]:
    return {"exp_labels": {**NS, **labels}, "exp_annotations": annotations}


def fires(name: str, at: str, *alerts: dict[str, Any]) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": list(alerts)}


def quiet(name: str, at: str) -> dict[str, Any]:
    return {"eval_time": at, "alertname": name, "exp_alerts": []}


# kv-0 the manager, kv-1 and kv-2 followers; kv-0 ready unless a case says otherwise.
def identity(manager_ready: str = "1+0x30") -> list[dict[str, str]]:
    return [
        series("kvstore_info", "1+0x30", pod="kv-0", role="manager"),
        series("kvstore_info", "1+0x30", pod="kv-1", role="follower"),
        series("kvstore_info", "1+0x30", pod="kv-2", role="follower"),
        series("kvstore_ready", manager_ready, pod="kv-0"),
    ]


GIB = 1024**3
CAPACITY = 10 * GIB


def volume(pvc: str, available: str) -> list[dict[str, str]]:
    return [
        series(
            "kubelet_volume_stats_capacity_bytes", f"{CAPACITY}+0x600", persistentvolumeclaim=pvc
        ),
        series("kubelet_volume_stats_available_bytes", available, persistentvolumeclaim=pvc),
    ]


TESTS: list[dict[str, Any]] = [
    {  # kv-1's lag climbs past 30 s at minute 3; the alert waits its 2 minutes
        "interval": "1m",
        "input_series": [
            series("kvstore_replication_lag_seconds", "0 0 0 60 120 180 240 300", pod="kv-1"),
            series("kvstore_replication_lag_seconds", "0+0x8", pod="kv-2"),
        ],
        "alert_rule_test": [
            quiet("KvstoreFollowerLagHigh", "4m"),
            fires(
                "KvstoreFollowerLagHigh",
                "5m",
                alert(
                    {"pod": "kv-1", "severity": "warning"},
                    summary="kv-1 lags behind the manager",
                    description="kv-1 in kv has not been caught up with the manager for 3m 0s; "
                    "reads there are stale. Look at its kvstore_replication_lag_entries, its "
                    "disk, and the manager's write rate.",
                ),
            ),
        ],
    },
    {  # kv-1 loses its stream at minute 2 while the manager is ready
        "interval": "1m",
        "input_series": [
            *identity(),
            series("kvstore_replication_connected", "1 1 0 0 0 0", pod="kv-1"),
            series("kvstore_replication_connected", "1+0x6", pod="kv-2"),
        ],
        "alert_rule_test": [
            quiet("KvstoreFollowerDisconnected", "2m"),
            fires(
                "KvstoreFollowerDisconnected",
                "4m",
                alert(
                    {"pod": "kv-1", "severity": "warning"},
                    summary="kv-1 does not stream from the manager",
                    description="kv-1 in kv has had no replication stream for a minute although "
                    'the manager is ready. Its log says why (lines "disconnected from the '
                    'manager" and "replication from the manager failed").',
                ),
            ),
            quiet("KvstoreManagerDown", "4m"),
        ],
    },
    {  # the manager stops being ready at minute 2: ManagerDown, not two Disconnected
        "interval": "1m",
        "input_series": [
            *identity("1 1 0 0 0 0 0"),
            series("kvstore_replication_connected", "1 1 0 0 0 0 0", pod="kv-1"),
            series("kvstore_replication_connected", "1 1 0 0 0 0 0", pod="kv-2"),
        ],
        "alert_rule_test": [
            quiet("KvstoreManagerDown", "2m"),
            fires(
                "KvstoreManagerDown",
                "4m",
                alert(
                    {"severity": "critical"},
                    summary="No ready kvstore manager in kv",
                    description="The manager (kv-0) is down, not ready, or restoring its data: "
                    "writes get 503 with Retry-After and followers serve reads that get staler. "
                    'Check the pod, its volume and its log ("restore:" lines).',
                ),
            ),
            quiet("KvstoreFollowerDisconnected", "4m"),
        ],
    },
    {
        "interval": "1m",
        "input_series": [
            series("kvstore_replication_epoch_mismatch", "0 1 1 1 1", pod="kv-2"),
            series("kvstore_replication_epoch_mismatch", "0+0x5", pod="kv-1"),
        ],
        "alert_rule_test": [
            fires(
                "KvstoreEpochMismatch",
                "3m",
                alert(
                    {"pod": "kv-2", "severity": "critical"},
                    summary="kv-2 holds another epoch than the manager",
                    description="kv-2 in kv refuses the manager's changes: its data belongs to "
                    "another epoch (the manager's database was replaced while no follower "
                    "could give it back its data). Decide which data to keep; a follower whose "
                    "volume is emptied takes a fresh snapshot from the manager.",
                ),
            ),
        ],
    },
    {  # kv-2 diverged from seq 12 on, a minute later the alert
        "interval": "1m",
        "input_series": [
            series("kvstore_replication_diverged_seq", "0 12 12 12 12", pod="kv-2"),
            series("kvstore_replication_diverged", "0 1 1 1 1", pod="kv-2"),
            series("kvstore_replication_diverged_seq", "0+0x5", pod="kv-1"),
            series("kvstore_replication_diverged", "0+0x5", pod="kv-1"),
        ],
        "alert_rule_test": [
            quiet("KvstoreReplicationDiverged", "1m"),
            fires(
                "KvstoreReplicationDiverged",
                "3m",
                alert(
                    {"pod": "kv-2", "severity": "critical"},
                    summary="kv-2 holds a history the manager does not have",
                    description="kv-2 in kv is diverged from the manager from seq 12 on: it "
                    "applies nothing until an operator decides. `kvstore repair status` shows "
                    "it, `kvstore repair export --pod kv-2 --out F` saves what it holds past the "
                    "fork as a txn file to replay on the manager, and `kvstore repair resync "
                    "--pod kv-2` backs its data up and makes it follow the manager again.",
                ),
            ),
        ],
    },
    {  # data-kv-1: 14% left and losing 1 MiB a minute (full in a day); data-kv-2: 14%, steady
        "interval": "1m",
        "input_series": [
            *volume("data-kv-1", f"{int(CAPACITY * 0.14)}-{1024**2}x600"),
            *volume("data-kv-2", f"{int(CAPACITY * 0.14)}+0x600"),
            *volume("data-kv-0", f"{CAPACITY // 2}+0x600"),
            # another application's PVC in the namespace: not ours
            *volume("cache-0", f"{int(CAPACITY * 0.01)}-{1024**2}x600"),
        ],
        "alert_rule_test": [
            quiet("KvstoreVolumeFillingUp", "30m"),
            fires(
                "KvstoreVolumeFillingUp",
                "2h",
                alert(
                    {"persistentvolumeclaim": "data-kv-1", "severity": "warning"},
                    summary="data-kv-1 fills up",
                    description="The volume data-kv-1 in kv has 12.83% of its space left and, "
                    "at its current rate, is full within four days. Grow the PVC (if its "
                    "StorageClass allows expansion), lower KV_LOG_RETENTION, or delete keys.",
                ),
            ),
            quiet("KvstoreVolumeAlmostFull", "2h"),
        ],
    },
    {  # data-kv-2 drops to 4% at minute 1
        "interval": "1m",
        "input_series": [
            *volume("data-kv-2", f"{CAPACITY // 2} {int(CAPACITY * 0.04)}+0x20"),
            *volume("data-kv-1", f"{CAPACITY // 2}+0x20"),
        ],
        "alert_rule_test": [
            quiet("KvstoreVolumeAlmostFull", "5m"),
            fires(
                "KvstoreVolumeAlmostFull",
                "7m",
                alert(
                    {"persistentvolumeclaim": "data-kv-2", "severity": "critical"},
                    summary="data-kv-2 is almost full",
                    description="The volume data-kv-2 in kv has 4% of its space left. Once it "
                    "is full the manager answers writes with 507 insufficient_storage and a "
                    "follower stops applying changes; grow the PVC now.",
                ),
            ),
        ],
    },
]


def rule_file(tmp: Path) -> Path:
    """The PrometheusRule's spec as a plain Prometheus rule file."""
    obj = yaml.safe_load(RULE.read_text())
    path = tmp / "kvstore.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": obj["spec"]["groups"]}))
    return path


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


def test_the_rules_are_valid(tmp_path: Path) -> None:
    result = promtool("check", "rules", str(rule_file(tmp_path)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_as_described(tmp_path: Path) -> None:
    rules = rule_file(tmp_path)
    doc = {"rule_files": [rules.name], "evaluation_interval": "1m", "tests": TESTS}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    result = promtool("test", "rules", str(tmp_path / "tests.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {t["alertname"] for case in TESTS for t in case["alert_rule_test"] if t["exp_alerts"]}
    defined = {
        r["alert"] for g in yaml.safe_load(RULE.read_text())["spec"]["groups"] for r in g["rules"]
    }
    assert tested == defined, "every alert has a case where it fires"
