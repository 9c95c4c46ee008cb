"""The store's statistics: class snapshots, ``stats sizes``, ``stats cachedump``, resets.

Read under the store's lock, on the thread of whoever asks (a ``stats`` command, the metrics
collector, the automover); nothing here is on the request path.
"""

from __future__ import annotations

from dataclasses import dataclass

from memcache_server.storage.items import Items, SizeHistogram
from memcache_server.storage.slabclass import (
    COLD,
    HOT,
    LRU_COUNTERS,
    NIL,
    SUB_LRUS,
    WARM,
    SlabClass,
)

__all__ = ["StoreStats", "ClassStats"]


@dataclass(frozen=True, slots=True)
class ClassStats:
    """A snapshot of one class for `stats slabs` / `stats items`."""

    cid: int
    chunk_size: int
    chunks_per_page: int
    total_pages: int
    used_chunks: int
    free_chunks: int
    items: int
    mem_requested: int
    age: int  # seconds since COLD's tail was last used (memcached's age)
    counters: dict[str, int]
    # Items on HOT, WARM, COLD, TEMP, the tail ages of HOT and WARM, and the segmented LRU's
    # counters (moves_to_cold .. hits_to_temp, see slabclass.LRU_COUNTERS).
    lru_sizes: tuple[int, ...] = (0, 0, 0, 0)
    age_hot: int = 0
    age_warm: int = 0
    lru_counters: dict[str, int] | None = None


class StoreStats(Items):
    """Snapshots and resets of the counters ``Items`` keeps."""

    def track_sizes(self, on: bool) -> bool:
        """``stats sizes_enable``/``sizes_disable`` (and ``-o track_sizes``). Turning tracking
        on counts items stored from then on, and takes a CAS value to mark where, as memcached
        does; turning it on again changes nothing. Returns whether it was already on."""
        with self.lock:
            was = self.sizes is not None
            if on and not was:
                self.sizes = SizeHistogram(self.do_next_cas() if self.limits.use_cas else 0)
            elif not on:
                self.sizes = None
            return was

    def size_counts(self) -> list[tuple[int, int]] | None:
        """(bucket size in bytes, live items) in size order; None while tracking is off."""
        with self.lock:
            if self.sizes is None:
                return None
            return [(b << 5, n) for b, n in sorted(self.sizes.counts.items())]

    def class_stats(self) -> list[ClassStats]:
        """Snapshot of every class (callers filter: stats slabs shows classes with pages).

        One hold of the lock per class, not one for all: a snapshot of all 40 classes took
        about 340 us, a stall of every worker, once a second for the automover and on every
        ``stats``. Each class is consistent in itself; across classes the figures are read a
        few microseconds apart, as memcached's per-LRU locks read them."""
        now = self.clock.now
        out = []
        for c in self.classes[1:]:
            with self.lock:
                out.append(
                    ClassStats(
                        cid=c.cid,
                        chunk_size=c.size,
                        chunks_per_page=c.perslab,
                        total_pages=c.npages,
                        used_chunks=c.used_chunks,
                        free_chunks=c.free_count,
                        items=c.items,
                        mem_requested=c.mem_requested,
                        age=self._tail_age(c, COLD, now),
                        counters=c.counters(),
                        lru_sizes=tuple(c.lru_size(lru) for lru in range(SUB_LRUS)),
                        age_hot=self._tail_age(c, HOT, now),
                        age_warm=self._tail_age(c, WARM, now),
                        lru_counters={name: int(c.words[w]) for name, w in LRU_COUNTERS},
                    )
                )
        return out

    def _tail_age(self, c: SlabClass, lru: int, now: int) -> int:
        t = c.tail(lru)
        return 0 if t == NIL else now - int(self.classes[t & 63].u4[2 * (t >> 6) + 7])

    def dump_class(self, cid: int, limit: int) -> list[tuple[bytes, int, int]]:
        """(key, value length, absolute expiry or 0) from the head of a class's HOT list, for
        ``stats cachedump``; at most ``limit`` items (0: no limit), at most 2 MB of output.
        memcached dumps ``heads[id]``, which is the HOT list: items that moved on to WARM or
        COLD (all of them, with a flat LRU) are not shown."""
        out: list[tuple[bytes, int, int]] = []
        budget = 2 * 1024 * 1024
        with self.lock:
            if not 0 < cid < len(self.classes):
                return out
            h = self.classes[cid].head(HOT)
            while h != NIL and (limit == 0 or len(out) < limit) and budget > 0:
                c = self.classes[h & 63]
                s = h >> 6
                key = self.do_key_of(c, s)
                out.append((key, c.u4[2 * s + 8] - 2, c.u4[2 * s + 6]))
                budget -= len(key) + 40
                h = c.q[s + 2]
        return out

    def reset_stats(self) -> None:
        with self.lock:
            self.total_items = 0
            self.evictions = self.reclaimed = 0
            self.expired_unfetched = self.evicted_unfetched = 0
            self.crawler_reclaimed = self.crawler_items_checked = 0
            self.moves.reset()
            for c in self.classes:
                c.reset_counters()
                for _name, w in LRU_COUNTERS:
                    c.words[w] = 0
            self.lru_maintainer_juggles = 0
