"""`kvstore local up | status | logs | delete-pod | scale | rollout | down`: a StatefulSet on
one machine."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias

from kvstore.cli.connection import add_token_argument, token_of
from kvstore.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from kvstore.local import rollout
from kvstore.local.control import ControlClient, NoCluster, serve_control
from kvstore.local.pod import CONTROLLED
from kvstore.local.revisions import (
    POD_MANAGEMENT_POLICIES,
    RETENTION_POLICIES,
    UPDATE_STRATEGIES,
    Policies,
)
from kvstore.local.state import (
    DEFAULT_DIR,
    Layout,
    SupervisorLock,
    process_alive,
    read_cluster_file,
)
from kvstore.local.status import pod_statuses, summary, table
from kvstore.local.supervisor import PodError, Supervisor

Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
POLL = 0.2


# --- up ------------------------------------------------------------------------------------
def parse_env(items: list[str]) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """`NAME=VALUE` for every pod, `kv-2:NAME=VALUE` for one pod."""
    common: dict[str, str] = {}
    per_pod: dict[str, dict[str, str]] = {}
    for item in items:
        target, _, assignment = (
            item.rpartition(":") if ":" in item.split("=")[0] else ("", "", item)
        )
        name, sep, value = assignment.partition("=")
        if not sep or not name:
            raise ValueError(f"--env {item!r}: expected NAME=VALUE or POD:NAME=VALUE")
        (per_pod.setdefault(target, {}) if target else common)[name] = value
    return common, per_pod


def port_free(port: int) -> bool:
    """Whether a pod could listen on `port` (as the server does, with SO_REUSEADDR: the
    connections a stopped cluster left in TIME_WAIT do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.2", port))
        except OSError:
            return False
    return True


class Announcer:
    """Prints each pod event as the supervisor records it, and a summary once all are ready."""

    def __init__(self) -> None:
        self.supervisor: Supervisor | None = None
        self.announced = False

    def __call__(self, event: dict[str, Any]) -> None:
        details = " ".join(
            f"{k}={v}" for k, v in event.items() if k not in ("time", "pod", "event")
        )
        print(f"{event['pod']:<6} {event['event']:<9} {details}", flush=True)
        sup = self.supervisor
        if event["event"] != "ready" or sup is None or self.announced:
            return
        pods = [sup.pods.get(o) for o in range(sup.replicas)]
        if all(p is not None and p.ready for p in pods):
            self.announced = True
            print(
                f"{sup.replicas}/{sup.replicas} pods ready; manager {sup.describe()['url']}\n"
                f"try: kvstore put hello world; kvstore local status; Ctrl-C stops the cluster",
                flush=True,
            )


async def _supervise(args: argparse.Namespace, root: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k.startswith("KV_") and k not in CONTROLLED}
    common, per_pod = parse_env(args.env)
    announcer = Announcer()
    supervisor = Supervisor(
        root,
        args.replicas,
        args.port,
        grace=args.grace,
        env={**env, **common},
        pod_env=per_pod,
        emit=announcer,
        policies=_policies(args),
        partition=args.partition,
    )
    announcer.supervisor = supervisor
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, supervisor.request_down)
    await supervisor.run(serve_control)


def _policies(args: argparse.Namespace) -> Policies:
    return Policies(
        pod_management_policy=args.pod_management_policy,
        when_scaled=args.when_scaled,
        when_deleted=args.when_deleted,
        update_strategy=args.update_strategy,
    )


# The options of `up` that a detached supervisor is started with again, and how.
UP_OPTIONS = (
    ("--replicas", "replicas"),
    ("--port", "port"),
    ("--grace", "grace"),
    ("--pod-management-policy", "pod_management_policy"),
    ("--when-scaled", "when_scaled"),
    ("--when-deleted", "when_deleted"),
    ("--update-strategy", "update_strategy"),
    ("--partition", "partition"),
)


def _up(args: argparse.Namespace) -> int:
    root = Path(args.dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    try:
        parse_env(args.env)
    except ValueError as exc:
        return _fail("up", str(exc), EXIT_USAGE)
    if args.partition < 0:
        return _fail("up", "--partition must be 0 or more", EXIT_USAGE)
    lock = SupervisorLock(Layout(root).lock_file)
    if not lock.acquire():
        return _fail("up", f"a local cluster is already running in {root}", EXIT_FAILED)
    if not port_free(args.port):
        lock.release()
        return _fail("up", f"port {args.port} is in use; choose another with --port", EXIT_FAILED)
    if args.detach:
        lock.release()
        return _detach(args, root)
    try:
        asyncio.run(_supervise(args, root))
    finally:
        lock.release()
    return EXIT_OK


def _detach(args: argparse.Namespace, root: Path) -> int:
    """Start the supervisor in the background (its output in supervisor.log), wait for every
    pod to be ready, and return."""
    layout = Layout(root)
    argv = [sys.executable, "-m", "kvstore", "local", "up", "--dir", str(root)]
    for flag, name in UP_OPTIONS:
        argv += [flag, str(getattr(args, name))]
    for item in args.env:
        argv += ["--env", item]
    log_fd = os.open(layout.supervisor_log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log_fd, 1),
            (os.POSIX_SPAWN_DUP2, log_fd, 2),
        ]
        pid = os.posix_spawn(
            sys.executable, argv, dict(os.environ), file_actions=actions, setsid=True
        )
    finally:
        os.close(log_fd)
    return asyncio.run(_wait_detached(root, pid, args.replicas, args.timeout))


def _child_exited(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done != 0


async def _wait_detached(root: Path, pid: int, replicas: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _child_exited(pid):
            tail = Layout(root).supervisor_log.read_text(errors="replace").splitlines()[-20:]
            return _fail("up", "the supervisor exited:\n" + "\n".join(tail), EXIT_FAILED)
        info = read_cluster_file(root)
        if info and info.get("pid") == pid and await _all_ready(root, replicas):
            url = (read_cluster_file(root) or info).get("url")
            print(f"{replicas}/{replicas} pods ready; manager {url}")
            print(
                f"supervisor pid {pid}, log {Layout(root).supervisor_log}; stop: kvstore local down"
            )
            return EXIT_OK
        await asyncio.sleep(POLL)
    return _fail("up", f"not every pod was ready within {timeout:g}s; see kvstore local status", 1)


async def _all_ready(root: Path, replicas: int) -> bool:
    try:
        async with ControlClient(root, timeout=5) as control:
            cluster = await control.cluster()
    except NoCluster:
        return False
    ready = [p for p in cluster["pods"] if p["ready"] and p["ordinal"] < replicas]
    return len(ready) == replicas and len(cluster["pods"]) == replicas


# --- the other subcommands ----------------------------------------------------------------
def _fail(command: str, message: str, code: int) -> int:
    print(f"kvstore local {command}: {message}", file=sys.stderr)
    return code


def _with_control(
    command: str, action: Callable[[ControlClient, argparse.Namespace], Awaitable[int]]
) -> Callable[[argparse.Namespace], int]:
    async def run(args: argparse.Namespace, root: Path) -> int:
        async with ControlClient(root) as control:
            return await action(control, args)

    def handler(args: argparse.Namespace) -> int:
        try:
            return asyncio.run(run(args, Path(args.dir).resolve()))
        except NoCluster as exc:
            return _fail(command, str(exc), EXIT_FAILED)
        except PodError as exc:
            return _fail(command, str(exc), EXIT_FAILED)
        except BrokenPipeError:
            # The reader went away (`| head`): stop quietly, and keep the final flush quiet.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK

    return handler


async def _status(control: ControlClient, args: argparse.Namespace) -> int:
    if not args.watch:
        print(await _status_text(control, args, indent=2))
        return EXIT_OK
    clear = sys.stdout.isatty() and not args.json
    while True:
        text = await _status_text(control, args, indent=None)
        if clear:
            stamp = time.strftime("%H:%M:%S")
            head = f"every {args.interval:g}s: kvstore local status{' ' * 8}{stamp}"
            print(f"\x1b[H\x1b[2J{head}\n\n{text}", flush=True)
        else:
            print(text + ("" if args.json else "\n"), flush=True)
        await asyncio.sleep(args.interval)


async def _status_text(control: ControlClient, args: argparse.Namespace, indent: int | None) -> str:
    """One view of the set: the table and summary, or the JSON document."""
    cluster = await control.cluster()
    statuses = await pod_statuses(cluster["pods"], token_of(args))
    events = await control.events() if args.events else []
    if args.json:
        for pod, status in zip(cluster["pods"], statuses, strict=True):
            pod["status"] = status
        if args.events:
            cluster["events"] = events
        return json.dumps(cluster, indent=indent)
    lines = [table(cluster["pods"], statuses), *summary(cluster)]
    return "\n".join(lines + [event_line(event) for event in events])


# --- logs ------------------------------------------------------------------------------------
def _logs(args: argparse.Namespace) -> int:
    """`kvstore local logs POD [-f] [--tail N]`: the pod's log (every run of it, in order)."""
    try:
        return _print_log(args)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _print_log(args: argparse.Namespace) -> int:
    layout = Layout(Path(args.dir).resolve())
    path = layout.log_path(args.pod)
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.log"))
        pods = f" (pods with a log: {', '.join(known)})" if known else ""
        return _fail("logs", f"no log for {args.pod!r} in {path.parent}{pods}", EXIT_FAILED)
    with path.open("rb") as f:
        _write(tail_of(f.read(), args.tail))
        if not args.follow:
            return EXIT_OK
        return _follow(f, layout)


def tail_of(data: bytes, lines: int | None) -> bytes:
    """The last `lines` lines of `data` (all of it when None)."""
    if lines is None:
        return data
    if lines <= 0:
        return b""
    kept = data.splitlines(keepends=True)[-lines:]
    return b"".join(kept)


def _write(data: bytes) -> None:
    if data:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()


def _follow(f: Any, layout: Layout) -> int:
    """Print what is appended to the log until interrupted, or until the cluster is down and
    nothing more comes."""
    while True:
        chunk = f.read()
        if chunk:
            _write(chunk)
            continue
        if read_cluster_file(layout.root) is None:
            return EXIT_OK
        time.sleep(POLL)


def event_line(event: dict[str, Any]) -> str:
    """`12:00:01 kv-2   created    address=127.0.0.4 pid=123 revision=kv-...`."""
    stamp = time.strftime("%H:%M:%S", time.localtime(event["time"]))
    details = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("time", "pod", "event"))
    return f"{stamp} {event['pod']:<6} {event['event']:<15} {details}".rstrip()


async def _delete_pod(control: ControlClient, args: argparse.Namespace) -> int:
    result = await control.delete_pod(args.name, args.force)
    how = "killed" if args.force else "deleted"
    print(f'pod "{args.name}" {how} (exit code {result["exit_code"]})')
    return EXIT_OK


async def _scale(control: ControlClient, args: argparse.Namespace) -> int:
    await control.scale(args.replicas)
    print(f"scaling to {args.replicas}")
    if not args.wait:
        return EXIT_OK
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        pods = (await control.cluster())["pods"]
        if len(pods) == args.replicas and all(p["ready"] for p in pods):
            print(f"{args.replicas}/{args.replicas} pods ready")
            return EXIT_OK
        await asyncio.sleep(POLL)
    return _fail("scale", f"not done within {args.timeout:g}s; see kvstore local status", 1)


async def _down(control: ControlClient, args: argparse.Namespace) -> int:
    info = read_cluster_file(control.root) or {}
    await control.down()
    pid = int(info.get("pid") or 0)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if not (pid and process_alive(pid)) and read_cluster_file(control.root) is None:
            if info.get("when_deleted") == "Delete":
                print("stopped; the pods' data directories are deleted (whenDeleted: Delete)")
            else:
                print(f"stopped; the pods' data stays in {control.root / 'data'}")
            return EXIT_OK
        await asyncio.sleep(POLL)
    return _fail("down", f"the supervisor (pid {pid}) is still running", EXIT_FAILED)


# --- registration ----------------------------------------------------------------------------
LOCAL_EXAMPLES = """\
Each pod is a real `kvstore serve` process on its own loopback address (127.0.0.2, ...), with
its own data directory under --dir, found by the others through a DNS server of the set.

examples:
  kvstore local up --detach
  kvstore local status --watch
  kvstore local logs kv-1 -f
  kvstore local delete-pod kv-0 --force
  kvstore local down
"""
UP_EXAMPLES = """\
examples:
  kvstore local up                       # in the foreground; Ctrl-C stops every pod
  kvstore local up --detach --replicas 5
  kvstore local up --detach --env KV_AUTH_TOKEN=secret --env kv-2:KV_LOG_LEVEL=debug
  kvstore local up --detach --pod-management-policy Parallel --update-strategy OnDelete
"""
STATUS_EXAMPLES = """\
examples:
  kvstore local status
  kvstore local status --watch --interval 0.5
  kvstore local status --json --events
  kvstore --token secret local status    # a cluster started with KV_AUTH_TOKEN
"""
LOGS_EXAMPLES = """\
Every run of the pod, in order: a line marks each start.

examples:
  kvstore local logs kv-0
  kvstore local logs kv-1 -f
  kvstore local logs kv-2 --tail 20 -f
"""
DELETE_POD_EXAMPLES = """\
As in Kubernetes, the set re-creates a deleted pod, under the same name, on the same data
directory, at a new address.

examples:
  kvstore local delete-pod kv-1
  kvstore local delete-pod kv-0 --force  # SIGKILL the manager
"""
SCALE_EXAMPLES = """\
examples:
  kvstore local scale 5
  kvstore local scale 2 --no-wait
"""
ROLLOUT_EXAMPLES = """\
examples:
  kvstore local rollout --set KV_LOG_LEVEL=debug
  kvstore local rollout --restart
  kvstore local rollout --set KV_DURABILITY=normal --partition 2
"""
DOWN_EXAMPLES = """\
examples:
  kvstore local down
"""


def _add(
    commands: Sub, name: str, common: argparse.ArgumentParser, help_text: str, epilog: str
) -> argparse.ArgumentParser:
    return commands.add_parser(
        name,
        parents=[common],
        help=help_text,
        description=help_text[0].upper() + help_text[1:] + ".",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


_positive.__name__ = "seconds"


def register(sub: Sub) -> None:
    local = sub.add_parser(
        "local",
        help="a StatefulSet on one machine (up, status, ...)",
        description="Run a StatefulSet of kvstore pods on this machine.",
        epilog=LOCAL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = local.add_subparsers(dest="local_command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", default=DEFAULT_DIR, help=f"cluster directory ({DEFAULT_DIR})")

    p = _add(commands, "up", common, "start the pods and keep them running", UP_EXAMPLES)
    p.add_argument("--replicas", type=int, default=3, help="number of pods (3)")
    p.add_argument("--port", type=int, default=8080, help="the port every pod listens on (8080)")
    p.add_argument("--detach", action="store_true", help="run in the background once ready")
    p.add_argument("--grace", type=float, default=15.0, help="termination grace period (15 s)")
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="--detach: seconds to wait for every pod to be ready (120)",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="[POD:]NAME=VALUE",
        help="extra environment for every pod (the template), or for one pod (repeatable)",
    )
    _spec_arguments(p)
    p.set_defaults(func=_up)

    p = _add(commands, "status", common, "the pods, their roles, seqs and lag", STATUS_EXAMPLES)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--events", action="store_true", help="also list the pod events")
    p.add_argument(
        "-w", "--watch", action="store_true", help="print the status again every --interval"
    )
    p.add_argument(
        "--interval", type=_positive, default=1.0, metavar="S", help="--watch: seconds (1)"
    )
    add_token_argument(p)
    p.set_defaults(func=_with_control("status", _status))

    p = _add(commands, "logs", common, "print a pod's log", LOGS_EXAMPLES)
    p.add_argument("pod", help="pod name, e.g. kv-1")
    p.add_argument(
        "-f", "--follow", action="store_true", help="keep printing what the pod logs, live"
    )
    p.add_argument("--tail", type=int, metavar="N", help="start with the last N lines only")
    p.set_defaults(func=_logs)

    p = _add(commands, "delete-pod", common, "delete a pod; it comes back", DELETE_POD_EXAMPLES)
    p.add_argument("name", help="pod name, e.g. kv-1")
    p.add_argument("--force", action="store_true", help="SIGKILL instead of a graceful stop")
    p.set_defaults(func=_with_control("delete-pod", _delete_pod))

    p = _add(commands, "scale", common, "change the number of pods", SCALE_EXAMPLES)
    p.add_argument("replicas", type=int, help="the number of pods wanted")
    p.add_argument("--no-wait", dest="wait", action="store_false", help="return at once")
    p.add_argument("--timeout", type=float, default=120.0, help="wait at most this long (120 s)")
    p.set_defaults(func=_with_control("scale", _scale))

    p = _add(
        commands,
        "rollout",
        common,
        "change the pod template; roll it out (or a partition)",
        ROLLOUT_EXAMPLES,
    )
    rollout.add_arguments(p)
    p.set_defaults(func=_with_control("rollout", rollout.rollout))

    p = _add(commands, "down", common, "stop every pod (whenDeleted)", DOWN_EXAMPLES)
    p.add_argument("--timeout", type=float, default=120.0, help="wait at most this long (120 s)")
    p.set_defaults(func=_with_control("down", _down))


def _spec_arguments(p: argparse.ArgumentParser) -> None:
    """The StatefulSet spec's policies, as options of `up`."""
    p.add_argument(
        "--pod-management-policy",
        choices=POD_MANAGEMENT_POLICIES,
        default="OrderedReady",
        help="OrderedReady: one pod at a time, each once the previous is ready; Parallel: all "
        "at once (OrderedReady)",
    )
    for flag, what in (("--when-scaled", "scale down"), ("--when-deleted", "down")):
        p.add_argument(
            flag,
            choices=RETENTION_POLICIES,
            default="Retain",
            help=f"what {what} does with a removed pod's data directory (Retain)",
        )
    p.add_argument(
        "--update-strategy",
        choices=UPDATE_STRATEGIES,
        default="RollingUpdate",
        help="RollingUpdate: `rollout` replaces the pods, highest ordinal first; OnDelete: a "
        "pod takes a new template when it is deleted (RollingUpdate)",
    )
    p.add_argument(
        "--partition", type=int, default=0, help="RollingUpdate: only ordinals >= P update (0)"
    )
