"""Item operations of the meta protocol (mg/ms/md/ma/me) on the slab store.

Why a separate module: the meta commands need more than the classic verbs (no-bump reads, TTL
changes in flag order, vivify-on-miss, stale items and win tokens, CAS compare on delete and
arithmetic), and they must not slow the classic get/set path. These functions take the store's
lock themselves, like every public ``Store`` method, and then use the store's lock-held API
(the ``do_*`` steps of ``storage/items.py``) and the item headers.

TTL events: a meta request may change an item's expiry and report it in the same line, in the
order the client gave its flags (``mg k t T30 t`` shows the old TTL, then the new one). Callers
pass that order as a tuple of ``(event, absolute time)`` pairs; each ``EV_SHOW_TTL`` records the
item's expiry at that point in ``MetaHit.ttls``.
"""

from __future__ import annotations

from enum import IntEnum

from memcache_server.storage.items import (
    ADD,
    APPEND,
    CAS,
    EXISTS,
    NON_NUMERIC,
    NOT_FOUND,
    NOT_STORED,
    PREPEND,
    SET,
    STORED,
    TOO_LARGE,
    Mode,
    Outcome,
)
from memcache_server.storage.slabclass import (
    DATA_CHUNK,
    FETCHED,
    IN_USE,
    KEY_BINARY,
    NIL,
    STALE,
    TOKEN_SENT,
    W_TOUCH_HITS,
)
from memcache_server.storage.store import Store

__all__ = [
    "MetaStore",
    "MetaHit",
    "MetaResult",
    "EV_SET_TTL",
    "EV_VIVIFY_TTL",
    "EV_RECACHE",
    "EV_SHOW_TTL",
]

EV_SET_TTL = 1  # T: set the expiry
EV_VIVIFY_TTL = 2  # N: set the expiry if this request created the item
EV_RECACHE = 3  # R: win the recache token if the expiry is before this time
EV_SHOW_TTL = 4  # t: record the expiry as it is now

Events = tuple[tuple[int, int], ...]


class MetaResult(IntEnum):
    OK = 0
    NOT_FOUND = 1
    EXISTS = 2
    NOT_STORED = 3
    NON_NUMERIC = 4
    NO_MEMORY = 5


class MetaHit:
    """What a meta read saw of an item, captured under the lock (before its LRU bump)."""

    __slots__ = (
        "key",
        "key_binary",
        "value",
        "nbytes",
        "flags",
        "cas",
        "ttls",
        "la",
        "fetched",
        "token_sent",
        "stale",
        "won",
        "cid",
        "ntotal",
        "exp",
        "created",
    )

    def __init__(self) -> None:
        self.key = b""
        self.key_binary = False
        self.value = b""  # the value and its CRLF, when asked for
        self.nbytes = 0  # value length without CRLF
        self.flags = 0
        self.cas = 0
        self.ttls: list[int] = []  # absolute expiry (0: never) at each EV_SHOW_TTL
        self.la = 0  # seconds since last access
        self.fetched = False
        self.token_sent = False
        self.stale = False
        self.won = False
        self.cid = 0
        self.ntotal = 0
        self.exp = 0
        self.created = False


class MetaStore:
    """The meta operations of one ``Store``. Stateless apart from the store it wraps."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------------ helpers (lock held)

    def _lookup(self, key: bytes, now: int) -> int:
        """Handle of a live item; or 0 (miss), -1 (expired), -2 (flushed), unlinking dead ones."""
        return self.store.do_live(key, now)

    def _create(self, key: bytes, flags: int, exp: int, body: bytes, now: int) -> int:
        """Write and link a new item; NIL when memory is exhausted."""
        st = self.store
        outcome, h = st.do_write_item(key, flags, exp, body, now)
        if outcome != STORED:
            return NIL
        c = st.classes[h & 63]
        st.do_link(key, h, st.do_lru_cid(c, h >> 6), st.do_ntotal(c, h >> 6), len(body))
        return int(h)

    # ------------------------------------------------------------------ mg

    def get(
        self,
        key: bytes,
        events: Events,
        bump: bool,
        vivify: bool,
        want_value: bool,
        touch: bool,
        count: bool = True,
    ) -> MetaHit | int:
        """``mg``: a ``MetaHit``, or a miss code as ``Store.get_into`` gives (0, -1, -2).

        ``count`` False: the request failed after the lookup (memcached then neither counts the
        hit nor bumps the item)."""
        st = self.store
        now = st.clock.now
        with st.lock:
            h = self._lookup(key, now)
            created = False
            if h <= 0 and vivify:
                nh = self._create(key, 0, 0, b"\r\n", now)
                if nh != NIL:
                    h = nh
                    created = True
            if h <= 0:
                return h
            c = st.classes[h & 63]
            s = h >> 6
            bits = c.u1[8 * s + 41]
            hit = MetaHit()
            hit.created = created
            token_sent = bool(bits & TOKEN_SENT)
            exp = c.u4[2 * s + 6]
            won = False
            for ev, t in events:
                if ev == EV_SHOW_TTL:
                    hit.ttls.append(exp)
                elif ev == EV_SET_TTL:
                    exp = t
                elif ev == EV_VIVIFY_TTL:
                    if created:
                        exp = t
                        won = True
                elif not token_sent and not created and exp != 0 and exp < t:
                    won = True  # EV_RECACHE
            c.u4[2 * s + 6] = exp
            if bits & STALE and not token_sent:
                won = True
            if won:
                bits |= TOKEN_SENT
            hit.won = won
            hit.token_sent = token_sent
            hit.stale = bool(bits & STALE)
            hit.fetched = bool(bits & FETCHED)
            hit.key_binary = bool(bits & KEY_BINARY)
            hit.key = st.do_key_of(c, s)
            hit.flags = c.u4[2 * s + 9]
            hit.cas = c.q[s]
            hit.nbytes = c.u4[2 * s + 8] - 2
            hit.la = now - c.u4[2 * s + 7]
            hit.exp = exp
            if want_value:
                plen = c.u2[4 * s + 22]
                hit.value = st.do_read(c, s, h, plen, c.u4[2 * s + 8])
            if not count:
                c.u1[8 * s + 41] = bits
                return hit
            c.u1[8 * s + 41] = bits
            if touch:
                st.classes[st.do_lru_cid(c, s)].words[W_TOUCH_HITS] += 1
            else:
                st.do_count_hit(c, s)
                if st.admission is not None:
                    st.admission.do_record(hash(hit.key))
            if bump:
                st.do_item_bump(c, s, h, now)
            return hit

    # ------------------------------------------------------------------ ms

    def set(
        self,
        mode: Mode,
        key: bytes,
        key_binary: bool,
        flags: int,
        exp: int,
        body: bytes,
        req_cas: int,
        set_stale: bool,
    ) -> tuple[Outcome, int]:
        """``ms``: memcached's do_store_item with the meta extensions. Returns (outcome, cas).

        ``mode`` CAS compares ``req_cas``; with ``set_stale`` an older CAS still stores, but the
        item keeps the old expiry and becomes stale (memcached's invalidation).
        """
        st = self.store
        table = st.table
        now = st.clock.now
        nkey = len(key)
        with st.lock:
            if table.class_for(table.item_size(nkey, flags, len(body))) == 0:
                h = st.index.get(key)
                if h is not None:
                    st.do_unlink(h)  # memcached drops the old value when the new one cannot fit
                return TOO_LARGE, 0
            st.do_count_set(nkey, flags, len(body))
            old = self._lookup(key, now)
            extra_bits = 0
            layout: list[tuple[int, int]] | None = None
            if old > 0:
                oc = st.classes[old & 63]
                os_ = old >> 6
                old_cas = oc.q[os_]
                if req_cas == 0:
                    cas_res = 0  # none
                elif req_cas == old_cas:
                    cas_res = 1  # match
                elif set_stale and req_cas < old_cas:
                    cas_res = 2  # stale
                else:
                    cas_res = 3  # bad value
                lru = st.classes[st.do_lru_cid(oc, os_)]
                if mode == ADD:
                    st.do_item_update(oc, os_, old, now)
                    return NOT_STORED, 0
                if mode == CAS:
                    if cas_res == 1:
                        lru.cas_hits += 1
                    elif cas_res == 2:
                        exp = oc.u4[2 * os_ + 6]
                        extra_bits = STALE | (oc.u1[8 * os_ + 41] & TOKEN_SENT)
                        lru.cas_hits += 1
                    else:
                        lru.cas_badval += 1
                        return EXISTS, 0
                elif mode in (APPEND, PREPEND):
                    if cas_res > 1:
                        return EXISTS, 0
                    value = st.do_read(oc, os_, old, oc.u2[4 * os_ + 22], oc.u4[2 * os_ + 8])
                    if mode == APPEND:
                        parts = (len(value) - 2, len(body))
                        body = value[:-2] + body
                    else:
                        parts = (len(body) - 2, len(value))
                        body = body[:-2] + value
                    flags = oc.u4[2 * os_ + 9]
                    exp = oc.u4[2 * os_ + 6]
                    ntotal = table.item_size(nkey, flags, len(body))
                    if table.class_for(ntotal) == 0:
                        return NOT_STORED, 0
                    if ntotal > table.chunk_max:  # chained as memcached chains it
                        layout = table.joined_chunks(*parts)
            elif mode == CAS:
                return NOT_FOUND, 0
            elif mode != SET and mode != ADD:
                return NOT_STORED, 0
            outcome, h = st.do_write_item(key, flags, exp, body, now, layout=layout)
            if outcome != STORED:
                hold = st.index.get(key)
                if hold is not None:
                    st.do_unlink(hold)
                return outcome, 0
            c = st.classes[h & 63]
            s = h >> 6
            st.do_link(key, h, st.do_lru_cid(c, s), st.do_ntotal(c, s), len(body))
            if key_binary:
                extra_bits |= KEY_BINARY
            c.u1[8 * s + 41] |= extra_bits
            return STORED, c.q[s]

    # ------------------------------------------------------------------ md

    def delete(
        self, key: bytes, req_cas: int | None, set_stale: bool, new_exp: int | None
    ) -> MetaResult:
        """``md``: delete, or with ``set_stale`` mark stale (new CAS, win token reset).

        ``req_cas`` (when given, even 0) must equal the item's CAS."""
        st = self.store
        now = st.clock.now
        with st.lock:
            h = self._lookup(key, now)
            if h <= 0:
                return MetaResult.NOT_FOUND
            c = st.classes[h & 63]
            s = h >> 6
            if req_cas is not None and c.q[s] != req_cas:
                return MetaResult.EXISTS
            if set_stale:
                if new_exp is not None:
                    c.u4[2 * s + 6] = new_exp
                c.u1[8 * s + 41] = (c.u1[8 * s + 41] | STALE) & ~TOKEN_SENT
                c.q[s] = st.do_next_cas()
            else:
                st.classes[st.do_lru_cid(c, s)].delete_hits += 1
                st.do_unlink(h)
            return MetaResult.OK

    # ------------------------------------------------------------------ ma

    def arith(
        self,
        key: bytes,
        incr: bool,
        delta: int,
        req_cas: int,
        vivify: bool,
        initial: int,
        events: Events,
    ) -> tuple[MetaResult, MetaHit | None]:
        """``ma``: memcached's do_add_delta plus vivify. The hit's ``value`` holds the digits.

        As in memcached, a result longer than the stored value becomes a new item, and TTL
        flags then change the old, unlinked one: the stored item keeps its expiry.
        """
        st = self.store
        now = st.clock.now
        with st.lock:
            h = self._lookup(key, now)
            created = False
            replaced = False
            if h <= 0:
                if not vivify:
                    return MetaResult.NOT_FOUND, None
                digits = b"%d" % initial
                h = self._create(key, 0, 0, digits + b"\r\n", now)
                if h == NIL:
                    return MetaResult.NOT_STORED, None  # vivify found no memory
                created = True
            else:
                c = st.classes[h & 63]
                s = h >> 6
                outcome, value, longer = st.do_add_delta(c, s, h, delta, incr, now, req_cas)
                if outcome == NON_NUMERIC:
                    return MetaResult.NON_NUMERIC, None
                if outcome == EXISTS:
                    return MetaResult.EXISTS, None
                digits = longer or b"%d" % value
                if longer:
                    nh = self._create(key, c.u4[2 * s + 9], c.u4[2 * s + 6], digits + b"\r\n", now)
                    if nh == NIL:
                        return MetaResult.NO_MEMORY, None
                    h = nh
                    replaced = True
            c = st.classes[h & 63]
            s = h >> 6
            hit = MetaHit()
            hit.created = created
            hit.value = digits
            hit.cas = c.q[s]
            exp = c.u4[2 * s + 6]
            for ev, t in events:
                if ev == EV_SHOW_TTL:
                    hit.ttls.append(exp)
                elif ev == EV_SET_TTL or (ev == EV_VIVIFY_TTL and created):
                    exp = t
            if not replaced:
                c.u4[2 * s + 6] = exp
            return MetaResult.OK, hit

    # ------------------------------------------------------------------ me

    def debug(self, key: bytes) -> MetaHit | None:
        """``me``: an item's metadata without bumping it or marking it fetched."""
        st = self.store
        now = st.clock.now
        with st.lock:
            h = self._lookup(key, now)
            if h <= 0:
                return None
            c = st.classes[h & 63]
            s = h >> 6
            hit = MetaHit()
            hit.key = st.do_key_of(c, s)
            hit.key_binary = bool(c.u1[8 * s + 41] & KEY_BINARY)
            hit.exp = c.u4[2 * s + 6]
            hit.la = now - c.u4[2 * s + 7]
            hit.cas = c.q[s]
            hit.fetched = bool(c.u1[8 * s + 41] & FETCHED)
            hit.cid = st.do_lru_cid(c, s)  # a chunked item reports the largest class, as memcached
            hit.ntotal = st.do_ntotal(c, s)
            return hit

    # ------------------------------------------------------------------ metadump

    def walk(
        self, cids: list[int], batch: int = 1000
    ) -> list[tuple[bytes, int, int, int, bool, int, int]]:
        """(key, exp, last access, cas, fetched, class, size) of every live item of ``cids``.

        Each class is walked in slot order (oldest pages first), the lock taken once per
        ``batch`` slots so writers are not stalled for the whole walk; classes are then
        interleaved one item at a time, as memcached's crawler advances one item per class per
        step. Chunked items are reported once, by their header chunk."""
        st = self.store
        per_class: list[list[tuple[bytes, int, int, int, bool, int, int]]] = []
        for cid in cids:
            out: list[tuple[bytes, int, int, int, bool, int, int]] = []
            per_class.append(out)
            if cid >= len(st.classes):
                continue
            start = 0
            while True:
                now = st.clock.now
                with st.lock:
                    c = st.classes[cid]
                    end = min(start + batch, c.nslots)
                    for i in range(start, end):
                        s = c.slot(i)
                        b = c.u1[8 * s + 41]
                        if not b & IN_USE or b & DATA_CHUNK or st.do_is_dead(c, s, now):
                            continue
                        out.append(
                            (
                                st.do_key_of(c, s),
                                c.u4[2 * s + 6],
                                c.u4[2 * s + 7],
                                c.q[s],
                                bool(b & FETCHED),
                                st.do_lru_cid(c, s),
                                st.do_ntotal(c, s),
                            )
                        )
                if end >= c.nslots:
                    break
                start = end
        merged = []
        for i in range(max((len(lst) for lst in per_class), default=0)):
            merged += [lst[i] for lst in per_class if i < len(lst)]
        return merged
