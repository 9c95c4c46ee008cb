"""A slab class's memory: its 1 MB pages, the per-chunk metadata columns, free list and LRU.

memcached's slabs.c side of the store: item bytes live in ``bytearray`` pages and the metadata
memcached keeps in its item header lives in flat ``array`` columns indexed by chunk slot. A
``SlabClass`` is state only; it is read and written under the store's lock (``storage/items.py``).
"""

from __future__ import annotations

from array import array

__all__ = [
    "SlabClass",
    "SLAB_COUNTERS",
    "CLASS_COUNTERS",
    "SLOT_BYTES",
    "NIL",
    "KILL_NONE",
    "IN_USE",
    "FETCHED",
    "CHUNKED",
    "DATA_CHUNK",
    "STALE",
    "TOKEN_SENT",
    "KEY_BINARY",
]

SLOT_BYTES = 8 + 8 + 8 + 4 + 4 + 4 + 4 + 2 + 1 + 1  # the per-chunk metadata columns below
NIL = -1
KILL_NONE = 1 << 62  # SlabClass.kill_lo while no page of the class is being emptied

# bits column
IN_USE = 1
FETCHED = 2
CHUNKED = 4
DATA_CHUNK = 8
# Meta-protocol item state, in the same byte (no extra memory): memcached's ITEM_STALE,
# ITEM_TOKEN_SENT and ITEM_KEY_BINARY.
STALE = 16
TOKEN_SENT = 32
KEY_BINARY = 64


# Per-class counters, named once for the slots, snapshots, resets and `stats slabs`: the
# first group is what `stats slabs` prints per class, the second memcached's item stats.
SLAB_COUNTERS: tuple[str, ...] = (
    "get_hits",
    "cmd_set",
    "delete_hits",
    "incr_hits",
    "decr_hits",
    "cas_hits",
    "cas_badval",
    "touch_hits",
)
CLASS_COUNTERS: tuple[str, ...] = SLAB_COUNTERS + (
    "evicted",
    "evicted_nonzero",
    "evicted_time",
    "outofmemory",
    "reclaimed",
    "expired_unfetched",
    "evicted_unfetched",
    "crawler_reclaimed",
    "crawler_items_checked",
)


class SlabClass:
    """One slab class: its pages, metadata columns, free list, LRU and counters."""

    __slots__ = (
        "cid",
        "size",
        "perslab",
        "pages",
        "views",
        "cas",
        "exp",
        "atime",
        "prev",
        "nxt",
        "blen",
        "flags",
        "plen",
        "klen",
        "bits",
        "free_head",
        "free_count",
        "lru_head",
        "lru_tail",
        "items",
        "mem_requested",
        "used_chunks",
        "kill_lo",
        *CLASS_COUNTERS,
    )

    def __init__(self, cid: int, size: int, perslab: int) -> None:
        self.cid = cid
        self.size = size
        self.perslab = perslab
        self.pages: list[bytearray] = []
        self.views: list[memoryview] = []
        self.cas = array("Q")
        self.exp = array("q")
        self.atime = array("q")
        self.prev = array("q")
        self.nxt = array("q")  # LRU next, or the free-list link for free slots
        self.blen = array("I")
        self.flags = array("I")
        self.plen = array("H")
        self.klen = array("B")
        self.bits = bytearray()
        self.free_head = NIL
        self.free_count = 0
        self.lru_head = NIL  # most recently used handle
        self.lru_tail = NIL
        self.items = 0
        self.mem_requested = 0
        self.used_chunks = 0
        self.get_hits = self.cmd_set = self.delete_hits = self.incr_hits = 0
        self.decr_hits = self.cas_hits = self.cas_badval = self.touch_hits = 0
        self.evicted = self.evicted_nonzero = self.evicted_time = self.outofmemory = 0
        self.reclaimed = self.expired_unfetched = self.evicted_unfetched = 0
        self.crawler_reclaimed = self.crawler_items_checked = 0
        # First slot of the page being emptied by a page move (KILL_NONE when none is): freed
        # slots from there on are not handed out again.
        self.kill_lo = KILL_NONE

    def add_page(self, page: bytearray) -> None:
        base = len(self.pages) * self.perslab
        self.pages.append(page)
        self.views.append(memoryview(page))
        n = self.perslab
        zeros8 = bytes(8 * n)
        self.cas.frombytes(zeros8)
        self.exp.frombytes(zeros8)
        self.atime.frombytes(zeros8)
        self.prev.frombytes(zeros8)
        self.nxt.frombytes(zeros8)
        self.blen.frombytes(bytes(4 * n))
        self.flags.frombytes(bytes(4 * n))
        self.plen.frombytes(bytes(2 * n))
        self.klen.frombytes(bytes(n))
        self.bits.extend(bytes(n))
        # Chain the page's slots in order (so its first chunk is handed out first) in front of
        # the free list; the list is doubly linked so a page move can unlist any slot in O(1).
        head = self.free_head
        self.nxt[base : base + n] = array("q", range(base + 1, base + n + 1))
        self.nxt[base + n - 1] = head
        self.prev[base : base + n] = array("q", range(base - 1, base + n - 1))
        self.prev[base] = NIL
        if head != NIL:
            self.prev[head] = base + n - 1
        self.free_head = base
        self.free_count += n

    def drop_last_page(self) -> None:
        """Forget the last page and its slots (a page move emptied it first)."""
        lo = (len(self.pages) - 1) * self.perslab
        self.pages.pop()
        self.views.pop()
        for col in (self.cas, self.exp, self.atime, self.prev, self.nxt, self.blen, self.flags,
                    self.plen, self.klen):
            del col[lo:]
        del self.bits[lo:]

    def pop_free(self) -> int:
        slot = self.free_head
        if slot == NIL:
            return NIL
        head = self.nxt[slot]
        self.free_head = head
        if head != NIL:
            self.prev[head] = NIL
        self.free_count -= 1
        self.used_chunks += 1
        return slot

    def push_free(self, slot: int) -> None:
        self.bits[slot] = 0
        self.used_chunks -= 1
        if slot >= self.kill_lo:
            return  # on the page being emptied: never handed out again
        head = self.free_head
        self.nxt[slot] = head
        self.prev[slot] = NIL
        if head != NIL:
            self.prev[head] = slot
        self.free_head = slot
        self.free_count += 1

    def unlist_free(self, slot: int) -> None:
        """Take a free slot off the free list (it stays free, but is no longer handed out)."""
        p = self.prev[slot]
        n = self.nxt[slot]
        if p != NIL:
            self.nxt[p] = n
        else:
            self.free_head = n
        if n != NIL:
            self.prev[n] = p
        self.free_count -= 1
