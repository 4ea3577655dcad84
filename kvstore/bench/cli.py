"""`kvstore bench --suite [--compare etcd]`: running the suite from its options."""

from __future__ import annotations

import argparse
import json
import sys

from kvstore.bench import load, suite
from kvstore.bench.report import render
from kvstore.bench.systems import SuiteError, etcd_available
from kvstore.cli.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE

SUITE_DURATION = 10.0
SUITE_RATE = 1000.0


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
