"""The shared segment: one ``MAP_SHARED`` mapping that holds a node's cache memory.

Why one mapping: worker processes forked after it exists all see the same bytes, so a store
built on it is one cache however many processes serve it; and a mapping of a file that outlives
the process (``-e``) is what makes a restartable cache possible. The file lives on tmpfs
(``/dev/shm`` where there is one) and, unless the caller names it, is unlinked at once, so a
stopped node leaves nothing behind.

Layout: the size is fixed at start from the slab table and ``-m``. Each slab class reserves room
for as many pages as the whole limit (plus one), its items' headers inside them; the key index
reserves two areas of its largest size (a resize fills one from the other). The file is sparse:
only bytes written take memory, and ``release`` gives a range back to the kernel (a page moved
away, the index's old area after a resize), so the reservation costs address space, not RAM.

Carving is done once, before any worker starts; after that the segment is only read and written
through the views it handed out (by whoever holds the store's lock).

Restarts (``-e``, see ``storage/restart.py``): a named file whose saved layout matches is mapped
with ``keep=True`` and its bytes are kept. The rule for what comes back: an area keeps its bytes
only if its owner carves it with ``keep=True`` (item state that means the same in any process:
slab pages with the item headers in them, a class's words, the store's words). Every other area
reads as
zeros again, exactly as in a new segment, so its owner re-initialises it: that is the default
for areas added later (counters, clock words, connection tables, log rings, the key index,
whose hashes belong to one process). Without ``keep`` the named file is emptied first.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from typing import Any

__all__ = ["Segment", "Word", "ALIGN", "MemoryFileError"]

ALIGN = 4096  # every carved area starts on a kernel page, so it can be released on its own
SHM_DIR = "/dev/shm"


class MemoryFileError(Exception):
    """The named file cannot be opened, sized or mapped; the message is memcached's."""


class Segment:
    """A sparse shared file mapping, carved front to back into aligned areas.

    ``restored`` is True when a named file was mapped with ``keep`` (its bytes kept)."""

    __slots__ = ("map", "view", "size", "path", "fd", "restored", "_next")

    def __init__(self, size: int, path: str | None = None, keep: bool = False) -> None:
        self.fd = -1
        self.size = -(-max(size, ALIGN) // ALIGN) * ALIGN
        self.path = path
        self.restored = keep and path is not None
        if path is None:
            where = SHM_DIR if os.path.isdir(SHM_DIR) else None
            fd, name = tempfile.mkstemp(prefix="memcache-segment-", dir=where)
            os.unlink(name)  # nothing outlives the mapping
        else:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise MemoryFileError(f"failed to open file for mmap: {exc.strerror}") from None
        try:
            if path is not None and not keep:
                os.ftruncate(fd, 0)  # what an earlier run left is not ours to serve
            try:
                os.ftruncate(fd, self.size)
            except OSError as exc:
                if path is None:
                    raise
                raise MemoryFileError(f"ftruncate failed: {exc.strerror}") from None
            try:
                self.map = mmap.mmap(fd, self.size, mmap.MAP_SHARED,
                                     mmap.PROT_READ | mmap.PROT_WRITE)
            except OSError as exc:
                if path is None:
                    raise
                raise MemoryFileError(f"failed to mmap, aborting: {exc.strerror}") from None
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.view = memoryview(self.map)
        self._next = 0

    def close(self) -> None:
        """Close the file (the mapping goes when its last view does)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()

    def carve(self, nbytes: int, keep: bool = False) -> tuple[int, memoryview]:
        """Reserve the next ``nbytes`` (rounded up to ``ALIGN``): its offset and a byte view.

        In a restored segment the area reads as zeros unless ``keep`` (see the module rule)."""
        start = self._next
        end = start + (-(-nbytes // ALIGN) * ALIGN)
        if end > self.size:
            raise MemoryError(f"segment of {self.size} bytes has no room for {nbytes} more")
        self._next = end
        if self.restored and not keep:
            self.release(start, end - start)
        return start, self.view[start : start + nbytes]

    def release(self, offset: int, nbytes: int) -> None:
        """Give the whole kernel pages inside [offset, offset + nbytes) back; they read as zeros.

        The caller has zeroed or stopped using them; a partial page at either end is left.
        A named file on a file system that cannot punch holes gets zeros written instead."""
        lo = -(-offset // ALIGN) * ALIGN
        hi = (offset + nbytes) // ALIGN * ALIGN
        if hi > lo:
            try:
                self.map.madvise(mmap.MADV_REMOVE, lo, hi - lo)
            except OSError:
                zeros = bytes(min(hi - lo, 1 << 20))
                for at in range(lo, hi, len(zeros)):
                    n = min(len(zeros), hi - at)
                    self.view[at : at + n] = zeros[:n]


class Word:
    """An attribute that is a signed 64-bit word in the segment: ``obj.words[index]``.

    Why: state every process must see the same (list heads, counts, the CAS counter) reads and
    writes like a plain attribute, so the code that uses it did not change; ``words`` is a
    ``memoryview`` cast to ``q`` over the owner's header area."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index

    def __get__(self, obj: Any, owner: Any = None) -> int:
        words: memoryview = obj.words
        return int(words[self.index])

    def __set__(self, obj: Any, value: int) -> None:
        obj.words[self.index] = value
