"""The LRU maintainer: the background thread that keeps each class's HOT/WARM/COLD lists in
shape (memcached's lru_maintainer_thread).

Without it, HOT would only drain when an allocation finds COLD empty, WARM would never give
back memory, and expired items would wait for an allocation or the crawler. Every pass juggles
each class (``LruOps.do_juggle``) unless the class is backing off: a class where nothing moved
waits 1/8 longer each time, up to a second, and one where something moved halves its wait.
The thread sleeps for the shortest wait left.

Rules: it only touches the store through its lock, a bounded number of tail pulls per hold
(``HOLD_ITERATIONS``), so requests never wait long behind it; and it waits for the lock
without spinning (a plain blocking acquire), so a request that wants it takes it first. Its
pacing state (each class's next juggle and back-off) and its wake-up counter live in the
segment, like everything else the LRU keeps, so when the node runs several processes this
thread can run in the supervisor alone.
Unlike memcached it always sleeps at least MIN_SLEEP_US between passes: under a GIL a spinning
maintainer would take the interpreter away from the request loops.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

from memcache_server.storage.lru import JUGGLE_ITERATIONS
from memcache_server.storage.slabclass import W_JUGGLE_BACKOFF, W_JUGGLE_NEXT
from memcache_server.storage.store import Store

__all__ = ["Maintainer", "MIN_SLEEP_US", "MAX_SLEEP_US"]

MIN_SLEEP_US = 1000  # memcached's MIN_LRU_MAINTAINER_SLEEP
MAX_SLEEP_US = 1_000_000  # memcached's MAX_LRU_MAINTAINER_SLEEP
# Juggle rounds per lock hold (a round is up to three tail pulls). memcached's maintainer holds
# an LRU's lock for one tail pull. 100 rounds held the store's lock long enough that the
# workers behind it spun out and slept on it: on a fresh node, where the maintainer has the
# most to move, the 10-key multi-get ran 1.22x faster with 10 (memcaslap, alternated pairs);
# get50, and the multi-get of a node already filled by other workloads, did not move.
HOLD_ITERATIONS = 10


class Maintainer(threading.Thread):
    """The maintainer thread of one store; ``stop()`` from any thread."""

    def __init__(self, store: Store) -> None:
        super().__init__(name="lru-maintainer", daemon=True)
        self.store = store
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def run(self) -> None:
        to_sleep = MIN_SLEEP_US
        while not self._stopped.wait(to_sleep / 1_000_000):
            to_sleep = self.run_once(to_sleep)

    def run_once(self, last_sleep: int) -> int:
        """One pass over every class after sleeping ``last_sleep`` microseconds; returns how
        long to sleep before the next (tests call it directly, with a manual clock)."""
        st = self.store
        last_sleep = max(last_sleep, MIN_SLEEP_US)
        to_sleep = MAX_SLEEP_US
        with self._held():
            st.lru_maintainer_juggles += 1
        for cid in range(1, len(st.classes)):
            w = st.classes[cid].words
            nxt = int(w[W_JUGGLE_NEXT])
            nxt = nxt - last_sleep if nxt > last_sleep else 0
            w[W_JUGGLE_NEXT] = nxt
            if nxt > 0:
                to_sleep = min(to_sleep, nxt)
                continue
            # A class with no items has nothing to juggle: it backs off without the lock (the
            # lists' counts are read racily; a class filling now is juggled next pass).
            did = self.juggle(cid) if st.classes[cid].items else 0
            backoff = int(w[W_JUGGLE_BACKOFF])
            if did == 0:
                backoff = backoff + backoff // 8 if backoff else MIN_SLEEP_US
                backoff = min(backoff, MAX_SLEEP_US)
            elif backoff > 0:
                backoff //= 2
                if backoff < MIN_SLEEP_US:
                    backoff = 0
            w[W_JUGGLE_BACKOFF] = backoff
            w[W_JUGGLE_NEXT] = backoff
            to_sleep = min(to_sleep, backoff)
        return max(to_sleep, MIN_SLEEP_US)

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        """The store's lock, taken by a plain blocking acquire: no spin, so a request waiting
        for it goes first (a request spins, since its wait is its latency; this is not)."""
        lock = self.store.lock
        lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def juggle(self, cid: int) -> int:
        """memcached's lru_maintainer_juggle for one class, in lock holds of HOLD_ITERATIONS."""
        st = self.store
        did = 0
        left = JUGGLE_ITERATIONS
        while left > 0 and not self._stopped.is_set():
            n = min(HOLD_ITERATIONS, left)
            with self._held():
                done = st.do_juggle(cid, st.clock.now, n)
            did += done
            left -= n
            if done < n:
                break
        return did
