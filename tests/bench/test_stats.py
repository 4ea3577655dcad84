"""kvstore.bench.stats: the percentiles and latency summary every report shows."""

from __future__ import annotations

import pytest

from kvstore.bench.stats import Latency, percentile


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert [percentile(values, p) for p in (0, 1, 50, 99, 100)] == [1, 1, 50, 99, 100]
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_latency_in_milliseconds() -> None:
    lat = Latency.of([0.003, 0.001, 0.002, 0.010])
    assert (lat.count, lat.p50_ms, lat.p99_ms, lat.max_ms) == (4, 2.0, 10.0, 10.0)
    assert lat.text() == "p50 2.00  p99 10.00  max 10.00"
    assert Latency.of([]) == Latency(0, None, None, None)
    assert Latency.of([]).text() == "none measured"
