"""A slab class's memory: its 1 MB pages, the per-chunk metadata columns, free list and LRU.

memcached's slabs.c side of the store: item bytes live in 1 MB pages and the metadata memcached
keeps in its item header lives in flat typed columns indexed by chunk slot, both carved out of the
node's shared segment (``storage/segment.py``), so every process mapping it sees one store. A
``SlabClass`` is state only; it is read and written under the store's lock (``storage/items.py``).
"""

from __future__ import annotations

from array import array
from typing import Literal

from memcache_server.storage.segment import ALIGN, Segment, Word
from memcache_server.storage.slabs import PAGE_SIZE

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
    "W_COUNTERS",
    "W_GET_HITS",
    "W_CMD_SET",
    "W_TOUCH_HITS",
    "W_DELETE_HITS",
    "ACTIVE",
    "HOT",
    "WARM",
    "COLD",
    "TEMP",
    "SUB_LRUS",
    "W_SUB",
    "W_HITS",
    "W_MOVES_TO_COLD",
    "W_MOVES_TO_WARM",
    "W_MOVES_WITHIN_LRU",
    "W_DIRECT_RECLAIMS",
    "W_EVICTED_ACTIVE",
    "W_JUGGLE_NEXT",
    "W_JUGGLE_BACKOFF",
    "LRU_COUNTERS",
    "class_bytes",
]

SLOT_BYTES = 8 + 8 + 8 + 4 + 4 + 4 + 4 + 2 + 1 + 1 + 1  # the per-chunk metadata columns below
NIL = -1
KILL_NONE = 1 << 62  # SlabClass.kill_lo while no page of the class is being emptied

PAGE_BYTES = PAGE_SIZE
# The per-slot header fields, in the order they sit in a class's column area.
ColumnFormat = Literal["Q", "q", "I", "H", "B"]
COLUMNS: tuple[tuple[str, ColumnFormat], ...] = (
    ("cas", "Q"), ("exp", "q"), ("atime", "q"), ("prev", "q"), ("nxt", "q"),
    ("blen", "I"), ("flags", "I"), ("plen", "H"), ("klen", "B"), ("bits", "B"), ("lru", "B"),
)
COLUMN_WIDTH = {"Q": 8, "q": 8, "I": 4, "H": 2, "B": 1}
HEADER_WORDS = 64  # a class's shared words (see SlabClass), with room to spare
# Their indexes, for the hot paths that index ``words`` directly.
W_NPAGES, W_FREE_HEAD, W_FREE_COUNT = 0, 1, 2
W_USED_CHUNKS, W_KILL_LO = 7, 8
W_COUNTERS = 9  # CLASS_COUNTERS follow, in their order (see below), up to W_SUB

# memcached's segmented LRU: each class's items sit on one of four lists (the ``lru`` column
# says which). New items enter HOT (or TEMP, for a short TTL); the maintainer moves them on.
HOT, WARM, COLD, TEMP = 0, 1, 2, 3
SUB_LRUS = 4
# Each list's head (most recent), tail, item count and bytes (memcached's sizes/sizes_bytes):
# words W_SUB + 4 * lru + 0..3.
W_SUB = 32
W_HITS = W_SUB + 4 * SUB_LRUS  # get hits while the item sat on each list (hits_to_hot..temp)
W_MOVES_TO_COLD = W_HITS + SUB_LRUS
W_MOVES_TO_WARM = W_MOVES_TO_COLD + 1
W_MOVES_WITHIN_LRU = W_MOVES_TO_COLD + 2
W_DIRECT_RECLAIMS = W_MOVES_TO_COLD + 3
W_EVICTED_ACTIVE = W_MOVES_TO_COLD + 4
# The maintainer's per-class pacing (memcached's next_juggles/backoff_juggles, microseconds).
W_JUGGLE_NEXT = W_MOVES_TO_COLD + 5
W_JUGGLE_BACKOFF = W_MOVES_TO_COLD + 6
COLUMN_BYTES = sum(COLUMN_WIDTH[fmt] for _name, fmt in COLUMNS)

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
# memcached's ITEM_ACTIVE: fetched again since it was FETCHED (or since the maintainer last
# moved it); the maintainer rescues active items from the tails instead of demoting them.
ACTIVE = 128


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
# The counters the request path bumps, indexed directly there (a Word attribute costs a call).
W_GET_HITS = W_COUNTERS + CLASS_COUNTERS.index("get_hits")
W_CMD_SET = W_COUNTERS + CLASS_COUNTERS.index("cmd_set")
W_TOUCH_HITS = W_COUNTERS + CLASS_COUNTERS.index("touch_hits")
W_DELETE_HITS = W_COUNTERS + CLASS_COUNTERS.index("delete_hits")
assert W_COUNTERS + len(CLASS_COUNTERS) <= W_SUB

# The segmented LRU's per-class counters (words, zeroed by `stats reset`), by stats name.
LRU_COUNTERS: tuple[tuple[str, int], ...] = (
    ("moves_to_cold", W_MOVES_TO_COLD),
    ("moves_to_warm", W_MOVES_TO_WARM),
    ("moves_within_lru", W_MOVES_WITHIN_LRU),
    ("direct_reclaims", W_DIRECT_RECLAIMS),
    ("evicted_active", W_EVICTED_ACTIVE),
    ("hits_to_hot", W_HITS + HOT),
    ("hits_to_warm", W_HITS + WARM),
    ("hits_to_cold", W_HITS + COLD),
    ("hits_to_temp", W_HITS + TEMP),
)


def class_bytes(size: int, perslab: int, max_pages: int) -> int:
    """Bytes of segment one class reserves: its words, pages and columns, each page-aligned."""
    pages = max_pages if size else 0
    return ALIGN + pages * PAGE_BYTES + ALIGN + COLUMN_BYTES * pages * perslab + ALIGN


class SlabClass:
    """One slab class: its pages, metadata columns, free list, LRU and counters."""

    __slots__ = (
        "cid",
        "size",
        "perslab",
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
        "lru",
        "max_pages",
        "segment",
        "page_area",
        "page_offset",
        "column_area",
        "column_offset",
        "words",
    )

    # The class's shared state, in its header area of the segment (see segment.Word).
    npages = Word(W_NPAGES)
    free_head = Word(W_FREE_HEAD)
    free_count = Word(W_FREE_COUNT)
    used_chunks = Word(W_USED_CHUNKS)
    # First slot of the page being emptied by a page move (KILL_NONE when none is): freed
    # slots from there on are not handed out again.
    kill_lo = Word(W_KILL_LO)
    # Counters, one shared copy written under the store's lock (``stats slabs``/``items``).
    get_hits = Word(W_COUNTERS + 0)
    cmd_set = Word(W_COUNTERS + 1)
    delete_hits = Word(W_COUNTERS + 2)
    incr_hits = Word(W_COUNTERS + 3)
    decr_hits = Word(W_COUNTERS + 4)
    cas_hits = Word(W_COUNTERS + 5)
    cas_badval = Word(W_COUNTERS + 6)
    touch_hits = Word(W_COUNTERS + 7)
    evicted = Word(W_COUNTERS + 8)
    evicted_nonzero = Word(W_COUNTERS + 9)
    evicted_time = Word(W_COUNTERS + 10)
    outofmemory = Word(W_COUNTERS + 11)
    reclaimed = Word(W_COUNTERS + 12)
    expired_unfetched = Word(W_COUNTERS + 13)
    evicted_unfetched = Word(W_COUNTERS + 14)
    crawler_reclaimed = Word(W_COUNTERS + 15)
    crawler_items_checked = Word(W_COUNTERS + 16)

    def __init__(self, cid: int, size: int, perslab: int, segment: Segment,
                 max_pages: int) -> None:
        self.cid = cid
        self.size = size
        self.perslab = perslab
        # Memory in the shared segment: room for ``max_pages`` pages, one after another, and
        # a column per header field long enough for all their slots (sparse until used).
        self.segment = segment
        self.max_pages = max_pages if size else 0
        # Item state: kept at a restart (see segment.py's rule).
        self.words = segment.carve(HEADER_WORDS * 8, keep=True)[1].cast("q")
        self.page_offset, self.page_area = segment.carve(self.max_pages * PAGE_BYTES, keep=True)
        slots = self.max_pages * perslab
        self.column_offset, self.column_area = segment.carve(COLUMN_BYTES * slots, keep=True)
        cols = self._columns(slots)
        self.cas = cols["cas"]
        self.exp = cols["exp"]
        self.atime = cols["atime"]
        self.prev = cols["prev"]
        self.nxt = cols["nxt"]  # LRU next, or the free-list link for free slots
        self.blen = cols["blen"]
        self.flags = cols["flags"]
        self.plen = cols["plen"]
        self.klen = cols["klen"]
        self.bits = cols["bits"]
        self.lru = cols["lru"]  # which of the class's LRU lists the item is on
        if not segment.restored:
            self.npages = 0
            self.free_head = NIL
            self.free_count = 0
            for lru in range(SUB_LRUS):
                self.words[W_SUB + 4 * lru] = NIL
                self.words[W_SUB + 4 * lru + 1] = NIL
                self.words[W_SUB + 4 * lru + 2] = 0
                self.words[W_SUB + 4 * lru + 3] = 0
            self.used_chunks = 0
            self.kill_lo = KILL_NONE
        self.reset_counters()

    def counters(self) -> dict[str, int]:
        """The class's counters by name (a snapshot, read under the store's lock)."""
        return dict(zip(CLASS_COUNTERS, self.words[W_COUNTERS : W_COUNTERS + len(CLASS_COUNTERS)]
                        .tolist(), strict=True))

    def reset_counters(self) -> None:
        """``stats reset``: zero every counter (not the gauges: pages, items, lists)."""
        n = len(CLASS_COUNTERS)
        self.words[W_COUNTERS : W_COUNTERS + n] = array("q", bytes(8 * n))
        for _name, w in LRU_COUNTERS:
            self.words[w] = 0

    def _columns(self, slots: int) -> dict[str, memoryview]:
        """Typed views of the column area, one per field, widest first (so all are aligned)."""
        out = {}
        off = 0
        for name, fmt in COLUMNS:
            width = COLUMN_WIDTH[fmt]
            out[name] = self.column_area[off : off + width * slots].cast(fmt)
            off += width * slots
        return out

    @property
    def items(self) -> int:
        """Items on the class's LRU lists (its number in `stats items`)."""
        w = self.words
        return sum(int(w[W_SUB + 4 * lru + 2]) for lru in range(SUB_LRUS))

    @property
    def mem_requested(self) -> int:
        """Bytes of the items on the class's LRU lists (memcached's sizes_bytes summed)."""
        w = self.words
        return sum(int(w[W_SUB + 4 * lru + 3]) for lru in range(SUB_LRUS))

    def head(self, lru: int) -> int:
        """The most recently linked handle of list ``lru`` (NIL when empty)."""
        return int(self.words[W_SUB + 4 * lru])

    def tail(self, lru: int) -> int:
        """The least recently linked handle of list ``lru`` (NIL when empty)."""
        return int(self.words[W_SUB + 4 * lru + 1])

    def lru_size(self, lru: int) -> int:
        return int(self.words[W_SUB + 4 * lru + 2])

    def lru_bytes(self, lru: int) -> int:
        return int(self.words[W_SUB + 4 * lru + 3])

    @property
    def nslots(self) -> int:
        """Slots of the pages the class holds now."""
        return self.npages * self.perslab

    def has_room(self) -> bool:
        """Whether the class's reservation in the segment takes one more page."""
        return self.npages < self.max_pages

    def at(self, slot: int) -> int:
        """Offset of ``slot``'s chunk in ``page_area`` (page k starts k MB in)."""
        return (slot // self.perslab) * PAGE_BYTES + (slot % self.perslab) * self.size

    def add_page(self) -> None:
        """Take the next page of the class's reservation (it reads as zeros: new, or released
        when the class last gave a page away) and chain its slots into the free list."""
        k = self.npages
        base = k * self.perslab
        self.npages = k + 1
        n = self.perslab
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
        k = self.npages - 1
        lo = k * self.perslab
        n = self.perslab
        self.npages = k
        slots = self.max_pages * n
        off = 0
        for _name, fmt in COLUMNS:
            width = COLUMN_WIDTH[fmt]
            self.column_area[off + width * lo : off + width * (lo + n)] = bytes(width * n)
            off += width * slots
        self.segment.release(self.page_offset + k * PAGE_BYTES, PAGE_BYTES)

    def relist_fenced(self) -> None:
        """Give back the page a stopped page move had fenced off (a restart): its free slots
        go on the free list again (they were unlisted, not counted as used)."""
        lo = self.kill_lo
        if lo == KILL_NONE:
            return
        self.kill_lo = KILL_NONE
        bits = self.bits
        for slot in range(lo, self.nslots):
            if not bits[slot] & IN_USE:
                head = self.free_head
                self.nxt[slot] = head
                self.prev[slot] = NIL
                if head != NIL:
                    self.prev[head] = slot
                self.free_head = slot
                self.free_count += 1

    def pop_free(self) -> int:
        # Words indexed directly on the set path: a Word attribute costs a Python call.
        w = self.words
        slot = w[W_FREE_HEAD]
        if slot == NIL:
            return NIL
        head = self.nxt[slot]
        w[W_FREE_HEAD] = head
        if head != NIL:
            self.prev[head] = NIL
        w[W_FREE_COUNT] -= 1
        w[W_USED_CHUNKS] += 1
        return int(slot)

    def push_free(self, slot: int) -> None:
        w = self.words
        self.bits[slot] = 0
        w[W_USED_CHUNKS] -= 1
        if slot >= w[W_KILL_LO]:
            return  # on the page being emptied: never handed out again
        head = w[W_FREE_HEAD]
        self.nxt[slot] = head
        self.prev[slot] = NIL
        if head != NIL:
            self.prev[head] = slot
        w[W_FREE_HEAD] = slot
        w[W_FREE_COUNT] += 1

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
