"""Page moves between slab classes, on a real Store and a ManualClock (no threads).

What a move must keep: every live item readable with its value, flags, CAS and expiry; the LRU
order; large (chunked) items whole; the accounting that ``stats slabs`` prints; and the memory
limit. What it may drop: expired items, and (when the class is full) the class's coldest items.
"""

from __future__ import annotations

import random

from memcache_server.storage.automove import Automover, ClassSample
from memcache_server.storage.clock import ManualClock
from memcache_server.storage.pagemover import POOL, PageMove
from memcache_server.storage.slabclass import CHUNKED, IN_USE, NIL
from memcache_server.storage.slabs import PAGE_SIZE
from memcache_server.storage.store import Mode, Store
from tests.unit.test_store import KB, MB, T0, get, make, put

SMALL = b"v" * 100


def class_of(store: Store, nbytes: int, nkey: int = 8) -> int:
    return store.table.class_for(store.table.item_size(nkey, 0, nbytes + 2))


def move(store: Store, src: int, dst: int, batch: int = 97) -> PageMove:
    m = PageMove(store, src, dst)
    assert m.begin()
    steps = 0
    while not m.step(batch):
        steps += 1
        assert steps < 10_000
    return m


def lru_keys(store: Store, cid: int) -> list[bytes]:
    return [k for k, _, _ in store.dump_class(cid, 0)]


def check_free_list(store: Store, cid: int) -> None:
    """The free list is a well-formed doubly linked list of exactly the free slots."""
    c = store.classes[cid]
    seen = []
    prev = NIL
    s = c.free_head
    while s != NIL:
        assert c.q[s + 1] == prev
        assert not c.u1[8 * s + 41] & IN_USE
        seen.append(s)
        prev, s = s, c.q[s + 2]
        assert len(seen) <= c.nslots
    assert len(seen) == c.free_count
    assert c.used_chunks + c.free_count == c.npages * c.perslab


def fill(store: Store, n: int, value: bytes = SMALL, prefix: bytes = b"k") -> list[bytes]:
    keys = [b"%s%07d" % (prefix, i) for i in range(n)]
    for k in keys:
        assert put(store, k, value, flags=7) == 0
    return keys


def test_move_rescues_every_item_when_the_class_has_room() -> None:
    store = make()
    cid = class_of(store, 100)
    per = store.classes[cid].perslab
    keys = fill(store, per * 2 + per // 2)  # 3 pages, the last half full
    for k in keys[: per // 2]:
        store.delete(k)  # free room on the first page
    live = keys[per // 2 :]
    order = lru_keys(store, cid)
    cas_before = {k: store.get_parts(k)[2] for k in live[:50]}  # type: ignore[index]
    dst = class_of(store, 10 * KB)
    move(store, cid, dst)
    c = store.classes[cid]
    assert c.npages == 2 and store.classes[dst].npages == 1
    assert c.nslots == 2 * per
    assert store.moves.rescues == per // 2 and store.moves.evictions_nomem == 0
    assert store.moves.slabs_moved == 1
    assert lru_keys(store, cid) == order
    for k in live:
        assert get(store, k) == SMALL
    for k, cas in cas_before.items():
        assert store.get_parts(k)[2] == cas  # type: ignore[index]
    check_free_list(store, cid)
    check_free_list(store, dst)
    assert store.curr_items == len(live)


def test_a_full_class_loses_its_coldest_items_not_the_page() -> None:
    clock = ManualClock(T0)
    store = make(clock=clock)
    cid = class_of(store, 100)
    per = store.classes[cid].perslab
    keys = fill(store, per * 3)  # exactly 3 full pages, no free chunk
    clock.advance(120)
    hot = keys[-per:]  # the last page's items, read recently: the LRU head
    for k in hot:
        assert get(store, k) == SMALL
    move(store, cid, POOL)
    # memcached's sums: each of the page's items is one rescue or one eviction; every copy
    # here needed room made first, so each counts as the eviction it cost
    assert store.moves.evictions_nomem == per
    assert store.moves.rescues == 0
    for k in hot:
        assert get(store, k) == SMALL
    assert sum(get(store, k) is None for k in keys[:per]) == per  # the coldest went
    assert store.pool_pages == 1 and store.moves.slabs_moved == 1
    check_free_list(store, cid)


def test_expired_items_on_the_page_are_dropped_not_rescued() -> None:
    clock = ManualClock(T0)
    store = make(clock=clock)
    cid = class_of(store, 100)
    per = store.classes[cid].perslab
    keys = [b"k%07d" % i for i in range(per * 2)]
    for i, k in enumerate(keys):
        store.store(Mode.SET, k, 0, 10 if i >= per else 0, SMALL + b"\r\n")
    clock.advance(11)
    move(store, cid, POOL)
    assert store.moves.rescues == 0 and store.moves.evictions_nomem == 0
    assert all(get(store, k) == SMALL for k in keys[:per])
    assert store.curr_items == per


def chunk_lists(store: Store) -> dict[int, list[int]]:
    """Every chunked item's data chunks, read from the chains in the segment."""
    out = {}
    for h in store.index.handles_snapshot():
        c = store.classes[h & 63]
        if c.u1[8 * (h >> 6) + 41] & CHUNKED:
            out[h] = store.do_data_chunks(c, h >> 6)
    return out


def test_chunked_items_survive_moves_of_their_header_and_data_pages() -> None:
    store = make()
    rng = random.Random(1)
    big = rng.randbytes(700 * KB)
    keys = [b"big%d" % i for i in range(6)]
    for k in keys:
        assert put(store, k, big) == 0
    for k in keys[:2]:
        store.delete(k)  # room on the first pages for what the last pages hold
    largest = store.table.largest
    data_classes = {dh & 63 for chunks in chunk_lists(store).values() for dh in chunks}
    assert largest in data_classes
    for cid in sorted(data_classes):
        if store.classes[cid].npages > 1:
            move(store, cid, POOL, batch=1)
    assert store.moves.chunk_rescues >= 2 and store.moves.evictions_nomem == 0
    for k in keys[2:]:
        assert get(store, k) == big
    # now the header chunks' class: long keys put the headers of new big items there
    long_keys = [b"L" * 200 + b"%d" % i for i in range(40)]
    for k in long_keys:
        assert put(store, k, big[: 520 * KB]) == 0
    header_cid = store.classes[next(h & 63 for h in chunk_lists(store))].cid
    store.delete(long_keys[0])
    for k in long_keys[1:]:
        assert get(store, k) == big[: 520 * KB]
    pages = store.classes[header_cid].npages
    if pages > 1:
        move(store, header_cid, POOL)
    for k in keys[2:]:
        assert get(store, k) == big
    for k in long_keys[1:]:
        v = get(store, k)
        assert v is None or v == big[: 520 * KB]
    check_free_list(store, largest)


def test_pool_pages_are_taken_first_and_counted_as_allocated() -> None:
    store = make(limit=8 * MB)
    cid = class_of(store, 100)
    fill(store, 200_000)  # fills the limit with one class
    pages = store.classes[cid].npages
    malloced = store.malloced
    move(store, cid, POOL)
    assert store.pool_pages == 1
    assert store.malloced == malloced  # the pooled page is still ours
    big = class_of(store, 10 * KB)
    for i in range(300):
        put(store, b"b%d" % i, b"x" * 10 * KB)
    assert store.pool_pages == 0
    # its first page is the pooled one; the limit leaves room for no other (memcached's rule)
    assert store.classes[big].npages == 1
    assert store.classes[cid].npages == pages - 1
    assert store.used_memory() <= store.memory_limit


def test_pool_to_class_and_lowered_limit_releases_pooled_pages() -> None:
    store = make(limit=16 * MB)
    cid = class_of(store, 100)
    fill(store, 400_000)
    for _ in range(3):
        move(store, cid, POOL)
    assert store.pool_pages == 3
    dst = class_of(store, 10 * KB)
    m = PageMove(store, POOL, dst)
    assert m.begin() and m.step(1)
    assert store.pool_pages == 2 and store.classes[dst].npages == 1
    store.set_memory_limit(store.used_memory() - PAGE_SIZE)
    assert store.pool_pages == 1  # one released, the store back under its limit
    assert store.used_memory() <= store.memory_limit


def test_move_refused_without_a_spare_page_and_the_emptied_page_released() -> None:
    store = make()
    cid = class_of(store, 100)
    fill(store, 10)
    assert not PageMove(store, cid, POOL).begin()
    assert not PageMove(store, POOL, cid).begin()
    per = store.classes[cid].perslab
    fill(store, per + 1, prefix=b"m")
    malloced = store.malloced
    move(store, cid, POOL)
    assert store.malloced == malloced  # the page is in the pool, still allocated
    c = store.classes[cid]
    assert c.nslots == per
    # the page went back to the system: its headers read as zeros again
    assert not any(c.field(1, 0, 1)) and not any(c.field(8, 41, 1))


def test_writes_between_batches_never_land_on_the_page_being_emptied() -> None:
    store = make()
    cid = class_of(store, 100)
    per = store.classes[cid].perslab
    keys = fill(store, per * 2 + 10)
    for k in keys[:per]:
        store.delete(k)
    m = PageMove(store, cid, POOL)
    assert m.begin()
    i = 0
    while not m.step(50):
        # deletes and new sets while the move runs
        store.delete(keys[per + i])
        put(store, b"new%d" % i, SMALL)
        i += 1
    c = store.classes[cid]
    assert c.npages == 2
    for j in range(i):
        assert get(store, b"new%d" % j) == SMALL
        assert get(store, keys[per + j]) is None
    for k in keys[per + i :]:
        assert get(store, k) == SMALL
    check_free_list(store, cid)


def sample(evicted: int = 0, age: int = 0, pages: int = 0, free: int = 0, per: int = 100,
           oom: int = 0) -> ClassSample:
    return ClassSample(evicted, oom, age, pages, free, per)


def test_automover_moves_from_the_oldest_to_the_young_evicting_class() -> None:
    window = 4
    auto = Automover(window, 0.8, {1: sample(pages=10), 5: sample(pages=1)})
    decisions = []
    for t in range(1, 12):
        d = auto.run({1: sample(age=100 + t, pages=10), 5: sample(evicted=t * 10, age=2, pages=1)})
        decisions.append(d)
    # nothing until the window has filled once, then old class 1 feeds evicting class 5
    assert decisions[:window] == [None] * window
    assert decisions[window] == (1, 5)


def test_automover_leaves_balanced_classes_alone() -> None:
    auto = Automover(3, 0.8, {1: sample(pages=10), 5: sample(pages=10)})
    for t in range(1, 20):
        assert auto.run({1: sample(evicted=t, age=50, pages=10),
                         5: sample(evicted=t, age=45, pages=10)}) is None


def test_automover_reclaims_a_quiet_class_with_free_pages_to_the_pool() -> None:
    auto = Automover(3, 0.8, {2: sample(pages=10, free=500)})
    first = auto.run({2: sample(pages=10, free=500)})
    assert first == (2, 0)
    auto2 = Automover(3, 0.8, {2: sample(pages=9, free=500)})
    # memcached sums the window before recording this check, so growth counts from the next
    assert auto2.run({2: sample(pages=10, free=500)}) == (2, 0)
    # ...and a class that grew within the window is not reclaimed until it has been quiet
    assert auto2.run({2: sample(pages=10, free=500)}) is None
    assert auto2.run({2: sample(pages=10, free=500)}) is None
    assert auto2.run({2: sample(pages=10, free=500)}) == (2, 0)


def test_the_class_giving_a_page_gets_no_new_page_meanwhile() -> None:
    store = make(limit=64 * MB)
    cid = class_of(store, 100)
    per = store.classes[cid].perslab
    fill(store, per * 2)  # two full pages, memory to spare
    m = PageMove(store, cid, POOL)
    assert m.begin()
    m.step(10)
    # sets that need a chunk now evict from the class's LRU instead of growing it
    for i in range(50):
        put(store, b"late%d" % i, SMALL)
    while not m.step(500):
        pass
    c = store.classes[cid]
    assert c.npages == 1
    for i in range(50):
        assert get(store, b"late%d" % i) == SMALL
    check_free_list(store, cid)
    assert put(store, b"after", SMALL) == 0  # and it grows again once the move is done


def test_a_move_never_takes_the_store_past_its_limit() -> None:
    """Small classes carry more metadata per page than large ones: a page moved from a 10 KB
    class to a 100-byte class at the limit is released rather than overspending."""
    store = make(limit=8 * MB)
    small = class_of(store, 100)
    big = class_of(store, 10 * KB)
    put(store, b"first-small", SMALL)
    for i in range(2000):
        put(store, b"b%d" % i, b"x" * 10 * KB)
    assert store.evictions > 0  # at the limit
    limit = store.memory_limit
    assert store.used_memory() <= limit
    for _ in range(3):
        move(store, big, small)
        assert store.used_memory() <= limit
        for i in range(20_000):
            put(store, b"s%d" % i, SMALL)
        assert store.used_memory() <= limit
    assert store.moves.slabs_moved == 3
    assert store.classes[small].npages >= 2  # the freed budget reached the small class
