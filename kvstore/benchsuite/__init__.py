"""`kvstore bench --suite`: every benchmark scenario on clusters the suite starts itself, and
with `--compare etcd` the same loads on etcd, in one table. See benchmarks/README.md."""
