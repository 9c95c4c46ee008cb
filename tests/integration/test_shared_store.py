"""One store served by several processes: the segment and the cross-process lock.

Real forked processes over one shared store (no server), so the storage layer's guarantees
are checked where they are made: what one process stores another reads, CAS and incr/decr
counts are exact under contention, and a process killed while holding the lock does not
leave the store locked or inconsistent.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable

from memcache_server.protocol.constants import VALUE_KEY_OFFSET, value_header
from memcache_server.storage.clock import ManualClock
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


def test_a_process_killed_holding_the_lock_leaves_the_store_usable() -> None:
    store = shared_store()
    store.store(Mode.SET, b"before", 0, 0, b"b\r\n")
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            store.lock.acquire()
            os.write(ready_w, b"x")
            signal.pause()  # killed here, lock held
        finally:
            os._exit(1)
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x"
    os.close(ready_r)
    os.kill(pid, signal.SIGKILL)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == -signal.SIGKILL
    done: list[Outcome] = []
    t = threading.Thread(target=lambda: done.append(
        store.store(Mode.SET, b"after", 0, 0, b"a\r\n")), daemon=True)
    t.start()
    t.join(10)
    assert done == [Outcome.STORED]
    assert value_of(store, b"before") == b"b" and value_of(store, b"after") == b"a"


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
