"""The slab automover's decision (memcached's ``slab_automove=1`` algorithm, slab_automove.c).

Once a second it compares the classes over a sliding window of the last ``window`` checks:

* a class whose free chunks exceed 2.5 pages' worth and which saw no eviction, no
  out-of-memory and no new page during the whole window gives a page to the global pool
  (``dst`` 0), from which whichever class next needs memory takes it;
* otherwise the *oldest* class (highest LRU-tail age averaged over the window, with more than
  2 pages) gives a page to the *youngest* class that is evicting (lowest average tail age,
  evictions in more than half the window's checks, and evicting right now), provided the
  youngest age is below ``ratio`` times the oldest (0.8 by default) and the window has filled
  once since start.

The tail age is how long the least recently used item of a class has gone untouched: a class
whose tail is young is recycling memory quickly (its items are evicted soon after being
written), an old tail means memory holding items nobody has needed for a while. Moving a page
from the old class to the young one equalises how long items survive in each. This module only
decides; ``rebalancer.py`` runs it and carries the moves out. Pure: no locks, no threads.
"""

from __future__ import annotations

from dataclasses import dataclass

from memcache_server.storage.store_stats import ClassStats

__all__ = ["Automover", "ClassSample"]

MIN_PAGES_FOR_SOURCE = 2
MIN_PAGES_FOR_RECLAIM = 2.5


@dataclass(frozen=True, slots=True)
class ClassSample:
    """What the automover reads of one class at one check."""

    evicted: int = 0
    outofmemory: int = 0
    age: int = 0
    total_pages: int = 0
    free_chunks: int = 0
    chunks_per_page: int = 0

    @classmethod
    def of(cls, s: ClassStats) -> ClassSample:
        return cls(
            s.counters["evicted"],
            s.counters["outofmemory"],
            s.age,
            s.total_pages,
            s.free_chunks,
            s.chunks_per_page,
        )


class Automover:
    """Window state for every class; ``run`` once per check returns (src, dst) or None."""

    def __init__(self, window: int, ratio: float, first: dict[int, ClassSample]) -> None:
        self.window = max(window, 1)
        self.ratio = ratio
        self.cur = 0
        self.before = first
        # per class: [age, dirty, evicted] for each slot of the window
        self._data: dict[int, list[list[int]]] = {}

    def run(self, after: dict[int, ClassSample]) -> tuple[int, int] | None:
        w = self.window
        self.cur += 1
        oldest, oldest_age = -1, 0
        youngest, youngest_age = -1, 1 << 64
        youngest_evicting = False
        decision: tuple[int, int] | None = None
        empty = ClassSample()
        for cid in sorted(after):
            a = after[cid]
            b = self.before.get(cid, empty)
            data = self._data.get(cid)
            if data is None:
                data = self._data[cid] = [[0, 0, 0] for _ in range(w)]
            wd = data[self.cur % w]
            wd[0] = wd[1] = wd[2] = 0
            sum_age = sum(d[0] for d in data)
            sum_dirty = sum(d[1] for d in data)
            sum_evicted = sum(d[2] for d in data)
            if a.evicted - b.evicted > 0 or a.outofmemory - b.outofmemory > 0:
                wd[2] = 1
                wd[1] = 1
            if a.total_pages - b.total_pages > 0:
                wd[1] = 1
            wd[0] = a.age
            age = sum_age // w
            if a.free_chunks > a.chunks_per_page * MIN_PAGES_FOR_RECLAIM and sum_dirty == 0:
                decision = (cid, 0)
                break
            if age > oldest_age and a.total_pages > MIN_PAGES_FOR_SOURCE:
                oldest, oldest_age = cid, age
            if age < youngest_age and sum_evicted > w // 2:
                youngest, youngest_age = cid, age
                youngest_evicting = bool(wd[2])
        self.before = after
        if decision is not None:
            return decision
        if youngest != -1 and oldest != -1 and self.cur > w:
            if youngest_age < oldest_age * self.ratio and youngest_evicting:
                return oldest, youngest
        return None
