"""The key index against a dict model: random puts, replaces and removes through resizes, with
the tag wide enough to give every entry's home slot and with one so narrow that resizes and
deletions must hash keys again (a table past the tag's reach)."""

from __future__ import annotations

import random

import pytest

from memcache_server.storage.index import MIN_CAPACITY, IndexAreas, KeyIndex
from memcache_server.storage.segment import Segment


@pytest.mark.parametrize("hbits", [30, 56])
def test_index_matches_a_dict_through_resizes_and_deletions(hbits: int) -> None:
    capacity = 1 << 16
    segment = Segment(IndexAreas.reserve(capacity) + 4096, None, False)
    keys: dict[int, bytes] = {}  # handle -> key, what the items would hold
    index = KeyIndex(lambda h: keys[h], IndexAreas(segment, capacity), hbits)
    model: dict[bytes, int] = {}
    rng = random.Random(hbits)
    next_handle = 1
    for step in range(30000):
        key = b"k%d" % rng.randrange(12000)
        op = rng.random()
        if op < 0.6:
            h = next_handle
            next_handle += 1
            keys[h] = key
            assert index.put(key, h) == model.get(key)
            model[key] = h
        elif op < 0.85 and key in model:
            assert index.remove(key, model.pop(key))
        else:
            assert index.get(key) == model.get(key)
        if step % 5000 == 0:
            assert sorted(index.handles_snapshot()) == sorted(model.values())
    assert len(index) == len(model)
    assert index.mask + 1 > MIN_CAPACITY  # it grew
    for key, h in model.items():
        assert index.get(key) == h
    assert sorted(index.handles_snapshot()) == sorted(model.values())
