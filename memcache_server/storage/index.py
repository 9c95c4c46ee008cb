"""The key index: key -> item handle, in one flat array of 8-byte entries instead of a dict.

Why not a dict: a dict of bytes keys to int handles costs ~200 bytes per item after churn (the
key object, the handle int, and a table CPython resizes to three times the live entries), more
than the item's own chunk for small values. Here an entry is one 8-byte word in an
open-addressed table kept at most three quarters full: 8-21 bytes per item (memcached's hash
table costs 5-11). Keys are not stored again: they live in the item's chunk, and
``key_of(handle)`` reads them back to confirm a match.

An entry packs the handle (its low ``handle_bits``) with a tag above it: the key hash's low bits,
as many as fit in the rest of the word (33 at -m 64). The tag answers the question probing asks
of every entry it passes (could this be the key?) without touching the item, and, because it
holds the hash's low bits, it also gives an entry's home slot (hash & mask) for resizes and
deletions without reading the key back. Only a table larger than the tag's reach (more than
2**tag_bits entries: -m in the tens of gigabytes) hashes keys again for that.

Linear probing with backward-shift deletion (no tombstones, so churn never degrades probes).
Not thread-safe: the store calls it under its lock.

The table lives in the shared segment (``IndexAreas``): two areas of the largest size the index
can reach, used in turn, so a resize copies from one to the other and releases the old one.
Every process keeps a view of the area in use; the shared ``stamp`` (the mask, with a
generation above it that every re-layout bumps) tells a process its view is stale, even when a
rebuild kept the capacity (the store's repair pass does, see ``storage/repair.py``).
"""

from __future__ import annotations

from array import array
from collections.abc import Callable

from memcache_server.storage.segment import ALIGN, Segment, Word
from memcache_server.storage.slabs import PAGE_SIZE, SlabTable

__all__ = ["KeyIndex", "IndexAreas", "index_capacity", "handle_bits"]

EMPTY = -1
MIN_CAPACITY = 1 << 12
ENTRY_BYTES = 8
WORDS = 4  # the index's shared words: count, layout stamp, the area in use
STAMP_SHIFT = 40  # stamp = mask | generation << STAMP_SHIFT (masks stay far below 2**40)
MASK_BITS = (1 << STAMP_SHIFT) - 1
# Grow past this load, three quarters (count * 4 > capacity * 3).
LOAD_NUM, LOAD_DEN = 3, 4


def handle_bits(max_pages: int) -> int:
    """Bits an item handle needs when each class holds up to ``max_pages`` 1 MB pages: the slot
    (a word offset into the class's pages) above six bits of class id."""
    return (max_pages * (PAGE_SIZE // 8)).bit_length() + 6


def index_capacity(table: SlabTable, max_pages: int) -> int:
    """The largest capacity the index can need: every page (each class may hold one beyond the
    limit) full of the smallest chunks, kept at most three quarters full."""
    most_items = (max_pages + len(table.sizes)) * max(table.perslab)
    cap = MIN_CAPACITY
    while cap * LOAD_NUM < (most_items + 1) * LOAD_DEN:
        cap *= 2
    return cap


class IndexAreas:
    """The index's shared words and two segment areas for its table, used in turn."""

    __slots__ = ("segment", "capacity", "areas", "words")

    turn = Word(2)  # the area holding the table now

    def __init__(self, segment: Segment, capacity: int) -> None:
        self.segment = segment
        self.capacity = capacity
        self.words = segment.carve(8 * WORDS)[1].cast("q")
        self.areas = [segment.carve(ENTRY_BYTES * capacity) for _ in range(2)]

    @staticmethod
    def reserve(capacity: int) -> int:
        """Segment bytes the words and two areas of ``capacity`` entries take."""
        return ALIGN + 2 * (ENTRY_BYTES * capacity + ALIGN)

    def table(self, capacity: int) -> memoryview:
        """The table of ``capacity`` entries in the area in use."""
        return self.areas[self.turn][1][: ENTRY_BYTES * capacity].cast("q")

    def take(self, capacity: int) -> memoryview:
        """An empty table of ``capacity`` entries in the other area, which becomes the one in
        use."""
        if capacity > self.capacity:
            raise MemoryError(f"key index cannot grow past {self.capacity} entries")
        self.turn ^= 1
        table = self.table(capacity)
        table[:] = array("q", [EMPTY]) * capacity
        return table

    def release_other(self) -> None:
        """Give back the area not in use (after a resize has copied out of it)."""
        off, area = self.areas[self.turn ^ 1]
        self.segment.release(off, len(area))


class KeyIndex:
    """Open-addressed key -> handle map. ``key_of(handle)`` returns the stored key bytes."""

    __slots__ = ("handles", "mask", "stamp", "key_of", "areas", "words", "hbits", "hmask",
                 "tmask")

    # Shared with every process mapping the segment; ``mask``, ``stamp`` and the table are this
    # process's view of the area in use, re-taken by ``sync`` when another process re-laid the
    # index out (a resize or a rebuild), which it tells by a new shared stamp.
    count = Word(0)
    shared_stamp = Word(1)

    def __init__(self, key_of: Callable[[int], bytes | memoryview], areas: IndexAreas,
                 hbits: int, capacity: int = MIN_CAPACITY) -> None:
        self.key_of = key_of
        self.areas = areas
        self.words = areas.words
        self.hbits = hbits  # an entry: tag << hbits | handle
        self.hmask = (1 << hbits) - 1
        self.tmask = (1 << (63 - hbits)) - 1  # the tag: the hash's low bits (sign bit clear)
        self.count = 0
        self.shared_stamp = 0
        self.areas.turn = 1  # so the first take fills area 0
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        self.handles = self.areas.take(capacity)
        self.mask = capacity - 1
        generation = (int(self.words[1]) >> STAMP_SHIFT) + 1
        self.stamp = self.mask | generation << STAMP_SHIFT
        self.shared_stamp = self.stamp

    def sync(self) -> None:
        """Follow a re-layout another process made (callers hold the store's lock)."""
        if self.stamp != self.words[1]:
            self.stamp = self.shared_stamp
            self.mask = self.stamp & MASK_BITS
            self.handles = self.areas.table(self.mask + 1)

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
        """Bytes the table holds (what the index costs in real memory), read from the shared
        stamp: this process's own ``mask`` may predate a resize another process made."""
        return ENTRY_BYTES * ((int(self.words[1]) & MASK_BITS) + 1)

    def __len__(self) -> int:
        return self.count

    def _home(self, entry: int, mask: int) -> int:
        """The slot an entry's key hashes to, from its tag while the tag reaches the mask."""
        if mask <= self.tmask:
            return (entry >> self.hbits) & mask
        return hash(bytes(self.key_of(entry & self.hmask))) & mask

    def get(self, key: bytes) -> int | None:
        self.sync()
        h = hash(key)
        mask = self.mask
        hbits = self.hbits
        tag = h & self.tmask
        i = h & mask
        handles = self.handles
        while True:
            e = handles[i]
            if e == EMPTY:
                return None
            if e >> hbits == tag:
                hd = e & self.hmask
                if self.key_of(hd) == key:
                    return hd
            i = (i + 1) & mask

    def put(self, key: bytes, handle: int) -> int | None:
        """Map ``key`` to ``handle``; returns the handle it replaced, if any."""
        self.sync()
        h = hash(key)
        mask = self.mask
        hbits = self.hbits
        tag = h & self.tmask
        i = h & mask
        handles = self.handles
        while True:
            e = handles[i]
            if e == EMPTY:
                handles[i] = tag << hbits | handle
                self.count += 1
                if self.count * LOAD_DEN > (mask + 1) * LOAD_NUM:
                    self._resize((mask + 1) * 2)
                return None
            if e >> hbits == tag:
                hd = e & self.hmask
                if self.key_of(hd) == key:
                    handles[i] = tag << hbits | handle
                    return hd
            i = (i + 1) & mask

    def remove(self, key: bytes, handle: int) -> bool:
        """Remove ``key`` if it maps to ``handle`` (backward-shift deletion)."""
        self.sync()
        h = hash(key)
        mask = self.mask
        hmask = self.hmask
        i = h & mask
        handles = self.handles
        while True:
            e = handles[i]
            if e == EMPTY:
                return False
            if e & hmask == handle:
                break
            i = (i + 1) & mask
        # Shift later entries of the cluster back so no probe sequence is broken.
        j = i
        while True:
            j = (j + 1) & mask
            ej = handles[j]
            if ej == EMPTY:
                break
            home = self._home(ej, mask)
            # Move entry j into the hole at i unless its home lies cyclically in (i, j].
            if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
                handles[i] = ej
                i = j
        handles[i] = EMPTY
        self.count -= 1
        return True

    def replace_handle(self, key: bytes, old: int, new: int) -> None:
        """Point ``key`` at a new handle (the item moved) without rehashing."""
        self.sync()
        h = hash(key)
        mask = self.mask
        hmask = self.hmask
        i = h & mask
        handles = self.handles
        while True:
            e = handles[i]
            if e == EMPTY:
                return
            if e & hmask == old:
                handles[i] = (e & ~hmask) | new
                return
            i = (i + 1) & mask

    def _resize(self, capacity: int) -> None:
        old = self.handles
        self._alloc(capacity)
        handles = self.handles
        mask = self.mask
        home = self._home
        for e in old.tolist():
            if e == EMPTY:
                continue
            i = home(e, mask)
            while handles[i] != EMPTY:
                i = (i + 1) & mask
            handles[i] = e
        old.release()
        self.areas.release_other()

    def load(self, handles: list[int]) -> None:
        """Fill an empty index with items whose keys are known to differ (a restart: the hashes
        of the process that stored them mean nothing here, so each key is hashed again)."""
        capacity = MIN_CAPACITY
        while capacity * LOAD_NUM < len(handles) * LOAD_DEN:
            capacity *= 2
        if capacity != self.mask + 1:
            self._alloc(capacity)
            self.areas.release_other()
        table = self.handles
        mask = self.mask
        hbits = self.hbits
        tmask = self.tmask
        key_of = self.key_of
        for hd in handles:
            h = hash(bytes(key_of(hd)))
            i = h & mask
            while table[i] != EMPTY:
                i = (i + 1) & mask
            table[i] = (h & tmask) << hbits | hd
        self.count = len(handles)

    def handles_snapshot(self) -> list[int]:
        self.sync()
        hmask = self.hmask
        return [e & hmask for e in self.handles.tolist() if e != EMPTY]
