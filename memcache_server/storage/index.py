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
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

from memcache_server.storage.segment import ALIGN, Segment
from memcache_server.storage.slabs import SlabTable

__all__ = ["KeyIndex", "IndexAreas", "index_capacity"]

EMPTY = -1
MIN_CAPACITY = 1 << 12
ENTRY_BYTES = 16  # an 8-byte handle and an 8-byte hash


def index_capacity(table: SlabTable, max_pages: int) -> int:
    """The largest capacity the index can need: every page (each class may hold one beyond the
    limit) full of the smallest chunks, kept at most half full."""
    most_items = (max_pages + len(table.sizes)) * max(table.perslab)
    cap = MIN_CAPACITY
    while cap < 2 * most_items + 2:
        cap *= 2
    return cap


class IndexAreas:
    """Two segment areas for the index arrays, handed out in turn by ``take``."""

    __slots__ = ("segment", "capacity", "areas", "turn")

    def __init__(self, segment: Segment, capacity: int) -> None:
        self.segment = segment
        self.capacity = capacity
        self.areas = [segment.carve(ENTRY_BYTES * capacity) for _ in range(2)]
        self.turn = 0

    @staticmethod
    def reserve(capacity: int) -> int:
        """Segment bytes two areas of ``capacity`` entries take."""
        return 2 * (ENTRY_BYTES * capacity + ALIGN)

    def take(self, capacity: int) -> tuple[memoryview, memoryview]:
        """Handle and hash arrays of ``capacity`` entries (handles EMPTY) in the next area; the
        area before it is given back to the kernel (its arrays must no longer be used)."""
        if capacity > self.capacity:
            raise MemoryError(f"key index cannot grow past {self.capacity} entries")
        off, area = self.areas[self.turn]
        self.turn ^= 1
        handles = area[: 8 * capacity].cast("q")
        hashes = area[8 * capacity : 16 * capacity].cast("q")
        handles[:] = array("q", [EMPTY]) * capacity
        hashes[:] = array("q", bytes(8 * capacity))
        return handles, hashes

    def release_other(self) -> None:
        """Give back the area not in use (after a resize has copied out of it)."""
        off, area = self.areas[self.turn]
        self.segment.release(off, len(area))


class KeyIndex:
    """Open-addressed key -> handle map. ``key_of(handle)`` returns the stored key bytes."""

    __slots__ = ("handles", "hashes", "mask", "count", "key_of", "areas")

    def __init__(self, key_of: Callable[[int], bytes | memoryview], areas: IndexAreas,
                 capacity: int = MIN_CAPACITY) -> None:
        self.key_of = key_of
        self.areas = areas
        self.count = 0
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        self.handles, self.hashes = self.areas.take(capacity)
        self.mask = capacity - 1

    @property
    def nbytes(self) -> int:
        """Bytes held by the two arrays (what the index costs in real memory)."""
        return 16 * (self.mask + 1)

    def __len__(self) -> int:
        return self.count

    def get(self, key: bytes) -> int | None:
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

    def handles_snapshot(self) -> list[int]:
        return [hd for hd in self.handles if hd != EMPTY]
