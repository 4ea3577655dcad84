"""`kvstore local rollout`: change the pod template (or only the partition), then follow the
rollout as `kubectl rollout status` does, one line per pod as it comes back at the new revision.

    kvstore local rollout --set KV_LOG_LEVEL=debug --partition 2   # a canary: kv-2 only
    kvstore local rollout --partition 0                             # then kv-1, then kv-0
    kvstore local rollout --restart                                 # same settings, new pods
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from kvstore.local.control import ControlClient

POLL = 0.2


def parse_assignments(items: list[str]) -> dict[str, str]:
    """`NAME=VALUE` items as a dict; ValueError names a malformed one."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE")
        out[name] = value
    return out


def _targets(cluster: dict[str, Any]) -> list[int]:
    """The ordinals this rollout updates, highest first."""
    floor = cluster["partition"] if cluster["update_strategy"] == "RollingUpdate" else 0
    return list(range(cluster["replicas"] - 1, floor - 1, -1))


def _done(cluster: dict[str, Any], pod: dict[str, Any] | None) -> bool:
    return bool(pod and pod["ready"] and pod["revision"] == cluster["update_revision"])


def describe_start(doc: dict[str, Any]) -> str:
    previous = doc["current_revision"]
    text = f"statefulset kv: update revision {doc['update_revision']}"
    if previous != doc["update_revision"]:
        text += f" (current {previous})"
    if doc["update_strategy"] == "OnDelete":
        return text + "; OnDelete: each pod takes it when it is deleted (kvstore local delete-pod)"
    targets = ", ".join(f"kv-{o}" for o in _targets(doc)) or "none"
    return text + f"; partition {doc['partition']}: updating {targets}, highest ordinal first"


async def follow(control: ControlClient, timeout: float) -> bool:
    """Print each target pod once it is ready at the update revision; True once all are."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        cluster = await control.cluster()
        pods = {p["ordinal"]: p for p in cluster["pods"]}
        targets = _targets(cluster)
        for ordinal in targets:
            pod = pods.get(ordinal)
            if pod and pod["name"] not in seen and _done(cluster, pod):
                seen.add(pod["name"])
                print(f"{pod['name']}: ready at {pod['revision']}", flush=True)
        if cluster["rolling"] is None and all(_done(cluster, pods.get(o)) for o in targets):
            print(_finished(cluster, targets))
            return True
        await asyncio.sleep(POLL)
    return False


def _finished(cluster: dict[str, Any], targets: list[int]) -> str:
    update = cluster["update_revision"]
    left = [p for p in reversed(cluster["pods"]) if p["revision"] != update]
    text = f"rollout done: {len(targets)} pod(s) at {update}"
    if left:
        names = ", ".join(f"{p['name']} ({p['revision']})" for p in left)
        text += f"; below partition {cluster['partition']}: {names}"
    return text


async def rollout(control: ControlClient, args: argparse.Namespace) -> int:
    """The `rollout` subcommand; returns the exit code."""
    try:
        set_env = parse_assignments(args.set)
    except ValueError as exc:
        print(f"kvstore local rollout: {exc}", file=sys.stderr)
        return 2
    doc = await control.rollout(set_env, args.unset, args.partition, args.restart)
    print(describe_start(doc), flush=True)
    if not args.wait or doc["update_strategy"] == "OnDelete":
        return 0
    if await follow(control, args.timeout):
        return 0
    print(
        f"kvstore local rollout: not done within {args.timeout:g}s; see kvstore local status",
        file=sys.stderr,
    )
    return 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a variable of the pod template (repeatable)",
    )
    parser.add_argument(
        "--unset", action="append", default=[], metavar="NAME", help="remove a variable"
    )
    parser.add_argument(
        "--restart", action="store_true", help="a new revision with the same settings"
    )
    parser.add_argument(
        "--partition", type=int, help="update only ordinals >= P (lower it later to go on)"
    )
    parser.add_argument("--no-wait", dest="wait", action="store_false", help="return at once")
    parser.add_argument("--timeout", type=float, default=300.0, help="wait at most (300 s)")
