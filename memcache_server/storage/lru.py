"""memcached's segmented LRU, under the store lock: the lists, the tail pull and the bumps.

Why segmented: with one LRU per class, a one-pass scan of cold keys pushes every hot key out
(each new item goes to the head, the hot ones drift to the tail and are evicted). memcached
1.5+ splits each class into HOT, WARM, COLD and TEMP lists (items.c, doc/new_lru.txt): new
items enter HOT; the tail of HOT flows to COLD unless the item was fetched twice (ACTIVE),
which sends it to WARM; COLD is where evictions happen, and an item fetched twice while in
COLD goes back to WARM. A scan then only churns HOT and COLD, and the hot set lives in WARM.

The rules here are memcached's, step for step: ``do_pull_tail`` is lru_pull_tail (it also
reclaims expired and flushed items it finds at a tail), ``do_alloc_pull`` is
do_item_alloc_pull, ``do_item_bump``/``do_item_update`` are the fetch and update bumps, and
``do_juggle`` is lru_maintainer_juggle (the maintainer thread calls it; see maintainer.py).
Two differences, both for the sake of a store whose lock is already held where they happen:
an item fetched twice in COLD moves to WARM at once instead of through memcached's per-thread
bump queue (so no bump is ever dropped), and nothing is refcount-locked at a tail.

Every list head, tail, count and counter is a word of the segment (``slabclass.W_SUB`` and
after) and an item's list is its ``lru`` field, so every process mapping the store sees one
LRU. Every ``do_*`` method here must be called with the store's lock held.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from memcache_server.storage.slabclass import (
    ACTIVE,
    CHUNKED,
    COLD,
    FETCHED,
    HOT,
    NIL,
    TEMP,
    W_DIRECT_RECLAIMS,
    W_EVICTED_ACTIVE,
    W_MOVES_TO_COLD,
    W_MOVES_TO_WARM,
    W_MOVES_WITHIN_LRU,
    W_SUB,
    WARM,
    SlabClass,
)
from memcache_server.storage.slabs import SlabTable

if TYPE_CHECKING:
    from memcache_server.storage.admission import TinyLfu

__all__ = ["LruSettings", "LruOps", "PULL_EVICT", "UPDATE_INTERVAL", "JUGGLE_ITERATIONS"]

UPDATE_INTERVAL = 60  # memcached's ITEM_UPDATE_INTERVAL: a flat LRU relinks at most this often
PULL_EVICT = 1  # memcached's LRU_PULL_EVICT: a COLD pull may evict its tail
TAIL_TRIES = 5  # items examined at a tail per pull
ALLOC_TRIES = 10  # do_item_alloc_pull's attempts before out of memory
JUGGLE_ITERATIONS = 500  # lru_maintainer_juggle's bound on HOT/WARM/COLD rounds per class


@dataclass(frozen=True, slots=True)
class LruSettings:
    """``-o lru_segmented`` and its tunables, memcached's defaults. ``segmented`` False is the
    flat LRU of ``-o no_lru_maintainer``/``no_modern``: every item on COLD, relinked at most
    once a minute. ``temp_lru`` is on when ``-o temporary_ttl`` was given."""

    segmented: bool = True
    hot_lru_pct: int = 20
    warm_lru_pct: int = 40
    hot_max_factor: float = 0.2
    warm_max_factor: float = 2.0
    temp_lru: bool = False
    temporary_ttl: int = 61


class LruOps:
    """The LRU steps of the store's lock-held API (mixed into ``items.Items``)."""

    # Provided by Items.
    classes: list[SlabClass]
    table: SlabTable
    lru_settings: LruSettings
    segmented: bool
    reclaimed: int
    expired_unfetched: int
    evictions: int
    evicted_unfetched: int
    evicts: bool  # -M turns evictions off
    oldest_live: int  # flush_all's words (see do_is_flushed)
    oldest_cas: int
    on_class_evict: Callable[[int], None] | None
    on_evict: Callable[[bytes, bool, int, int, int, int], None] | None
    admission: TinyLfu | None  # -o lru_admission=tinylfu (storage/admission.py)

    def do_unlink(self, h: int, indexed: bool = True) -> None:
        raise NotImplementedError

    def do_is_flushed(self, cls: SlabClass, slot: int, now: int) -> bool:
        raise NotImplementedError

    def do_flushes(self, now: int) -> bool:
        """Whether a flush_all may have killed items now (else ``do_is_flushed`` is False for
        every item): read once per juggle, not once per item (each is a segment word)."""
        ol = self.oldest_live
        return bool((ol and ol <= now) or self.oldest_cas)

    def do_key_of(self, c: SlabClass, s: int) -> bytes:
        raise NotImplementedError

    def do_grow(self, cls: SlabClass) -> bool:
        raise NotImplementedError

    # ------------------------------------------------------------------ lists

    def do_sub_for(self, exp: int, now: int) -> int:
        """The list a new item enters (do_item_alloc): TEMP for a TTL within temporary_ttl,
        else HOT, or COLD when the LRU is flat. A never-expiring or already expired item is
        never TEMP (memcached's unsigned ``exptime - current_time`` wraps for those)."""
        cfg = self.lru_settings
        if cfg.temp_lru and exp >= now and exp - now <= cfg.temporary_ttl:
            return TEMP
        return HOT if self.segmented else COLD

    def do_move(self, lru: SlabClass, c: SlabClass, s: int, h: int, sub: int) -> None:
        """Take the item off its list and put it at the head of list ``sub`` of class ``lru``
        (memcached's do_item_unlink_q then do_item_link_q), in one step: the item's size is
        read once. Every move between lists comes here, a read of a COLD item among them."""
        w = lru.words
        classes = self.classes
        q = c.q
        u1 = c.u1
        base = W_SUB + 4 * u1[8 * s + 42]
        p = q[s + 1]
        n = q[s + 2]
        if p != NIL:
            classes[p & 63].q[(p >> 6) + 2] = n
        else:
            w[base] = n
        if n != NIL:
            classes[n & 63].q[(n >> 6) + 1] = p
        else:
            w[base + 1] = p
        nbytes = self.table.item_size(u1[8 * s + 40], c.u4[2 * s + 9], c.u4[2 * s + 8])
        w[base + 2] -= 1
        w[base + 3] -= nbytes
        base = W_SUB + 4 * sub
        head = w[base]
        q[s + 1] = NIL
        q[s + 2] = head
        if head != NIL:
            classes[head & 63].q[(head >> 6) + 1] = h
        else:
            w[base + 1] = h
        w[base] = h
        w[base + 2] += 1
        w[base + 3] += nbytes
        u1[8 * s + 42] = sub

    # ------------------------------------------------------------------ bumps

    def do_item_bump(self, c: SlabClass, s: int, h: int, now: int) -> None:
        """A fetch (memcached's do_item_bump): the first marks the item FETCHED, the next one
        ACTIVE; an ACTIVE item's time is bumped, and one in COLD goes to WARM."""
        bits = c.u1[8 * s + 41]
        if not self.segmented:
            c.u1[8 * s + 41] = bits | FETCHED
            self.do_item_update(c, s, h, now)
        elif not bits & ACTIVE:
            if not bits & FETCHED:
                c.u1[8 * s + 41] = bits | FETCHED
            else:
                c.u1[8 * s + 41] = bits | ACTIVE
                if c.u1[8 * s + 42] != COLD:
                    c.u4[2 * s + 7] = now
                else:
                    self.do_item_update(c, s, h, now)

    def do_item_update(self, c: SlabClass, s: int, h: int, now: int) -> None:
        """memcached's do_item_update: an ACTIVE item in COLD moves to WARM, any other has its
        time bumped; a flat LRU relinks the item at its head once a minute at most."""
        if self.segmented:
            c.u4[2 * s + 7] = now
            bits = c.u1[8 * s + 41]
            if c.u1[8 * s + 42] == COLD and bits & ACTIVE:
                lru = self.classes[self.table.largest if c.u1[8 * s + 41] & CHUNKED else c.cid]
                c.u1[8 * s + 41] = bits & ~ACTIVE
                self.do_move(lru, c, s, h, WARM)
                lru.words[W_MOVES_TO_WARM] += 1
        elif c.u4[2 * s + 7] < now - UPDATE_INTERVAL:
            c.u4[2 * s + 7] = now
            lru = self.classes[self.table.largest if c.u1[8 * s + 41] & CHUNKED else c.cid]
            self.do_move(lru, c, s, h, c.u1[8 * s + 42])

    # ------------------------------------------------------------------ the tail pull

    def do_pull_tail(
        self, cid: int, sub: int, total_bytes: int, flags: int, max_age: int, now: int
    ) -> int:
        """memcached's lru_pull_tail on list ``sub`` of class ``cid``: returns how many items
        it reclaimed, moved or evicted.

        Up to TAIL_TRIES items from the tail: expired or flushed ones are reclaimed and the
        walk goes on; the first live one decides. HOT/WARM: an ACTIVE item is rescued (HOT to
        WARM, WARM back to its head, and the walk goes on), an idle one over the list's share
        of ``total_bytes`` or older than ``max_age`` goes to COLD. COLD: evict (PULL_EVICT) or,
        if ACTIVE, back to WARM. TEMP: reclaim only."""
        classes = self.classes
        lru = classes[cid]
        w = lru.words
        cfg = self.lru_settings
        search = int(w[W_SUB + 4 * sub + 1])
        removed = 0
        limit = 0
        tries = TAIL_TRIES
        while tries > 0 and search != NIL:
            c = classes[search & 63]
            s = search >> 6
            prev = int(c.q[s + 1])
            exp = c.u4[2 * s + 6]
            bits = c.u1[8 * s + 41]
            if (exp and exp < now) or self.do_is_flushed(c, s, now):
                lru.reclaimed += 1
                self.reclaimed += 1
                if not bits & FETCHED:
                    lru.expired_unfetched += 1
                    self.expired_unfetched += 1
                self.do_unlink(search)
                removed += 1
                tries -= 1
                search = prev
                continue
            if sub in (HOT, WARM):
                if sub == HOT:
                    limit = total_bytes * cfg.hot_lru_pct // 100
                if limit == 0:
                    limit = total_bytes * cfg.warm_lru_pct // 100
                if bits & ACTIVE:
                    c.u1[8 * s + 41] = bits & ~ACTIVE
                    removed += 1
                    if sub == WARM:
                        w[W_MOVES_WITHIN_LRU] += 1
                        self.do_move(lru, c, s, search, WARM)
                        tries -= 1
                        search = prev
                        continue
                    w[W_MOVES_TO_WARM] += 1
                    self.do_move(lru, c, s, search, WARM)
                elif w[W_SUB + 4 * sub + 3] > limit or now - c.u4[2 * s + 7] > max_age:
                    w[W_MOVES_TO_COLD] += 1
                    self.do_move(lru, c, s, search, COLD)
                    removed += 1
            elif sub == COLD:
                if flags & PULL_EVICT:
                    if self.evicts:
                        if self.admission is not None:  # it may choose another victim
                            search = self.admission.do_victim(self, lru, search)
                            c = classes[search & 63]
                            s = search >> 6
                        self.do_evict(lru, c, s, search, now)
                        removed += 1
                elif bits & ACTIVE and self.segmented:
                    w[W_MOVES_TO_WARM] += 1
                    c.u1[8 * s + 41] = bits & ~ACTIVE
                    self.do_move(lru, c, s, search, WARM)
                    removed += 1
            break
        return removed

    def do_evict(self, lru: SlabClass, c: SlabClass, s: int, h: int, now: int) -> None:
        """Evict the item at (c, s) from class ``lru``'s COLD tail, counting it as memcached."""
        bits = c.u1[8 * s + 41]
        lru.evicted += 1
        self.evictions += 1
        lru.evicted_time = now - c.u4[2 * s + 7]
        if c.u4[2 * s + 6] != 0:
            lru.evicted_nonzero += 1
        if not bits & FETCHED:
            lru.evicted_unfetched += 1
            self.evicted_unfetched += 1
        if bits & ACTIVE:
            lru.words[W_EVICTED_ACTIVE] += 1
        if self.on_evict is not None:
            self.on_evict(
                self.do_key_of(c, s),
                bool(bits & FETCHED),
                c.u4[2 * s + 6],
                c.u4[2 * s + 7],
                lru.cid,
                c.u4[2 * s + 8] - 2,
            )
        self.do_unlink(h)
        if self.on_class_evict is not None:
            self.on_class_evict(lru.cid)

    def do_alloc_pull(self, cid: int, now: int) -> int:
        """A free slot of class ``cid`` (memcached's do_item_alloc_pull), or NIL.

        A free chunk or a new page first; else evict from the COLD tail (reclaiming expired
        items found there first), and when COLD has nothing to give, move the HOT tail down
        and try again. A flat LRU reclaims expired tail items before every allocation."""
        cls = self.classes[cid]
        segmented = self.segmented
        slot = NIL
        i = 0
        while i < ALLOC_TRIES:
            if not segmented:
                self.do_pull_tail(cid, COLD, 0, 0, 0, now)
            slot = cls.pop_free()
            if slot == NIL and self.do_grow(cls):
                slot = cls.pop_free()
            if slot != NIL:
                break
            if self.do_pull_tail(cid, COLD, 0, PULL_EVICT, 0, now) <= 0:
                if not segmented:
                    break
                self.do_pull_tail(cid, HOT, 0, 0, 0, now)
            i += 1
        if i:
            cls.words[W_DIRECT_RECLAIMS] += i
        if slot == NIL:
            cls.outofmemory += 1
        return slot

    def do_evict_any(self, cls: SlabClass, keep: int) -> bool:
        """Evict the coldest item of ``cls`` (COLD tail, else HOT, WARM, TEMP) unless it is
        ``keep``: room for the page mover. False when there is none to evict."""
        for sub in (COLD, HOT, WARM, TEMP):
            t = cls.tail(sub)
            if t != NIL:
                if t == keep:
                    return False
                self.do_unlink(t)
                return True
        return False

    # ------------------------------------------------------------------ the maintainer's juggle

    def do_spill(
        self,
        cid: int,
        sub: int,
        total_bytes: int,
        max_age: int,
        now: int,
        most: int,
        flushes: bool | None = None,
    ) -> int:
        """Many of the juggle's HOT tail pulls in one step: the run of items at list ``sub``'s
        tail that ``do_pull_tail`` would move to COLD one by one (live, not ACTIVE, and the
        list over its share of ``total_bytes`` or the item older than ``max_age``), at most
        ``most``, cut off the list and put at COLD's head in one splice. Returns how many
        moved. (The juggle calls it for HOT; WARM, whose tail mixes rescues and moves to COLD,
        goes through ``do_warm_walk``.)

        Why: every new item leaves HOT this way once; one tail pull per item (a method call,
        its list unlink and link, a dozen field reads) was most of the maintainer's cost. The
        run keeps its order, so COLD ends as it would after the single moves (the newest of the
        run at the head). The item the run stops at (ACTIVE, expired, flushed, or young while
        the list is within its share) is left for ``do_pull_tail``, which decides it as
        memcached does. ``flushes``: whether a flush may have killed items (``do_flushes``),
        when the caller knows."""
        classes = self.classes
        w = classes[cid].words
        cfg = self.lru_settings
        limit = total_bytes * cfg.hot_lru_pct // 100 if sub == HOT else 0
        if limit == 0:  # memcached's fall-through from HOT_LRU into WARM_LRU's limit
            limit = total_bytes * cfg.warm_lru_pct // 100
        base = W_SUB + 4 * sub
        left = int(w[base + 3])
        tail = int(w[base + 1])
        if flushes is None:
            flushes = self.do_flushes(now)
        size = self.table.item_size
        h = tail
        first = NIL
        n = 0
        moved = 0
        while n < most and h != NIL:
            c = classes[h & 63]
            s = h >> 6
            if c.u1[8 * s + 41] & ACTIVE:
                break
            exp = c.u4[2 * s + 6]
            if (exp and exp < now) or (flushes and self.do_is_flushed(c, s, now)):
                break
            if left <= limit and now - c.u4[2 * s + 7] <= max_age:
                break
            nbytes = size(c.u1[8 * s + 40], c.u4[2 * s + 9], c.u4[2 * s + 8])
            left -= nbytes
            moved += nbytes
            c.u1[8 * s + 42] = COLD
            n += 1
            first = h
            h = int(c.q[s + 1])
        if n == 0:
            return 0
        # The list now ends at h (the item before the run); the run goes before COLD's head.
        if h != NIL:
            classes[h & 63].q[(h >> 6) + 2] = NIL
        else:
            w[base] = NIL
        w[base + 1] = h
        cold = W_SUB + 4 * COLD
        head = w[cold]
        classes[tail & 63].q[(tail >> 6) + 2] = head
        if head != NIL:
            classes[head & 63].q[(head >> 6) + 1] = tail
        else:
            w[cold + 1] = tail
        classes[first & 63].q[(first >> 6) + 1] = NIL
        w[cold] = first
        w[base + 2] -= n
        w[base + 3] -= moved
        w[cold + 2] += n
        w[cold + 3] += moved
        w[W_MOVES_TO_COLD] += n
        return n

    def do_juggle(self, cid: int, now: int, iterations: int = JUGGLE_ITERATIONS) -> int:
        """memcached's lru_maintainer_juggle on class ``cid``: reclaim expired TEMP items, then
        up to ``iterations`` rounds of HOT, WARM and COLD tail pulls while any of them did
        something. HOT and WARM items idle longer than hot_max_factor / warm_max_factor times
        COLD's tail age go to COLD. Returns the rounds that moved something."""
        cfg = self.lru_settings
        cls = self.classes[cid]
        did = 0
        if cfg.temp_lru:
            for _ in range(iterations):
                if self.do_pull_tail(cid, TEMP, 0, 0, 0, now) <= 0:
                    break
                did += 1
        total = 0
        cold_age = 0
        if self.segmented:
            tail = cls.tail(COLD)
            if tail != NIL:
                cold_age = now - self.classes[tail & 63].u4[2 * (tail >> 6) + 7]
            total = cls.lru_bytes(COLD) + cls.lru_bytes(HOT) + cls.lru_bytes(WARM)
        hot_age = int(cold_age * cfg.hot_max_factor)
        warm_age = int(cold_age * cfg.warm_max_factor)
        flushes = self.do_flushes(now)
        if self.segmented:
            spilled = self.do_spill(cid, HOT, total, hot_age, now, iterations, flushes)
            did += spilled
            iterations -= spilled
        pull = self.do_pull_tail
        walk = self.do_warm_walk
        segmented = self.segmented
        classes = self.classes
        w = cls.words
        cold_tail = W_SUB + 4 * COLD + 1
        hot_tail = W_SUB + 4 * HOT + 1
        warm_tail = W_SUB + 4 * WARM + 1
        # A HOT pull that did nothing does nothing again in this call: nothing here adds to
        # HOT, and its limit and ``now`` are fixed. Skipping it saves a call a round.
        hot_idle = w[hot_tail] == NIL
        # ``left`` bounds the items moved, not only the rounds: a WARM walk may move many in
        # one round, and one call's work (one lock hold of the maintainer) must stay bounded.
        # TAIL_TRIES per round, as single pulls could (a walk rescues up to TAIL_TRIES items).
        left = iterations * TAIL_TRIES
        while left > 0:
            moved = 0
            if not hot_idle:
                moved = pull(cid, HOT, total, 0, hot_age, now)
                hot_idle = not moved or w[hot_tail] == NIL
            if not moved:
                moved = walk(cid, total, warm_age, now, left, flushes) or (
                    w[warm_tail] != NIL and pull(cid, WARM, total, 0, warm_age, now)
                )
            more = 1 if moved else 0
            left -= moved or 1
            if segmented:
                # COLD's pull does nothing to a live tail that is not ACTIVE: tested here,
                # without the call, since that is nearly every round's COLD pull
                t = w[cold_tail]
                if t != NIL:
                    c = classes[t & 63]
                    s = t >> 6
                    exp = c.u4[2 * s + 6]
                    if (
                        c.u1[8 * s + 41] & ACTIVE
                        or (exp and exp < now)
                        or (flushes and self.do_is_flushed(c, s, now))
                    ):
                        more += pull(cid, COLD, total, 0, 0, now)
            if not more:
                break
            did += 1
        return did

    def do_warm_walk(
        self,
        cid: int,
        total_bytes: int,
        max_age: int,
        now: int,
        most: int,
        flushes: bool | None = None,
    ) -> int:
        """The juggle's WARM tail pulls in one walk from the tail, up to ``most`` items: an
        ACTIVE one loses ACTIVE and goes to WARM's head (``moves_within_lru``), an idle one
        goes to COLD's head while WARM is over its share of ``total_bytes`` or the item is
        older than ``max_age`` (``moves_to_cold``). It stops at the first item that is
        neither, or expired, or flushed: that one is left for ``do_pull_tail``, which decides
        it as memcached does. Returns how many moved.

        Why one walk: under reads spread over the whole cache, WARM's tail alternates ACTIVE
        items (read again while in WARM) and idle ones (to go back to COLD), a few of each.
        Rescues and spills in separate calls made a juggle round per two or three items, and
        the calls' setup was most of the maintainer's cost; here each item costs its own link
        writes alone, and the lists' counts and byte totals are written once. The items end
        where memcached's successive tail pulls put them: rescued ones at WARM's head in the
        order rescued, cooled ones at COLD's head, the last moved first."""
        classes = self.classes
        w = classes[cid].words
        limit = total_bytes * self.lru_settings.warm_lru_pct // 100
        base = W_SUB + 4 * WARM
        cold = W_SUB + 4 * COLD
        left = int(w[base + 3])
        if flushes is None:
            flushes = self.do_flushes(now)
        size = self.table.item_size
        rescued = 0
        cooled = 0
        cooled_bytes = 0
        while rescued + cooled < most:
            t = int(w[base + 1])
            if t == NIL:
                break
            c = classes[t & 63]
            s = t >> 6
            u1 = c.u1
            bits = u1[8 * s + 41]
            exp = c.u4[2 * s + 6]
            if (exp and exp < now) or (flushes and self.do_is_flushed(c, s, now)):
                break
            q = c.q
            p = int(q[s + 1])
            if bits & ACTIVE:
                u1[8 * s + 41] = bits & ~ACTIVE
                rescued += 1
                if p == NIL:
                    break  # the only item: it is its own head, and the walk ends there
                classes[p & 63].q[(p >> 6) + 2] = NIL
                w[base + 1] = p
                head = int(w[base])
                q[s + 1] = NIL
                q[s + 2] = head
                classes[head & 63].q[(head >> 6) + 1] = t
                w[base] = t
                continue
            if left <= limit and now - c.u4[2 * s + 7] <= max_age:
                break
            nbytes = size(u1[8 * s + 40], c.u4[2 * s + 9], c.u4[2 * s + 8])
            left -= nbytes
            cooled += 1
            cooled_bytes += nbytes
            if p != NIL:
                classes[p & 63].q[(p >> 6) + 2] = NIL
            else:
                w[base] = NIL
            w[base + 1] = p
            head = int(w[cold])
            q[s + 1] = NIL
            q[s + 2] = head
            if head != NIL:
                classes[head & 63].q[(head >> 6) + 1] = t
            else:
                w[cold + 1] = t
            w[cold] = t
            u1[8 * s + 42] = COLD
        if rescued:
            w[W_MOVES_WITHIN_LRU] += rescued
        if cooled:
            w[base + 2] -= cooled
            w[base + 3] -= cooled_bytes
            w[cold + 2] += cooled
            w[cold + 3] += cooled_bytes
            w[W_MOVES_TO_COLD] += cooled
        return rescued + cooled
