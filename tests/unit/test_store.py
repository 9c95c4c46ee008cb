"""The item store on a ManualClock: no sockets, no sleeps.

Outcomes, expiry, flush, incr/decr, eviction and accounting follow memcached 1.6.18 (items.c,
memcached.c's do_store_item/do_add_delta, proto_text.c's flush_all).
"""

from __future__ import annotations

import random

import pytest

from memcache_server.protocol.constants import VALUE_KEY_OFFSET, value_header
from memcache_server.storage.clock import REALTIME_MAXDELTA, ManualClock
from memcache_server.storage.crawler import Crawler
from memcache_server.storage.lru import LruSettings
from memcache_server.storage.slabclass import COLD, HEADER_BYTES, HOT, SUB_LRUS
from memcache_server.storage.slabs import PAGE_SIZE, SlabTable
from memcache_server.storage.store import Mode, Outcome, Store, StoreLimits

KB = 1024
MB = 1024 * 1024
T0 = 1_700_000_000


def make(
    limit: int = 64 * MB,
    evictions: bool = True,
    use_cas: bool = True,
    clock: ManualClock | None = None,
    item_size_max: int = MB,
    lru: LruSettings | None = None,
) -> Store:
    table = SlabTable.build(1.25, 48, min(512 * KB, item_size_max), item_size_max, use_cas)
    limits = StoreLimits(limit, evictions, use_cas, lru or LruSettings())
    store = Store(table, limits, clock or ManualClock(T0), value_header)
    store.key_offset = VALUE_KEY_OFFSET
    return store


def put(store: Store, key: bytes, value: bytes, flags: int = 0, exptime: int = 0) -> Outcome:
    return store.store(Mode.SET, key, flags, exptime, value + b"\r\n")


def get(store: Store, key: bytes) -> bytes | None:
    """The value of a hit (checking the stored VALUE line), or None."""
    out = bytearray()
    r = store.get_into(key, out)
    if r != 1:
        assert not out
        return None
    eol = out.index(b"\r\n")
    header = bytes(out[:eol])
    parts = header.split(b" ")
    assert parts[0] == b"VALUE" and parts[1] == key
    value = bytes(out[eol + 2 :])
    assert value.endswith(b"\r\n")
    assert int(parts[3]) == len(value) - 2
    return value[:-2]


def flags_of(store: Store, key: bytes) -> int:
    r = store.get_parts(key)
    assert not isinstance(r, int)
    return int(r[0].split(b" ")[2])


def cas_of(store: Store, key: bytes) -> int:
    r = store.get_parts(key)
    assert not isinstance(r, int)
    return r[2]


def used(store: Store) -> int:
    if hasattr(store, "used_memory"):
        return int(store.used_memory())
    return int(store.malloced + store.overhead)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- storage outcomes


def test_set_get_roundtrip_exact_bytes() -> None:
    s = make()
    value = bytes(range(256)) + b"\r\nEND\r\n" + b"\x00" * 10
    assert put(s, b"k", value, flags=0xFFFFFFFF) == Outcome.STORED
    assert get(s, b"k") == value
    assert flags_of(s, b"k") == 0xFFFFFFFF
    assert put(s, b"k", b"") == Outcome.STORED
    assert get(s, b"k") == b""
    assert get(s, b"missing") is None
    assert s.curr_items == 1


def test_add() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    assert s.store(Mode.ADD, b"k", 0, 10, b"one\r\n") == Outcome.STORED
    assert s.store(Mode.ADD, b"k", 0, 0, b"two\r\n") == Outcome.NOT_STORED
    assert get(s, b"k") == b"one"
    c.advance(10)  # expired: add works again
    assert s.store(Mode.ADD, b"k", 0, 0, b"three\r\n") == Outcome.STORED
    assert get(s, b"k") == b"three"


def test_replace() -> None:
    s = make()
    assert s.store(Mode.REPLACE, b"k", 0, 0, b"x\r\n") == Outcome.NOT_STORED
    assert get(s, b"k") is None
    put(s, b"k", b"a")
    assert s.store(Mode.REPLACE, b"k", 3, 0, b"b\r\n") == Outcome.STORED
    assert get(s, b"k") == b"b"
    assert flags_of(s, b"k") == 3


def test_append_prepend_keep_flags_and_expiry() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    assert s.store(Mode.APPEND, b"k", 0, 0, b"x\r\n") == Outcome.NOT_STORED
    assert s.store(Mode.PREPEND, b"k", 0, 0, b"x\r\n") == Outcome.NOT_STORED
    put(s, b"k", b"mid", flags=7, exptime=100)
    # the flags and exptime given to append/prepend are ignored, as in memcached
    assert s.store(Mode.APPEND, b"k", 99, 0, b">>\r\n") == Outcome.STORED
    assert s.store(Mode.PREPEND, b"k", 98, 5, b"<<\r\n") == Outcome.STORED
    assert get(s, b"k") == b"<<mid>>"
    assert flags_of(s, b"k") == 7
    c.advance(99)
    assert get(s, b"k") == b"<<mid>>"
    c.advance(1)
    assert get(s, b"k") is None


def test_append_with_crlf_inside() -> None:
    s = make()
    put(s, b"k", b"a\r\n")
    s.store(Mode.APPEND, b"k", 0, 0, b"\r\nb\r\n")
    assert get(s, b"k") == b"a\r\n\r\nb"


def test_cas_outcomes() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    assert s.store(Mode.CAS, b"k", 0, 0, b"x\r\n", 1) == Outcome.NOT_FOUND
    put(s, b"k", b"v1", exptime=50)
    u1 = cas_of(s, b"k")
    assert u1 > 0
    assert s.store(Mode.CAS, b"k", 0, 0, b"x\r\n", u1 + 1) == Outcome.EXISTS
    assert s.store(Mode.CAS, b"k", 0, 0, b"x\r\n", 0) == Outcome.EXISTS
    assert get(s, b"k") == b"v1"
    assert s.store(Mode.CAS, b"k", 4, 0, b"v2\r\n", u1) == Outcome.STORED
    assert get(s, b"k") == b"v2"
    u2 = cas_of(s, b"k")
    assert u2 > u1
    assert s.store(Mode.CAS, b"k", 0, 0, b"v3\r\n", u1) == Outcome.EXISTS  # stale unique
    c.advance(REALTIME_MAXDELTA)
    assert get(s, b"k") == b"v2"  # cas set exptime 0: never expires


def test_cas_unique_changes_on_every_write() -> None:
    s = make()
    put(s, b"n", b"1")
    seen = [cas_of(s, b"n")]
    put(s, b"n", b"2")
    seen.append(cas_of(s, b"n"))
    s.store(Mode.APPEND, b"n", 0, 0, b"0\r\n")
    seen.append(cas_of(s, b"n"))
    s.incr_decr(b"n", 1, True)
    seen.append(cas_of(s, b"n"))
    s.incr_decr(b"n", 1000, True)  # grows: a new item
    seen.append(cas_of(s, b"n"))
    assert seen == sorted(set(seen)), seen
    unique = cas_of(s, b"n")
    s.touch(b"n", 100)  # touch does not change the unique (memcached)
    assert cas_of(s, b"n") == unique


def test_cas_disabled_gives_zero_uniques() -> None:
    s = make(use_cas=False)
    put(s, b"k", b"x")
    assert cas_of(s, b"k") == 0


def test_cas_with_cas_disabled_is_always_exists() -> None:
    """memcached -C: an item CAS of 0 is CAS_NONE, never a match ('cas k 0 0 1 0' -> EXISTS)."""
    s = make(use_cas=False)
    put(s, b"k", b"x")
    assert s.store(Mode.CAS, b"k", 0, 0, b"y\r\n", 0) == Outcome.EXISTS
    assert get(s, b"k") == b"x"


def test_delete() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    assert s.delete(b"k") is False
    put(s, b"k", b"x", exptime=5)
    assert s.delete(b"k") is True
    assert get(s, b"k") is None
    put(s, b"k", b"x", exptime=5)
    c.advance(5)
    assert s.delete(b"k") is False  # expired counts as missing
    assert s.curr_items == 0


def test_too_large() -> None:
    s = make()
    n = MB - 48 - 1 - 1 - 8  # item_size = 48 + nkey + 1 + nbytes(+2) + cas = -I exactly
    assert put(s, b"k", b"x" * (n - 2)) == Outcome.STORED
    assert put(s, b"j", b"x" * (n - 1)) == Outcome.TOO_LARGE
    assert get(s, b"j") is None


def test_failed_set_drops_the_old_value() -> None:
    """memcached unlinks the old item when a set of its key fails (stale data is worse)."""
    s = make()
    put(s, b"k", b"old")
    assert put(s, b"k", b"x" * MB) == Outcome.TOO_LARGE
    assert get(s, b"k") is None
    put(s, b"k", b"old")
    # add/replace/append that fail leave the old value alone
    assert s.store(Mode.REPLACE, b"k", 0, 0, b"x" * MB + b"\r\n") == Outcome.TOO_LARGE
    assert get(s, b"k") == b"old"


# ---------------------------------------------------------------------- expiry


def test_relative_exptime_expires_exactly_at_the_second() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    put(s, b"k", b"x", exptime=10)
    c.advance(9)
    assert get(s, b"k") == b"x"
    c.advance(1)  # memcached: exptime <= current_time is expired
    assert get(s, b"k") is None
    assert s.curr_items == 0


def test_negative_exptime_is_expired_at_once() -> None:
    s = make()
    assert put(s, b"k", b"x", exptime=-1) == Outcome.STORED
    assert get(s, b"k") is None
    assert put(s, b"k", b"x", exptime=-(2**31)) == Outcome.STORED
    assert get(s, b"k") is None


def test_thirty_days_is_relative_one_more_is_absolute() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    put(s, b"rel", b"x", exptime=REALTIME_MAXDELTA)  # 2592000: still relative
    put(s, b"abs", b"x", exptime=REALTIME_MAXDELTA + 1)  # a unix time in 1970: expired
    assert get(s, b"abs") is None
    c.advance(REALTIME_MAXDELTA - 1)
    assert get(s, b"rel") == b"x"
    c.advance(1)
    assert get(s, b"rel") is None


def test_absolute_exptime() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    put(s, b"future", b"x", exptime=T0 + 100)
    put(s, b"past", b"x", exptime=T0 - 1)  # after the process start, before now
    put(s, b"prestart", b"x", exptime=c.started - 100)
    assert get(s, b"past") is None
    assert get(s, b"prestart") is None
    c.advance(99)
    assert get(s, b"future") == b"x"
    c.advance(1)
    assert get(s, b"future") is None


def test_touch() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    assert s.touch(b"k", 10) is False
    put(s, b"k", b"x", exptime=5)
    c.advance(4)
    assert s.touch(b"k", 10) is True  # now expires at T0+14
    c.advance(9)
    assert get(s, b"k") == b"x"
    c.advance(1)
    assert get(s, b"k") is None
    put(s, b"k", b"x", exptime=5)
    assert s.touch(b"k", 0) is True  # 0: never expires
    c.advance(REALTIME_MAXDELTA)
    assert get(s, b"k") == b"x"
    assert s.touch(b"k", -1) is True
    assert get(s, b"k") is None


def test_gat_updates_expiry() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    put(s, b"k", b"x", exptime=5)
    r = s.get_parts(b"k", 100)
    assert not isinstance(r, int) and r[1] == b"x\r\n"
    c.advance(50)
    assert get(s, b"k") == b"x"
    assert s.get_parts(b"missing", 100) == 0


def test_miss_codes() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    put(s, b"e", b"x", exptime=1)
    put(s, b"f", b"x")
    c.advance(1)
    s.flush_all(0)
    assert s.get_into(b"nope", bytearray()) == 0
    assert s.get_into(b"e", bytearray()) == -1
    assert s.get_into(b"f", bytearray()) == -2


# ---------------------------------------------------------------------- flush_all


def test_flush_immediate_keeps_items_set_after_it_in_the_same_second() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    for i in range(10):
        put(s, b"old%d" % i, b"x")
    s.flush_all(0)
    put(s, b"new", b"y")  # same second as the flush: survives thanks to its CAS unique
    assert all(get(s, b"old%d" % i) is None for i in range(10))
    assert get(s, b"new") == b"y"
    c.advance(1)
    assert get(s, b"new") == b"y"
    put(s, b"newer", b"z")
    assert get(s, b"newer") == b"z"


def test_flush_immediate_without_cas_also_hides_items_of_the_same_second() -> None:
    """Without CAS memcached has only the timestamp: oldest_live = now, time <= now is dead."""
    c = ManualClock(T0)
    s = make(clock=c, use_cas=False)
    put(s, b"old", b"x")
    s.flush_all(0)
    put(s, b"same_second", b"y")
    assert get(s, b"old") is None
    assert get(s, b"same_second") is None
    c.advance(1)
    put(s, b"later", b"z")
    assert get(s, b"later") == b"z"


def test_flush_delayed_eventually_flushes() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    put(s, b"k", b"x")
    s.flush_all(10)
    c.advance(5)
    assert get(s, b"k") == b"x"
    put(s, b"k2", b"y")
    c.advance(5)  # T0+10
    assert get(s, b"k") is None
    assert get(s, b"k2") is None
    c.advance(1)
    put(s, b"k3", b"z")
    assert get(s, b"k3") == b"z"


def test_flush_delay_is_exact_like_memcached() -> None:
    """memcached: oldest_live = realtime(delay) - 1 with CAS, so 'flush_all 2' is not immediate
    ('set a / flush_all 2 / get a' hits) and 'flush_all 10' takes effect at +9 s."""
    c = ManualClock(T0)
    s = make(clock=c)
    put(s, b"a", b"x")
    s.flush_all(2)
    assert get(s, b"a") == b"x"  # memcached: oldest_live = T0+1, in the future
    s2 = make(clock=c)
    put(s2, b"b", b"x")
    s2.flush_all(10)
    c.advance(8)
    assert get(s2, b"b") == b"x"
    c.advance(1)
    assert get(s2, b"b") is None


# ---------------------------------------------------------------------- incr / decr


def test_incr_wraps_at_2_64() -> None:
    s = make()
    put(s, b"n", b"18446744073709551615")
    assert s.incr_decr(b"n", 1, True) == (Outcome.DELTA_OK, 0)
    assert get(s, b"n") == b"0" + b" " * 19  # written in place, padded: length kept
    assert s.incr_decr(b"n", 18446744073709551615, True) == (
        Outcome.DELTA_OK,
        18446744073709551615,
    )
    assert s.incr_decr(b"n", 2, True) == (Outcome.DELTA_OK, 1)


def test_decr_floors_at_zero() -> None:
    s = make()
    put(s, b"n", b"5")
    assert s.incr_decr(b"n", 10, False) == (Outcome.DELTA_OK, 0)
    assert get(s, b"n") == b"0"
    assert s.incr_decr(b"n", 1, False) == (Outcome.DELTA_OK, 0)


def test_decr_pads_in_place() -> None:
    s = make()
    put(s, b"n", b"10", flags=3)
    assert s.incr_decr(b"n", 1, False) == (Outcome.DELTA_OK, 9)
    assert get(s, b"n") == b"9 "
    assert flags_of(s, b"n") == 3
    # the padded value still counts as a number, as memcached's strtoull stops at the space
    assert s.incr_decr(b"n", 1, True) == (Outcome.DELTA_OK, 10)
    assert get(s, b"n") == b"10"


def test_incr_after_append_to_padded_value() -> None:
    """memcached: "9 " + append "5" = "9 5"; strtoull reads 9 and stops at the space."""
    s = make()
    put(s, b"n", b"10")
    s.incr_decr(b"n", 1, False)
    s.store(Mode.APPEND, b"n", 0, 0, b"5\r\n")
    assert get(s, b"n") == b"9 5"
    assert s.incr_decr(b"n", 1, True) == (Outcome.DELTA_OK, 10)
    assert get(s, b"n") == b"10 "


def test_incr_grows_the_length() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    put(s, b"n", b"99", flags=5, exptime=100)
    assert s.incr_decr(b"n", 1, True) == (Outcome.DELTA_OK, 100)
    assert get(s, b"n") == b"100"
    assert flags_of(s, b"n") == 5
    assert s.curr_items == 1
    c.advance(100)  # the new item kept the expiry
    assert get(s, b"n") is None


def test_incr_non_numeric_and_missing() -> None:
    s = make()
    assert s.incr_decr(b"nope", 1, True)[0] == Outcome.NOT_FOUND
    for v in (b"abc", b"12abc", b"", b"-1", b"18446744073709551616", b"1.5"):
        put(s, b"n", v)
        assert s.incr_decr(b"n", 1, True)[0] == Outcome.NON_NUMERIC, v
        assert get(s, b"n") == v
    put(s, b"big", b"1" * (600 * KB))  # a chunked item is never a number
    assert s.incr_decr(b"big", 1, True)[0] == Outcome.NON_NUMERIC


def test_incr_accepts_leading_whitespace() -> None:
    s = make()
    put(s, b"n", b"  7")
    assert s.incr_decr(b"n", 1, True) == (Outcome.DELTA_OK, 8)
    assert get(s, b"n") == b"8  "


# ---------------------------------------------------------------------- eviction

VALUE_10K = b"v" * 10000  # item ~10080 bytes: class 22 (11104 bytes, 94 per page)


def fill_until_evicting(s: Store, value: bytes, prefix: bytes = b"key") -> int:
    """Store distinct keys until the first eviction; returns how many fit."""
    n = 0
    while True:
        assert put(s, b"%s%06d" % (prefix, n), value) == Outcome.STORED
        if s.evictions:
            return n  # key n went in by evicting one
        n += 1


def test_eviction_is_oldest_first_per_class() -> None:
    c = ManualClock(T0)
    s = make(limit=4 * MB, clock=c)
    put(s, b"small", b"s")  # class 1: never touched by class-22 evictions
    cap = fill_until_evicting(s, VALUE_10K)
    assert cap >= 94
    assert get(s, b"key000000") is None  # the oldest went first
    extra = 50
    for i in range(cap + 1, cap + 1 + extra):
        put(s, b"key%06d" % i, VALUE_10K)
    assert s.evictions == extra + 1
    total = cap + 1 + extra
    present = [get(s, b"key%06d" % i) is not None for i in range(total)]
    # exactly the oldest extra+1 are gone, every younger one is there
    assert present == [False] * (extra + 1) + [True] * (total - extra - 1)
    assert get(s, b"small") == b"s"
    assert s.curr_items == total - extra - 1 + 1
    stats = {cs.cid: cs for cs in s.class_stats()}
    cid = s.table.class_for(s.table.item_size(9, 0, len(VALUE_10K) + 2))
    assert stats[cid].counters["evicted"] == extra + 1
    assert stats[cid].counters["evicted_unfetched"] == extra + 1


FLAT = LruSettings(segmented=False)  # -o no_lru_maintainer: one LRU per class


def test_get_bumps_only_after_the_update_interval() -> None:
    """The flat LRU's rule (memcached's do_item_update without lru_segmented)."""
    c = ManualClock(T0)
    s = make(limit=4 * MB, clock=c, lru=FLAT)
    cap = fill_until_evicting(s, VALUE_10K)  # key000000 evicted, key000001 is the tail
    assert get(s, b"key000000") is None
    c.advance(30)
    assert get(s, b"key000001") == VALUE_10K  # fetched, but not bumped: < 60 s since stored
    put(s, b"new1", VALUE_10K)
    assert get(s, b"key000001") is None
    c.advance(31)  # 61 s after the fill: a hit now moves the item to the LRU head
    assert get(s, b"key000002") == VALUE_10K
    put(s, b"new2", VALUE_10K)
    assert get(s, b"key000002") == VALUE_10K
    assert get(s, b"key000003") is None
    put(s, b"new3", VALUE_10K)
    assert get(s, b"key000004") is None
    assert get(s, b"key000002") == VALUE_10K
    assert s.evictions == 4
    assert cap > 10


@pytest.mark.parametrize("lru", [LruSettings(), FLAT], ids=["segmented", "flat"])
def test_expired_items_are_reused_before_evicting(lru: LruSettings) -> None:
    """A full class reclaims the expired items at its tail before it evicts a live one: the
    flat LRU before every allocation, the segmented one when COLD has nothing and the HOT
    tail is pulled (lru_pull_tail reclaims whatever expired item it meets at a tail)."""
    c = ManualClock(T0)
    s = make(limit=4 * MB, clock=c, lru=lru)
    cap = fill_until_evicting(s, VALUE_10K)
    before = s.evictions
    for i in range(1, 6):  # make the five oldest expire
        s.touch(b"key%06d" % i, 1)
    c.advance(2)  # a tail item is dead once its exptime is in the past, as in lru_pull_tail
    for i in range(5):
        put(s, b"fresh%d" % i, VALUE_10K)
    assert s.evictions == before
    assert s.reclaimed == 5
    assert get(s, b"key%06d" % cap) == VALUE_10K


def test_no_evictions_mode_refuses_and_keeps_everything() -> None:
    s = make(limit=4 * MB, evictions=False)
    stored = []
    i = 0
    while True:
        key = b"key%06d" % i
        r = put(s, key, VALUE_10K)
        if r == Outcome.NO_MEMORY:
            break
        assert r == Outcome.STORED
        stored.append(key)
        i += 1
        assert i < 10000
    for _ in range(20):
        assert put(s, b"more%d" % _, VALUE_10K) == Outcome.NO_MEMORY
    assert s.evictions == 0
    assert all(get(s, k) == VALUE_10K for k in stored)
    assert s.curr_items == len(stored)
    # a failed set of an existing key drops it (memcached: no stale data after a failed set)
    assert put(s, stored[0], VALUE_10K + b"!") == Outcome.NO_MEMORY
    assert get(s, stored[0]) is None
    assert put(s, stored[0], VALUE_10K) == Outcome.STORED  # its chunk is free again
    outofmemory = sum(cs.counters["outofmemory"] for cs in s.class_stats())
    assert outofmemory == 22


# ---------------------------------------------------------------------- large (chunked) items


@pytest.mark.parametrize("size", [512 * KB, 500 * KB + 7, 700 * KB, 900 * KB, MB - 200])
def test_large_items_round_trip(size: int) -> None:
    s = make()
    value = random.Random(size).randbytes(size)
    assert put(s, b"big", value, flags=9) == Outcome.STORED
    assert get(s, b"big") == value
    r = s.get_parts(b"big")
    assert not isinstance(r, int)
    assert r[0] == b"VALUE big 9 %d\r\n" % size and r[1] == value + b"\r\n"
    assert s.item_bytes == s.table.item_size(3, 9, size + 2)


def test_large_items_free_their_chunks() -> None:
    s = make()
    value = b"L" * (900 * KB)
    put(s, b"big", value)
    used_chunks = sum(c.used_chunks for c in s.classes)
    assert used_chunks >= 3  # a header chunk and at least two data chunks
    assert s.delete(b"big")
    assert sum(c.used_chunks for c in s.classes) == 0
    for i in range(20):  # churn: same memory reused, nothing leaks
        put(s, b"big%d" % (i % 3), value)
    assert sum(c.used_chunks for c in s.classes) == 3 * used_chunks
    s.store(Mode.APPEND, b"big0", 0, 0, b"tail\r\n")
    assert get(s, b"big0") == value + b"tail"
    s.store(Mode.PREPEND, b"big1", 0, 0, b"head\r\n")
    assert get(s, b"big1") == b"head" + value


def test_large_items_evict_each_other() -> None:
    s = make(limit=8 * MB)
    value = b"E" * (700 * KB)
    for i in range(40):
        assert put(s, b"big%d" % i, value) == Outcome.STORED
    assert s.evictions > 0
    assert get(s, b"big39") == value
    assert used(s) <= 8 * MB + 2 * PAGE_SIZE


# ---------------------------------------------------------------------- crawler


def test_crawl_reclaims_expired_items() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    for i in range(300):
        put(s, b"exp%d" % i, b"x" * 10, exptime=10)
    for i in range(100):
        put(s, b"keep%d" % i, b"x" * 10)
    cid = s.table.class_for(s.table.item_size(6, 0, 12))
    c.advance(10)
    start, n = s.crawl(cid, 0, 1_000_000)
    assert start == -1
    assert n == 300
    assert s.curr_items == 100
    assert s.crawler_reclaimed == 300
    assert s.classes[cid].used_chunks == 100
    assert all(get(s, b"keep%d" % i) == b"x" * 10 for i in range(100))
    assert s.crawl(cid, 0, 1_000_000) == (-1, 0)


def test_crawl_in_batches_and_flushed_items() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    for i in range(1000):
        put(s, b"k%d" % i, b"x")
    c.advance(1)
    s.flush_all(0)
    cid = s.table.class_for(s.table.item_size(4, 0, 3))
    start, total = 0, 0
    batches = 0
    while start >= 0:
        start, n = s.crawl(cid, start, 100)
        total += n
        batches += 1
    assert total == 1000
    assert batches > 10
    assert s.curr_items == 0


def test_crawler_pass_over_every_class() -> None:
    c = ManualClock(T0)
    s = make(clock=c)
    for i, size in enumerate((10, 100, 1000, 10000, 600 * KB)):
        put(s, b"e%d" % i, b"x" * size, exptime=5)
        put(s, b"k%d" % i, b"x" * size)
    c.advance(5)
    assert Crawler(s, sleep_us=0).crawl_once() == 5
    assert s.curr_items == 5


# ---------------------------------------------------------------------- memory accounting


def page_cost(s: Store, cid: int) -> int:
    """What one more page costs against -m: the page (the item headers are in it)."""
    _ = s, cid
    return PAGE_SIZE


def churn(s: Store, n: int, sizes: list[int], seed: int = 0) -> int:
    """Distinct keys, values of the given sizes; returns the worst overshoot of the limit."""
    rng = random.Random(seed)
    worst = -(1 << 62)
    for i in range(n):
        value = b"c" * rng.choice(sizes)
        assert put(s, b"churn:%09d" % i, value) == Outcome.STORED
        if i % 64 == 0:
            worst = max(worst, used(s) - s.memory_limit)
    return max(worst, used(s) - s.memory_limit)


@pytest.mark.parametrize(
    ("limit_mb", "sizes", "n"),
    [
        (4, [1000], 30000),  # class 11
        (8, [100, 110, 120], 90000),  # one class (4: 192 bytes)
        (4, [10000], 3000),
        (10, [10], 110000),  # class 1: the most items a page holds
        (5, [10], 60000),  # the same with room for only a few pages
    ],
)
def test_memory_stays_within_a_page_of_the_limit(limit_mb: int, sizes: list[int], n: int) -> None:
    s = make(limit=limit_mb * MB)
    worst = churn(s, n, sizes)
    cid = max(range(1, len(s.classes)), key=lambda i: s.classes[i].npages)
    assert s.evictions > 0
    assert worst <= page_cost(s, cid), (worst, page_cost(s, cid))


# ---------------------------------------------------------------------- model-based check


def c_strtoull(raw: bytes) -> int | None:
    """memcached's safe_strtoull on a stored value: optional leading whitespace, digits, then
    the end or whitespace."""
    s = raw.lstrip(b" \t\r\n\v\f")
    n = 0
    while n < len(s) and 48 <= s[n] <= 57:
        n += 1
    if n == 0 or (n < len(s) and s[n] not in b" \t\r\n\v\f"):
        return None
    v = int(s[:n])
    return v if v < 1 << 64 else None


def random_key(rng: random.Random) -> bytes:
    alphabet = bytes(b for b in range(1, 256) if b not in (0x20, 0x0A, 0x0D))
    kind = rng.random()
    if kind < 0.3:
        return b"a" * rng.randint(1, 6)  # prefixes of each other
    if kind < 0.4:
        return bytes(rng.choice(alphabet) for _ in range(250))
    return bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))


def random_value(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.35:
        return b"%d" % rng.choice([0, 1, 9, 10, 99, 12345, (1 << 64) - 1, rng.randint(0, 10**6)])
    if kind < 0.4:
        return b"x" * rng.randint(520 * KB, 700 * KB)  # chunked
    if kind < 0.45:
        return b""
    return rng.randbytes(rng.randint(1, 3000))


@pytest.mark.parametrize("seed", range(4))
def test_store_against_a_model(seed: int) -> None:
    """Random operations on random (binary, prefix-sharing, 250-byte) keys against a dict."""
    rng = random.Random(seed)
    c = ManualClock(T0)
    s = make(limit=256 * MB, clock=c)
    keys = sorted({random_key(rng) for _ in range(150)})
    model: dict[bytes, tuple[bytes, int, int]] = {}  # key -> (value, flags, absolute expiry)

    def alive(k: bytes) -> bool:
        if k not in model:
            return False
        exp = model[k][2]
        if exp and exp <= c.now:
            del model[k]
            return False
        return True

    def exp_abs(e: int) -> int:
        return 0 if e == 0 else (1 if e < 0 else c.now + e)

    for step in range(20000):
        k = rng.choice(keys)
        op = rng.choice(
            ["set", "set", "add", "replace", "append", "prepend", "get", "get", "delete",
             "incr", "decr", "touch", "tick"]
        )  # fmt: skip
        e = rng.choice([0, 0, 0, 1, 2, 5, -1])
        flags = rng.choice([0, 1, 0xFFFFFFFF])
        v = random_value(rng)
        ctx = (seed, step, op, k, e)
        if op == "tick":
            c.advance(rng.choice([0, 1, 1, 2]))
        elif op in ("set", "add", "replace"):
            mode = {"set": Mode.SET, "add": Mode.ADD, "replace": Mode.REPLACE}[op]
            ok = op == "set" or (op == "add") != alive(k)
            got = s.store(mode, k, flags, e, v + b"\r\n")
            assert got == (Outcome.STORED if ok else Outcome.NOT_STORED), ctx
            if ok:
                model[k] = (v, flags, exp_abs(e))
        elif op in ("append", "prepend"):
            mode = Mode.APPEND if op == "append" else Mode.PREPEND
            if alive(k) and len(model[k][0]) + len(v) > 900 * KB:
                continue  # stay clear of -I
            got = s.store(mode, k, flags, e, v + b"\r\n")
            if alive(k):
                old, f, x = model[k]
                model[k] = (old + v if op == "append" else v + old, f, x)
                assert got == Outcome.STORED, ctx
            else:
                assert got == Outcome.NOT_STORED, ctx
        elif op == "get":
            want = model[k][0] if alive(k) else None
            assert get(s, k) == want, ctx
            if want is not None:
                assert flags_of(s, k) == model[k][1], ctx
        elif op == "delete":
            was = alive(k)
            assert s.delete(k) is was, ctx
            model.pop(k, None)
        elif op in ("incr", "decr"):
            delta = rng.choice([0, 1, 5, 1 << 63])
            got = s.incr_decr(k, delta, op == "incr")
            if not alive(k):
                assert got[0] == Outcome.NOT_FOUND, ctx
                continue
            old, f, x = model[k]
            n = c_strtoull(old) if s.table.item_size(len(k), f, len(old) + 2) <= 512 * KB else None
            if n is None:
                assert got[0] == Outcome.NON_NUMERIC, ctx
                continue
            n = (n + delta) % (1 << 64) if op == "incr" else max(n - delta, 0)
            assert got == (Outcome.DELTA_OK, n), ctx
            digits = b"%d" % n
            new = digits + b" " * (len(old) - len(digits)) if len(digits) <= len(old) else digits
            model[k] = (new, f, x)
        elif op == "touch":
            was = alive(k)
            assert s.touch(k, e) is was, ctx
            if was:
                model[k] = (model[k][0], model[k][1], exp_abs(e))
    for k in keys:
        assert get(s, k) == (model[k][0] if alive(k) else None)
    c.advance(10)  # everything with an expiry is gone; the crawler reclaims it
    Crawler(s, sleep_us=0).crawl_once()
    assert s.curr_items == sum(1 for k in keys if alive(k))
    assert s.evictions == 0


def test_store_never_returns_a_wrong_value_under_eviction() -> None:
    """Heavy churn with evictions: a get returns the latest value or a miss, never another's."""
    rng = random.Random(11)
    s = make(limit=4 * MB)
    keys = sorted({random_key(rng) for _ in range(20000)})
    latest: dict[bytes, bytes] = {}
    for step in range(80000):
        k = rng.choice(keys)
        r = rng.random()
        if r < 0.5:
            v = b"%d:" % step + rng.randbytes(rng.randint(100, 1000))
            assert put(s, k, v) == Outcome.STORED
            latest[k] = v
        elif r < 0.9:
            got = get(s, k)
            assert got is None or got == latest.get(k), (step, k)
            if got is None:
                latest.pop(k, None)  # evicted (or never stored): must stay a miss
        else:
            s.delete(k)
            latest.pop(k, None)
    assert s.evictions > 1000
    assert s.curr_items == sum(1 for k in keys if get(s, k) is not None)


def test_a_set_that_evicts_the_item_it_replaces() -> None:
    """At the memory limit, overwriting the key at the LRU tail makes the allocation evict that
    very item (and often reuse its chunk): the old item must be unlinked once, not twice."""
    store = make(limit=2 * MB)
    keys = [b"key%06d" % i for i in range(40_000)]
    for k in keys:
        put(store, k, b"v" * 100)
    assert store.evictions > 0
    cid = store.classes[store.index.get(keys[-1]) & 63].cid  # type: ignore[operator]
    for _ in range(3):
        cl = store.classes[cid]
        tail = cl.tail(COLD) if cl.tail(COLD) != -1 else cl.tail(HOT)
        key = store.do_key_of(store.classes[tail & 63], tail >> 6)
        assert put(store, key, b"w" * 100) == Outcome.STORED
        assert get(store, key) == b"w" * 100
    items = sum(cl.items for cl in store.classes)
    assert items == store.curr_items
    walked = 0
    for cl in store.classes:
        for sub in range(SUB_LRUS):
            h = cl.head(sub)
            while h != -1:
                walked += 1
                h = store.classes[h & 63].q[(h >> 6) + 2]
    assert walked == store.curr_items


# ---------------------------------------------------------------------- item layout


def test_every_item_lands_in_memcacheds_class_even_when_its_value_line_does_not_fit() -> None:
    """An item takes the class memcached's item size picks; when the header, key and value
    line need more than that chunk (a long key with long flags), the chunk keeps the key alone
    and every read still gives the whole line."""
    s = make()
    key = b"k" * 250
    flags = 0xFFFFFFFF
    tight = []
    for n in range(1, 4000):
        ntotal = s.table.item_size(len(key), flags, n + 2)
        cid = s.table.class_for(ntotal)
        line = value_header(key, flags, n + 2)[VALUE_KEY_OFFSET:]
        if HEADER_BYTES + len(line) + n + 2 > s.table.sizes[cid]:
            tight.append((n, cid))
    assert tight  # such sizes exist: the test means something
    for i, (n, cid) in enumerate(tight[:40]):
        k = key[:-3] + b"%03d" % i
        value = bytes([65 + i % 26]) * n
        assert put(s, k, value, flags) == Outcome.STORED
        assert s.classes[cid].items >= 1
        out = bytearray()
        assert s.get_into(k, out) == 1
        assert bytes(out) == value_header(k, flags, n + 2) + value + b"\r\n"
        assert flags_of(s, k) == flags
        assert s.store(Mode.APPEND, k, 0, 0, b"!\r\n") == Outcome.STORED
        assert get(s, k) == value + b"!"
    # a number stored in such an item still counts in place
    n, cid = tight[0]
    assert put(s, b"n" * 250, b"1" + b" " * (n - 1), flags) == Outcome.STORED
    assert s.incr_decr(b"n" * 250, 41, True) == (Outcome.DELTA_OK, 42)
    assert get(s, b"n" * 250) == b"42" + b" " * (n - 2)
