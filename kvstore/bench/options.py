"""The suite's command-line options. Kept apart from the suite itself, so that building the
`kvstore` parser (every `kvstore serve` does) imports nothing more."""

from __future__ import annotations

import argparse
from pathlib import Path

SCENARIOS = ("put", "txn", "put3", "get", "lag", "catchup", "snapshot", "rss")


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
        default=",".join(SCENARIOS),
        metavar="NAME,...",
        help=f"scenarios to run (default all: {','.join(SCENARIOS)})",
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
