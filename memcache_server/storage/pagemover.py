"""Moving one slab page from a class to another (memcached's slab rebalancer).

Why this shape: a class's pages sit one after another in its area of the segment, and a slot
is an offset into that area, so removing a page from the middle would renumber every later
item. The mover therefore always empties the class's *last* page, and the area simply ends one
page earlier when it is done.

memcached empties the oldest page and evicts whatever lives on it that no free chunk can take.
Emptying the last page that way would throw away the items allocated most recently, so here the
page's live items are *rescued* into free chunks elsewhere in the class, and when the class has
no free chunk, room is made by evicting from the class's LRU tail first: a move costs the
coldest items of the class, never the ones that happen to sit on the page. Expired and flushed
items on the page are dropped. Data chunks of large items are rescued the same way and their
item's chain repointed (a data chunk's ``prev`` field names its item, see items.py).

The counters are kept as memcached keeps them, so that for each live item (or data chunk) on
the page ``slab_reassign_rescues`` (``_chunk_rescues``) plus ``slab_reassign_evictions_nomem``
counts one: a rescue is a copy into a chunk that was free, and a copy for which room had to be
made by evicting counts as that eviction only, since the class ends up exactly one item
poorer, as if memcached had dropped the page's item. The pages, the global pool and
``total_malloced`` follow memcached too: a move hands a page on and never changes what is
allocated, except that pages reaching the pool are freed while the store is over its limit
(memcached's ``memory_release``). What differs is which page goes: memcached empties the
class's oldest page, this mover its last, so the split between rescues and evictions of a
move differs from memcached's when those two pages hold different numbers of items.

The page is emptied in batches (``step``), each under the store lock, so requests are never
stalled for a whole page: while a move runs, slots of the page are off the free list (taken off
at ``begin``; ``SlabClass.push_free`` keeps freed ones off), so nothing new lands on it.
The emptied page goes to the destination class, or to the global page pool (class 0), from
which any class that needs a page takes it before allocating. A move never takes the store
past its memory limit: if a lowered limit leaves no room for the page, it is released, and
the destination grows once the budget allows it.

Callers (the rebalancer thread) hold no lock; every method here takes ``store.lock`` itself.
"""

from __future__ import annotations

from memcache_server.storage.slabclass import (
    CHUNKED,
    DATA_CHUNK,
    HEADER_BYTES,
    IN_USE,
    KILL_NONE,
    NIL,
    U1_BITS,
    W_SUB,
    SlabClass,
)
from memcache_server.storage.slabs import CHUNK_HEADER, PAGE_SIZE
from memcache_server.storage.store import Store

__all__ = ["PageMove", "POOL"]

POOL = 0  # memcached's SLAB_GLOBAL_PAGE_POOL: class id 0 holds unassigned pages
ROOM_TRIES = 50  # LRU-tail evictions tried to free one chunk for a rescue


class PageMove:
    """One page on its way from class ``src`` to class ``dst`` (``POOL`` for the pool)."""

    def __init__(self, store: Store, src: int, dst: int) -> None:
        self.store = store
        self.src = src
        self.dst = dst
        self.lo = self.hi = self.pos = 0
        self.stride = 1
        self.done = False

    def begin(self) -> bool:
        """Fence off the source's last page; False if the source has no page to spare."""
        st = self.store
        with st.lock:
            if self.src == POOL:
                if st.pool_pages < 2:
                    return False
                st.pool_pages -= 1
                st.malloced -= PAGE_SIZE
                self._give()
                self.done = True
                return True
            c = st.classes[self.src]
            if c.npages < 2:
                return False
            slots = c.page_slots(c.npages - 1)
            self.lo = self.pos = slots.start
            self.hi = slots.stop
            self.stride = slots.step
            c.kill_lo = self.lo
            u1 = c.u1
            for s in slots:
                if not u1[8 * s + 41] & IN_USE:
                    c.unlist_free(s)
            return True

    def step(self, batch: int) -> bool:
        """Empty up to ``batch`` more slots of the page; True once the move is finished."""
        if self.done:
            return True
        st = self.store
        with st.lock:
            c = st.classes[self.src]
            now = st.clock.now
            stride = self.stride
            end = min(self.pos + batch * stride, self.hi)
            for s in range(self.pos, end, stride):
                b = c.u1[8 * s + 41]
                if not b & IN_USE:
                    continue
                if b & DATA_CHUNK:
                    self._rescue_chunk(c, s)
                    continue
                h = (s << 6) | self.src
                if st.do_is_dead(c, s, now):
                    st.do_unlink(h)
                else:
                    self._rescue_item(c, s, h)
            self.pos = end
            if self.pos < self.hi:
                return False
            if any(c.field(8, U1_BITS, c.npages - 1)):  # cannot happen: the page is fenced off
                self.pos = self.lo
                return False
            c.drop_last_page()
            c.kill_lo = KILL_NONE
            st.malloced -= PAGE_SIZE
            self._give()
            self.done = True
            return True

    # ------------------------------------------------------------------ under the lock

    def _give(self) -> None:
        st = self.store
        st.moves.slabs_moved += 1
        if self.dst == POOL:
            st.pool_pages += 1
            st.malloced += PAGE_SIZE
            st.do_release_pool()
        else:
            d = st.classes[self.dst]
            if d.has_room() and (not d.npages or (
                st.used_memory() + PAGE_SIZE <= st.memory_limit
            )):
                st.do_add_page(d)

    def _room(self, c: SlabClass, moving: int) -> tuple[int, bool]:
        """A free slot of ``c`` off the page, evicting from the class's LRU tail if need be;
        and whether it was free already (a rescue in memcached's sense)."""
        st = self.store
        for i in range(ROOM_TRIES):
            t = c.pop_free()
            if t != NIL:
                return t, i == 0
            if not st.do_evict_any(c, moving):
                return NIL, False
            st.moves.evictions_nomem += 1
        return NIL, False

    def _claim(self, c: SlabClass, s: int, moving: int, item: int) -> tuple[int, bool]:
        """A slot to copy slot ``s`` to, and whether it was free already; NIL once the item
        owning it (``item``) is gone: dropped for want of room, or evicted itself while room
        was made."""
        t, free = self._room(c, moving)
        if t == NIL:
            if c.u1[8 * s + 41] & IN_USE:
                self.store.moves.evictions_nomem += 1
                self.store.do_unlink(item)
            return NIL, False
        if not c.u1[8 * s + 41] & IN_USE:
            c.push_free(t)
            return NIL, False
        return t, free

    def _rescue_item(self, c: SlabClass, s: int, h: int) -> None:
        st = self.store
        t, free = self._claim(c, s, h, h)
        if t == NIL:
            return
        chunked = c.u1[8 * s + 41] & CHUNKED
        # the stored bytes after the header; a chunked item's header chunk to its end, where
        # its chain starts
        n = c.size - HEADER_BYTES if chunked else c.u2[4 * s + 22] + c.u4[2 * s + 8]
        sb = c.at(s)
        tb = c.at(t)
        c.page_area[tb : tb + n] = c.page_area[sb : sb + n]
        c.q[t] = c.q[s]
        c.u4[2 * t + 6] = c.u4[2 * s + 6]
        c.u4[2 * t + 7] = c.u4[2 * s + 7]
        c.u4[2 * t + 8] = c.u4[2 * s + 8]
        c.u4[2 * t + 9] = c.u4[2 * s + 9]
        c.u2[4 * t + 22] = c.u2[4 * s + 22]
        c.u1[8 * t + 40] = c.u1[8 * s + 40]
        nh = (t << 6) | c.cid
        if chunked:
            for dh in st.do_data_chunks(c, t):
                st.classes[dh & 63].q[(dh >> 6) + 1] = nh
        c.u1[8 * t + 41] = c.u1[8 * s + 41]
        c.u1[8 * t + 42] = c.u1[8 * s + 42]
        lw = st.classes[st.do_lru_cid(c, s)].words
        base = W_SUB + 4 * c.u1[8 * s + 42]
        p = c.q[s + 1]
        nx = c.q[s + 2]
        c.q[t + 1] = p
        c.q[t + 2] = nx
        if p != NIL:
            st.classes[p & 63].q[(p >> 6) + 2] = nh
        else:
            lw[base] = nh
        if nx != NIL:
            st.classes[nx & 63].q[(nx >> 6) + 1] = nh
        else:
            lw[base + 1] = nh
        st.index.replace_handle(st.do_key_of(c, t), h, nh)
        c.u1[8 * s + 41] = 0
        c.used_chunks -= 1
        if free:
            st.moves.rescues += 1
            st.total_items += 1  # memcached relinks a rescued item, and linking counts it

    def _owner_of(self, dh: int) -> int | None:
        """The item whose chain holds data chunk ``dh``, if it is still a live chunked item."""
        st = self.store
        owner = int(st.classes[dh & 63].q[(dh >> 6) + 1])
        if owner == NIL:
            return None
        oc = st.classes[owner & 63]
        os_ = owner >> 6
        if not oc.u1[8 * os_ + 41] & CHUNKED or dh not in st.do_data_chunks(oc, os_):
            return None
        return owner

    def _rescue_chunk(self, c: SlabClass, s: int) -> None:
        st = self.store
        dh = (s << 6) | c.cid
        owner = self._owner_of(dh)
        if owner is None:  # not reachable from any item: free it rather than keep the page
            c.u1[8 * s + 41] = 0
            c.used_chunks -= 1
            return
        t, free = self._claim(c, s, NIL, owner)
        if t == NIL:
            return
        n = c.size - CHUNK_HEADER
        sb = c.at(s)
        tb = c.at(t)
        c.page_area[tb : tb + n] = c.page_area[sb : sb + n]
        nd = (t << 6) | c.cid
        c.u4[2 * t + 8] = c.u4[2 * s + 8]  # the bytes the chunk holds
        c.q[t + 1] = owner
        c.q[t + 2] = c.q[s + 2]
        c.u1[8 * t + 41] = c.u1[8 * s + 41]
        # repoint whoever linked to the old chunk: the header, or the chunk before it
        oc = st.classes[owner & 63]
        os_ = owner >> 6
        before = NIL
        for d in st.do_data_chunks(oc, os_):
            if d == dh:
                break
            before = d
        if before == NIL:
            st.do_set_first_chunk(oc, os_, nd)
        else:
            st.classes[before & 63].q[(before >> 6) + 2] = nd
        c.u1[8 * s + 41] = 0
        c.used_chunks -= 1
        if free:
            st.moves.chunk_rescues += 1
