"""``-o lru_admission=tinylfu``: a TinyLFU admission policy at the COLD tail (opt-in).

Why: memcached's segmented LRU keeps a hot set in WARM only while its items are fetched often
enough for the maintainer's ages; an item that drifts down to COLD is evicted by the next
allocation however often it was used before, and a one-pass scan makes many allocations.
Caffeine's W-TinyLFU answers this with frequency history: a small count-min sketch estimates
how often each key was used lately, including in its earlier lives in the cache, and an item
may only push out another that was used less.

How it maps onto the segmented LRU: HOT is the admission window (new items always enter it;
sets are never refused), COLD is the probation area and WARM the protected one. When an
allocation has to evict from a class's COLD tail, the *candidate* is HOT's tail, the item the
window gives up next, and the *victims* are the few items at COLD's tail. Each victim used
more often than the candidate moves to WARM; the least used of those used less is evicted and
the candidate moves on to COLD (admitted); if there is none, the candidate itself is evicted
(a tie keeps the incumbent, as in Caffeine). Every eviction thus consumes one
candidate, as in Caffeine, where each item leaving the window is judged once. A scan's items,
used once, are evicted as they leave HOT, and a hot item that fell into COLD outlives them.

Why ``JUDGED`` is 2: Caffeine judges one victim; judging a second finds an item used less than
the candidate behind a hot tail item more often (a Zipf read-through at -m 8: 0.750 with one,
0.752 with two, 0.753 with five), and each judged item costs a key read, a hash and a move to
WARM when it wins (three scans past a hot set: the node's CPU +27% over the default with one,
+32% with two, +75% with five).

Why not COLD's head as the candidate: WARM's demotions land there too, so hot items would be
judged against each other and one lost on every tie; and a candidate that is not consumed
(one left at HOT's tail, say) would judge eviction after eviction with the same estimate.

What stays memcached's: the maintainer's juggles, the bumps and the counters; the policy's
own moves count as moves_to_warm and moves_to_cold, its choices as ``kept`` and ``rejected``
(shown in ``stats`` only while it is on).

The sketch (``Sketch``) is Caffeine's FrequencySketch in the blocked form: a table of 64-bit
words, each sixteen 4-bit counters. A key's hash picks one word and, in each quarter of it,
one of four counters; a use adds one to each of the four (saturating at 15) and the estimate is
their minimum. After ``SAMPLE_FACTOR`` times as many additions as the table has words every
counter is halved ("aging"), so old popularity fades. No doorkeeper: a key's first use costs
one word like any other. Its size comes from -m (one word per ``BYTES_PER_WORD`` of memory,
a power of two, bounded). It is not charged against -m, as the node's other shared areas
(and memcached's hash table) are not: charged, it would cost a whole 1 MB page at small -m,
and the policy would be compared with the default at a different item capacity.

Rules: the sketch lives in the shared segment (carved when the option is on, never kept over a
restart), so every worker process reads and writes one sketch, always under the store's lock.
Keys are identified by Python's ``hash(key)``, as the key index identifies them: forked
workers share it. Halving is done with ``bytes.translate`` over the table, a C loop.
"""

from __future__ import annotations

from typing import Protocol

from memcache_server.storage.segment import ALIGN, Segment, Word
from memcache_server.storage.slabclass import (
    ACTIVE,
    COLD,
    HOT,
    NIL,
    W_MOVES_TO_COLD,
    W_MOVES_TO_WARM,
    W_SUB,
    WARM,
    SlabClass,
)

__all__ = [
    "Sketch",
    "TinyLfu",
    "sketch_words",
    "sketch_bytes",
    "BYTES_PER_WORD",
    "MIN_WORDS",
    "MAX_WORDS",
    "SAMPLE_FACTOR",
]

BYTES_PER_WORD = 256  # one sketch word (four counters per key) per this much of -m: ~3%
MIN_WORDS = 1 << 10
MAX_WORDS = 1 << 22  # 32 MB of sketch at most, whatever -m says
SAMPLE_FACTOR = 10  # Caffeine's sample size: ten additions per word between two halvings
HEADER_BYTES = 64  # the policy's shared words, before the table
COUNTER_MAX = 15
JUDGED = 2  # COLD tail items one eviction compares with the candidate at most (see below)

# The four counters of a key sit at nibble 4*q + ((sel >> 2q) & 3) of its word, q = 0..3,
# where sel is 8 bits of its hash: one counter in each quarter, never two in one nibble.
# INC[sel] has the lowest bit of each of those nibbles set (adding it adds one to each);
# SHIFTS[sel] are the nibbles' bit offsets.
SHIFTS: tuple[tuple[int, int, int, int], ...] = tuple(
    (
        4 * (sel & 3),
        4 * (4 + ((sel >> 2) & 3)),
        4 * (8 + ((sel >> 4) & 3)),
        4 * (12 + ((sel >> 6) & 3)),
    )
    for sel in range(256)
)
INC: tuple[int, ...] = tuple(sum(1 << s for s in shifts) for shifts in SHIFTS)
SEL_SHIFT = 48  # the hash bits that choose the counters (the word comes from the low bits)
# A byte holds two counters; halving both is (b >> 1) with each nibble's top bit cleared.
HALVE = bytes((b >> 1) & 0x77 for b in range(256))


def sketch_words(memory_limit: int) -> int:
    """Words of sketch for a -m of ``memory_limit`` bytes: a power of two, bounded."""
    want = max(memory_limit // BYTES_PER_WORD, MIN_WORDS)
    words = MIN_WORDS
    while words < want and words < MAX_WORDS:
        words *= 2
    return words


def sketch_bytes(memory_limit: int) -> int:
    """Segment bytes the policy carves (its words and table, aligned as carving aligns)."""
    n = HEADER_BYTES + 8 * sketch_words(memory_limit)
    return -(-n // ALIGN) * ALIGN


class Sketch:
    """The count-min sketch of 4-bit counters in a shared area (see the module docstring).

    Not locked: the store calls it with its lock held."""

    __slots__ = ("words", "raw", "table", "mask", "sample")

    additions = Word(0)  # increments since the last halving
    resets = Word(1)  # halvings so far

    def __init__(self, area: memoryview, nwords: int) -> None:
        self.words = area[:HEADER_BYTES].cast("q")
        self.raw = area[HEADER_BYTES : HEADER_BYTES + 8 * nwords]
        self.table = self.raw.cast("Q")
        self.mask = nwords - 1
        self.sample = SAMPLE_FACTOR * nwords

    def do_record(self, hv: int) -> None:
        """One use of the key whose hash is ``hv``: each of its four counters goes up by one
        unless it is at 15. On the get path, so written as a handful of integer steps."""
        table = self.table
        i = hv & self.mask
        w = table[i]
        inc = INC[(hv >> SEL_SHIFT) & 255]
        # a counter at 15 has all four bits set: its lowest bit survives w & w>>1 & w>>2 & w>>3
        add = inc & ~(w & (w >> 1) & (w >> 2) & (w >> 3))
        if add:
            table[i] = w + add
            words = self.words
            words[0] += 1
            if words[0] >= self.sample:
                self.do_halve()

    def estimate(self, hv: int) -> int:
        """How often the key of hash ``hv`` was used lately (0..15): its counters' minimum."""
        w = self.table[hv & self.mask]
        a, b, c, d = SHIFTS[(hv >> SEL_SHIFT) & 255]
        return min((w >> a) & 15, (w >> b) & 15, (w >> c) & 15, (w >> d) & 15)

    def do_halve(self) -> None:
        """Age every counter: halve it (Caffeine's reset), and the additions with it."""
        raw = self.raw
        raw[:] = raw.tobytes().translate(HALVE)
        self.additions = self.additions // 2
        self.resets = self.resets + 1


class _Lists(Protocol):
    """What the policy needs of the store: its classes, an item's key, and a list move."""

    classes: list[SlabClass]

    def do_key_of(self, c: SlabClass, s: int) -> bytes: ...

    def do_move(self, lru: SlabClass, c: SlabClass, s: int, h: int, sub: int) -> None: ...


class TinyLfu(Sketch):
    """The sketch, and the choice of the item to evict from COLD when one must go."""

    __slots__ = ()

    kept = Word(2)  # COLD tail items used more often than the candidate: moved to WARM
    rejected = Word(3)  # evictions of the candidate (HOT's tail) instead of a COLD item

    @classmethod
    def carve(cls, segment: Segment, memory_limit: int) -> TinyLfu:
        """The policy of a store of ``memory_limit``, in a new (zeroed) area of ``segment``."""
        nwords = sketch_words(memory_limit)
        return cls(segment.carve(sketch_bytes(memory_limit))[1], nwords)

    def do_victim(self, st: _Lists, lru: SlabClass, tail: int) -> int:
        """The handle to evict from ``lru``'s COLD list, whose tail ``tail`` (a live item) an
        allocation is about to evict.

        The candidate is HOT's tail, the item the window gives up next. Up to ``JUDGED`` items
        from COLD's tail up are compared with it: one used more often moves to WARM (the
        protected list), one used as often stays; of those used less the least used is the
        victim (the one nearer the tail on a tie) and the candidate is admitted to COLD. If
        none was used less, the candidate is the victim (a tie keeps the incumbent, as in
        Caffeine). With no candidate (HOT empty, or its tail fetched twice and so bound for
        WARM) the least used of them is the victim."""
        cand = int(lru.words[W_SUB + 4 * HOT + 1])
        classes = st.classes
        if cand != NIL and classes[cand & 63].u1[8 * (cand >> 6) + 41] & ACTIVE:
            cand = NIL
        bar = COUNTER_MAX
        if cand != NIL:
            bar = self.estimate(hash(st.do_key_of(classes[cand & 63], cand >> 6)))
        victim = NIL
        # only an item used less often than the candidate may go; with none, any may
        least = bar if cand != NIL else COUNTER_MAX + 1
        h = tail
        for _ in range(JUDGED):
            c = classes[h & 63]
            s = h >> 6
            used = self.estimate(hash(st.do_key_of(c, s)))
            prev = int(c.q[s + 1])
            if used > bar:
                st.do_move(lru, c, s, h, WARM)
                lru.words[W_MOVES_TO_WARM] += 1
                self.kept = self.kept + 1
            elif used < least:
                victim = h
                least = used
                if used == 0:
                    break
            if prev == NIL:
                break
            h = prev
        if victim == NIL:
            self.rejected = self.rejected + 1
            return cand
        if cand != NIL:
            st.do_move(lru, classes[cand & 63], cand >> 6, cand, COLD)
            lru.words[W_MOVES_TO_COLD] += 1
        return victim
