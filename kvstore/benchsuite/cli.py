"""`kvstore bench --suite [--compare etcd]`: the options, and running the suite from them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from . import load, suite
from .report import render
from .systems import SuiteError, etcd_available

SUITE_DURATION = 10.0
SUITE_RATE = 1000.0


def add_suite_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "the suite",
        "--suite starts its own clusters in a temporary directory, runs every scenario, prints "
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
        default=",".join(suite.SCENARIOS),
        metavar="NAME,...",
        help=f"scenarios to run (default all: {','.join(suite.SCENARIOS)})",
    )
    g.add_argument(
        "--catchup-writes", type=int, default=100_000, metavar="N", help="default 100000"
    )
    g.add_argument(
        "--snapshot-keys", type=int, default=1_000_000, metavar="N", help="default 1000000"
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


def suite_options(args: argparse.Namespace) -> suite.SuiteOptions:
    """The suite's options; ValueError with a message for bad ones."""
    if args.compare == "etcd" and not etcd_available():
        raise ValueError("--compare etcd needs etcd on PATH (apt-get install etcd-server)")
    use_wrk = args.load_generator == "wrk" or (
        args.load_generator == "auto" and load.wrk_available()
    )
    if use_wrk and not load.wrk_available():
        raise ValueError("--load-generator wrk needs wrk on PATH (apt-get install wrk)")
    if args.catchup_writes < 1 or args.snapshot_keys < 1 or args.value_size < 1:
        raise ValueError("--catchup-writes, --snapshot-keys and --value-size must be >= 1")
    if args.workdir is not None and args.workdir.exists():
        raise ValueError(f"--workdir {args.workdir}: already exists")
    rate = SUITE_RATE if args.rate is None else args.rate
    if rate <= 0:
        raise ValueError("--rate must be above 0")
    return suite.SuiteOptions(
        compare_etcd=args.compare == "etcd",
        duration=SUITE_DURATION if args.duration is None else args.duration,
        concurrency=suite.parse_levels(args.levels),
        lag_rate=rate,
        catchup_writes=args.catchup_writes,
        snapshot_keys=args.snapshot_keys,
        value_size=args.value_size,
        use_wrk=use_wrk,
        only=suite.parse_only(args.only),
        workdir=args.workdir,
    )


def run_suite_command(args: argparse.Namespace) -> int:
    try:
        opts = suite_options(args)
    except ValueError as exc:
        print(f"kvstore bench: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        results = suite.run_suite(opts, suite.Log())
    except (SuiteError, RuntimeError) as exc:
        print(f"kvstore bench: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(json.dumps(results.to_json(), indent=2) if args.json else render(results))
    return EXIT_OK
