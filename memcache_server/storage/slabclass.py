"""A slab class's memory: its 1 MB pages of items, free list, LRU lists and counters.

memcached's slabs.c side of the store. Items live in 1 MB pages carved out of the node's shared
segment (``storage/segment.py``), so every process mapping it sees one store; each item's header
(CAS, LRU links, times, lengths, state bits) sits at the front of its chunk, as memcached lays
out its ``item``, so -m buys pages and nothing else. A ``SlabClass`` is state only; it is read
and written under the store's lock (``storage/items.py``).
"""

from __future__ import annotations

from array import array

from memcache_server.storage.segment import ALIGN, Segment, Word
from memcache_server.storage.slabs import PAGE_SIZE

__all__ = [
    "SlabClass",
    "SLAB_COUNTERS",
    "CLASS_COUNTERS",
    "HEADER_BYTES",
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

NIL = -1
KILL_NONE = 1 << 62  # SlabClass.kill_lo while no page of the class is being emptied

PAGE_BYTES = PAGE_SIZE
PAGE_WORDS = PAGE_SIZE // 8  # slots (8-byte words) from one page to the next
# An item's header: the first HEADER_BYTES of its chunk, as memcached keeps its ``item`` struct
# at the front of the chunk (its class is chosen so header, key, value line and value fit).
# A slot is the chunk's offset in 8-byte words from the start of its class's page area, so one
# typed view of the pages reaches every field: ``q[s]`` is word s, ``u4[2*s]`` the 4-byte field
# at the same byte, ``u1[8*s]`` the byte. The fields, by byte offset in the header:
#   0 cas (q[s])        8 prev (q[s+1])      16 nxt (q[s+2]): LRU links, or the free list's
#  24 exp (u4[2s+6])   28 atime (u4[2s+7])  32 blen (u4[2s+8])  36 flags (u4[2s+9])
#  40 klen (u1[8s+40]) 41 bits (u1[8s+41])  42 lru (u1[8s+42])  44 plen (u2[4s+22])
# then the stored bytes from byte HEADER_BYTES: the key and the rest of the protocol's value
# line (``plen`` bytes in all), then the value with its CRLF (``blen`` bytes). The request
# paths index the views with these literal offsets (a named constant costs a global load each).
# Times are unix seconds (4 bytes reach 2106); exp 0 is "never".
HEADER_BYTES = 48
Q_CAS, Q_PREV, Q_NXT = 0, 1, 2
U4_EXP, U4_ATIME, U4_BLEN, U4_FLAGS = 6, 7, 8, 9
U1_KLEN, U1_BITS, U1_LRU = 40, 41, 42
U2_PLEN = 22
HEADER_WORDS = 64  # a class's shared words (see SlabClass), with room to spare
# Their indexes, for the hot paths that index ``words`` directly.
W_NPAGES, W_FREE_HEAD, W_FREE_COUNT = 0, 1, 2
W_USED_CHUNKS, W_KILL_LO = 7, 8
W_COUNTERS = 9  # CLASS_COUNTERS follow, in their order (see below), up to W_SUB

# memcached's segmented LRU: each class's items sit on one of four lists (the ``lru`` field
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

# The bits field
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
    """Bytes of segment one class reserves: its words and pages, each page-aligned."""
    pages = max_pages if size else 0
    return ALIGN + pages * PAGE_BYTES + ALIGN


class SlabClass:
    """One slab class: its pages (items with their headers), free list, LRU and counters."""

    __slots__ = (
        "cid",
        "size",
        "perslab",
        "stride",
        "q",
        "u4",
        "u2",
        "u1",
        "max_pages",
        "segment",
        "page_area",
        "page_offset",
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
    # get_hits: the word stays in the layout unused; counters() sums the per-list hits
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
        self.segment = segment
        self.max_pages = max_pages if size else 0
        self.stride = size // 8  # words from one chunk to the next in a page
        # Item state: kept at a restart (see segment.py's rule).
        self.words = segment.carve(HEADER_WORDS * 8, keep=True)[1].cast("q")
        # Room for ``max_pages`` pages, one after another (sparse until used); every item's
        # header is in its chunk, reached through these views (see HEADER_BYTES).
        self.page_offset, self.page_area = segment.carve(self.max_pages * PAGE_BYTES, keep=True)
        self.q = self.page_area.cast("q")
        self.u4 = self.page_area.cast("I")
        self.u2 = self.page_area.cast("H")
        self.u1 = self.page_area
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
        """The class's counters by name (a snapshot, read under the store's lock).

        ``get_hits`` is the sum of the hits on each list (hits_to_hot .. hits_to_temp), as
        memcached sums its lru_hits into the class's get_hits: a hit writes one counter."""
        w = self.words
        out = dict(zip(CLASS_COUNTERS, w[W_COUNTERS : W_COUNTERS + len(CLASS_COUNTERS)].tolist(),
                       strict=True))
        out["get_hits"] = sum(w[W_HITS : W_HITS + SUB_LRUS].tolist())
        return out

    def reset_counters(self) -> None:
        """``stats reset``: zero every counter (not the gauges: pages, items, lists)."""
        n = len(CLASS_COUNTERS)
        self.words[W_COUNTERS : W_COUNTERS + n] = array("q", bytes(8 * n))
        for _name, w in LRU_COUNTERS:
            self.words[w] = 0

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
        """Chunks of the pages the class holds now."""
        return self.npages * self.perslab

    def has_room(self) -> bool:
        """Whether the class's reservation in the segment takes one more page."""
        return self.npages < self.max_pages

    def at(self, slot: int) -> int:
        """Offset in ``page_area`` of ``slot``'s stored bytes (its key), after its header."""
        return 8 * slot + HEADER_BYTES

    def slot(self, i: int) -> int:
        """The slot of the class's ``i``-th chunk (chunks counted page by page, in order)."""
        k, j = divmod(i, self.perslab)
        return k * PAGE_WORDS + j * self.stride

    def page_slots(self, k: int) -> range:
        """The slots of page ``k``, in order."""
        lo = k * PAGE_WORDS
        return range(lo, lo + self.perslab * self.stride, self.stride)

    def all_slots(self) -> list[int]:
        """Every slot of the pages the class holds, in order."""
        return [s for k in range(self.npages) for s in self.page_slots(k)]

    def valid_slot(self, slot: int) -> bool:
        """Whether ``slot`` is the start of a chunk of a page the class holds."""
        k, r = divmod(slot, PAGE_WORDS)
        return 0 <= k < self.npages and r % self.stride == 0 and r // self.stride < self.perslab

    def field(self, view_step: int, offset: int, k: int) -> memoryview:
        """One header field of every chunk of page ``k``, as a strided view (``q``, ``u4`` or
        ``u1`` by ``view_step`` 1, 2 or 8; ``offset`` as in the header table)."""
        view = {1: self.q, 2: self.u4, 8: self.u1}[view_step]
        lo = k * PAGE_WORDS * view_step + offset
        step = self.stride * view_step
        return view[lo : lo + self.perslab * step : step]

    def add_page(self) -> None:
        """Take the next page of the class's reservation (it reads as zeros: new, or released
        when the class last gave a page away) and chain its chunks into the free list."""
        k = self.npages
        slots = self.page_slots(k)
        n = len(slots)
        self.npages = k + 1
        # Chain the page's chunks in order (so its first chunk is handed out first) in front of
        # the free list; the list is doubly linked so a page move can unlist any slot in O(1).
        head = self.free_head
        step = self.stride
        nxt = array("q", range(slots.start + step, slots.stop + step, step))
        nxt[n - 1] = head
        prev = array("q", range(slots.start - step, slots.stop - step, step))
        prev[0] = NIL
        self.field(1, Q_NXT, k)[:] = nxt
        self.field(1, Q_PREV, k)[:] = prev
        if head != NIL:
            self.q[head + 1] = slots[-1]
        self.free_head = slots.start
        self.free_count += n

    def drop_last_page(self) -> None:
        """Forget the last page and its chunks (a page move emptied it first): its memory goes
        back to the system and reads as zeros when the class takes it again."""
        k = self.npages - 1
        self.npages = k
        self.segment.release(self.page_offset + k * PAGE_BYTES, PAGE_BYTES)

    def relist_fenced(self) -> None:
        """Give back the page a stopped page move had fenced off (a restart): its free slots
        go on the free list again (they were unlisted, not counted as used)."""
        lo = self.kill_lo
        if lo == KILL_NONE:
            return
        self.kill_lo = KILL_NONE
        u1 = self.u1
        q = self.q
        for slot in self.page_slots(self.npages - 1):
            if slot >= lo and not u1[8 * slot + 41] & IN_USE:
                head = self.free_head
                q[slot + 2] = head
                q[slot + 1] = NIL
                if head != NIL:
                    q[head + 1] = slot
                self.free_head = slot
                self.free_count += 1

    def pop_free(self) -> int:
        # Words indexed directly on the set path: a Word attribute costs a Python call.
        w = self.words
        slot = w[W_FREE_HEAD]
        if slot == NIL:
            return NIL
        q = self.q
        head = q[slot + 2]
        w[W_FREE_HEAD] = head
        if head != NIL:
            q[head + 1] = NIL
        w[W_FREE_COUNT] -= 1
        w[W_USED_CHUNKS] += 1
        return int(slot)

    def push_free(self, slot: int) -> None:
        w = self.words
        self.u1[8 * slot + 41] = 0
        w[W_USED_CHUNKS] -= 1
        if slot >= w[W_KILL_LO]:
            return  # on the page being emptied: never handed out again
        q = self.q
        head = w[W_FREE_HEAD]
        q[slot + 2] = head
        q[slot + 1] = NIL
        if head != NIL:
            q[head + 1] = slot
        w[W_FREE_HEAD] = slot
        w[W_FREE_COUNT] += 1

    def unlist_free(self, slot: int) -> None:
        """Take a free slot off the free list (it stays free, but is no longer handed out)."""
        q = self.q
        p = q[slot + 1]
        n = q[slot + 2]
        if p != NIL:
            q[p + 2] = n
        else:
            self.free_head = n
        if n != NIL:
            q[n + 1] = p
        self.free_count -= 1
