"""The item store: slab pages, per-class LRU, expiry, flush, eviction and memory accounting.

Why this shape: a Python object per item costs ~250 bytes before the value, so a -m 64 node built
from dicts of objects would use several times its limit. Here items live in 1 MB slab pages of
the node's shared segment, laid out as memcached lays them out: each chunk starts with the
item's header (CAS, LRU links, times, lengths, state: ``slabclass.HEADER_BYTES``), so -m buys
pages and nothing else, and the class an item lands in is the one memcached would choose. The
only other per-item memory is the key index entry (16 bytes in a table at most half full),
which, like memcached's hash table, is not charged against -m.

After its header a chunk holds the item's reply header without its constant lead (``<key>
<flags> <n>\r\n``, made by the protocol layer's ``header_fn``, never parsed here) and the value
with its CRLF: a get hit is the lead and one slice copy. Items bigger than a slab chunk are
split over chunks as memcached does.

The store is split along memcached's seams: ``slabclass.py`` (a class's pages, item headers,
free list and LRU), ``items.py`` (the item steps that run under the lock: the named ``do_*`` API),
this module (the operations that take the lock), and ``store_stats.py`` (snapshots).

Thread rules: every public method here takes ``self.lock`` itself; callers hold nothing. Times
are unix seconds from the ``Clock``.
"""

from __future__ import annotations

from memcache_server.storage.clock import exptime_to_abs
from memcache_server.storage.items import (
    ADD,
    APPEND,
    CAS,
    DELTA_OK,
    EXISTS,
    NOT_FOUND,
    NOT_STORED,
    PREPEND,
    REPLACE,
    SET,
    STORED,
    W_OLDEST_CAS,
    W_OLDEST_LIVE,
    Mode,
    MoveCounters,
    Outcome,
    SizeHistogram,
    StoreLimits,
)
from memcache_server.storage.slabclass import (
    ACTIVE,
    CHUNKED,
    DATA_CHUNK,
    FETCHED,
    IN_USE,
    NIL,
    SLAB_COUNTERS,
    W_CMD_SET,
    W_DELETE_HITS,
    W_HITS,
    W_TOUCH_HITS,
)
from memcache_server.storage.store_stats import ClassStats, StoreStats

__all__ = [
    "Store",
    "Outcome",
    "Mode",
    "StoreLimits",
    "ClassStats",
    "MoveCounters",
    "SizeHistogram",
    "SLAB_COUNTERS",
]


class Store(StoreStats):
    """All items of a node: the operations that take the lock. See the module docstring."""

    def get_into(self, key: bytes, out: bytearray) -> int:
        """Append the stored ``VALUE`` header and value of ``key`` to ``out``.

        Returns 1 on a hit, 0 on a miss, -1 for an expired item and -2 for a flushed one (so the
        caller can count memcached's get_expired / get_flushed).
        """
        with self.lock:
            return self.do_get_into(key, out, self.clock.now)

    def get_many_into(
        self, keys: list[bytes], start: int, out: bytearray, limit: int, codes: list[int]
    ) -> int:
        """``get_into`` for ``keys[start:]`` in order, under one hold of the lock, each key's
        code appended to ``codes``. It stops after a hit that takes ``out`` past ``limit`` (the
        caller suspends the rest); returns the index of the first key not looked up.

        Why one hold: a 10-key get paid the lock's acquire and release (and, with worker
        processes, its contention) ten times."""
        now = self.clock.now
        get = self.do_get_into
        i = start
        n = len(keys)
        with self.lock:
            while i < n:
                r = get(keys[i], out, now)
                codes.append(r)
                i += 1
                if r == 1 and len(out) > limit:
                    break
        return i

    def do_get_into(self, key: bytes, out: bytearray, now: int) -> int:
        """``get_into`` with the lock held."""
        hv = hash(key)
        classes = self.classes
        # The index probe, inlined: this is the hottest path of the server.
        index = self.index
        if index.stamp != index.words[1]:  # another process re-laid it out
            index.sync()
        mask = index.mask
        i = hv & mask
        handles = index.handles
        hbits = index.hbits
        tag = hv & index.tmask
        while True:
            h = handles[i]
            if h == -1:
                return 0
            if h >> hbits == tag:
                h &= index.hmask
                c = classes[h & 63]
                s = h >> 6
                view = c.page_area
                base = 8 * s + 48  # the item's stored bytes, after its header
                if view[base : base + c.u1[8 * s + 40]] == key:
                    break
            i = (i + 1) & mask
        exp = c.u4[2 * s + 6]
        if exp and exp <= now:
            self.do_unlink(h)
            return -1
        w = self.words
        if (w[W_OLDEST_LIVE] or w[W_OLDEST_CAS]) and self.do_is_flushed(c, s, now):
            self.do_unlink(h)
            return -2
        if self.admission is not None:
            self.admission.do_record(hv)
        bits = c.u1[8 * s + 41]
        if bits & CHUNKED:
            out += self.lead
            out += self.do_chunked_view(c, s, h)
            self.do_count_hit(c, s)
            self.do_item_bump(c, s, h, now)
            return 1
        plen = c.u2[4 * s + 22]
        if plen != c.u1[8 * s + 40]:
            out += self.lead
            out += view[base : base + plen + c.u4[2 * s + 8]]
        else:  # only the key is stored: make the line (see do_write_item)
            out += self.do_value_line(c, s, view[base : base + plen])
            out += view[base + plen : base + plen + c.u4[2 * s + 8]]
        c.words[W_HITS + c.u1[8 * s + 42]] += 1  # get_hits is their sum (counters())
        # A hot item is ACTIVE already: the bump is one test (memcached's do_item_bump).
        if not bits & ACTIVE or not self.segmented:
            self.do_item_bump(c, s, h, now)
        return 1

    def get_parts(self, key: bytes, exptime: int | None = None) -> tuple[bytes, bytes, int] | int:
        """(header, value+CRLF, cas) for gets/gat/gats, or a miss code as in ``get_into``.

        With ``exptime`` the item's expiry is updated first (gat/gats).
        """
        now = self.clock.now
        with self.lock:
            h = self.do_live(key, now)
            if h <= 0:
                return h
            c = self.classes[h & 63]
            s = h >> 6
            if exptime is not None:
                c.u4[2 * s + 6] = exptime_to_abs(exptime, self.clock)
                self.classes[self.do_lru_cid(c, s)].words[W_TOUCH_HITS] += 1
            else:
                self.do_count_hit(c, s)
                if self.admission is not None:
                    self.admission.do_record(hash(key))
            plen = c.u2[4 * s + 22]
            data = self.do_read(c, s, h, 0, plen + c.u4[2 * s + 8])
            self.do_item_bump(c, s, h, now)
            return self.do_value_line(c, s, data[:plen]), data[plen:], c.q[s]

    def touch(self, key: bytes, exptime: int) -> bool:
        now = self.clock.now
        with self.lock:
            h = self.do_find(key, now)
            if h == NIL:
                return False
            c = self.classes[h & 63]
            s = h >> 6
            c.u4[2 * s + 6] = exptime_to_abs(exptime, self.clock)
            self.classes[self.do_lru_cid(c, s)].words[W_TOUCH_HITS] += 1
            self.do_item_bump(c, s, h, now)  # a touch is a fetch to memcached (item_touch)
            return True

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
                self.classes[cid].words[W_CMD_SET] += 1
            if mode in (APPEND, PREPEND):
                # memcached reads the value into an item of its own before it looks the key up,
                # and frees it once the joined item is linked: the memory that takes (pages a
                # class grows by, items evicted) is taken here too.
                outcome, incoming = self.do_write_item(
                    key, flags, exptime_to_abs(exptime, clock), body, now, ntotal, linked=False
                )
                if outcome != STORED:
                    return outcome
                try:
                    return self._do_join(mode == APPEND, key, bytes(body), now)
                finally:
                    self._do_free_unlinked(incoming)
            # A plain set needs no lookup first: the new item is allocated while the old one is
            # still linked (as memcached allocates before do_store_item), and _link replaces it.
            old = NIL if mode == SET else self.do_find(key, now)
            if mode == SET:
                pass
            elif mode == ADD:
                if old != NIL:
                    oc = self.classes[old & 63]
                    self.do_item_update(oc, old >> 6, old, now)
                    return NOT_STORED
            elif mode == REPLACE:
                if old == NIL:
                    return NOT_STORED
            elif mode == CAS:
                if old == NIL:
                    return NOT_FOUND
                oc = self.classes[old & 63]
                os_ = old >> 6
                lru = self.classes[self.do_lru_cid(oc, os_)]
                # With -C every item's CAS is 0, which memcached never treats as a match.
                if oc.q[os_] != cas_unique or not self.limits.use_cas:
                    lru.cas_badval += 1
                    return EXISTS
                lru.cas_hits += 1
            outcome, h = self.do_write_item(
                key, flags, exptime_to_abs(exptime, clock), body, now, ntotal, cid=cid
            )
            if outcome != STORED:
                if mode == SET:
                    # memcached drops the old value when a set of the same key cannot be stored
                    stale = self.index.get(key)
                    if stale is not None:
                        self.do_unlink(stale)
                return outcome
            # the item's own class, or the largest for a chunked one (do_lru_cid, inlined)
            lru_cid = h & 63 if ntotal <= table.chunk_max else table.largest
            self.do_link(key, h, lru_cid, ntotal, len(body))
            return STORED

    def _do_join(self, append: bool, key: bytes, add: bytes, now: int) -> Outcome:
        """append/prepend ``add`` (with its CRLF) to the item of ``key``, keeping its flags and
        expiry; a chunked result is chained as memcached chains it (``joined_chunks``)."""
        old = self.do_find(key, now)
        if old == NIL:
            return NOT_STORED
        oc = self.classes[old & 63]
        os_ = old >> 6
        value = self.do_read(oc, os_, old, oc.u2[4 * os_ + 22], oc.u4[2 * os_ + 8])
        if append:
            body = value[:-2] + add
            first, second = len(value) - 2, len(add)
        else:
            body = add[:-2] + value
            first, second = len(add) - 2, len(value)
        flags = oc.u4[2 * os_ + 9]
        table = self.table
        ntotal = table.item_size(len(key), flags, len(body))
        if table.class_for(ntotal) == 0:
            return NOT_STORED  # memcached: an append past -I is not stored
        layout = table.joined_chunks(first, second) if ntotal > table.chunk_max else None
        outcome, h = self.do_write_item(key, flags, oc.u4[2 * os_ + 6], body, now, layout=layout)
        if outcome != STORED:
            return outcome
        c = self.classes[h & 63]
        self.do_link(key, h, self.do_lru_cid(c, h >> 6), ntotal, len(body))
        return STORED

    def _do_free_unlinked(self, h: int) -> None:
        """Give back the chunks of an item written with ``linked=False``."""
        c = self.classes[h & 63]
        s = h >> 6
        if c.u1[8 * s + 41] & CHUNKED:
            for dh in self.do_data_chunks(c, s):
                self.classes[dh & 63].push_free(dh >> 6)
        c.push_free(s)

    def count_set(self, nkey: int, flags: int, nbytes: int) -> None:
        """Count a storage command whose data block was bad (memcached counts it too)."""
        with self.lock:
            self.do_count_set(nkey, flags, nbytes)

    def delete(self, key: bytes) -> bool:
        now = self.clock.now
        with self.lock:
            h = self.do_find(key, now)
            if h == NIL:
                return False
            c = self.classes[h & 63]
            self.classes[self.do_lru_cid(c, h >> 6)].words[W_DELETE_HITS] += 1
            self.do_unlink(h)
            return True

    def drop(self, key: bytes) -> None:
        """Unlink ``key`` without counting a delete (a failed set must not leave stale data)."""
        with self.lock:
            h = self.index.get(key)
            if h is not None:
                self.do_unlink(h)

    def incr_decr(self, key: bytes, delta: int, incr: bool) -> tuple[Outcome, int]:
        """memcached's do_add_delta: wraps at 2**64 on incr, floors at 0 on decr.

        A shorter result is written in place padded with spaces, as memcached does (so ``decr`` of
        "10" reads back as "9 "); a longer one becomes a new item with the same flags and expiry.
        """
        now = self.clock.now
        with self.lock:
            h = self.do_find(key, now)
            if h == NIL:
                return NOT_FOUND, 0
            c = self.classes[h & 63]
            s = h >> 6
            outcome, value, digits = self.do_add_delta(c, s, h, delta, incr, now)
            if outcome != DELTA_OK or not digits:
                return outcome, value
            flags = c.u4[2 * s + 9]
            body = digits + b"\r\n"
            outcome, nh = self.do_write_item(key, flags, c.u4[2 * s + 6], body, now)
            if outcome != STORED:
                return outcome, 0
            nc = self.classes[nh & 63]
            self.do_link(
                key,
                nh,
                self.do_lru_cid(nc, nh >> 6),
                self.table.item_size(len(key), flags, len(body)),
                len(body),
            )
            return DELTA_OK, value

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

    def set_memory_limit(self, limit: int) -> None:
        with self.lock:
            self.memory_limit = limit
            self.do_release_pool()

    def crawl(self, cid: int, start: int, count: int) -> tuple[int, int]:
        """Reclaim expired/flushed items among ``count`` chunks of class ``cid`` from ``start``.

        Returns (the next start or -1 when the class is done, items reclaimed). The caller
        (the LRU crawler thread) walks in small batches so the lock is never held for long.
        """
        now = self.clock.now
        reclaimed = 0
        with self.lock:
            c = self.classes[cid]
            end = min(start + count, c.nslots)
            u1 = c.u1
            slot = c.slot
            for i in range(start, end):
                s = slot(i)
                b = u1[8 * s + 41]
                if not b & IN_USE or b & DATA_CHUNK:
                    continue
                c.crawler_items_checked += 1
                self.crawler_items_checked += 1
                if self.do_is_dead(c, s, now):
                    h = (s << 6) | cid
                    lru = self.classes[self.do_lru_cid(c, s)]
                    lru.crawler_reclaimed += 1
                    lru.reclaimed += 1
                    self.crawler_reclaimed += 1
                    self.reclaimed += 1
                    if not b & FETCHED:
                        lru.expired_unfetched += 1
                        self.expired_unfetched += 1
                    self.do_unlink(h)
                    reclaimed += 1
            return (end if end < c.nslots else -1), reclaimed
