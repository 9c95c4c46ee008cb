"""Workload presets, explicit overrides, validation; plus key choice and the hash ring."""

from __future__ import annotations

import random
from array import array
from collections import Counter
from pathlib import Path

import pytest

from memcache_server.load.keys import KeyChooser, partition, server_ring
from memcache_server.load.workload import PRESETS, ValueSize, resolve_workload


def test_presets_exist() -> None:
    for name in ("get90", "mixed50", "multiget10", "large4k", "pipeline32"):
        assert resolve_workload(name).name == name
    assert resolve_workload("get90").get_ratio == 0.9
    assert resolve_workload("mixed50").get_ratio == 0.5
    assert resolve_workload("multiget10").multiget == 10
    assert resolve_workload("large4k").value_size == ValueSize(4096, 4096)
    assert resolve_workload("pipeline32").pipeline == 32


def test_overrides_win_and_none_keeps_preset() -> None:
    wl = resolve_workload("large4k", get_ratio=0.5, value_size="64-4096", pipeline=None)
    assert wl.get_ratio == 0.5
    assert wl.value_size == ValueSize(64, 4096)
    assert wl.pipeline == PRESETS["large4k"].pipeline
    assert resolve_workload("pipeline32", prefill=False).prefill is False
    assert resolve_workload("get90", key_dist="zipf", zipf_s=1.2).zipf_s == 1.2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"get_ratio": 1.5},
        {"keys": 0},
        {"multiget": 0},
        {"pipeline": 5000},
        {"value_size": "4"},
        {"value_size": "100-50"},
        {"value_size": "abc"},
        {"value_size": "2000000"},
        {"key_dist": "pareto"},
        {"nonsense": 1},
    ],
)
def test_bad_options_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        resolve_workload("get90", **kwargs)


def test_unknown_preset() -> None:
    with pytest.raises(ValueError, match="unknown workload"):
        resolve_workload("nope")


def test_value_size_pick_in_range() -> None:
    vs = ValueSize.parse("64-128")
    rng = random.Random(1)
    sizes = {vs.pick(rng) for _ in range(2000)}
    assert min(sizes) == 64 and max(sizes) == 128
    assert str(vs) == "64-128" and str(ValueSize.parse("100")) == "100"


def test_zipf_prefers_low_ranks_and_uniform_is_flat() -> None:
    ids = array("q", range(1000))
    z = KeyChooser(ids, "zipf", 1.0, random.Random(1))
    counts = Counter(z.pick() for _ in range(20_000))
    assert counts[0] > counts[10] > counts[500]
    u = KeyChooser(ids, "uniform", 1.0, random.Random(1))
    ucounts = Counter(u.pick() for _ in range(20_000))
    assert max(ucounts.values()) < 60
    assert len(set(u.pick_distinct(10))) == 10


def test_ring_spreads_keys_and_is_stable() -> None:
    servers = [("127.0.0.1", 1), ("127.0.0.1", 2), ("127.0.0.1", 3)]
    parts = partition(b"load:", 30_000, servers)
    assert sum(len(p) for p in parts) == 30_000
    assert all(len(p) > 5_000 for p in parts)
    # Removing a server moves only keys it owned.
    smaller = partition(b"load:", 30_000, servers[:2])
    for kept, after in zip(parts[:2], smaller, strict=True):
        assert set(kept) <= set(after)


def test_load_places_keys_as_libmemcached_does() -> None:
    """The generator's ring is libmemcached's ketama continuum, checked on its own vectors."""
    rows = [
        line.rstrip("\n").split("\t")
        for line in (Path(__file__).parents[1] / "data" / "ketama-vectors.tsv").open()
        if line.strip() and not line.startswith("#")
    ]
    checked = 0
    for _set, members, key, owner in rows:
        ring = server_ring([(m, 11211) for m in members.split()])
        assert ring.owner(key.encode()).hostname == owner
        checked += 1
    assert checked == 45
