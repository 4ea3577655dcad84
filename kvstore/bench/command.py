"""`kvstore bench`: the command line (options, help, exit codes) of the bench engine; its
scenarios are kvstore.bench.scenarios, its suite kvstore.bench.suite."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from kvstore.bench import suite
from kvstore.bench.children import BenchError
from kvstore.bench.console import Console
from kvstore.bench.etcd import etcd_available
from kvstore.bench.report import render
from kvstore.bench.scenarios import SCENARIOS, BenchOptions
from kvstore.bench.wrk import wrk_available
from kvstore.cli.connection import add_connection_arguments, resolve_url
from kvstore.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Sub
from kvstore.client import ClientError

DEFAULT_DURATION = 10.0
DEFAULT_RATE = 200.0  # lag: writes per second
SUITE_DURATION = 10.0
SUITE_RATE = 1000.0

DESCRIPTION = """\
Measure a running kvstore: PUT throughput and latency (--scenario put, the default), or
replication lag, each write timed from the manager's answer until a follower's watch shows it
(--scenario lag). The load comes from separate processes (--workers), not from the process that
measures and prints; on a 2-core machine keep one worker, as a second one takes the core the
server needs. A progress line goes to stderr when it is a terminal. Keys written live under
bench/ and are rewritten by the next run.

With --suite, start clusters of its own in a temporary directory, run every scenario of the
benchmark suite (and with --compare etcd, the same on etcd), print one table and stop
everything it started.

Exit status: 0 when every request succeeded (and every write showed on the follower), 1 when
one failed or the run could not be measured, 2 for bad options."""

EPILOG = """\
examples:
  kvstore bench --url http://127.0.0.1:8080 --concurrency 16 --duration 5
  kvstore bench --scenario lag --url MANAGER_URL --follower-url FOLLOWER_URL --rate 500
  kvstore bench --suite --only put,lag --duration 3
  kvstore bench --suite --compare etcd --json > results.json"""


class UsageError(ValueError):
    """A bad option; the command prints it and exits 2."""


# --- the command line -----------------------------------------------------------------------
def register(sub: Sub) -> None:
    p = sub.add_parser(
        "bench",
        help="throughput, latency and replication-lag figures",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_connection_arguments(p)
    add_scenario_arguments(p)
    add_suite_arguments(p)
    p.set_defaults(func=run)


def add_scenario_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--scenario",
        choices=sorted(SCENARIOS),
        default="put",
        help="put: PUT throughput and latency; lag: replication lag (default: put)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=64,
        metavar="N",
        help="put: connections in all; lag: writes in flight at most (default 64)",
    )
    amount = p.add_mutually_exclusive_group()
    amount.add_argument("--requests", type=int, metavar="N", help="stop after N requests")
    amount.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help=f"stop after S seconds (default {DEFAULT_DURATION:g})",
    )
    p.add_argument(
        "--value-size", type=int, default=100, metavar="BYTES", help="bytes per value (default 100)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="put: load processes, sharing the connections (default 1)",
    )
    p.add_argument(
        "--follower-url",
        metavar="URL",
        help="lag: the follower to watch (default: --url itself)",
    )
    p.add_argument(
        "--rate",
        type=float,
        metavar="PER_S",
        help=f"lag: writes per second (default {DEFAULT_RATE:g}; suite 1000)",
    )
    p.add_argument("--json", action="store_true", help="print the report as one JSON object")


def add_suite_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "the suite",
        "--suite starts its own clusters in a temporary directory, runs every scenario, prints\n"
        "one table and stops everything it started (--duration, --value-size and --rate apply)",
    )
    g.add_argument("--suite", action="store_true", help="run the whole benchmark suite")
    g.add_argument(
        "--compare",
        choices=["etcd"],
        help="also run the suite on etcd (Debian's etcd-server) and print the ratios",
    )
    g.add_argument(
        "--levels",
        default="1,16,64,256",
        metavar="N,N,...",
        help="PUT concurrency levels on one node (default 1,16,64,256)",
    )
    g.add_argument(
        "--only",
        default=",".join(suite.SUITE_SCENARIOS),
        metavar="NAME,...",
        help=f"scenarios to run (default all: {','.join(suite.SUITE_SCENARIOS)})",
    )
    g.add_argument(
        "--catchup-writes",
        type=int,
        default=100_000,
        metavar="N",
        help="catch-up: keys written while a follower is stopped (default 100000)",
    )
    g.add_argument(
        "--snapshot-keys",
        type=int,
        default=1_000_000,
        metavar="N",
        help="snapshot: keys stored before a new follower joins (default 1000000)",
    )
    g.add_argument(
        "--workdir",
        type=Path,
        metavar="DIR",
        help="keep the clusters' files (data, logs, scripts) in DIR, which must not exist",
    )
    g.add_argument(
        "--load-generator",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="closed-loop load by wrk, or a Python process (default: wrk when installed)",
    )


# --- running it -------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    if args.suite or args.compare:
        return run_suite(args)
    try:
        opts = options_from(args)
    except UsageError as exc:
        return _fail(exc, EXIT_USAGE)
    try:
        scenario = SCENARIOS[args.scenario]
        report = asyncio.run(scenario(opts, Console.for_stderr(steps=False)))
    except (ClientError, BenchError) as exc:
        return _fail(exc, EXIT_FAILED)
    print(json.dumps(report.to_json()) if args.json else report.table())
    return EXIT_OK if report.failed == 0 and not report.extra.get("not_seen") else EXIT_FAILED


def run_suite(args: argparse.Namespace) -> int:
    try:
        opts = suite_options(args)
    except UsageError as exc:
        return _fail(exc, EXIT_USAGE)
    try:
        results = suite.run_suite(opts, Console.for_stderr())
    except BenchError as exc:
        return _fail(exc, EXIT_FAILED)
    print(json.dumps(results.to_json(), indent=2) if args.json else render(results))
    return EXIT_OK


def _fail(exc: Exception, code: int) -> int:
    print(f"kvstore bench: {exc}", file=sys.stderr)
    return code


def options_from(args: argparse.Namespace) -> BenchOptions:
    """The options of one scenario; UsageError for bad ones."""
    if args.concurrency < 1 or args.workers < 1 or args.workers > args.concurrency:
        raise UsageError("--concurrency and --workers must be at least 1, workers <= concurrency")
    if args.value_size < 0 or (args.requests is not None and args.requests < 1):
        raise UsageError("--value-size must be >= 0 and --requests >= 1")
    rate = DEFAULT_RATE if args.rate is None else args.rate
    if args.scenario == "lag" and rate <= 0:
        raise UsageError("--rate must be above 0")
    duration = args.duration
    if duration is None and args.requests is None:
        duration = DEFAULT_DURATION
    return BenchOptions(
        url=resolve_url(getattr(args, "url", None)),
        token=getattr(args, "token", None) or os.environ.get("KV_AUTH_TOKEN") or None,
        concurrency=args.concurrency,
        requests=args.requests,
        duration=duration,
        value_size=args.value_size,
        workers=args.workers,
        follower_url=args.follower_url,
        rate=rate,
    )


def suite_options(args: argparse.Namespace) -> suite.SuiteOptions:
    """The suite's options; UsageError for bad ones."""
    if args.compare == "etcd" and not etcd_available():
        raise UsageError("--compare etcd needs etcd on PATH (apt-get install etcd-server)")
    use_wrk = args.load_generator == "wrk" or (args.load_generator == "auto" and wrk_available())
    if use_wrk and not wrk_available():
        raise UsageError("--load-generator wrk needs wrk on PATH (apt-get install wrk)")
    if args.catchup_writes < 1 or args.snapshot_keys < 1 or args.value_size < 1:
        raise UsageError("--catchup-writes, --snapshot-keys and --value-size must be >= 1")
    if args.workdir is not None and args.workdir.exists():
        raise UsageError(f"--workdir {args.workdir}: already exists")
    rate = SUITE_RATE if args.rate is None else args.rate
    if rate <= 0:
        raise UsageError("--rate must be above 0")
    return suite.SuiteOptions(
        compare_etcd=args.compare == "etcd",
        duration=SUITE_DURATION if args.duration is None else args.duration,
        concurrency=_parsed(suite.parse_levels, args.levels, "--levels"),
        lag_rate=rate,
        catchup_writes=args.catchup_writes,
        snapshot_keys=args.snapshot_keys,
        value_size=args.value_size,
        use_wrk=use_wrk,
        only=_parsed(suite.parse_only, args.only, "--only"),
        workdir=args.workdir,
    )


T = TypeVar("T")


def _parsed(parse: Callable[[str], T], text: str, option: str) -> T:
    try:
        return parse(text)
    except ValueError as exc:
        raise UsageError(f"{option} {text}: {exc}") from None
