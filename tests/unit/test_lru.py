"""The segmented LRU on a manual clock: memcached 1.6.18's moves between HOT, WARM, COLD and
TEMP (items.c lru_pull_tail, do_item_bump, do_item_update, lru_maintainer_juggle), driven
step by step without a thread, a socket or a sleep.
"""

from __future__ import annotations

import pytest

from memcache_server.protocol.constants import VALUE_KEY_OFFSET, value_header
from memcache_server.storage.clock import ManualClock
from memcache_server.storage.lru import LruSettings
from memcache_server.storage.maintainer import MAX_SLEEP_US, MIN_SLEEP_US, Maintainer
from memcache_server.storage.slabclass import (
    ACTIVE,
    COLD,
    FETCHED,
    HOT,
    SUB_LRUS,
    TEMP,
    W_JUGGLE_BACKOFF,
    WARM,
    SlabClass,
)
from memcache_server.storage.slabs import SlabTable
from memcache_server.storage.store import Mode, Outcome, Store, StoreLimits

MB = 1024 * 1024
T0 = 1_700_000_000
VALUE = b"v" * 200


def make(limit: int = 64 * MB, clock: ManualClock | None = None, **lru: object) -> Store:
    table = SlabTable.build(1.25, 48, 512 * 1024, MB, True)
    settings = LruSettings(**lru)  # type: ignore[arg-type]
    store = Store(
        table, StoreLimits(limit, True, True, settings), clock or ManualClock(T0), value_header
    )
    store.key_offset = VALUE_KEY_OFFSET
    return store


def put(s: Store, key: bytes, exptime: int = 0, value: bytes = VALUE) -> Outcome:
    return s.store(Mode.SET, key, 0, exptime, value + b"\r\n")


def get(s: Store, key: bytes) -> bool:
    return s.get_into(key, bytearray()) == 1


def where(s: Store, key: bytes) -> tuple[int, int]:
    """(the item's list, its bits)."""
    h = s.index.get(key)
    assert h is not None
    c = s.classes[h & 63]
    return c.u1[8 * (h >> 6) + 42], c.u1[8 * (h >> 6) + 41]


def cls(s: Store) -> SlabClass:
    return s.classes[s.table.class_for(s.table.item_size(6, 0, len(VALUE) + 2))]


def lru_keys(s: Store, c: SlabClass, sub: int) -> list[bytes]:
    """Keys of list ``sub`` from head to tail (and the list's count agrees)."""
    out = []
    h = c.head(sub)
    while h != -1:
        hc = s.classes[h & 63]
        out.append(s.do_key_of(hc, h >> 6))
        h = hc.q[(h >> 6) + 2]
    assert len(out) == c.lru_size(sub)
    return out


def juggle(s: Store, c: SlabClass) -> int:
    with s.lock:
        return s.do_juggle(c.cid, s.clock.now)


def counter(s: Store, c: SlabClass, name: str) -> int:
    (cs,) = [x for x in s.class_stats() if x.cid == c.cid]
    assert cs.lru_counters is not None
    return cs.lru_counters[name]


def test_new_items_enter_hot_or_temp_or_cold_when_flat() -> None:
    s = make(temp_lru=True, temporary_ttl=61)
    put(s, b"key000")
    put(s, b"key001", exptime=61)  # within temporary_ttl
    put(s, b"key002", exptime=62)
    assert [where(s, k)[0] for k in (b"key000", b"key001", b"key002")] == [HOT, TEMP, HOT]
    flat = make(segmented=False)
    put(flat, b"key000")
    assert where(flat, b"key000")[0] == COLD
    c = cls(s)
    assert (c.lru_size(HOT), c.lru_size(TEMP), c.items) == (2, 1, 3)
    assert c.mem_requested == sum(c.lru_bytes(sub) for sub in range(SUB_LRUS)) > 0


def test_second_fetch_marks_active_and_a_hot_tail_goes_to_warm_or_cold() -> None:
    s = make()
    c = cls(s)
    for i in range(10):
        put(s, b"key%03d" % i)
    assert get(s, b"key000") and where(s, b"key000")[1] & (FETCHED | ACTIVE) == FETCHED
    assert get(s, b"key000") and where(s, b"key000")[1] & ACTIVE
    # HOT holds all the bytes, over its 20%: the tail flows down until HOT is within it; the
    # active one goes to WARM instead, and loses ACTIVE on the way
    assert juggle(s, c) > 0
    assert where(s, b"key000") == (WARM, where(s, b"key000")[1])
    assert not where(s, b"key000")[1] & ACTIVE
    assert lru_keys(s, c, WARM) == [b"key000"]
    assert lru_keys(s, c, HOT) == [b"key009", b"key008"]  # 2 of 10 items: 20% of the bytes
    assert lru_keys(s, c, COLD) == [b"key%03d" % i for i in range(7, 0, -1)]
    assert counter(s, c, "moves_to_warm") == 1
    assert counter(s, c, "moves_to_cold") == 7
    assert counter(s, c, "hits_to_hot") == 2


def test_an_item_fetched_twice_in_cold_goes_back_to_warm_at_once() -> None:
    s = make()
    c = cls(s)
    for i in range(10):
        put(s, b"key%03d" % i)
    juggle(s, c)
    assert where(s, b"key001")[0] == COLD
    get(s, b"key001")
    assert where(s, b"key001")[0] == COLD  # one fetch only marks it FETCHED
    get(s, b"key001")
    assert where(s, b"key001")[0] == WARM
    assert not where(s, b"key001")[1] & ACTIVE
    assert counter(s, c, "hits_to_cold") == 2
    assert counter(s, c, "moves_to_warm") == 1


def test_active_warm_items_are_rescued_within_warm_and_idle_ones_age_out() -> None:
    clock = ManualClock(T0)
    s = make(clock=clock)
    c = cls(s)
    for i in range(20):
        put(s, b"key%03d" % i)
    for k in (b"key000", b"key001", b"key002"):
        get(s, k)
        get(s, k)
    juggle(s, c)
    assert lru_keys(s, c, WARM) == [b"key002", b"key001", b"key000"]
    get(s, b"key000")  # FETCHED already: one hit makes it ACTIVE again (only its time moves)
    juggle(s, c)
    assert lru_keys(s, c, WARM) == [b"key000", b"key002", b"key001"]
    assert counter(s, c, "moves_within_lru") == 1
    # WARM keeps an idle item while it is idle no longer than warm_max_factor (2) times the
    # age of COLD's tail: 10 s against 2 x 10 s
    clock.advance(10)
    juggle(s, c)
    assert c.lru_size(WARM) == 3
    # once COLD's tail is young again, the idle WARM items flow down
    for k in lru_keys(s, c, COLD):
        s.delete(k)
    for i in range(20):
        put(s, b"new%03d" % i)
    juggle(s, c)
    assert c.lru_size(WARM) == 0
    # 13 idle HOT items over its 20% at first, 4 idle ones by age, 16 of the new ones, 3 WARM
    assert counter(s, c, "moves_to_cold") == 13 + 4 + 16 + 3


def test_idle_hot_items_flow_to_cold_by_age() -> None:
    clock = ManualClock(T0)
    s = make(clock=clock)
    c = cls(s)
    for i in range(10):
        put(s, b"key%03d" % i)
    juggle(s, c)
    assert lru_keys(s, c, HOT) == [b"key009", b"key008"]  # within 20% of the bytes: they stay
    clock.advance(10)  # idle 10 s > hot_max_factor (0.2) x COLD's tail age (10 s)
    juggle(s, c)
    assert c.lru_size(HOT) == 0 and c.lru_size(COLD) == 10


def test_warm_over_its_share_flows_to_cold() -> None:
    s = make(warm_lru_pct=10)
    c = cls(s)
    for i in range(10):
        put(s, b"key%03d" % i)
    for i in range(5):
        get(s, b"key%03d" % i)
        get(s, b"key%03d" % i)
    juggle(s, c)
    # WARM is pulled only in rounds where HOT moved nothing: HOT first sends its five active
    # items to WARM and three idle ones to COLD (2 of 10 stay: 20%), then WARM, allowed 10% of
    # the bytes, sends four of its five down
    assert c.lru_size(WARM) == 1
    assert c.lru_size(HOT) == 2
    assert counter(s, c, "moves_to_warm") == 5
    assert counter(s, c, "moves_to_cold") == 3 + 4


def test_a_scan_through_a_full_class_keeps_the_hot_set() -> None:
    """The measured problem: a hot set read twice survives a one-pass scan of cold keys
    through a full class; with a flat LRU the scan pushes all of it out."""

    def survivors(**lru: object) -> int:
        s = make(limit=4 * MB, **lru)
        for i in range(20_000):  # the class is full and evicting before the hot set arrives
            put(s, b"old%05d" % i)
        hot = [b"hot%03d" % i for i in range(300)]
        for k in hot:
            put(s, k)
        for k in hot:
            get(s, k)
            get(s, k)
        for i in range(40_000):  # far more than fits in 4 MB
            put(s, b"scan%05d" % i)
            if i % 200 == 0:  # the maintainer's turn
                for c in s.classes[1:]:
                    with s.lock:
                        s.do_juggle(c.cid, s.clock.now)
                for k in hot[i % 300 : i % 300 + 20]:
                    get(s, k)
        assert s.evictions > 25_000
        return sum(get(s, k) for k in hot)

    assert survivors() == 300
    assert survivors(segmented=False) < 30


def test_a_set_into_a_full_class_reclaims_expired_cold_items_before_evicting() -> None:
    clock = ManualClock(T0)
    s = make(limit=2 * MB, clock=clock)
    c = cls(s)
    n = 0
    while not s.evictions:
        assert put(s, b"key%05d" % n, exptime=100 if n < 8 else 0) == Outcome.STORED
        n += 1
        juggle(s, c)
    # the oldest item was evicted when the class filled: the other 7 short-lived ones are at
    # the COLD tail
    assert lru_keys(s, c, COLD)[-7:] == [b"key%05d" % i for i in range(7, 0, -1)]
    evicted = s.evictions
    clock.advance(101)
    assert put(s, b"fresh") == Outcome.STORED
    # one COLD pull reclaims up to five dead items; a chunk is free then, nothing is evicted
    assert (s.reclaimed, s.evictions) == (5, evicted)
    assert put(s, b"fresh2") == Outcome.STORED
    assert (s.reclaimed, s.evictions) == (5, evicted)  # a free chunk was left
    stats = {x.cid: x for x in s.class_stats()}[c.cid]
    assert stats.counters["reclaimed"] == 5
    assert stats.counters["expired_unfetched"] == 5


def test_temp_items_are_never_evicted_and_the_maintainer_reclaims_them() -> None:
    clock = ManualClock(T0)
    s = make(limit=2 * MB, clock=clock, temp_lru=True, temporary_ttl=61)
    c = cls(s)
    n = 0
    while put(s, b"key%05d" % n, exptime=30) == Outcome.STORED:
        n += 1
    assert s.evictions == 0 and n > 100
    assert c.lru_size(TEMP) == n
    assert c.outofmemory > 0
    clock.advance(31)
    juggle(s, c)  # at most 500 pulls of 5 items per juggle, as memcached's
    assert s.reclaimed == min(n, 2500)
    for _ in range(n // 2500):
        juggle(s, c)
    assert c.lru_size(TEMP) == 0
    assert s.reclaimed == n


def test_flat_lru_never_moves_between_lists() -> None:
    s = make(segmented=False)
    c = cls(s)
    for i in range(10):
        put(s, b"key%03d" % i)
        get(s, b"key%03d" % i)
        get(s, b"key%03d" % i)
    assert c.lru_size(COLD) == 10
    assert counter(s, c, "moves_to_warm") == 0


def test_maintainer_backs_off_an_idle_class_and_counts_its_passes() -> None:
    s = make()
    c = cls(s)
    m = Maintainer(s)
    assert m.run_once(MIN_SLEEP_US) == MIN_SLEEP_US  # nothing to do anywhere: 1 ms to start
    assert c.words[W_JUGGLE_BACKOFF] == MIN_SLEEP_US
    m.run_once(MIN_SLEEP_US)
    assert c.words[W_JUGGLE_BACKOFF] == MIN_SLEEP_US + MIN_SLEEP_US // 8
    for _ in range(100):
        m.run_once(MAX_SLEEP_US)
    assert c.words[W_JUGGLE_BACKOFF] == MAX_SLEEP_US
    for i in range(10):
        put(s, b"key%03d" % i)
    m.run_once(MAX_SLEEP_US)  # moves happen: the back-off halves
    assert c.words[W_JUGGLE_BACKOFF] == MAX_SLEEP_US // 2
    assert c.lru_size(COLD) == 8
    assert s.lru_maintainer_juggles == 103


def test_stats_reset_zeroes_the_lru_counters() -> None:
    s = make()
    c = cls(s)
    for i in range(10):
        put(s, b"key%03d" % i)
        get(s, b"key%03d" % i)
    juggle(s, c)
    assert counter(s, c, "moves_to_cold") and counter(s, c, "hits_to_hot")
    s.reset_stats()
    assert counter(s, c, "moves_to_cold") == counter(s, c, "hits_to_hot") == 0
    assert c.lru_size(COLD) == 8  # the lists themselves are state, not counters


@pytest.mark.parametrize("segmented", [True, False])
def test_delete_and_overwrite_keep_every_list_consistent(segmented: bool) -> None:
    s = make(limit=2 * MB, segmented=segmented)
    for i in range(30_000):
        put(s, b"key%05d" % (i % 5000))
        if i % 3 == 0:
            get(s, b"key%05d" % (i % 700))
        if i % 7 == 0:
            s.delete(b"key%05d" % (i % 900))
        if segmented and i % 500 == 0:
            for c in s.classes[1:]:
                juggle(s, c)
    total = 0
    for c in s.classes[1:]:
        for sub in range(SUB_LRUS):
            total += len(lru_keys(s, c, sub))
    assert total == s.curr_items == len(s.index)


def _twin_lists(clock: ManualClock) -> tuple[Store, Store]:
    """Two stores with the same HOT list: idle items, an expired one, an ACTIVE one."""
    twins = make(clock=clock), make(clock=clock)
    for s in twins:
        for i in range(12):
            put(s, b"key%03d" % i, exptime=T0 + 5 if i == 6 else 0)
        put(s, b"col000")  # COLD already holds an item: the run goes before it
        with s.lock:
            c = cls(s)
            h = s.index.get(b"col000")
            assert h is not None
            s.do_move(c, c, h >> 6, h, COLD)
        get(s, b"key009")
        get(s, b"key009")  # ACTIVE: the run stops there
    return twins


def _lists(s: Store) -> list[list[bytes]]:
    return [lru_keys(s, cls(s), sub) for sub in range(SUB_LRUS)]


def test_the_hot_spill_moves_the_idle_run_as_tail_pulls_one_by_one_would() -> None:
    clock = ManualClock(T0)
    spill, single = _twin_lists(clock)
    clock.advance(10)  # key006 has expired; every item is idle 10 s
    c1, c2 = cls(spill), cls(single)
    total = sum(c1.lru_bytes(sub) for sub in (HOT, WARM, COLD))
    with spill.lock:
        assert spill.do_spill(c1.cid, HOT, total, 0, clock.now, 4) == 4  # at most ``most``
        # up to the expired item: key004, key005, then it stops (do_pull_tail reclaims it)
        assert spill.do_spill(c1.cid, HOT, total, 0, clock.now, 500) == 2
        assert spill.do_pull_tail(c1.cid, HOT, total, 0, 0, clock.now) == 2  # reclaim + move
        assert spill.do_spill(c1.cid, HOT, total, 0, clock.now, 500) == 1  # key008
        assert spill.do_spill(c1.cid, HOT, total, 0, clock.now, 500) == 0  # ACTIVE key009
    with single.lock:
        for _ in range(6 + 1 + 1):
            assert single.do_pull_tail(c2.cid, HOT, total, 0, 0, clock.now) > 0
    assert _lists(spill) == _lists(single)
    assert lru_keys(spill, c1, COLD) == [b"key%03d" % i for i in (8, 7, 5, 4, 3, 2, 1, 0)] + [
        b"col000"]
    assert lru_keys(spill, c1, HOT) == [b"key011", b"key010", b"key009"]
    for sub in (HOT, COLD):
        assert c1.lru_bytes(sub) == c2.lru_bytes(sub) > 0
    assert counter(spill, c1, "moves_to_cold") == counter(single, c2, "moves_to_cold") == 8
    # then the juggle goes on as memcached's would: ACTIVE key009 to WARM, and HOT keeps
    # what its 20% allows only while the items are younger than its age limit
    assert juggle(spill, c1) == juggle(single, c2) > 0
    assert _lists(spill) == _lists(single)


def test_the_hot_spill_empties_hot_and_fills_an_empty_cold() -> None:
    clock = ManualClock(T0)
    s = make(clock=clock)
    c = cls(s)
    for i in range(5):
        put(s, b"key%03d" % i)
    clock.advance(3)
    with s.lock:
        assert s.do_spill(c.cid, HOT, 10**9, 1, clock.now, 500) == 5  # by age alone
    assert lru_keys(s, c, HOT) == []
    assert lru_keys(s, c, COLD) == [b"key%03d" % i for i in range(4, -1, -1)]
    assert c.tail(COLD) == s.index.get(b"key000")
    for k in (b"key000", b"key004"):
        assert get(s, k) and where(s, k)[0] == COLD
    put(s, b"key005")
    assert lru_keys(s, c, HOT) == [b"key005"]  # the lists stay usable at both ends
    s.delete(b"key002")
    assert lru_keys(s, c, COLD) == [b"key004", b"key003", b"key001", b"key000"]


def test_the_warm_walk_rescues_active_tail_items_as_the_tail_pull_does() -> None:
    twins = make(warm_lru_pct=100), make(warm_lru_pct=100)  # WARM may hold every item
    for s in twins:
        for i in range(10):
            put(s, b"key%03d" % i)
            get(s, b"key%03d" % i)
            get(s, b"key%03d" % i)
        juggle(s, cls(s))  # all ten are ACTIVE in HOT: each goes to WARM, losing ACTIVE
        assert len(lru_keys(s, cls(s), WARM)) == 10
        for i in (0, 1, 2, 3, 4, 5, 6, 8):  # read again: ACTIVE again, at WARM's tail end
            get(s, b"key%03d" % i)
    rot, ref = twins
    c1, c2 = cls(rot), cls(ref)
    assert where(rot, b"key000")[0] == WARM and where(rot, b"key000")[1] & ACTIVE
    total = sum(c2.lru_bytes(sub) for sub in (HOT, WARM, COLD))
    now = rot.clock.now
    with rot.lock:
        assert rot.do_warm_walk(c1.cid, total, 10**6, now, 5) == 5  # a tail walk's tries
        assert rot.do_warm_walk(c1.cid, total, 10**6, now, 5) == 2  # key005, key006
        assert rot.do_warm_walk(c1.cid, total, 10**6, now, 5) == 0  # key007: idle, WARM in share
    with ref.lock:
        assert ref.do_pull_tail(c2.cid, WARM, total, 0, 10**6, ref.clock.now) == 5
    assert lru_keys(rot, c1, WARM)[2:] == lru_keys(ref, c2, WARM)[:8]  # the first five moves
    assert lru_keys(rot, c1, WARM)[:3] == [b"key006", b"key005", b"key004"]
    assert lru_keys(rot, c1, WARM)[-1] == b"key007"
    assert counter(rot, c1, "moves_within_lru") == 7
    assert not any(where(rot, b"key%03d" % i)[1] & ACTIVE for i in range(10) if i != 8)
    assert where(rot, b"key008")[1] & ACTIVE  # behind the idle key007: not reached
    with rot.lock:
        assert rot.do_warm_walk(c1.cid, total, 10**6, now, 5) == 0
    # the tail pull's next walk rescues key005 and key006 too, and both end in the same lists
    assert juggle(rot, c1) == 0 and juggle(ref, c2) > 0
    assert _lists(rot) == _lists(ref)
    assert counter(ref, c2, "moves_within_lru") == 7


def test_the_warm_walk_moves_what_single_warm_pulls_move() -> None:
    twins = make(warm_lru_pct=10), make(warm_lru_pct=10)
    for s in twins:
        for i in range(10):
            put(s, b"key%03d" % i)
            get(s, b"key%03d" % i)
            get(s, b"key%03d" % i)
        with s.lock:  # the ten ACTIVE HOT items to WARM, one pull each (no spill: all ACTIVE)
            for _ in range(10):
                assert s.do_pull_tail(cls(s).cid, HOT, 10**9, 0, 10**6, s.clock.now) == 1
        assert len(lru_keys(s, cls(s), WARM)) == 10
    spill, single = twins
    c1, c2 = cls(spill), cls(single)
    total = sum(c1.lru_bytes(sub) for sub in (HOT, WARM, COLD))
    with spill.lock:
        assert spill.do_warm_walk(c1.cid, total, 10**6, spill.clock.now, 500) == 9  # 10% stays
    with single.lock:
        for _ in range(9):
            assert single.do_pull_tail(c2.cid, WARM, total, 0, 10**6, single.clock.now) == 1
        assert single.do_pull_tail(c2.cid, WARM, total, 0, 10**6, single.clock.now) == 0
    assert _lists(spill) == _lists(single)
    assert lru_keys(spill, c1, WARM) == [b"key009"]
    assert counter(spill, c1, "moves_to_cold") == counter(single, c2, "moves_to_cold") == 9
    assert c1.lru_bytes(COLD) == c2.lru_bytes(COLD) > 0


def test_the_warm_walk_mixes_rescues_and_moves_to_cold_as_single_pulls_do() -> None:
    """WARM's tail alternating ACTIVE and idle items (reads spread over a cache): one walk
    ends with the lists, counts and byte totals that successive tail pulls leave."""
    twins = make(warm_lru_pct=30), make(warm_lru_pct=30)
    for s in twins:
        for i in range(20):
            put(s, b"key%03d" % i)
            get(s, b"key%03d" % i)
            get(s, b"key%03d" % i)
        with s.lock:  # all twenty ACTIVE HOT items to WARM, idle there
            for _ in range(20):
                assert s.do_pull_tail(cls(s).cid, HOT, 10**9, 0, 10**6, s.clock.now) == 1
        for i in range(0, 20, 3):  # every third read again: ACTIVE among idle ones
            get(s, b"key%03d" % i)
    walk, single = twins
    c1, c2 = cls(walk), cls(single)
    total = sum(c1.lru_bytes(sub) for sub in (HOT, WARM, COLD))
    with walk.lock:
        moved = walk.do_warm_walk(c1.cid, total, 10**6, walk.clock.now, 500)
    pulled = 0
    with single.lock:
        while n := single.do_pull_tail(c2.cid, WARM, total, 0, 10**6, single.clock.now):
            pulled += n
    assert moved == pulled > 0
    assert _lists(walk) == _lists(single)
    assert lru_keys(walk, c1, COLD) and lru_keys(walk, c1, WARM)
    for sub in (WARM, COLD):
        assert c1.lru_bytes(sub) == c2.lru_bytes(sub)
        assert c1.lru_size(sub) == c2.lru_size(sub) == len(lru_keys(walk, c1, sub))
    for name in ("moves_to_cold", "moves_within_lru"):
        assert counter(walk, c1, name) == counter(single, c2, name) > 0
    assert not any(where(walk, k)[1] & ACTIVE for k in lru_keys(walk, c1, WARM))


def test_one_juggle_call_moves_a_bounded_number_of_items() -> None:
    """The maintainer holds the lock for one call: a WARM list far over its share drains over
    several calls, ``iterations`` rounds' worth of items at a time, not all at once."""
    s = make(warm_lru_pct=10)
    c = cls(s)
    for i in range(200):
        put(s, b"key%03d" % i)
        get(s, b"key%03d" % i)
        get(s, b"key%03d" % i)
    with s.lock:  # every item to WARM (each is ACTIVE in HOT), one pull each
        while s.do_pull_tail(c.cid, HOT, 10**9, 0, 10**6, s.clock.now):
            pass
    assert c.lru_size(WARM) == 200
    calls = 0
    while True:
        before = counter(s, c, "moves_to_cold")
        with s.lock:
            did = s.do_juggle(c.cid, s.clock.now, 10)
        moved = counter(s, c, "moves_to_cold") - before
        assert moved <= 10 * 5 + 5, moved  # TAIL_TRIES a round, and one more walk
        calls += 1
        if not did:
            break
    assert c.lru_size(WARM) == 20  # 10% of the bytes in the end
    assert calls >= 4
