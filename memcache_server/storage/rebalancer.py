"""The slab rebalancer thread: ``slabs reassign``, ``slabs automove`` and the moves themselves.

memcached splits this over its LRU maintainer (the automove check, once a second) and a slab
mover thread. One thread does both here: it carries out a requested move in batches
(``pagemover.PageMove``), pausing between batches so request threads get the lock and the GIL,
and once a second it runs the automover (``automove.Automover``) when ``slab_automove`` is 1.
With ``slab_automove`` 2 the store calls ``evicted`` on every allocation that had to evict, and
a page is moved to that class from any class with a page to spare (memcached's aggressive
mode). Requests made while a move runs are refused (``BUSY``), as memcached refuses them.

Settings that ``slabs automove`` changes at run time (level, ratio) live here.

A requested move and whether one runs live in the segment (``store.mover_words``), so a
``slabs reassign`` read by any worker process reaches the thread, which runs in the supervisor
only; the check-and-queue is made under the store's lock, which every process shares. Another
process cannot set this thread's event, so once the store is shared the thread looks for
requests every ``POLL`` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import IntEnum

from memcache_server.storage.automove import Automover, ClassSample
from memcache_server.storage.pagemover import POOL, PageMove
from memcache_server.storage.proclock import ProcessLock
from memcache_server.storage.store import Store

__all__ = ["Rebalancer", "Reassign"]

# Slots emptied per lock hold, so a move adds little to request latency. Measured in-process
# on a full class of 100-byte items (5,461 a page, each needing an eviction and a copy): 256
# slots held the lock 2.3 ms, 64 slots 0.56 ms; a whole page takes about 50 ms of CPU either way.
BATCH = 32
PAUSE = 0.0005  # seconds between batches, so a move never monopolises the lock or the GIL
POLL = 0.05  # seconds between looks for a request from another process (shared store only)
P_PENDING, P_SRC, P_DST, P_RUNNING = 0, 1, 2, 3  # store.mover_words


class Reassign(IntEnum):
    """memcached's reassign_result_type."""

    OK = 0
    RUNNING = 1
    BADCLASS = 2
    NOSPARE = 3
    SAME = 4


class Rebalancer(threading.Thread):
    """Carries out page moves; any thread may call ``reassign``, ``set_automove``."""

    def __init__(
        self,
        store: Store,
        enabled: bool,
        automove: int,
        ratio: float,
        window: int,
        maintainer: bool = True,
    ) -> None:
        super().__init__(name="slab-rebalancer", daemon=True)
        self.store = store
        self.enabled = enabled  # -o no_slab_reassign: no moves at all (the thread is not started)
        self.automove = automove
        self.ratio = ratio
        self.window = window
        self.maintainer = maintainer  # -o no_lru_maintainer: no automove checks, as memcached
        self.move: PageMove | None = None
        self.words = store.mover_words
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._pick = 0  # round-robin cursor of slabs_reassign_pick_any
        self._auto: Automover | None = None
        # Told of every automover decision (memcached logs it to `watch sysevents`).
        self.on_decision: Callable[[int, int], None] | None = None
        self.set_automove(automove)

    # ------------------------------------------------------------------ requests

    @property
    def running(self) -> bool:
        return bool(self.words[P_RUNNING] or self.words[P_PENDING])

    @property
    def moving(self) -> bool:
        """Whether a page is being moved now (a queued request aside)."""
        return bool(self.words[P_RUNNING])

    def _take_pending(self) -> tuple[int, int] | None:
        w = self.words
        with self.store.lock:
            if not w[P_PENDING]:
                return None
            w[P_PENDING] = 0
            w[P_RUNNING] = 1
            return int(w[P_SRC]), int(w[P_DST])

    def reassign(self, src: int, dst: int) -> Reassign:
        """memcached's slabs_reassign: checks in its order, then queues the move."""
        with self.store.lock:
            outcome = self._queue(src, dst)
        if outcome == Reassign.OK:
            self._wake.set()
        return outcome

    def _queue(self, src: int, dst: int) -> Reassign:
        """``reassign`` with the store's lock held."""
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
        w = self.words
        w[P_SRC] = src
        w[P_DST] = dst
        w[P_PENDING] = 1
        return Reassign.OK

    def _pick_any(self, dst: int) -> int:
        classes = self.store.classes
        largest = len(classes) - 1
        for _ in range(largest):
            self._pick = self._pick + 1 if self._pick < largest else 1
            if self._pick != dst and classes[self._pick].npages > 1:
                return self._pick
        return -1

    def set_automove(self, level: int) -> None:
        """``slabs automove <0|1|2>``: 2 hooks the store's eviction path, 0/1 unhook it."""
        self.automove = level
        self.store.on_class_evict = self.evicted if level == 2 and self.enabled else None
        self._wake.set()

    def evicted(self, cid: int) -> None:
        """Called by the store (under its lock) after an eviction in ``cid`` (automove 2)."""
        if not self.running and self._queue(-1, cid) == Reassign.OK:
            self._wake.set()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    # ------------------------------------------------------------------ the thread

    def run(self) -> None:
        next_check = time.monotonic() + 1.0
        while not self._stopped.is_set():
            pending = self._take_pending()
            if pending is not None:
                self.move = PageMove(self.store, *pending)
            move = self.move
            if move is not None:
                try:
                    finished = move.begin() and self._carry(move)
                finally:
                    self.move = None
                    self.words[P_RUNNING] = 0
                if finished and move.dst == POOL:
                    next_check = time.monotonic()  # reclaiming: look again at once
            now = time.monotonic()
            if self.automove == 1 and self.maintainer and now >= next_check:
                next_check = now + 1.0
                self._check()
            if not self.words[P_PENDING]:
                timeout = max(next_check - time.monotonic(), 0.01) if self.automove == 1 else 5
                if isinstance(self.store.lock, ProcessLock):
                    timeout = min(timeout, POLL)
                self._wake.wait(timeout)
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
