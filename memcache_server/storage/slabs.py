"""Slab class table and item sizes, computed exactly as memcached 1.6 computes them.

Pure functions and a frozen table: no locks, no state. ``stats slabs``/``stats items`` show the
same class ids and chunk sizes as memcached for the same -m/-f/-n/-I because the arithmetic below
is memcached's (slabs.c ``slabs_init``, items.c ``item_make_header``/``do_item_alloc``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SlabTable", "ITEM_HEADER", "CHUNK_HEADER", "PAGE_SIZE", "MAX_CLASSES"]

ITEM_HEADER = 48  # sizeof(item) on 64-bit memcached 1.6, without the CAS field
CHUNK_HEADER = 48  # sizeof(item_chunk): the header of each data chunk of a large item
CAS_SIZE = 8
FLAGS_SIZE = 4  # client flags are stored only when non-zero
CHUNK_ALIGN = 8
PAGE_SIZE = 1024 * 1024  # memcached always splits 1 MB pages, whatever -I says
MAX_CLASSES = 63  # ids 1..63


@dataclass(frozen=True, slots=True)
class SlabTable:
    """Chunk size and chunks per page for each class id (index 0 unused)."""

    sizes: tuple[int, ...]
    perslab: tuple[int, ...]
    chunk_max: int
    item_size_max: int
    use_cas: bool
    lookup: bytes = b""  # class id by size in 8-byte units, up to chunk_max: O(1) class_for

    @classmethod
    def build(
        cls, growth_factor: float, min_size: int, chunk_max: int, item_size_max: int, use_cas: bool
    ) -> SlabTable:
        sizes = [0]
        perslab = [0]
        size = ITEM_HEADER + min_size
        i = 0
        while i + 1 < MAX_CLASSES:
            i += 1
            if size >= chunk_max / growth_factor:
                break
            if size % CHUNK_ALIGN:
                size += CHUNK_ALIGN - (size % CHUNK_ALIGN)
            sizes.append(size)
            perslab.append(PAGE_SIZE // size)
            size = int(size * growth_factor)
        else:
            i += 1
        # The largest class is always exactly chunk_max (memcached overwrites class power_largest).
        if len(sizes) > i:
            sizes[i] = chunk_max
            perslab[i] = PAGE_SIZE // chunk_max
        else:
            sizes.append(chunk_max)
            perslab.append(PAGE_SIZE // chunk_max)
        lookup = bytearray(chunk_max // CHUNK_ALIGN + 1)
        cid = 1
        for unit in range(1, len(lookup)):
            while sizes[cid] < unit * CHUNK_ALIGN:
                cid += 1
            lookup[unit] = cid
        return cls(tuple(sizes), tuple(perslab), chunk_max, item_size_max, use_cas,
                   bytes(lookup))

    @property
    def largest(self) -> int:
        return len(self.sizes) - 1

    def item_size(self, nkey: int, flags: int, nbytes: int) -> int:
        """memcached's ntotal: header + key + NUL + value with CRLF (+ flags if set, + CAS)."""
        n = ITEM_HEADER + nkey + 1 + nbytes
        if flags:
            n += FLAGS_SIZE
        if self.use_cas:
            n += CAS_SIZE
        return n

    def chunked_header_size(self, nkey: int, flags: int) -> int:
        """Size of the header chunk of an item larger than chunk_max."""
        n = nkey + 1 + ITEM_HEADER + CHUNK_HEADER
        if flags:
            n += FLAGS_SIZE
        if self.use_cas:
            n += CAS_SIZE
        return n

    def class_for(self, size: int) -> int:
        """The class id for an allocation of ``size`` bytes; 0 if it is over -I."""
        if size == 0 or size > self.item_size_max:
            return 0
        if size <= self.chunk_max:
            # every class size is a multiple of 8, so rounding up to 8 keeps the answer
            return self.lookup[(size + CHUNK_ALIGN - 1) >> 3]
        sizes = self.sizes
        lo, hi = 1, len(sizes) - 1
        if size > sizes[hi]:
            return hi
        while lo < hi:
            mid = (lo + hi) // 2
            if sizes[mid] >= size:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def joined_chunks(self, first: int, second: int) -> list[tuple[int, int]]:
        """(class id, bytes held) of the data chunks memcached chains for an append or
        prepend whose result is chunked: ``first`` bytes copied, then ``second``.

        memcached fills the new item by copying (items.c's _store_item_copy_chunks), sizing
        each chunk to what is left of the part being copied, and asks for the next chunk as
        soon as one is full, even when nothing is left: each copied part ends with an empty
        chunk of the smallest class that holds a chunk header. A set chains none of those."""
        out = []
        zero = self.class_for(CHUNK_HEADER)
        for remain in (first, second):
            if remain <= 0:
                continue
            while remain > 0:
                size = min(remain + CHUNK_HEADER, self.chunk_max)
                out.append((self.class_for(size), size - CHUNK_HEADER))
                remain -= size - CHUNK_HEADER
            out.append((zero, 0))
        return out

    def data_chunks(self, nbytes: int) -> list[int]:
        """Class ids of the data chunks memcached allocates for a chunked value of ``nbytes``."""
        out = []
        remain = nbytes
        while remain > 0:
            size = min(remain + CHUNK_HEADER, self.chunk_max)
            cid = self.class_for(size) if size <= self.item_size_max else self.largest
            out.append(cid)
            remain -= self.sizes[cid] - CHUNK_HEADER
        return out
