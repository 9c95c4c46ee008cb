"""The repair pass: a consistent store again after a process died holding the store's lock.

Run by whoever reaped the dead process, holding the lock in its place (``ProcessLock.rescue``).
The dead process may have stopped anywhere inside a ``do_*`` step: between two links of an LRU,
halfway through an index probe sequence or resize, with a chunk off the free list and not yet
an item, with counters half updated. So nothing derived is trusted. The item headers in the
slab pages are the truth, and from them the pass rebuilds every derived
structure: the key index, each class's sub-LRUs (ordered by last access), each free list, item
and chunk counts, the memory counters and the CAS counter.

The argument that no stored item is lost and the store is consistent afterwards:

1. An item becomes IN_USE only once complete: ``Items.do_write_item`` writes the bytes, every
   other header field and, for a chunked item, the whole chain of data chunks before its ``bits``
   byte, and links it only after that. So every IN_USE header here is a whole item, and the
   pass keeps exactly those (a chunked one only if its chain checks out: each link in range,
   a data chunk, naming this header, holding as many bytes as its length needs).
2. An acknowledged write is complete in the segment: a reply is sent after the lock is
   released, so every operation a client saw acknowledged had finished all of its steps. The
   only operation that can be half done is the dead process's own, which no client saw
   acknowledged: memcached's rules let it have happened or not, and both results are what
   this pass produces (a replaced item and its replacement both IN_USE: the higher CAS wins,
   which is the replacement; a deleted item whose header was not yet freed: kept).
3. Duplicate keys arise only from that one half-done operation, so "higher CAS wins" (the
   later atime, then the higher handle, with CAS off) keeps what the store would have kept.
4. Data chunks reached from no kept header are freed (a half-built or half-freed chain), as are
   headers not kept; every other slot below a class's fence (``kill_lo``, a page move in
   progress) goes on the free list; fenced slots stay off it, for the mover to finish.
5. Counters are recomputed from what is kept, so ``curr_items``, ``bytes``, ``used_chunks`` and
   the memory accounting agree with the items: ``malloced`` is a page per class page and per
   pooled page.

A value torn by a process killed in the middle of copying it in place (``incr`` writes its
digits over the old ones) can only be the dead process's own unacknowledged change to that key.
The pass takes time in proportion to the slots of the store (about a second for a few hundred
thousand items); every process waits for the lock meanwhile, which is the price of a worker
dying at the worst moment, never of normal operation.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass

from memcache_server.storage.index import MIN_CAPACITY
from memcache_server.storage.items import Items
from memcache_server.storage.slabclass import (
    CHUNKED,
    COLD,
    DATA_CHUNK,
    IN_USE,
    NIL,
    SUB_LRUS,
    W_SUB,
    SlabClass,
)
from memcache_server.storage.slabs import PAGE_SIZE

__all__ = ["repair", "Repaired"]


@dataclass(slots=True)
class Repaired:
    """What a repair pass kept and dropped."""

    items: int = 0
    duplicates: int = 0  # the older of two items under one key
    broken: int = 0  # chunked headers whose chain did not check out
    orphan_chunks: int = 0  # data chunks no kept item reached


def _chain(st: Items, c: SlabClass, s: int, h: int) -> list[int] | None:
    """The data chunks of the chunked item at (c, s) if its chain is whole (as many bytes as
    its length needs, in at most the chunks an append can chain), else None."""
    want = len(st.table.data_chunks(c.u4[2 * s + 8])) + 3
    held = 0
    out: list[int] = []
    dh = st.do_first_chunk(c, s)
    classes = st.classes
    while dh != NIL:
        cid = dh & 63
        ds = dh >> 6
        if len(out) >= want or not 0 < cid < len(classes) or not classes[cid].valid_slot(ds):
            return None
        dc = classes[cid]
        if not dc.u1[8 * ds + 41] & DATA_CHUNK or dc.q[ds + 1] != h:
            return None
        out.append(dh)
        held += dc.u4[2 * ds + 8]
        dh = int(dc.q[ds + 2])
    return out if held == c.u4[2 * s + 8] else None


def _newer(st: Items, a: int, b: int) -> bool:
    """Whether item ``a`` is the later write of its key than item ``b``."""
    ac, asl = st.classes[a & 63], a >> 6
    bc, bsl = st.classes[b & 63], b >> 6
    return (ac.q[asl], ac.u4[2 * asl + 7], a) > (bc.q[bsl], bc.u4[2 * bsl + 7], b)


def repair(st: Items) -> Repaired:
    """Rebuild every derived structure of ``st`` from its chunk metadata (lock held)."""
    out = Repaired()
    classes = st.classes
    index = st.index
    index.sync()
    index.rebuild([], max(MIN_CAPACITY, index.mask + 1))
    # 1. Keep every complete item; of two under one key, the later write.
    for c in classes[1:]:
        u1 = c.u1
        for s in c.all_slots():
            b = u1[8 * s + 41]
            if not b & IN_USE:
                u1[8 * s + 41] = 0
                continue
            if b & DATA_CHUNK:
                continue
            h = (s << 6) | c.cid
            if b & CHUNKED and _chain(st, c, s, h) is None:
                out.broken += 1
                u1[8 * s + 41] = 0
                continue
            old = index.put(st.do_key_of(c, s), h)
            if old is not None:
                out.duplicates += 1
                if _newer(st, old, h):
                    index.put(st.do_key_of(c, s), old)
                    u1[8 * s + 41] = 0
                else:
                    classes[old & 63].u1[8 * (old >> 6) + 41] = 0
    # 2. Data chunks: those of kept items stay, the rest are freed.
    kept = index.handles_snapshot()
    reached: set[int] = set()
    for h in kept:
        c, s = classes[h & 63], h >> 6
        if c.u1[8 * s + 41] & CHUNKED:
            reached.update(_chain(st, c, s, h) or ())
    for c in classes[1:]:
        u1 = c.u1
        for s in c.all_slots():
            if u1[8 * s + 41] & DATA_CHUNK and (s << 6) | c.cid not in reached:
                u1[8 * s + 41] = 0
                out.orphan_chunks += 1
    # 3. Each sub-LRU (the item's ``lru`` field says which) in last-access order, then free
    # lists and counts.
    by_lru: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    top_cas = 0
    for h in kept:
        c, s = classes[h & 63], h >> 6
        key = (st.do_lru_cid(c, s), c.u1[8 * s + 42] if c.u1[8 * s + 42] < SUB_LRUS else COLD)
        c.u1[8 * s + 42] = key[1]
        by_lru.setdefault(key, []).append((c.u4[2 * s + 7], c.q[s], h))
        top_cas = max(top_cas, c.q[s])
    curr = total_bytes = 0
    if st.sizes is not None:
        st.sizes.counts.clear()
    for lc in classes[1:]:
        for sub in range(SUB_LRUS):
            base = W_SUB + 4 * sub
            entries = sorted(by_lru.get((lc.cid, sub), ()))
            prev = NIL
            tail = NIL
            nbytes = 0
            for _atime, cas, h in entries:  # oldest first: the tail
                c, s = classes[h & 63], h >> 6
                c.q[s + 1] = NIL
                c.q[s + 2] = prev
                if prev != NIL:
                    classes[prev & 63].q[(prev >> 6) + 1] = h
                else:
                    tail = h
                prev = h
                ntotal = st.do_ntotal(c, s)
                nbytes += ntotal
                if st.sizes is not None:
                    st.sizes.add(ntotal, cas)
            lc.words[base] = prev
            lc.words[base + 1] = tail
            lc.words[base + 2] = len(entries)
            lc.words[base + 3] = nbytes
            total_bytes += nbytes
            curr += len(entries)
    for c in classes[1:]:
        _free_list(c)
    st.curr_items = curr
    st.item_bytes = total_bytes
    st.malloced = PAGE_SIZE * (sum(c.npages for c in classes[1:]) + st.pool_pages)
    st.next_cas = max(st.next_cas, top_cas)
    out.items = curr
    return out


def _free_list(c: SlabClass) -> None:
    """Chain every slot of ``c`` not in use, below its fence, in slot order; count the rest."""
    u1 = c.u1
    slots = c.all_slots()
    fence = c.kill_lo
    free = array("q", (s for s in slots if s < fence and not u1[8 * s + 41]))
    n = len(free)
    c.used_chunks = sum(1 for s in slots if u1[8 * s + 41])
    c.free_count = n
    c.free_head = free[0] if n else NIL
    for i in range(n):
        s = free[i]
        c.q[s + 1] = free[i - 1] if i else NIL
        c.q[s + 2] = free[i + 1] if i + 1 < n else NIL
