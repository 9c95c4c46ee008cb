"""Items under the lock: the store's lock-held API (memcached's ``do_item_*`` functions).

Every method named ``do_*`` here must be called with ``lock`` held; none takes it. The store's
public operations (``storage/store.py``) take the lock and call these; so do the meta store and
the page mover, which need several of these steps under one hold. This is the seam between the
item operations and whoever serialises them.

What lives here: allocation (a free chunk, a new page, or an eviction from the LRU tail), the
index and LRU links, expiry and flush checks, reading and writing an item's chunks, CAS numbers
and the arithmetic core of incr/decr. Times are unix seconds from the ``Clock``.

Order of writes, for the repair pass (``storage/repair.py``) after a process died holding the
lock: an item's ``bits`` byte (IN_USE) is written last, after its bytes, its other header
fields and, for a chunked item, its whole chain of data chunks; only then is it put in the
index and LRU.
So an IN_USE header is always a complete item. A chunked item's data chunks are chained in the
segment, never in a process's memory: the header chunk's last 8 bytes hold the first data
chunk's handle, and each data chunk's ``prev`` field names its header, ``nxt`` the next chunk.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from memcache_server.storage.clock import Clock
from memcache_server.storage.index import IndexAreas, KeyIndex, handle_bits, index_capacity
from memcache_server.storage.lru import UPDATE_INTERVAL, LruOps, LruSettings
from memcache_server.storage.proclock import ProcessLock
from memcache_server.storage.segment import ALIGN, Segment, Word
from memcache_server.storage.slabclass import (
    CHUNKED,
    COLD,
    DATA_CHUNK,
    HEADER_BYTES,
    HOT,
    IN_USE,
    KILL_NONE,
    NIL,
    W_CMD_SET,
    W_HITS,
    SlabClass,
    class_bytes,
)
from memcache_server.storage.slabs import CHUNK_HEADER, PAGE_SIZE, SlabTable

if TYPE_CHECKING:
    from memcache_server.storage.admission import TinyLfu
    from memcache_server.storage.restart import MemoryFile

__all__ = [
    "Items",
    "Outcome",
    "Mode",
    "StoreLimits",
    "MoveCounters",
    "SizeHistogram",
    "parse_u64",
    "UPDATE_INTERVAL",
    "LruSettings",
    "W_OLDEST_LIVE",
    "W_OLDEST_CAS",
    "store_bytes",
]

# Indexes of the store's shared words the hot paths read directly (see Items).
W_NEXT_CAS, W_OLDEST_LIVE, W_OLDEST_CAS, W_CURR_ITEMS, W_ITEM_BYTES = 3, 4, 5, 6, 7
W_TOTAL_ITEMS = 9
W_MOVES = 16  # MoveCounters' four words
W_JUGGLES = 20  # the LRU maintainer's wake-ups (memcached's lru_maintainer_juggles)
STORE_WORDS = 32  # the store's shared words (see Items), with room to spare
FIRST_CHUNK = 8  # bytes at the end of a chunked item's header chunk: its first data chunk


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


# The members as module constants, for the request paths: a member read through its class goes
# through EnumType's attribute lookup, 70-85 ns on 3.11 against about 15 for a module global,
# and a plain set read seven of them.
STORED, NOT_STORED, EXISTS, NOT_FOUND, TOO_LARGE, NO_MEMORY, NON_NUMERIC, DELTA_OK = Outcome
SET, ADD, REPLACE, APPEND, PREPEND, CAS = Mode


@dataclass(frozen=True, slots=True)
class StoreLimits:
    memory_limit: int
    evictions: bool
    use_cas: bool
    lru: LruSettings = LruSettings()


class MoveCounters:
    """memcached's slab mover stats: pages moved, items and chunks rescued, items lost.

    Words of the store's shared area (``W_MOVES`` on), so whichever process runs the mover,
    every process's ``stats`` reads the same figures."""

    __slots__ = ("words",)

    slabs_moved = Word(W_MOVES)
    rescues = Word(W_MOVES + 1)
    chunk_rescues = Word(W_MOVES + 2)
    evictions_nomem = Word(W_MOVES + 3)

    def __init__(self, words: memoryview) -> None:
        self.words = words

    def reset(self) -> None:
        self.slabs_moved = self.rescues = self.chunk_rescues = self.evictions_nomem = 0


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


def store_bytes(table: SlabTable, memory_limit: int, extra: int = 0) -> int:
    """Bytes of segment a store of ``memory_limit`` reserves (see ``Items``), with ``extra``
    more for the node's own areas."""
    return segment_size(table, memory_limit // PAGE_SIZE + 1) + extra


def segment_size(table: SlabTable, max_pages: int) -> int:
    """Bytes of segment a store reserves: every class's pages, and the index."""
    total = sum(class_bytes(size, perslab, max_pages)
                for size, perslab in zip(table.sizes, table.perslab, strict=True))
    # the store's words, the lock's owner word, the mover's words, the classes, the index
    return 3 * ALIGN + total + IndexAreas.reserve(index_capacity(table, max_pages))


class Items(LruOps):
    """All items of a node, and the steps on them that run with ``lock`` held."""

    # The node's shared state, in the store's header area of the segment (see segment.Word).
    memory_limit = Word(0)
    malloced = Word(1)  # bytes of pages handed to classes
    next_cas = Word(W_NEXT_CAS)
    oldest_live = Word(W_OLDEST_LIVE)
    oldest_cas = Word(W_OLDEST_CAS)
    curr_items = Word(W_CURR_ITEMS)
    item_bytes = Word(W_ITEM_BYTES)  # memcached's "bytes" stat
    pool_pages = Word(8)
    # memcached's global item counters ("stats" fields), one shared copy under the lock
    total_items = Word(W_TOTAL_ITEMS)
    evictions = Word(10)
    reclaimed = Word(11)
    expired_unfetched = Word(12)
    evicted_unfetched = Word(13)
    crawler_reclaimed = Word(14)
    crawler_items_checked = Word(15)
    lru_maintainer_juggles = Word(W_JUGGLES)

    def __init__(
        self,
        table: SlabTable,
        limits: StoreLimits,
        clock: Clock,
        header_fn: Callable[[bytes, int, int], bytes],
        memory_file: str | None = None,
        keep: bool = False,
        reserve: int = 0,
    ) -> None:
        """``reserve``: segment bytes kept after the store's areas for the node's own shared
        areas (counters, settings, clock, cluster document, connections, log rings, prefix
        stats), which the node carves once the store is built."""
        self.table = table
        self.limits = limits
        self.clock = clock
        self.header_fn = header_fn
        # The LRU's settings never change at run time (its state is in the segment).
        self.lru_settings = limits.lru
        self.segmented = limits.lru.segmented
        self.evicts = limits.evictions
        self.lock: threading.Lock | ProcessLock = threading.Lock()
        # Every byte of cache memory lives in one shared segment, sized from -m here: an
        # unnamed one, or the -e file (``keep``: its items come back, see restart.py).
        max_pages = limits.memory_limit // PAGE_SIZE + 1
        self.segment = Segment(segment_size(table, max_pages) + reserve, memory_file, keep)
        restored = self.segment.restored
        self.words = self.segment.carve(STORE_WORDS * 8, keep=True)[1].cast("q")
        self.lock_owner = self.segment.carve(8)[1].cast("q")  # see ProcessLock
        self.classes = [
            SlabClass(i, table.sizes[i], table.perslab[i], self.segment, max_pages)
            for i in range(len(table.sizes))
        ]
        self.index = KeyIndex(self.do_key_view, IndexAreas(self.segment, index_capacity(
            table, max_pages)), handle_bits(max_pages))
        self.memory_limit = limits.memory_limit
        if not restored:  # else the CAS counter, flush state, counts and pages come back
            self.malloced = 0
            self.next_cas = 0
            self.oldest_live = 0
            self.oldest_cas = 0
            self.curr_items = 0
            self.item_bytes = 0
            self.pool_pages = 0
        # global counters (memcached's "slab" stats, kept under the lock)
        self.total_items = 0
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
        self.moves = MoveCounters(self.words)
        self.moves.reset()
        # Called with the class id after an allocation had to evict (slab_automove=2 moves a
        # page towards that class); None otherwise.
        self.on_class_evict: Callable[[int], None] | None = None
        # Called for each eviction (key, fetched, exp, atime, class, value length) while
        # someone watches evictions; None otherwise, so evicting costs one test.
        self.on_evict: Callable[[bytes, bool, int, int, int, int], None] | None = None

    def share(self) -> None:
        """Make the lock exclusive across processes too, before forking workers that serve
        this store (see proclock.py); a single-process store keeps the cheaper thread lock."""
        if not isinstance(self.lock, ProcessLock):
            self.lock = ProcessLock(self.lock_owner)

    def do_grow(self, cls: SlabClass) -> bool:
        """Give ``cls`` a new page if memory allows (a class with no page always gets one).

        A page in the global pool is already counted as allocated, so taking it needs no more
        room. A class giving a page away gets none meanwhile (the page being emptied must stay
        its last)."""
        if cls.kill_lo != KILL_NONE or not cls.has_room():
            return False
        pooled = PAGE_SIZE if self.pool_pages else 0
        if cls.npages and self.used_memory() - pooled + PAGE_SIZE > self.memory_limit:
            return False
        if pooled:
            self.pool_pages -= 1
            self.malloced -= PAGE_SIZE
        self.do_add_page(cls)
        return True

    def do_add_page(self, cls: SlabClass) -> None:
        """Hand ``cls`` one more page and charge it (the caller checked the budget)."""
        cls.add_page()
        self.malloced += PAGE_SIZE

    def do_release_pool(self) -> None:
        """Free pooled pages while the store holds more than its limit (memcached's
        memory_release: a lowered cache_memlimit is honoured as pages reach the pool)."""
        while self.pool_pages and self.used_memory() > self.memory_limit:
            self.pool_pages -= 1
            self.malloced -= PAGE_SIZE

    def used_memory(self) -> int:
        """Bytes held for items, what -m limits: pages (each item's header is in its chunk).
        As in memcached, the key index is not charged (its hash table is not either)."""
        return int(self.malloced)

    def do_alloc(self, cid: int, now: int) -> int:
        """A free slot of class ``cid``: a free chunk, a new page, or one the LRU gives up
        (see ``LruOps.do_alloc_pull``); NIL when none can be had. A flat LRU looks at its tail
        for dead items before every allocation, so only a segmented one takes a free chunk
        here first."""
        if self.segmented:
            slot = self.classes[cid].pop_free()
            if slot != NIL:
                return slot
        return self.do_alloc_pull(cid, now)

    def do_is_dead(self, cls: SlabClass, slot: int, now: int) -> bool:
        exp = cls.u4[2 * slot + 6]
        if exp and exp <= now:
            return True
        return self.do_is_flushed(cls, slot, now)

    def do_is_flushed(self, cls: SlabClass, slot: int, now: int) -> bool:
        ol = self.oldest_live
        if ol and ol <= now and cls.u4[2 * slot + 7] <= ol:
            return True
        return bool(self.oldest_cas and cls.q[slot] < self.oldest_cas)

    def do_link(self, key: bytes, h: int, lru_cid: int, ntotal: int, nbytes: int) -> None:
        """Put a fully written item into the index and at the head of its class's LRU,
        replacing the key's current item if it has one.

        The index entry is swapped in place, and what it held is the item to unlink: one probe
        for a set, and exact even when the allocation for ``h`` evicted the old item (its
        entry is gone then, and its chunk may be ``h`` itself)."""
        if self.admission is not None:
            self.admission.do_record(hash(key))  # a set is a use (Caffeine counts writes)
        old = self.index.put(key, h)
        if old is not None:
            self.do_unlink(old, False)
        classes = self.classes
        c = classes[h & 63]
        s = h >> 6
        lw = classes[lru_cid].words  # shared words indexed directly: the set path
        base = 32 + 4 * c.u1[8 * s + 42]  # W_SUB + 4 * lru (literals: the set path)
        head = lw[base]
        q = c.q
        q[s + 1] = -1  # NIL
        q[s + 2] = head
        if head != -1:
            classes[head & 63].q[(head >> 6) + 1] = h
        else:
            lw[base + 1] = h
        lw[base] = h
        lw[base + 2] += 1
        lw[base + 3] += ntotal
        w = self.words
        w[W_CURR_ITEMS] += 1
        w[W_TOTAL_ITEMS] += 1
        w[W_ITEM_BYTES] += ntotal
        if self.sizes is not None:
            self.sizes.add(ntotal, c.q[s])
        _ = nbytes

    def do_lru_cid(self, c: SlabClass, s: int) -> int:
        """The class whose LRU holds the item at (c, s): its own, or the largest if chunked."""
        return self.table.largest if c.u1[8 * s + 41] & CHUNKED else c.cid

    def do_ntotal(self, c: SlabClass, s: int) -> int:
        """memcached's ITEM_ntotal (a chunked item counts its whole value, as there)."""
        return self.table.item_size(c.u1[8 * s + 40], c.u4[2 * s + 9], c.u4[2 * s + 8])

    def do_key_of(self, c: SlabClass, s: int) -> bytes:
        """The key, read back from the item's stored bytes (they start with it)."""
        base = c.at(s)
        return bytes(c.page_area[base : base + c.u1[8 * s + 40]])

    @property
    def key_offset(self) -> int:
        """Where the key starts in what ``header_fn`` returns: the bytes before it are the same
        for every item (the protocol's ``VALUE ``), so an item stores what follows, and a read
        gives them back from ``lead``. Set by the protocol layer."""
        return len(self.lead)

    @key_offset.setter
    def key_offset(self, n: int) -> None:
        self.lead = self.header_fn(b"", 0, 0)[:n]
        self.lead_len = n

    lead = b""
    lead_len = 0
    # With -e: the file whose companion records a clean stop (restart.py); a class attribute
    # until then, as ``sizes`` below.
    memory_file: MemoryFile | None = None
    # While track_sizes is on; a class attribute until then, so the instance dict stays small.
    sizes: SizeHistogram | None = None
    # With -o lru_admission=tinylfu (the node carves it, see admission.py); a class attribute
    # until then, like ``sizes``: the request paths test it once.
    admission: TinyLfu | None = None

    def do_first_chunk(self, c: SlabClass, s: int) -> int:
        """The handle of the first data chunk of the chunked item at (c, s)."""
        end = 8 * s + c.size
        return int.from_bytes(c.page_area[end - FIRST_CHUNK : end], "little", signed=True)

    def do_set_first_chunk(self, c: SlabClass, s: int, dh: int) -> None:
        end = 8 * s + c.size
        c.page_area[end - FIRST_CHUNK : end] = dh.to_bytes(FIRST_CHUNK, "little", signed=True)

    def do_data_chunks(self, c: SlabClass, s: int) -> list[int]:
        """The data chunk handles of the chunked item at (c, s), in value order."""
        out = []
        dh = self.do_first_chunk(c, s)
        classes = self.classes
        while dh != NIL:
            out.append(dh)
            dh = int(classes[dh & 63].q[(dh >> 6) + 2])
        return out

    def do_key_view(self, h: int) -> memoryview:
        """The key of handle ``h`` as a view into its chunk (no copy): the index compares it."""
        c = self.classes[h & 63]
        s = h >> 6
        base = c.at(s)
        return c.page_area[base : base + c.u1[8 * s + 40]]

    def do_unlink(self, h: int, indexed: bool = True) -> None:
        """Remove an item from the index (unless ``do_link`` already replaced its entry) and its
        LRU, and free its chunks."""
        # _key_of, _lru_cid and _ntotal inlined: every overwrite and delete comes through here.
        classes = self.classes
        c = classes[h & 63]
        s = h >> 6
        u1 = c.u1
        b1 = 8 * s
        klen = u1[b1 + 40]
        if indexed:
            base = b1 + 48
            self.index.remove(bytes(c.page_area[base : base + klen]), h)
        bits = u1[b1 + 41]
        lru = classes[self.table.largest] if bits & CHUNKED else c
        lw = lru.words
        base = 32 + 4 * u1[b1 + 42]  # W_SUB + 4 * lru
        q = c.q
        p = q[s + 1]
        n = q[s + 2]
        if p != -1:  # NIL
            classes[p & 63].q[(p >> 6) + 2] = n
        else:
            lw[base] = n
        if n != -1:
            classes[n & 63].q[(n >> 6) + 1] = p
        else:
            lw[base + 1] = p
        u4 = c.u4
        ntotal = self.table.item_size(klen, u4[2 * s + 9], u4[2 * s + 8])
        lw[base + 2] -= 1
        lw[base + 3] -= ntotal
        w = self.words
        w[W_CURR_ITEMS] -= 1
        w[W_ITEM_BYTES] -= ntotal
        if self.sizes is not None:
            self.sizes.remove(ntotal, c.q[s])
        if bits & CHUNKED:
            for dh in self.do_data_chunks(c, s):
                classes[dh & 63].push_free(dh >> 6)
        c.push_free(s)

    def do_count_hit(self, c: SlabClass, s: int) -> None:
        """A get hit, counted in the item's LRU class and on the list it sits on (memcached's
        lru_hits, shown as hits_to_hot..hits_to_temp; get_hits is their sum)."""
        lru = self.classes[self.table.largest] if c.u1[8 * s + 41] & CHUNKED else c
        lru.words[W_HITS + c.u1[8 * s + 42]] += 1

    def do_find(self, key: bytes, now: int) -> int:
        """The live handle for ``key``, or NIL; expired/flushed items are unlinked on the way."""
        h = self.index.get(key)
        if h is None:
            return NIL
        c = self.classes[h & 63]
        s = h >> 6
        exp = c.u4[2 * s + 6]
        if (exp and exp <= now) or self.do_is_flushed(c, s, now):
            self.do_unlink(h)
            return NIL
        return h

    def do_live(self, key: bytes, now: int) -> int:
        """Handle of the live item for ``key``; else 0 (miss), -1 (expired) or -2 (flushed),
        unlinking a dead item on the way. The caller holds the lock."""
        h = self.index.get(key)
        if h is None:
            return 0
        c = self.classes[h & 63]
        s = h >> 6
        exp = c.u4[2 * s + 6]
        if exp and exp <= now:
            self.do_unlink(h)
            return -1
        if self.do_is_flushed(c, s, now):
            self.do_unlink(h)
            return -2
        return h

    def do_read(self, c: SlabClass, s: int, h: int, start: int, length: int) -> bytes:
        """Bytes ``start..start+length`` of the item's header+value, across chunks if needed."""
        if not c.u1[8 * s + 41] & CHUNKED:
            base = c.at(s) + start
            return bytes(c.page_area[base : base + length])
        return bytes(self.do_chunked_view(c, s, h))[start : start + length]

    def do_chunked_view(self, c: SlabClass, s: int, h: int) -> bytearray:
        out = bytearray(c.page_area[c.at(s) :][: c.u2[4 * s + 22]])
        remain = c.u4[2 * s + 8]
        for dh in self.do_data_chunks(c, s):
            dc = self.classes[dh & 63]
            ds = dh >> 6
            take = min(dc.u4[2 * ds + 8], remain)
            base = dc.at(ds)
            out += dc.page_area[base : base + take]
            remain -= take
        return out

    def do_value_line(self, c: SlabClass, s: int, stored: bytes | bytearray | memoryview) -> bytes:
        """The item's whole value line (``VALUE <key> <flags> <n>\r\n``) from its ``plen``
        stored bytes: they hold the line after its lead, or only the key when the rest did not
        fit the item's chunk (``plen == klen``, see ``do_write_item``)."""
        if c.u2[4 * s + 22] != c.u1[8 * s + 40]:
            return self.lead + bytes(stored)
        return self.header_fn(bytes(stored), c.u4[2 * s + 9], c.u4[2 * s + 8])

    def do_next_cas(self) -> int:
        if not self.limits.use_cas:
            return 0
        w = self.words
        w[W_NEXT_CAS] += 1
        return int(w[W_NEXT_CAS])

    def do_write_item(
        self, key: bytes, flags: int, exp_abs: int, body: bytes | bytearray | memoryview, now: int,
        ntotal: int = 0, layout: list[tuple[int, int]] | None = None, linked: bool = True,
        cid: int = 0,
    ) -> tuple[Outcome, int]:
        """Allocate and fill an item (not yet linked). Returns (outcome, handle).

        ``layout``: (class, bytes) of each data chunk of a chunked item, where memcached chains
        them otherwise than for a set (``SlabTable.joined_chunks``). ``linked=False``: an item
        that will never be linked (memcached's item for an append's incoming value): it takes
        no CAS number and is not marked IN_USE, so a repair pass frees it. ``ntotal`` and
        ``cid``: the item's size and class, when the caller has them already (a set does).

        The plain set path is written out here (the free chunk taken, the CAS number counted)
        rather than through ``do_alloc`` and ``do_next_cas``: each call saved was about 0.1 us
        of a set's few."""
        table = self.table
        nbytes = len(body)
        nkey = len(key)
        if not ntotal:
            ntotal = table.item_size(nkey, flags, nbytes)
        if not cid:
            cid = table.class_for(ntotal)
        if cid == 0:
            return TOO_LARGE, NIL
        header = self.header_fn(key, flags, nbytes)[self.lead_len :]
        plen = len(header)
        if ntotal <= table.chunk_max:
            if 48 + plen + nbytes > table.sizes[cid]:  # HEADER_BYTES: a literal on the set path
                # The class is memcached's (its item needs fewer bytes than ours with the value
                # line's flags and length fields, when they are long): keep the key alone, and
                # readers make the rest of the line (``do_value_line``).
                header = key
                plen = nkey
            c = self.classes[cid]
            slot = c.pop_free() if self.segmented else NIL  # do_alloc's first step
            if slot == NIL:
                slot = self.do_alloc_pull(cid, now)
                if slot == NIL:
                    return NO_MEMORY, NIL
            page = c.page_area
            base = 8 * slot + 48  # c.at(slot)
            page[base : base + plen] = header
            page[base + plen : base + plen + nbytes] = body
            bits = IN_USE
        else:
            hcid = table.class_for(table.chunked_header_size(nkey, flags))
            if hcid == 0 or HEADER_BYTES + plen + FIRST_CHUNK > table.sizes[hcid]:
                return TOO_LARGE, NIL
            if layout is None:
                layout = [(d, min(table.sizes[d] - CHUNK_HEADER, nbytes - off))
                          for d, off in _offsets(table, table.data_chunks(nbytes))]
            slot = self.do_alloc(hcid, now)
            if slot == NIL:
                return NO_MEMORY, NIL
            c = self.classes[hcid]
            hh = (slot << 6) | hcid
            # The chain is built front to back; the header stays not IN_USE until it is whole.
            first = last = NIL
            off = 0
            for dcid, take in layout:
                ds = self.do_alloc(dcid, now)
                if ds == NIL:
                    dh = first
                    while dh != NIL:
                        dc = self.classes[dh & 63]
                        nxt = int(dc.q[(dh >> 6) + 2])
                        dc.push_free(dh >> 6)
                        dh = nxt
                    c.push_free(slot)
                    return NO_MEMORY, NIL
                dc = self.classes[dcid]
                dbase = dc.at(ds)
                dc.page_area[dbase : dbase + take] = body[off : off + take]
                off += take
                dc.u4[2 * ds + 8] = take  # a data chunk's blen: the bytes it holds
                dc.q[ds + 1] = hh
                dc.q[ds + 2] = NIL
                dc.u1[8 * ds + 41] = IN_USE | DATA_CHUNK
                dh = (ds << 6) | dcid
                if last == NIL:
                    first = dh
                else:
                    self.classes[last & 63].q[(last >> 6) + 2] = dh
                last = dh
            page = c.page_area
            base = c.at(slot)
            page[base : base + plen] = header
            self.do_set_first_chunk(c, slot, first)
            bits = IN_USE | CHUNKED
        c.u2[4 * slot + 22] = plen
        u4 = c.u4
        i4 = 2 * slot
        u4[i4 + 8] = nbytes
        u4[i4 + 9] = flags
        u4[i4 + 6] = exp_abs
        u4[i4 + 7] = now
        u1 = c.u1
        i1 = 8 * slot
        u1[i1 + 40] = nkey
        u1[i1 + 42] = self.do_sub_for(exp_abs, now) if self.lru_settings.temp_lru else (
            HOT if self.segmented else COLD
        )
        if linked and self.limits.use_cas:  # do_next_cas
            w = self.words
            w[W_NEXT_CAS] += 1
            c.q[slot] = w[W_NEXT_CAS]
        else:
            c.q[slot] = 0
        u1[i1 + 41] = bits if linked else bits & ~IN_USE  # last: complete from here on
        return STORED, (slot << 6) | c.cid

    def do_count_set(self, nkey: int, flags: int, nbytes: int) -> None:
        """memcached counts a set in the item's class once the item could be sized."""
        cid = self.table.class_for(self.table.item_size(nkey, flags, nbytes))
        if cid:
            self.classes[cid].words[W_CMD_SET] += 1

    def do_add_delta(
        self, c: SlabClass, s: int, h: int, delta: int, incr: bool, now: int, req_cas: int = 0
    ) -> tuple[Outcome, int, bytes]:
        """The arithmetic of memcached's do_add_delta on the item at (c, s), shared by
        incr/decr and ``ma``: NON_NUMERIC, EXISTS (``req_cas`` given and not the item's), or
        DELTA_OK with the new value. A result that fits is written in place (padded with
        spaces, a new CAS, bumped) and the digits come back empty; a longer one comes back as
        digits for the caller to store as a new item."""
        nbytes = c.u4[2 * s + 8]
        if nbytes <= 2 or c.u1[8 * s + 41] & CHUNKED:
            return NON_NUMERIC, 0, b""
        if req_cas and c.q[s] != req_cas:
            return EXISTS, 0, b""
        plen = c.u2[4 * s + 22]
        value = parse_u64(self.do_read(c, s, h, plen, nbytes - 2))
        if value is None:
            return NON_NUMERIC, 0, b""
        lru = self.classes[self.do_lru_cid(c, s)]
        if incr:
            value = (value + delta) & 0xFFFFFFFFFFFFFFFF
            lru.incr_hits += 1
        else:
            value = max(value - delta, 0)
            lru.decr_hits += 1
        digits = b"%d" % value
        res = len(digits)
        if res + 2 > nbytes:
            return DELTA_OK, value, digits
        base = c.at(s) + plen
        c.page_area[base : base + nbytes - 2] = digits + b" " * (nbytes - 2 - res)
        c.q[s] = self.do_next_cas()
        self.do_item_update(c, s, h, now)
        return DELTA_OK, value, b""


def _offsets(table: SlabTable, cids: list[int]) -> list[tuple[int, int]]:
    """Each data chunk's class with the value offset it starts at, for a set's chain."""
    out = []
    off = 0
    for d in cids:
        out.append((d, off))
        off += table.sizes[d] - CHUNK_HEADER
    return out


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
