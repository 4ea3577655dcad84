"""The bench: one engine behind `kvstore bench` (scenarios against running servers) and
`kvstore bench --suite` (clusters of its own, optionally beside etcd).

- command: the command line (options, help, exit codes); imported only when `bench` runs.
- scenarios: `put` and `lag` against a running server, each giving a report.
- suite, systems, etcd: the suite's phases, and the systems it starts (kvstore, etcd).
- load: the one load runner (Python processes) and the one LoadResult; wrk: the same loads
  by wrk; workload: what a load sends (kvstore's and etcd's requests, keys, values).
- lag: the one replication-lag measurement (paced writes plus a watch, in one process).
- children: work in spawned processes; stats: percentiles and latency; console: progress on
  stderr; report: what is printed.
"""
