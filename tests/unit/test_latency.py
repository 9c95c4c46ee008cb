"""The latency recorder: bucket choice, family of a request line, merging workers."""

from __future__ import annotations

import pytest

from memcache_server.latency import (
    BUCKET_BOUNDS,
    FAMILIES,
    SAMPLE_EVERY,
    SAMPLE_MASK,
    STRIDE,
    family_offset,
    merge,
    new_recorder,
    observe,
)


def offset(family: str) -> int:
    return FAMILIES.index(family) * STRIDE


@pytest.mark.parametrize(
    ("line", "family"),
    [
        (b"get k\r\n", "get"),
        (b"gets k\r\n", "get"),
        (b"bget k\r\n", "get"),
        (b"mg k v\r\n", "get"),
        (b"gat 10 k\r\n", "gat"),
        (b"gats 10 k\r\n", "gat"),
        (b"set k 0 0 1\r\n", "set"),
        (b"add k", "set"),
        (b"replace k", "set"),
        (b"append k", "set"),
        (b"prepend k", "set"),
        (b"cas k 0 0 1 5\r\n", "set"),
        (b"ms k 1\r\n", "set"),
        (b"delete k\r\n", "delete"),
        (b"md k\r\n", "delete"),
        (b"incr k 1\r\n", "incr_decr"),
        (b"decr k 1\r\n", "incr_decr"),
        (b"ma k\r\n", "incr_decr"),
        (b"touch k 10\r\n", "touch"),
        (b"stats\r\n", "other"),
        (b"cache_memlimit 100\r\n", "other"),
        (b"mn\r\n", "other"),
        (b"", "other"),
        (b"\x80\x01", "other"),
    ],
)
def test_family_of_a_request_line(line: bytes, family: str) -> None:
    assert family_offset(line) == offset(family)


def test_bucket_bounds_double_from_about_a_microsecond_to_a_second() -> None:
    assert BUCKET_BOUNDS[0] == 1024e-9 and BUCKET_BOUNDS[-1] == 2**30 / 1e9
    assert all(b == a * 2 for a, b in zip(BUCKET_BOUNDS, BUCKET_BOUNDS[1:], strict=False))


def test_observations_land_in_the_smallest_bucket_that_holds_them() -> None:
    rec = new_recorder()
    for ns in (0, 1, 1024, 1025, 2048, 2049, 2**30, 2**30 + 1, 10**12):
        observe(rec, offset("get"), ns)
    hist = merge([rec]).families["get"]
    cumulative = dict(hist.cumulative())
    assert cumulative["1.024e-06"] == 3  # 0, 1 and exactly 1024 ns: "le" is inclusive
    assert cumulative["2.048e-06"] == 5
    assert cumulative["4.096e-06"] == 6
    assert cumulative["1.073741824"] == 7
    assert cumulative["+Inf"] == hist.count == 9
    assert hist.sum_ns == sum((0, 1, 1024, 1025, 2048, 2049, 2**30, 2**30 + 1, 10**12))


def test_merge_sums_workers_and_keeps_families_apart() -> None:
    a, b = new_recorder(), new_recorder()
    observe(a, offset("set"), 5000)
    observe(b, offset("set"), 5000)
    observe(b, offset("delete"), 70_000)
    merged = merge([a, b]).families
    assert merged["set"].count == 2 and merged["set"].sum_ns == 10_000
    assert merged["delete"].count == 1
    assert merged["get"].count == 0
    assert list(merged) == list(FAMILIES)


def test_sampling_rate_is_a_power_of_two() -> None:
    assert SAMPLE_EVERY & SAMPLE_MASK == 0 and SAMPLE_MASK == SAMPLE_EVERY - 1
