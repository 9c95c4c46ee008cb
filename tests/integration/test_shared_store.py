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
