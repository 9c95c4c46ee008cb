"""The item store: slab pages, per-class LRU, expiry, flush, eviction and memory accounting.

Why this shape: a Python object per item costs ~250 bytes before the value, so a -m 64 node built
from dicts of objects would use several times its limit. Here item bytes live in 1 MB slab pages
(``bytearray``), and the metadata memcached keeps in its 48-byte item header lives in flat
``array`` columns per class, indexed by chunk slot. The only per-item Python objects are the
index entry (key bytes -> int handle). Their cost, and the columns' cost, are charged against -m,
so RSS stays near the limit; we hold fewer items than memcached for small values, never more
memory.

Each chunk holds the item's reply header (``VALUE <key> <flags> <n>\r\n``, made by the protocol
layer's ``header_fn``, never parsed here) followed by the value and its CRLF: a get hit is one
slice copy. Items bigger than a slab chunk are split over chunks as memcached does.

Thread rules: every public method takes ``self.lock`` itself; callers hold nothing. Times are unix
seconds from the ``Clock``.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from memcache_server.storage.clock import Clock, exptime_to_abs
from memcache_server.storage.index import KeyIndex
from memcache_server.storage.slabs import CHUNK_HEADER, PAGE_SIZE, SlabTable

__all__ = [
    "Store", "Outcome", "Mode", "StoreLimits", "ClassStats", "MoveCounters", "SizeHistogram"
]

UPDATE_INTERVAL = 60  # memcached's ITEM_UPDATE_INTERVAL: bump an item in the LRU at most this often
TAIL_SEARCH = 5  # items examined at an LRU tail for an expired one before evicting
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


class Outcome(IntEnum):
    STORED = 0
    NOT_STORED = 1
    EXISTS = 2
    NOT_FOUND = 3
    TOO_LARGE = 4
    NO_MEMORY = 5
    NON_NUMERIC = 6
    DELTA_OK = 7


class Mode(IntEnum):
    SET = 0
    ADD = 1
    REPLACE = 2
    APPEND = 3
    PREPEND = 4
    CAS = 5


@dataclass(frozen=True, slots=True)
class StoreLimits:
    memory_limit: int
    evictions: bool
    use_cas: bool


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


@dataclass(slots=True)
class MoveCounters:
    """memcached's slab mover stats: pages moved, items and chunks rescued, items lost."""

    slabs_moved: int = 0
    rescues: int = 0
    chunk_rescues: int = 0
    evictions_nomem: int = 0


@dataclass(slots=True)
class SizeHistogram:
    """``stats sizes`` (memcached's track_sizes): live items per 32-byte size bucket.

    Items stored before tracking was turned on (a CAS below ``cas_min``) are left out, as
    memcached leaves them out, so the counts never go negative."""

    cas_min: int
    counts: dict[int, int] = field(default_factory=dict)

    def add(self, ntotal: int, cas: int) -> None:
        if cas >= self.cas_min:
            bucket = (ntotal + 31) >> 5
            self.counts[bucket] = self.counts.get(bucket, 0) + 1

    def remove(self, ntotal: int, cas: int) -> None:
        if cas >= self.cas_min:
            bucket = (ntotal + 31) >> 5
            left = self.counts.get(bucket, 0) - 1
            if left > 0:
                self.counts[bucket] = left
            else:
                self.counts.pop(bucket, None)


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
    age: int
    counters: dict[str, int]


class Store:
    """All items of a node. See the module docstring for the layout and the locking rule."""

    def __init__(
        self,
        table: SlabTable,
        limits: StoreLimits,
        clock: Clock,
        header_fn: Callable[[bytes, int, int], bytes],
    ) -> None:
        self.table = table
        self.limits = limits
        self.clock = clock
        self.header_fn = header_fn
        self.lock = threading.Lock()
        self.classes = [
            SlabClass(i, table.sizes[i], table.perslab[i]) for i in range(len(table.sizes))
        ]
        self.index = KeyIndex(self._key_view)
        self.chunk_lists: dict[int, list[int]] = {}  # header handle -> data chunk handles
        self.memory_limit = limits.memory_limit
        self.malloced = 0  # bytes of pages handed to classes
        self.columns_bytes = 0  # metadata columns of every page
        self.next_cas = 0
        self.oldest_live = 0
        self.oldest_cas = 0
        # global counters (memcached's "slab" stats, kept under the lock)
        self.curr_items = 0
        self.total_items = 0
        self.bytes = 0
        self.evictions = 0
        self.reclaimed = 0
        self.expired_unfetched = 0
        self.evicted_unfetched = 0
        self.crawler_reclaimed = 0
        self.crawler_items_checked = 0
        # Page moving (memcached's slab rebalancer): pages held in the global pool, and the
        # mover's counters. See pagemover.py.
        # (The counters sit in their own object: CPython 3.11 stops sharing instance-dict keys
        # past 30 attributes, which slows every attribute load on the request path.)
        self.pool_pages = 0
        self.moves = MoveCounters()
        # Called with the class id after an allocation had to evict (slab_automove=2 moves a
        # page towards that class); None otherwise.
        self.on_class_evict: Callable[[int], None] | None = None
        # Called for each eviction (key, fetched, exp, atime, class, value length) while
        # someone watches evictions; None otherwise, so evicting costs one test.
        self.on_evict: Callable[[bytes, bool, int, int, int, int], None] | None = None

    # ------------------------------------------------------------------ allocation

    def _grow(self, cls: SlabClass) -> bool:
        """Give ``cls`` a new page if memory allows (a class with no page always gets one).

        A page in the global pool is already counted as allocated, so taking it only needs room
        for the new class's metadata columns. A class giving a page away gets none meanwhile
        (the page being emptied must stay its last)."""
        if cls.kill_lo != KILL_NONE:
            return False
        cost = PAGE_SIZE + cls.perslab * SLOT_BYTES
        pooled = PAGE_SIZE if self.pool_pages else 0
        if cls.pages and self.used_memory() - pooled + cost > self.memory_limit:
            return False
        if pooled:
            self.pool_pages -= 1
            self.malloced -= PAGE_SIZE
        self.add_page(cls)
        return True

    def add_page(self, cls: SlabClass) -> None:
        """Hand ``cls`` one more page and charge it (the caller checked the budget)."""
        cls.add_page(bytearray(cls.perslab * cls.size))
        self.malloced += PAGE_SIZE
        self.columns_bytes += cls.perslab * SLOT_BYTES

    def release_pool(self) -> None:
        """Free pooled pages while the store holds more than its limit (memcached's
        memory_release: a lowered cache_memlimit is honoured as pages reach the pool)."""
        while self.pool_pages and self.used_memory() > self.memory_limit:
            self.pool_pages -= 1
            self.malloced -= PAGE_SIZE

    def used_memory(self) -> int:
        """Real bytes held for items: pages, their metadata columns, and the index."""
        return self.malloced + self.columns_bytes + self.index.nbytes

    def _alloc(self, cid: int, now: int) -> int:
        """A free slot of class ``cid``, reclaiming or evicting at its LRU tail if needed."""
        cls = self.classes[cid]
        slot = cls.pop_free()
        if slot != NIL:
            return slot
        # Look for an expired or flushed item near the tail first, as memcached does.
        h = cls.lru_tail
        for _ in range(TAIL_SEARCH):
            if h == NIL:
                break
            hc = self.classes[h & 63]
            hs = h >> 6
            if self._is_dead(hc, hs, now):
                prev = hc.prev[hs]
                cls.reclaimed += 1
                self.reclaimed += 1
                if not hc.bits[hs] & FETCHED:
                    cls.expired_unfetched += 1
                    self.expired_unfetched += 1
                self._unlink(h)
                slot = cls.pop_free()
                if slot != NIL:
                    return slot
                h = prev
                continue
            h = hc.prev[hs]
        if self._grow(cls):
            return cls.pop_free()
        if not self.limits.evictions:
            cls.outofmemory += 1
            return NIL
        # Evict from the tail until a chunk of this class is free.
        for _ in range(TAIL_SEARCH * 10):
            h = cls.lru_tail
            if h == NIL:
                break
            hc = self.classes[h & 63]
            hs = h >> 6
            cls.evicted += 1
            self.evictions += 1
            if hc.exp[hs] != 0:
                cls.evicted_nonzero += 1
            cls.evicted_time = now - hc.atime[hs]
            if not hc.bits[hs] & FETCHED:
                cls.evicted_unfetched += 1
                self.evicted_unfetched += 1
            if self.on_evict is not None:
                self.on_evict(
                    self._key_of(hc, hs),
                    bool(hc.bits[hs] & FETCHED),
                    hc.exp[hs],
                    hc.atime[hs],
                    cls.cid,
                    hc.blen[hs] - 2,
                )
            self._unlink(h)
            slot = cls.pop_free()
            if slot != NIL:
                if self.on_class_evict is not None:
                    self.on_class_evict(cid)
                return slot
        cls.outofmemory += 1
        return NIL

    def _is_dead(self, cls: SlabClass, slot: int, now: int) -> bool:
        exp = cls.exp[slot]
        if exp and exp <= now:
            return True
        return self._is_flushed(cls, slot, now)

    def _is_flushed(self, cls: SlabClass, slot: int, now: int) -> bool:
        ol = self.oldest_live
        if ol and ol <= now and cls.atime[slot] <= ol:
            return True
        return bool(self.oldest_cas and cls.cas[slot] < self.oldest_cas)

    # ------------------------------------------------------------------ linking

    def _link(self, key: bytes, h: int, lru_cid: int, ntotal: int, nbytes: int) -> None:
        """Put a fully written item into the index and at the head of its class's LRU,
        replacing the key's current item if it has one.

        The index entry is swapped in place, and what it held is the item to unlink: one probe
        for a set, and exact even when the allocation for ``h`` evicted the old item (its
        entry is gone then, and its chunk may be ``h`` itself)."""
        old = self.index.put(key, h)
        if old is not None:
            self._unlink(old, False)
        c = self.classes[h & 63]
        s = h >> 6
        lru = self.classes[lru_cid]
        c.prev[s] = NIL
        c.nxt[s] = lru.lru_head
        if lru.lru_head != NIL:
            self.classes[lru.lru_head & 63].prev[lru.lru_head >> 6] = h
        else:
            lru.lru_tail = h
        lru.lru_head = h
        lru.items += 1
        lru.mem_requested += ntotal
        self.curr_items += 1
        self.total_items += 1
        self.bytes += ntotal
        if self.sizes is not None:
            self.sizes.add(ntotal, c.cas[s])
        _ = nbytes

    def _lru_cid(self, c: SlabClass, s: int) -> int:
        """The class whose LRU holds the item at (c, s): its own, or the largest if chunked."""
        return self.table.largest if c.bits[s] & CHUNKED else c.cid

    def _ntotal(self, c: SlabClass, s: int) -> int:
        """memcached's ITEM_ntotal (a chunked item counts its whole value, as there)."""
        return self.table.item_size(c.klen[s], c.flags[s], c.blen[s])

    def _key_of(self, c: SlabClass, s: int) -> bytes:
        """The key, read back from the stored header (it sits at offset ``key_offset``)."""
        base = (s % c.perslab) * c.size + self.key_offset
        return bytes(c.views[s // c.perslab][base : base + c.klen[s]])

    key_offset = 6  # set by the protocol layer; the header embeds the key at this offset
    # While track_sizes is on; a class attribute until then, so the instance dict stays small.
    sizes: SizeHistogram | None = None

    def _key_view(self, h: int) -> memoryview:
        """The key of handle ``h`` as a view into its chunk (no copy): the index compares it."""
        c = self.classes[h & 63]
        s = h >> 6
        base = (s % c.perslab) * c.size + self.key_offset
        return c.views[s // c.perslab][base : base + c.klen[s]]

    def _unlink(self, h: int, indexed: bool = True) -> None:
        """Remove an item from the index (unless ``_link`` already replaced its entry) and its
        LRU, and free its chunks."""
        # _key_of, _lru_cid and _ntotal inlined: every overwrite and delete comes through here.
        classes = self.classes
        c = classes[h & 63]
        s = h >> 6
        klen = c.klen[s]
        if indexed:
            base = (s % c.perslab) * c.size + self.key_offset
            self.index.remove(bytes(c.views[s // c.perslab][base : base + klen]), h)
        bits = c.bits[s]
        lru = classes[self.table.largest] if bits & CHUNKED else c
        p = c.prev[s]
        n = c.nxt[s]
        if p != NIL:
            classes[p & 63].nxt[p >> 6] = n
        else:
            lru.lru_head = n
        if n != NIL:
            classes[n & 63].prev[n >> 6] = p
        else:
            lru.lru_tail = p
        ntotal = self.table.item_size(klen, c.flags[s], c.blen[s])
        lru.items -= 1
        lru.mem_requested -= ntotal
        self.curr_items -= 1
        self.bytes -= ntotal
        if self.sizes is not None:
            self.sizes.remove(ntotal, c.cas[s])
        if bits & CHUNKED:
            for dh in self.chunk_lists.pop(h, ()):
                classes[dh & 63].push_free(dh >> 6)
        c.push_free(s)

    def _bump(self, c: SlabClass, s: int, h: int, now: int) -> None:
        """Move to the LRU head, at most once per UPDATE_INTERVAL (memcached's rule)."""
        if c.atime[s] + UPDATE_INTERVAL > now:
            return
        c.atime[s] = now
        lru = self.classes[self._lru_cid(c, s)]
        if lru.lru_head == h:
            return
        p = c.prev[s]
        n = c.nxt[s]
        self.classes[p & 63].nxt[p >> 6] = n
        if n != NIL:
            self.classes[n & 63].prev[n >> 6] = p
        else:
            lru.lru_tail = p
        c.prev[s] = NIL
        c.nxt[s] = lru.lru_head
        self.classes[lru.lru_head & 63].prev[lru.lru_head >> 6] = h
        lru.lru_head = h

    # ------------------------------------------------------------------ lookup

    def _find(self, key: bytes, now: int) -> int:
        """The live handle for ``key``, or NIL; expired/flushed items are unlinked on the way."""
        h = self.index.get(key)
        if h is None:
            return NIL
        c = self.classes[h & 63]
        s = h >> 6
        exp = c.exp[s]
        if (exp and exp <= now) or self._is_flushed(c, s, now):
            self._unlink(h)
            return NIL
        return h

    def _live(self, key: bytes, now: int) -> int:
        """Handle of the live item for ``key``; else 0 (miss), -1 (expired) or -2 (flushed),
        unlinking a dead item on the way. The caller holds the lock."""
        h = self.index.get(key)
        if h is None:
            return 0
        c = self.classes[h & 63]
        s = h >> 6
        exp = c.exp[s]
        if exp and exp <= now:
            self._unlink(h)
            return -1
        if self._is_flushed(c, s, now):
            self._unlink(h)
            return -2
        return h

    def _read(self, c: SlabClass, s: int, h: int, start: int, length: int) -> bytes:
        """Bytes ``start..start+length`` of the item's header+value, across chunks if needed."""
        if not c.bits[s] & CHUNKED:
            base = (s % c.perslab) * c.size + start
            return bytes(c.views[s // c.perslab][base : base + length])
        return bytes(self._chunked_view(c, s, h))[start : start + length]

    def _chunked_view(self, c: SlabClass, s: int, h: int) -> bytearray:
        out = bytearray(c.views[s // c.perslab][(s % c.perslab) * c.size :][: c.plen[s]])
        remain = c.blen[s]
        for dh in self.chunk_lists[h]:
            dc = self.classes[dh & 63]
            ds = dh >> 6
            cap = dc.size - CHUNK_HEADER
            take = min(cap, remain)
            base = (ds % dc.perslab) * dc.size
            out += dc.views[ds // dc.perslab][base : base + take]
            remain -= take
        return out

    # ------------------------------------------------------------------ public API: reads

    def get_into(self, key: bytes, out: bytearray) -> int:
        """Append the stored ``VALUE`` header and value of ``key`` to ``out``.

        Returns 1 on a hit, 0 on a miss, -1 for an expired item and -2 for a flushed one (so the
        caller can count memcached's get_expired / get_flushed).
        """
        now = self.clock.now
        hv = hash(key)
        koff = self.key_offset
        classes = self.classes
        with self.lock:
            # The index probe, inlined: this is the hottest path of the server.
            index = self.index
            mask = index.mask
            i = hv & mask
            handles = index.handles
            hashes = index.hashes
            while True:
                h = handles[i]
                if h == -1:
                    return 0
                if hashes[i] == hv:
                    c = classes[h & 63]
                    s = h >> 6
                    view = c.views[s // c.perslab]
                    base = (s % c.perslab) * c.size
                    if view[base + koff : base + koff + c.klen[s]] == key:
                        break
                i = (i + 1) & mask
            exp = c.exp[s]
            if exp and exp <= now:
                self._unlink(h)
                return -1
            if (self.oldest_live or self.oldest_cas) and self._is_flushed(c, s, now):
                self._unlink(h)
                return -2
            bits = c.bits[s]
            if bits & CHUNKED:
                out += self._chunked_view(c, s, h)
                c = self.classes[self.table.largest]
                c.get_hits += 1
                cs = self.classes[h & 63]
                cs.bits[s] = bits | FETCHED
                self._bump(cs, s, h, now)
                return 1
            out += view[base : base + c.plen[s] + c.blen[s]]
            c.get_hits += 1
            c.bits[s] = bits | FETCHED
            if c.atime[s] + UPDATE_INTERVAL <= now:
                self._bump(c, s, h, now)
            return 1

    def get_parts(self, key: bytes, exptime: int | None = None) -> tuple[bytes, bytes, int] | int:
        """(header, value+CRLF, cas) for gets/gat/gats, or a miss code as in ``get_into``.

        With ``exptime`` the item's expiry is updated first (gat/gats).
        """
        now = self.clock.now
        with self.lock:
            h = self._live(key, now)
            if h <= 0:
                return h
            c = self.classes[h & 63]
            s = h >> 6
            if exptime is not None:
                c.exp[s] = exptime_to_abs(exptime, self.clock)
                self.classes[self._lru_cid(c, s)].touch_hits += 1
            else:
                self.classes[self._lru_cid(c, s)].get_hits += 1
            c.bits[s] |= FETCHED
            plen = c.plen[s]
            data = self._read(c, s, h, 0, plen + c.blen[s])
            self._bump(c, s, h, now)
            return data[:plen], data[plen:], c.cas[s]

    def touch(self, key: bytes, exptime: int) -> bool:
        now = self.clock.now
        with self.lock:
            h = self._find(key, now)
            if h == NIL:
                return False
            c = self.classes[h & 63]
            s = h >> 6
            c.exp[s] = exptime_to_abs(exptime, self.clock)
            self.classes[self._lru_cid(c, s)].touch_hits += 1
            self._bump(c, s, h, now)
            return True

    # ------------------------------------------------------------------ public API: writes

    def _next_cas(self) -> int:
        if not self.limits.use_cas:
            return 0
        self.next_cas += 1
        return self.next_cas

    def _write_item(
        self, key: bytes, flags: int, exp_abs: int, body: bytes | bytearray | memoryview, now: int,
        ntotal: int = 0,
    ) -> tuple[Outcome, int]:
        """Allocate and fill an item (not yet linked). Returns (outcome, handle)."""
        table = self.table
        nbytes = len(body)
        nkey = len(key)
        if not ntotal:
            ntotal = table.item_size(nkey, flags, nbytes)
        cid = table.class_for(ntotal)
        if cid == 0:
            return Outcome.TOO_LARGE, NIL
        header = self.header_fn(key, flags, nbytes)
        plen = len(header)
        if ntotal <= table.chunk_max:
            slot = self._alloc(cid, now)
            if slot == NIL:
                return Outcome.NO_MEMORY, NIL
            c = self.classes[cid]
            page = c.pages[slot // c.perslab]
            base = (slot % c.perslab) * c.size
            page[base : base + plen] = header
            page[base + plen : base + plen + nbytes] = body
            bits = IN_USE
        else:
            hcid = table.class_for(table.chunked_header_size(nkey, flags))
            if hcid == 0 or plen > table.sizes[hcid]:
                return Outcome.TOO_LARGE, NIL
            data_cids = table.data_chunks(nbytes)
            slot = self._alloc(hcid, now)
            if slot == NIL:
                return Outcome.NO_MEMORY, NIL
            c = self.classes[hcid]
            c.bits[slot] = IN_USE | CHUNKED  # so a failing data alloc can free it
            chunks: list[int] = []
            off = 0
            for dcid in data_cids:
                ds = self._alloc(dcid, now)
                if ds == NIL:
                    for dh in chunks:
                        self.classes[dh & 63].push_free(dh >> 6)
                    c.push_free(slot)
                    return Outcome.NO_MEMORY, NIL
                dc = self.classes[dcid]
                dc.bits[ds] = IN_USE | DATA_CHUNK
                take = min(dc.size - CHUNK_HEADER, nbytes - off)
                dbase = (ds % dc.perslab) * dc.size
                dc.pages[ds // dc.perslab][dbase : dbase + take] = body[off : off + take]
                off += take
                chunks.append((ds << 6) | dcid)
            page = c.pages[slot // c.perslab]
            base = (slot % c.perslab) * c.size
            page[base : base + plen] = header
            self.chunk_lists[(slot << 6) | hcid] = chunks
            bits = IN_USE | CHUNKED
        c.bits[slot] = bits
        c.plen[slot] = plen
        c.blen[slot] = nbytes
        c.klen[slot] = nkey
        c.flags[slot] = flags
        c.exp[slot] = exp_abs
        c.atime[slot] = now
        c.cas[slot] = self._next_cas()
        return Outcome.STORED, (slot << 6) | c.cid

    def store(
        self,
        mode: Mode,
        key: bytes,
        flags: int,
        exptime: int,
        body: bytes | bytearray | memoryview,
        cas_unique: int = 0,
    ) -> Outcome:
        """set/add/replace/append/prepend/cas. ``body`` is the value followed by CRLF."""
        clock = self.clock
        now = clock.now
        with self.lock:
            table = self.table
            ntotal = table.item_size(len(key), flags, len(body))
            cid = table.class_for(ntotal)
            if cid:  # memcached counts every set whose item could be sized
                self.classes[cid].cmd_set += 1
            # A plain set needs no lookup first: the new item is allocated while the old one is
            # still linked (as memcached allocates before do_store_item), and _link replaces it.
            old = NIL if mode == Mode.SET else self._find(key, now)
            if mode == Mode.SET:
                pass
            elif mode == Mode.ADD:
                if old != NIL:
                    oc = self.classes[old & 63]
                    self._bump(oc, old >> 6, old, now)
                    return Outcome.NOT_STORED
            elif mode == Mode.REPLACE:
                if old == NIL:
                    return Outcome.NOT_STORED
            elif mode == Mode.CAS:
                if old == NIL:
                    return Outcome.NOT_FOUND
                oc = self.classes[old & 63]
                os_ = old >> 6
                lru = self.classes[self._lru_cid(oc, os_)]
                # With -C every item's CAS is 0, which memcached never treats as a match.
                if oc.cas[os_] != cas_unique or not self.limits.use_cas:
                    lru.cas_badval += 1
                    return Outcome.EXISTS
                lru.cas_hits += 1
            else:  # APPEND / PREPEND keep the old flags and expiry
                if old == NIL:
                    return Outcome.NOT_STORED
                oc = self.classes[old & 63]
                os_ = old >> 6
                plen = oc.plen[os_]
                value = self._read(oc, os_, old, plen, oc.blen[os_])
                if mode == Mode.APPEND:
                    body = value[:-2] + bytes(body)
                else:
                    body = bytes(body)[:-2] + value
                flags = oc.flags[os_]
                ntotal = table.item_size(len(key), flags, len(body))
                if table.class_for(ntotal) == 0:
                    return Outcome.NOT_STORED  # memcached: an append past -I is not stored
                outcome, h = self._write_item(key, flags, oc.exp[os_], body, now)
                if outcome != Outcome.STORED:
                    return outcome
                c = self.classes[h & 63]
                lru_cid = self._lru_cid(c, h >> 6)
                self._link(key, h, lru_cid, ntotal, len(body))
                return Outcome.STORED
            outcome, h = self._write_item(
                key, flags, exptime_to_abs(exptime, clock), body, now, ntotal
            )
            if outcome != Outcome.STORED:
                if mode == Mode.SET:
                    # memcached drops the old value when a set of the same key cannot be stored
                    stale = self.index.get(key)
                    if stale is not None:
                        self._unlink(stale)
                return outcome
            lru_cid = cid if ntotal <= table.chunk_max else table.largest
            self._link(key, h, lru_cid, ntotal, len(body))
            return Outcome.STORED

    def _count_set(self, nkey: int, flags: int, nbytes: int) -> None:
        """memcached counts a set in the item's class once the item could be sized."""
        cid = self.table.class_for(self.table.item_size(nkey, flags, nbytes))
        if cid:
            self.classes[cid].cmd_set += 1

    def count_set(self, nkey: int, flags: int, nbytes: int) -> None:
        """Count a storage command whose data block was bad (memcached counts it too)."""
        with self.lock:
            self._count_set(nkey, flags, nbytes)

    def delete(self, key: bytes) -> bool:
        now = self.clock.now
        with self.lock:
            h = self._find(key, now)
            if h == NIL:
                return False
            c = self.classes[h & 63]
            self.classes[self._lru_cid(c, h >> 6)].delete_hits += 1
            self._unlink(h)
            return True

    def drop(self, key: bytes) -> None:
        """Unlink ``key`` without counting a delete (a failed set must not leave stale data)."""
        with self.lock:
            h = self.index.get(key)
            if h is not None:
                self._unlink(h)

    def _add_delta(
        self, c: SlabClass, s: int, h: int, delta: int, incr: bool, now: int, req_cas: int = 0
    ) -> tuple[Outcome, int, bytes]:
        """The arithmetic of memcached's do_add_delta on the item at (c, s), shared by
        incr/decr and ``ma``: NON_NUMERIC, EXISTS (``req_cas`` given and not the item's), or
        DELTA_OK with the new value. A result that fits is written in place (padded with
        spaces, a new CAS, bumped) and the digits come back empty; a longer one comes back as
        digits for the caller to store as a new item."""
        nbytes = c.blen[s]
        if nbytes <= 2 or c.bits[s] & CHUNKED:
            return Outcome.NON_NUMERIC, 0, b""
        if req_cas and c.cas[s] != req_cas:
            return Outcome.EXISTS, 0, b""
        plen = c.plen[s]
        value = parse_u64(self._read(c, s, h, plen, nbytes - 2))
        if value is None:
            return Outcome.NON_NUMERIC, 0, b""
        lru = self.classes[self._lru_cid(c, s)]
        if incr:
            value = (value + delta) & 0xFFFFFFFFFFFFFFFF
            lru.incr_hits += 1
        else:
            value = max(value - delta, 0)
            lru.decr_hits += 1
        digits = b"%d" % value
        res = len(digits)
        if res + 2 > nbytes:
            return Outcome.DELTA_OK, value, digits
        base = (s % c.perslab) * c.size + plen
        c.pages[s // c.perslab][base : base + nbytes - 2] = digits + b" " * (nbytes - 2 - res)
        c.cas[s] = self._next_cas()
        self._bump(c, s, h, now)
        return Outcome.DELTA_OK, value, b""

    def incr_decr(self, key: bytes, delta: int, incr: bool) -> tuple[Outcome, int]:
        """memcached's do_add_delta: wraps at 2**64 on incr, floors at 0 on decr.

        A shorter result is written in place padded with spaces, as memcached does (so ``decr`` of
        "10" reads back as "9 "); a longer one becomes a new item with the same flags and expiry.
        """
        now = self.clock.now
        with self.lock:
            h = self._find(key, now)
            if h == NIL:
                return Outcome.NOT_FOUND, 0
            c = self.classes[h & 63]
            s = h >> 6
            outcome, value, digits = self._add_delta(c, s, h, delta, incr, now)
            if outcome != Outcome.DELTA_OK or not digits:
                return outcome, value
            flags = c.flags[s]
            body = digits + b"\r\n"
            outcome, nh = self._write_item(key, flags, c.exp[s], body, now)
            if outcome != Outcome.STORED:
                return outcome, 0
            nc = self.classes[nh & 63]
            self._link(
                key,
                nh,
                self._lru_cid(nc, nh >> 6),
                self.table.item_size(len(key), flags, len(body)),
                len(body),
            )
            return Outcome.DELTA_OK, value

    def flush_all(self, exptime: int) -> None:
        """memcached's flush: items last stored/used at or before a moment become invalid."""
        clock = self.clock
        with self.lock:
            now = clock.now
            new_oldest = exptime_to_abs(exptime, clock) if exptime > 0 else now
            if self.limits.use_cas:
                self.oldest_live = new_oldest - 1
                if self.oldest_live <= now:
                    self.oldest_cas = self.next_cas + 1
            else:
                self.oldest_live = new_oldest

    def track_sizes(self, on: bool) -> bool:
        """``stats sizes_enable``/``sizes_disable`` (and ``-o track_sizes``). Turning tracking
        on counts items stored from then on, and takes a CAS value to mark where, as memcached
        does; turning it on again changes nothing. Returns whether it was already on."""
        with self.lock:
            was = self.sizes is not None
            if on and not was:
                self.sizes = SizeHistogram(self._next_cas() if self.limits.use_cas else 0)
            elif not on:
                self.sizes = None
            return was

    def size_counts(self) -> list[tuple[int, int]] | None:
        """(bucket size in bytes, live items) in size order; None while tracking is off."""
        with self.lock:
            if self.sizes is None:
                return None
            return [(b << 5, n) for b, n in sorted(self.sizes.counts.items())]

    def set_memory_limit(self, limit: int) -> None:
        with self.lock:
            self.memory_limit = limit
            self.release_pool()

    # ------------------------------------------------------------------ background reclaim

    def crawl(self, cid: int, start: int, count: int) -> tuple[int, int]:
        """Reclaim expired/flushed items among ``count`` slots of class ``cid`` from ``start``.

        Returns (next start slot or -1 when the class is done, items reclaimed). The caller
        (the LRU crawler thread) walks in small batches so the lock is never held for long.
        """
        now = self.clock.now
        reclaimed = 0
        with self.lock:
            c = self.classes[cid]
            end = min(start + count, len(c.bits))
            bits = c.bits
            for s in range(start, end):
                b = bits[s]
                if not b & IN_USE or b & DATA_CHUNK:
                    continue
                c.crawler_items_checked += 1
                self.crawler_items_checked += 1
                if self._is_dead(c, s, now):
                    h = (s << 6) | cid
                    lru = self.classes[self._lru_cid(c, s)]
                    lru.crawler_reclaimed += 1
                    lru.reclaimed += 1
                    self.crawler_reclaimed += 1
                    self.reclaimed += 1
                    if not b & FETCHED:
                        lru.expired_unfetched += 1
                        self.expired_unfetched += 1
                    self._unlink(h)
                    reclaimed += 1
            return (end if end < len(c.bits) else -1), reclaimed

    # ------------------------------------------------------------------ stats

    def class_stats(self) -> list[ClassStats]:
        """Snapshot of every class (callers filter: stats slabs shows classes with pages)."""
        now = self.clock.now
        out = []
        with self.lock:
            for c in self.classes[1:]:
                age = 0
                if c.lru_tail != NIL:
                    t = c.lru_tail
                    age = now - self.classes[t & 63].atime[t >> 6]
                counters = {name: getattr(c, name) for name in CLASS_COUNTERS}
                out.append(
                    ClassStats(
                        cid=c.cid,
                        chunk_size=c.size,
                        chunks_per_page=c.perslab,
                        total_pages=len(c.pages),
                        used_chunks=c.used_chunks,
                        free_chunks=c.free_count,
                        items=c.items,
                        mem_requested=c.mem_requested,
                        age=age,
                        counters=counters,
                    )
                )
        return out

    def dump_class(self, cid: int, limit: int) -> list[tuple[bytes, int, int]]:
        """(key, value length, absolute expiry or 0) from the head of a class's LRU, for
        ``stats cachedump``; at most ``limit`` items (0: no limit), at most 2 MB of output."""
        out: list[tuple[bytes, int, int]] = []
        budget = 2 * 1024 * 1024
        with self.lock:
            if not 0 < cid < len(self.classes):
                return out
            h = self.classes[cid].lru_head
            while h != NIL and (limit == 0 or len(out) < limit) and budget > 0:
                c = self.classes[h & 63]
                s = h >> 6
                key = self._key_of(c, s)
                out.append((key, c.blen[s] - 2, c.exp[s]))
                budget -= len(key) + 40
                h = c.nxt[s]
        return out

    def reset_stats(self) -> None:
        with self.lock:
            self.total_items = 0
            self.evictions = self.reclaimed = 0
            self.expired_unfetched = self.evicted_unfetched = 0
            self.crawler_reclaimed = self.crawler_items_checked = 0
            self.moves = MoveCounters()
            for c in self.classes:
                for name in CLASS_COUNTERS:
                    setattr(c, name, 0)


def parse_u64(raw: bytes) -> int | None:
    """memcached's safe_strtoull on a stored value: strtoull, then only whitespace may follow.

    Leading whitespace and a sign are accepted as strtoull accepts them; parsing stops at the
    first non-digit, which must be whitespace (so "1\r\n2" reads as 1, as in memcached).
    """
    s = raw.lstrip(b" \t\r\n\v\f")
    neg = False
    if s[:1] in (b"+", b"-"):
        neg = s[:1] == b"-"
        s = s[1:]
    n = 0
    while n < len(s) and 48 <= s[n] <= 57:
        n += 1
    if n == 0:
        return None
    if n < len(s) and s[n] not in b" \t\r\n\v\f":
        return None
    v = int(s[:n])
    if v > 0xFFFFFFFFFFFFFFFF:
        return None
    if neg:
        v = (1 << 64) - v if v else 0
        if v >= 1 << 63:
            return None
    return v
