"""The slab rebalancer thread: ``slabs reassign``, ``slabs automove`` and the moves themselves.

memcached splits this over its LRU maintainer (the automove check, once a second) and a slab
mover thread. One thread does both here: it carries out a requested move in batches
(``pagemover.PageMove``), pausing between batches so request threads get the lock and the GIL,
and once a second it runs the automover (``automove.Automover``) when ``slab_automove`` is 1.
With ``slab_automove`` 2 the store calls ``evicted`` on every allocation that had to evict, and
a page is moved to that class from any class with a page to spare (memcached's aggressive
mode). Requests made while a move runs are refused (``BUSY``), as memcached refuses them.

Settings that ``slabs automove`` changes at run time (level, ratio), a queued ``slabs
reassign`` and whether a move runs are words of the node's shared settings area
(``storage/settings.py``): the thread runs in the supervisor while the command runs in a worker
process, so the thread polls the request word every ``POLL`` seconds while it waits. A request
is checked and queued under the store's lock (one step across processes); the eviction hook of
automove 2 is always installed (when moves are enabled) and reads the level, because the store
it hooks is every process's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import IntEnum

from memcache_server.storage.automove import Automover, ClassSample
from memcache_server.storage.pagemover import POOL, PageMove
from memcache_server.storage.segment import Word
from memcache_server.storage.settings import (
    S_AUTOMOVE,
    S_AUTOMOVE_RATIO,
    S_MOVING,
    S_REASSIGN_DST,
    S_REASSIGN_PENDING,
    S_REASSIGN_PICK,
    S_REASSIGN_SRC,
    RealWord,
    private_words,
)
from memcache_server.storage.store import Store

__all__ = ["Rebalancer", "Reassign"]

# Slots emptied per lock hold, so a move adds little to request latency. Measured in-process
# on a full class of 100-byte items (5,461 a page, each needing an eviction and a copy): 256
# slots held the lock 2.3 ms, 64 slots 0.56 ms; a whole page takes about 50 ms of CPU either way.
BATCH = 32
PAUSE = 0.0005  # seconds between batches, so a move never monopolises the lock or the GIL
POLL = 0.1  # seconds between looks at the shared request word while idle


class Reassign(IntEnum):
    """memcached's reassign_result_type."""

    OK = 0
    RUNNING = 1
    BADCLASS = 2
    NOSPARE = 3
    SAME = 4


class Rebalancer(threading.Thread):
    """Carries out page moves; any thread of any process may call ``reassign``,
    ``set_automove``."""

    automove = Word(S_AUTOMOVE)
    ratio = RealWord(S_AUTOMOVE_RATIO)
    moving = Word(S_MOVING)  # 1 while a page move runs (`slab_reassign_running`)
    _pending = Word(S_REASSIGN_PENDING)
    _src = Word(S_REASSIGN_SRC)
    _dst = Word(S_REASSIGN_DST)
    _pick = Word(S_REASSIGN_PICK)  # round-robin cursor of slabs_reassign_pick_any

    def __init__(
        self,
        store: Store,
        enabled: bool,
        automove: int,
        ratio: float,
        window: int,
        maintainer: bool = True,
        words: memoryview | None = None,
    ) -> None:
        super().__init__(name="slab-rebalancer", daemon=True)
        self.store = store
        self.words = words if words is not None else private_words()
        self.reals = self.words.cast("B").cast("d")
        self.enabled = enabled  # -o no_slab_reassign: no moves at all (the thread is not started)
        self.ratio = ratio
        self.window = window
        self.maintainer = maintainer  # -o no_lru_maintainer: no automove checks, as memcached
        self.move: PageMove | None = None  # the move this thread carries out
        self.moving = 0
        self._pending = 0
        self._pick = 0
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._auto: Automover | None = None
        # Told of every automover decision (memcached logs it to `watch sysevents`).
        self.on_decision: Callable[[int, int], None] | None = None
        self.set_automove(automove)

    # ------------------------------------------------------------------ requests

    @property
    def running(self) -> bool:
        return bool(self.moving or self._pending)

    def reassign(self, src: int, dst: int) -> Reassign:
        """memcached's slabs_reassign: checks in its order, then queues the move."""
        with self.store.lock:
            result = self.do_reassign(src, dst)
        if result == Reassign.OK:
            self._wake.set()
        return result

    def do_reassign(self, src: int, dst: int) -> Reassign:
        """``reassign`` with the store's lock held by the caller."""
        if self.running:
            return Reassign.RUNNING
        if src == dst:
            return Reassign.SAME
        if src == -1:
            src = self._pick_any(dst)
        largest = len(self.store.classes) - 1
        if not (POOL <= src <= largest and POOL <= dst <= largest):
            return Reassign.BADCLASS
        spare = self.store.pool_pages if src == POOL else self.store.classes[src].npages
        if spare < 2:
            return Reassign.NOSPARE
        self._src = src
        self._dst = dst
        self._pending = 1
        return Reassign.OK

    def _pick_any(self, dst: int) -> int:
        classes = self.store.classes
        largest = len(classes) - 1
        pick = self._pick
        for _ in range(largest):
            pick = pick + 1 if pick < largest else 1
            if pick != dst and classes[pick].npages > 1:
                self._pick = pick
                return pick
        self._pick = pick
        return -1

    def set_automove(self, level: int) -> None:
        """``slabs automove <0|1|2>``: at 2, every eviction asks for a page (see ``evicted``)."""
        self.automove = level
        self.store.on_class_evict = self.evicted if self.enabled else None
        self._wake.set()

    def evicted(self, cid: int) -> None:
        """Called by the store (under its lock) after an eviction in ``cid``: with automove 2,
        a page for that class, from any class with one to spare."""
        if self.automove == 2 and not self.running and self.do_reassign(-1, cid) == Reassign.OK:
            self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    # ------------------------------------------------------------------ the thread

    def run(self) -> None:
        next_check = time.monotonic() + 1.0
        while not self._stopped.is_set():
            with self.store.lock:
                if self._pending:
                    self.move = PageMove(self.store, self._src, self._dst)
                    self.moving = 1
                    self._pending = 0
            move = self.move
            if move is not None:
                try:
                    finished = move.begin() and self._carry(move)
                finally:
                    self.move = None
                    self.moving = 0
                if finished and move.dst == POOL:
                    next_check = time.monotonic()  # reclaiming: look again at once
            now = time.monotonic()
            if self.automove == 1 and self.maintainer and now >= next_check:
                next_check = now + 1.0
                self._check()
            if not self._pending:
                timeout = max(next_check - time.monotonic(), 0.01) if self.automove == 1 else 5
                self._idle(timeout)

    def _idle(self, timeout: float) -> None:
        """Wait ``timeout`` seconds, or less once a request arrives from any process (the
        shared words are polled) or a level changes."""
        level = self.automove
        end = time.monotonic() + timeout
        while not self._stopped.is_set():
            left = end - time.monotonic()
            if left <= 0 or self._wake.wait(min(POLL, left)):
                break
            if self._pending or self.automove != level:
                break
        self._wake.clear()

    def _carry(self, move: PageMove) -> bool:
        """Empty the page batch by batch; True once it has reached its destination."""
        while not self._stopped.is_set():
            if move.step(BATCH):
                return True
            time.sleep(PAUSE)
        return False

    def _samples(self) -> dict[int, ClassSample]:
        return {s.cid: ClassSample.of(s) for s in self.store.class_stats()}

    def _check(self) -> None:
        """One automover check (memcached runs it once a second)."""
        if self._auto is None:
            self._auto = Automover(self.window, self.ratio, self._samples())
            return
        self._auto.ratio = self.ratio
        decision = self._auto.run(self._samples())
        if decision is not None:
            self.reassign(*decision)  # refused while a move runs, as memcached's is
            if self.on_decision is not None:
                self.on_decision(*decision)
