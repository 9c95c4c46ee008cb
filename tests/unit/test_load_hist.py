"""The latency histogram: precision bounds against exact percentiles, and exact merging."""

from __future__ import annotations

import random

import pytest

from memcache_server.load.hist import (
    MAX_VALUE_NS,
    NUM_BUCKETS,
    Histogram,
    bucket_bounds,
    bucket_index,
    exact_percentile,
)

PCTS = [0.1, 1, 10, 25, 50, 75, 90, 99, 99.9, 99.99, 100]


def test_buckets_are_contiguous_and_cover_range() -> None:
    prev = -1
    for i in range(NUM_BUCKETS):
        low, high = bucket_bounds(i)
        assert low == prev + 1
        assert high >= low
        prev = high
    assert prev >= MAX_VALUE_NS
    for v in [0, 1, 255, 256, 257, 1000, 12_345, 10**6, 10**9, MAX_VALUE_NS]:
        low, high = bucket_bounds(bucket_index(v))
        assert low <= v <= high


def test_relative_precision_under_one_percent() -> None:
    for i in range(256, NUM_BUCKETS):
        low, high = bucket_bounds(i)
        assert (high - low + 1) / low <= 1 / 128 + 1e-12


def test_small_known_data_exact() -> None:
    h = Histogram.of(range(1, 101))  # 1..100 ns are exact buckets
    assert h.percentile(50) == 50
    assert h.percentile(99) == 99
    assert h.percentile(100) == 100
    assert h.percentile(1) == 1
    assert h.mean() == pytest.approx(50.5)
    assert (h.min_ns, h.max_ns, h.total) == (1, 100, 100)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_percentiles_match_exact_within_bucket(seed: int) -> None:
    rng = random.Random(seed)
    values = [int(rng.lognormvariate(11, 1.5)) for _ in range(20_000)]  # ~60 us median
    h = Histogram.of(values)
    for p in PCTS:
        exact = exact_percentile(values, p)
        got = h.percentile(p)
        assert exact <= got <= max(exact * (1 + 1 / 128), exact), (p, exact, got)
    assert h.max_ns == max(values)
    assert h.sum_ns == sum(values)


def test_merge_equals_single_histogram() -> None:
    rng = random.Random(7)
    a = [rng.randint(1, 10**8) for _ in range(5000)]
    b = [rng.randint(1, 10**5) for _ in range(3000)]
    ha, hb = Histogram.of(a), Histogram.of(b)
    ha.merge(hb)
    whole = Histogram.of(a + b)
    assert ha.counts == whole.counts
    assert (ha.total, ha.sum_ns, ha.min_ns, ha.max_ns) == (
        whole.total,
        whole.sum_ns,
        whole.min_ns,
        whole.max_ns,
    )
    for p in PCTS:
        assert ha.percentile(p) == whole.percentile(p)


def test_sparse_round_trip_and_empty() -> None:
    h = Histogram.of([5, 500, 5_000_000, 10**12])  # the last is clamped into the top bucket
    again = Histogram.from_sparse(h.to_sparse())
    assert again.counts == h.counts and again.max_ns == 10**12
    assert Histogram().percentile(99) == 0
    empty = Histogram()
    empty.merge(Histogram())
    assert empty.total == 0
