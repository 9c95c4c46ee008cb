"""One store served by several processes: the segment and the cross-process lock.

Real forked processes over one shared store (no server), so the storage layer's guarantees
are checked where they are made: what one process stores another reads, CAS and incr/decr
counts are exact under contention, and a process killed while holding the lock does not
leave the store locked or inconsistent once the reaper has rescued the lock and repaired.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

from memcache_server.protocol.constants import VALUE_KEY_OFFSET, value_header
from memcache_server.storage.clock import ManualClock
from memcache_server.storage.proclock import ProcessLock, Rescue
from memcache_server.storage.repair import Repaired, repair
from memcache_server.storage.slabclass import IN_USE, NIL, SUB_LRUS, W_SUB
from memcache_server.storage.slabs import SlabTable
from memcache_server.storage.store import Mode, Outcome, Store, StoreLimits

MB = 1024 * 1024


def shared_store() -> Store:
    table = SlabTable.build(1.25, 48, 512 * 1024, MB, True)
    store = Store(table, StoreLimits(64 * MB, True, True), ManualClock(1_700_000_000),
                  value_header)
    store.key_offset = VALUE_KEY_OFFSET
    store.share()
    return store


def value_of(store: Store, key: bytes) -> bytes | None:
    parts = store.get_parts(key)
    return None if isinstance(parts, int) else parts[1][:-2]


def in_children(n: int, work: Callable[[int], bool]) -> list[int]:
    """Run ``work(i)`` in ``n`` forked processes at once; their exit codes (0: it held)."""
    pids = []
    for i in range(n):
        pid = os.fork()
        if pid == 0:  # the child never returns into pytest
            code = 1
            signal.alarm(60)  # bounded: a child stuck on a broken store dies and fails the test
            try:
                code = 0 if work(i) else 2
            finally:
                os._exit(code)
        pids.append(pid)
    return [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]


def test_what_one_process_stores_every_other_reads() -> None:
    store = shared_store()

    def write(i: int) -> bool:
        return all(store.store(Mode.SET, b"k%d:%d" % (i, j), 0, 0, b"v%d\r\n" % j)
                   == Outcome.STORED for j in range(3000))

    assert in_children(2, write) == [0, 0]  # enough keys to resize the index meanwhile
    assert all(value_of(store, b"k%d:%d" % (i, j)) == b"v%d" % j
               for i in range(2) for j in range(3000))
    assert store.curr_items == 6000
    store.store(Mode.SET, b"from-parent", 0, 0, b"p\r\n")
    assert in_children(1, lambda _: value_of(store, b"from-parent") == b"p") == [0]


def test_incr_and_decr_totals_are_exact_across_processes() -> None:
    store = shared_store()
    store.store(Mode.SET, b"n", 0, 0, b"1000000\r\n")

    def bump(i: int) -> bool:
        for _ in range(1500):
            store.incr_decr(b"n", 3, i % 2 == 0)
        return True

    assert in_children(4, bump) == [0] * 4
    assert value_of(store, b"n") == b"1000000"  # two added 3 x 1500, two took it away
    assert in_children(2, lambda _: bump(0)) == [0, 0]
    assert value_of(store, b"n") == b"%d" % (1_000_000 + 2 * 3 * 1500)


def test_cas_races_across_processes_count_exactly() -> None:
    store = shared_store()
    store.store(Mode.SET, b"c", 0, 0, b"0\r\n")
    rounds = 400

    def race(_: int) -> bool:
        won = 0
        while won < rounds:
            parts = store.get_parts(b"c")
            assert not isinstance(parts, int)
            n = int(parts[1][:-2])
            if store.store(Mode.CAS, b"c", 0, 0, b"%d\r\n" % (n + 1), parts[2]) == Outcome.STORED:
                won += 1
        return True

    assert in_children(3, race) == [0, 0, 0]
    assert value_of(store, b"c") == b"%d" % (3 * rounds)


def killed_holding_the_lock(store: Store, work: Callable[[], object]) -> int:
    """Fork a child that takes the store's lock, runs ``work`` and is SIGKILLed still holding
    it; returns its pid, reaped."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            store.lock.acquire()
            work()
            os.write(ready_w, b"x")
            signal.pause()  # killed here, lock held
        finally:
            os._exit(1)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x"
    os.close(ready_r)
    os.kill(pid, signal.SIGKILL)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == -signal.SIGKILL
    return pid


def consistent(store: Store) -> int:
    """Check every derived structure against the chunk metadata; the number of items."""
    live = set(store.index.handles_snapshot())
    assert len(live) == len(store.index) == store.curr_items
    seen = 0
    total = 0
    for lc in store.classes[1:]:
        n = 0
        for sub in range(SUB_LRUS):
            base = W_SUB + 4 * sub
            h, prev, k = int(lc.words[base]), NIL, 0
            while h != NIL:
                c, s = store.classes[h & 63], h >> 6
                assert h in live and c.u1[8 * s + 41] & IN_USE and c.q[s + 1] == prev
                assert c.u1[8 * s + 42] == sub
                assert store.index.get(store.do_key_of(c, s)) == h
                total += store.do_ntotal(c, s)
                prev, h, k = h, int(c.q[s + 2]), k + 1
            assert lc.words[base + 1] == prev and lc.words[base + 2] == k
            n += k
        assert lc.items == n
        seen += n
        free, f = 0, lc.free_head
        while f != NIL:
            assert not lc.u1[8 * f + 41]
            free, f = free + 1, int(lc.q[f + 2])
        assert free == lc.free_count == lc.nslots - lc.used_chunks
        assert lc.used_chunks == sum(1 for s in lc.all_slots() if lc.u1[8 * s + 41] & IN_USE)
    assert seen == len(live) and total == store.item_bytes
    return seen


def test_a_process_killed_holding_the_lock_is_rescued_and_the_store_repaired() -> None:
    store = shared_store()
    for i in range(200):
        store.store(Mode.SET, b"k%d" % i, 0, 0, b"v%d\r\n" % i)
    big = bytes(range(256)) * 3000  # chunked: 768,000 bytes over 512 KB chunks

    def half_done() -> None:
        now = store.clock.now
        # a replacement written but never linked: the old item is still in the index
        store.do_write_item(b"k1", 0, 0, b"new\r\n", now)
        # a chunked item whose header never became IN_USE: its data chunks are orphans
        outcome, h = store.do_write_item(b"big", 0, 0, big + b"\r\n", now)
        assert outcome == Outcome.STORED
        store.classes[h & 63].u1[8 * (h >> 6) + 41] = 0
        # a delete stopped between the index and the LRU
        k2 = store.index.get(b"k2")
        assert k2 is not None
        store.index.remove(b"k2", k2)
        # counters and an LRU link half updated
        store.curr_items += 7
        store.classes[1].words[W_SUB] = NIL  # the HOT list's head

    pid = killed_holding_the_lock(store, half_done)
    assert store.lock.rescue(pid + 10**6, lambda: None, patience=0.2) == Rescue.FREE
    assert not store.lock.acquire(timeout=0.2)  # still held by the dead process
    repaired: list[Repaired] = []
    assert store.lock.rescue(pid, lambda: repaired.append(repair(store))) == Rescue.REPAIRED
    assert repaired[0].duplicates == 1 and repaired[0].orphan_chunks >= 1
    assert value_of(store, b"k1") == b"new"  # the later write of the key won
    assert value_of(store, b"k2") == b"v2"  # its delete was never acknowledged: kept
    assert value_of(store, b"big") is None
    assert all(value_of(store, b"k%d" % i) == b"v%d" % i for i in range(3, 200))
    assert consistent(store) == 200
    assert store.store(Mode.SET, b"big", 0, 0, big + b"\r\n") == Outcome.STORED
    assert value_of(store, b"big") == big
    assert in_children(1, lambda _: value_of(store, b"big") == big) == [0]
    assert consistent(store) == 201


def test_a_lock_taken_with_no_owner_word_by_a_dead_process_is_released() -> None:
    store = shared_store()
    store.store(Mode.SET, b"before", 0, 0, b"b\r\n")
    lock = store.lock
    assert isinstance(lock, ProcessLock)

    def take_raw() -> None:  # the window between the semaphore and the owner word
        lock.owner[0] = 0

    pid = killed_holding_the_lock(store, take_raw)
    assert lock.rescue(pid, lambda: None, patience=0.3) == Rescue.ORPHANED
    done: list[Outcome] = []
    t = threading.Thread(target=lambda: done.append(
        store.store(Mode.SET, b"after", 0, 0, b"a\r\n")), daemon=True)
    t.start()
    t.join(10)
    assert done == [Outcome.STORED]
    assert value_of(store, b"before") == b"b" and value_of(store, b"after") == b"a"


def test_a_plain_acquire_waits_for_a_lock_another_process_holds() -> None:
    """``acquire()`` waits as ``threading.Lock``'s does (the semaphore reads the default
    timeout of -1 as a try): the store lock's holder in a test hook and a clean ``-e`` stop
    take it this way."""
    store = shared_store()
    lock = store.lock
    assert isinstance(lock, ProcessLock)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest: it holds the lock for 0.5 s
        code = 1
        try:
            with lock:
                os.write(w, b"x")
                time.sleep(0.5)
            code = 0
        finally:
            os._exit(code)
    try:
        assert os.read(r, 1) == b"x"
        started = time.monotonic()
        assert lock.acquire() is True
        waited = time.monotonic() - started
        assert lock.owner[0] == os.getpid()
        lock.release()
        assert waited > 0.2  # it waited for the holder, it did not give up at once
        assert lock.acquire(True, 0.05) is True  # a timeout still bounds the wait
        try:
            assert lock.acquire(False) is False
        finally:
            lock.release()
    finally:
        assert os.waitpid(pid, 0)[1] == 0
        os.close(r)
        os.close(w)


def test_class_and_store_counters_are_one_copy_for_every_process() -> None:
    store = shared_store()
    store.store(Mode.SET, b"hit", 0, 0, b"h\r\n")
    cid = store.table.class_for(store.table.item_size(3, 0, 3))

    def count(i: int) -> bool:
        out = bytearray()
        for _ in range(100):
            store.get_into(b"hit", out)  # get_hits
        store.store(Mode.SET, b"k%d" % i, 0, 0, b"v\r\n")  # cmd_set, total_items
        store.delete(b"k%d" % i)  # delete_hits
        return store.store(Mode.SET, b"gone%d" % i, 0, -1, b"v\r\n") == Outcome.STORED

    assert in_children(3, count) == [0, 0, 0]
    # crawler_reclaimed, reclaimed, crawler_items_checked: 3 dead items and the live one
    assert in_children(1, lambda _: store.crawl(cid, 0, 1000)[1] == 3) == [0]
    c = {cs.cid: cs for cs in store.class_stats()}[cid].counters
    assert (c["get_hits"], c["cmd_set"], c["delete_hits"]) == (300, 7, 3)
    assert (c["crawler_reclaimed"], c["reclaimed"], c["crawler_items_checked"]) == (3, 3, 4)
    assert (store.total_items, store.reclaimed, store.crawler_reclaimed) == (7, 3, 3)
    assert store.expired_unfetched == 3
    assert in_children(1, lambda _: store.reset_stats() is None) == [0]
    c = {cs.cid: cs for cs in store.class_stats()}[cid].counters
    assert not any(c.values()) and store.total_items == store.reclaimed == 0
    assert store.curr_items == 1  # a gauge: stats reset leaves it
