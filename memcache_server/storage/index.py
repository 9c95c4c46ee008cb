"""The key index: key -> item handle, in two flat arrays instead of a dict.

Why not a dict: a dict of bytes keys to int handles costs ~200 bytes per item after churn (the
key object, the handle int, and a table CPython resizes to three times the live entries), more
than the item's own chunk for small values. Here an entry is one 8-byte handle and one 8-byte
hash in open-addressed arrays kept at most half full: 16-32 bytes per item. Keys are not stored
again: they live in the item's chunk, and ``key_of(handle)`` reads them back to confirm a match.

Linear probing with backward-shift deletion (no tombstones, so churn never degrades probes).
Not thread-safe: the store calls it under its lock.

The arrays live in the shared segment (``IndexAreas``): two areas of the largest size the index
can reach, used in turn, so a resize copies from one to the other and releases the old one.
Every process keeps views of the area in use; the shared ``stamp`` (the mask, with a generation
above it that every re-layout bumps) tells a process its views are stale, even when a rebuild
kept the capacity (the store's repair pass does, see ``storage/repair.py``).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

from memcache_server.storage.segment import ALIGN, Segment, Word
from memcache_server.storage.slabs import SlabTable

__all__ = ["KeyIndex", "IndexAreas", "index_capacity"]

EMPTY = -1
MIN_CAPACITY = 1 << 12
ENTRY_BYTES = 16  # an 8-byte handle and an 8-byte hash
WORDS = 4  # the index's shared words: count, layout stamp, the area in use
STAMP_SHIFT = 40  # stamp = mask | generation << STAMP_SHIFT (masks stay far below 2**40)
MASK_BITS = (1 << STAMP_SHIFT) - 1


def index_capacity(table: SlabTable, max_pages: int) -> int:
    """The largest capacity the index can need: every page (each class may hold one beyond the
    limit) full of the smallest chunks, kept at most half full."""
    most_items = (max_pages + len(table.sizes)) * max(table.perslab)
    cap = MIN_CAPACITY
    while cap < 2 * most_items + 2:
        cap *= 2
    return cap


class IndexAreas:
    """The index's shared words and two segment areas for its arrays, used in turn."""

    __slots__ = ("segment", "capacity", "areas", "words")

    turn = Word(2)  # the area holding the arrays now

    def __init__(self, segment: Segment, capacity: int) -> None:
        self.segment = segment
        self.capacity = capacity
        self.words = segment.carve(8 * WORDS)[1].cast("q")
        self.areas = [segment.carve(ENTRY_BYTES * capacity) for _ in range(2)]

    @staticmethod
    def reserve(capacity: int) -> int:
        """Segment bytes the words and two areas of ``capacity`` entries take."""
        return ALIGN + 2 * (ENTRY_BYTES * capacity + ALIGN)

    def arrays(self, capacity: int) -> tuple[memoryview, memoryview]:
        """The handle and hash arrays of ``capacity`` entries in the area in use."""
        area = self.areas[self.turn][1]
        return area[: 8 * capacity].cast("q"), area[8 * capacity : 16 * capacity].cast("q")

    def take(self, capacity: int) -> tuple[memoryview, memoryview]:
        """Empty arrays of ``capacity`` entries in the other area, which becomes the one in use."""
        if capacity > self.capacity:
            raise MemoryError(f"key index cannot grow past {self.capacity} entries")
        self.turn ^= 1
        handles, hashes = self.arrays(capacity)
        handles[:] = array("q", [EMPTY]) * capacity
        hashes[:] = array("q", bytes(8 * capacity))
        return handles, hashes

    def release_other(self) -> None:
        """Give back the area not in use (after a resize has copied out of it)."""
        off, area = self.areas[self.turn ^ 1]
        self.segment.release(off, len(area))


class KeyIndex:
    """Open-addressed key -> handle map. ``key_of(handle)`` returns the stored key bytes."""

    __slots__ = ("handles", "hashes", "mask", "stamp", "key_of", "areas", "words")

    # Shared with every process mapping the segment; ``mask``, ``stamp`` and the arrays are this
    # process's views of the area in use, re-taken by ``sync`` when another process re-laid the
    # index out (a resize or a rebuild), which it tells by a new shared stamp.
    count = Word(0)
    shared_stamp = Word(1)

    def __init__(self, key_of: Callable[[int], bytes | memoryview], areas: IndexAreas,
                 capacity: int = MIN_CAPACITY) -> None:
        self.key_of = key_of
        self.areas = areas
        self.words = areas.words
        self.count = 0
        self.shared_stamp = 0
        self.areas.turn = 1  # so the first take fills area 0
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        self.handles, self.hashes = self.areas.take(capacity)
        self.mask = capacity - 1
        generation = (int(self.words[1]) >> STAMP_SHIFT) + 1
        self.stamp = self.mask | generation << STAMP_SHIFT
        self.shared_stamp = self.stamp

    def sync(self) -> None:
        """Follow a re-layout another process made (callers hold the store's lock)."""
        if self.stamp != self.words[1]:
            self.stamp = self.shared_stamp
            self.mask = self.stamp & MASK_BITS
            self.handles, self.hashes = self.areas.arrays(self.mask + 1)

    def rebuild(self, entries: list[tuple[bytes, int]], capacity: int) -> None:
        """Empty the index into the other area at ``capacity`` and put ``entries`` (key, handle)
        back: the repair pass's fresh start, whatever state a dead process left the index in."""
        self.count = 0
        self._alloc(capacity)
        for key, handle in entries:
            self.put(key, handle)
        self.areas.release_other()

    @property
    def nbytes(self) -> int:
        """Bytes held by the two arrays (what the index costs in real memory), read from the
        shared stamp: this process's own ``mask`` may predate a resize another process made,
        and a page granted against the smaller figure would overshoot ``-m``."""
        return 16 * ((int(self.words[1]) & MASK_BITS) + 1)

    def __len__(self) -> int:
        return self.count

    def get(self, key: bytes) -> int | None:
        self.sync()
        h = hash(key)
        mask = self.mask
        i = h & mask
        handles = self.handles
        hashes = self.hashes
        while True:
            hd = handles[i]
            if hd == EMPTY:
                return None
            if hashes[i] == h and self.key_of(hd) == key:
                return hd
            i = (i + 1) & mask

    def put(self, key: bytes, handle: int) -> int | None:
        """Map ``key`` to ``handle``; returns the handle it replaced, if any."""
        self.sync()
        h = hash(key)
        mask = self.mask
        i = h & mask
        handles = self.handles
        hashes = self.hashes
        while True:
            hd = handles[i]
            if hd == EMPTY:
                handles[i] = handle
                hashes[i] = h
                self.count += 1
                if self.count * 2 > mask + 1:
                    self._resize((mask + 1) * 2)
                return None
            if hashes[i] == h and self.key_of(hd) == key:
                handles[i] = handle
                return hd
            i = (i + 1) & mask

    def remove(self, key: bytes, handle: int) -> bool:
        """Remove ``key`` if it maps to ``handle`` (backward-shift deletion)."""
        self.sync()
        h = hash(key)
        mask = self.mask
        i = h & mask
        handles = self.handles
        hashes = self.hashes
        while True:
            hd = handles[i]
            if hd == EMPTY:
                return False
            if hd == handle:
                break
            i = (i + 1) & mask
        # Shift later entries of the cluster back so no probe sequence is broken.
        j = i
        while True:
            j = (j + 1) & mask
            hj = handles[j]
            if hj == EMPTY:
                break
            home = hashes[j] & mask
            # Move entry j into the hole at i unless its home lies cyclically in (i, j].
            if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
                handles[i] = hj
                hashes[i] = hashes[j]
                i = j
        handles[i] = EMPTY
        hashes[i] = 0
        self.count -= 1
        return True

    def replace_handle(self, key: bytes, old: int, new: int) -> None:
        """Point ``key`` at a new handle (the item moved) without rehashing."""
        self.sync()
        h = hash(key)
        mask = self.mask
        i = h & mask
        handles = self.handles
        while True:
            hd = handles[i]
            if hd == old:
                handles[i] = new
                return
            if hd == EMPTY:
                return
            i = (i + 1) & mask

    def _resize(self, capacity: int) -> None:
        old_handles = self.handles
        old_hashes = self.hashes
        self._alloc(capacity)
        handles = self.handles
        hashes = self.hashes
        mask = self.mask
        for k in range(len(old_handles)):
            hd = old_handles[k]
            if hd == EMPTY:
                continue
            h = old_hashes[k]
            i = h & mask
            while handles[i] != EMPTY:
                i = (i + 1) & mask
            handles[i] = hd
            hashes[i] = h
        old_handles.release()
        old_hashes.release()
        self.areas.release_other()

    def load(self, handles: list[int]) -> None:
        """Fill an empty index with items whose keys are known to differ (a restart: the hashes
        of the process that stored them mean nothing here, so each key is hashed again)."""
        capacity = MIN_CAPACITY
        while 2 * len(handles) > capacity:
            capacity *= 2
        if capacity != self.mask + 1:
            self._alloc(capacity)
            self.areas.release_other()
        handles_arr = self.handles
        hashes = self.hashes
        mask = self.mask
        key_of = self.key_of
        for hd in handles:
            h = hash(bytes(key_of(hd)))
            i = h & mask
            while handles_arr[i] != EMPTY:
                i = (i + 1) & mask
            handles_arr[i] = hd
            hashes[i] = h
        self.count = len(handles)

    def handles_snapshot(self) -> list[int]:
        self.sync()
        return [hd for hd in self.handles if hd != EMPTY]
