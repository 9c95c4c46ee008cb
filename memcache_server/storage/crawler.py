"""The LRU crawler: a background thread that reclaims expired items nobody reads again.

Lazy expiry alone would let dead items hold memory until their class evicts; memcached's crawler
walks items and frees the expired ones. Ours walks each class's slots in small batches
(``BATCH``), taking the store lock once per batch, sleeping between batches so the request path
never waits long. A full pass runs every ``interval`` seconds, or soon after one is asked for
(``lru_crawler crawl <classes>``); ``lru_crawler disable`` leaves the thread idle.

Its settings (enabled, sleep) and a pending crawl request are words of the node's shared
settings area (``storage/settings.py``): the thread runs in the supervisor while the command
that changes them runs in some worker process. So the thread polls them every ``POLL``
seconds while it waits (a wake-up event only reaches a thread of the same process).
"""

from __future__ import annotations

import threading

from memcache_server.storage.segment import Word
from memcache_server.storage.settings import (
    S_CRAWL_CLASSES,
    S_CRAWL_PENDING,
    S_CRAWL_TOCRAWL,
    S_CRAWLER_ENABLED,
    S_CRAWLER_RUNNING,
    S_CRAWLER_SLEEP,
    S_CRAWLER_STARTS,
    private_words,
)
from memcache_server.storage.store import Store

__all__ = ["Crawler"]

# Slots per lock hold: 500 held the lock for about 550 us (a stall of every worker); 50 hold it
# about 55 us. The pause after a batch scales with it, so a pass takes as long as before.
BATCH = 50
POLL = 0.1  # seconds between looks at the shared request words while idle


def _mask(cids: list[int]) -> int:
    """Classes 1..63 as bits of one signed word (bit 0 is never a class)."""
    bits = 0
    for cid in cids:
        bits |= 1 << cid
    return bits - (1 << 64) if bits >= 1 << 63 else bits


def _classes(mask: int) -> list[int]:
    mask &= (1 << 64) - 1
    return [cid for cid in range(1, 64) if mask >> cid & 1]


class Crawler(threading.Thread):
    """The crawler thread. ``enabled``/``sleep_us`` may be changed by any thread of any process
    (shared words); crawl requests go through ``request()``, refused while a pass runs."""

    enabled = Word(S_CRAWLER_ENABLED)
    sleep_us = Word(S_CRAWLER_SLEEP)
    running = Word(S_CRAWLER_RUNNING)
    starts = Word(S_CRAWLER_STARTS)
    _pending = Word(S_CRAWL_PENDING)
    _requested = Word(S_CRAWL_CLASSES)
    _tocrawl = Word(S_CRAWL_TOCRAWL)

    def __init__(
        self,
        store: Store,
        sleep_us: int,
        interval: float = 5.0,
        enabled: bool = True,
        words: memoryview | None = None,
    ) -> None:
        super().__init__(name="lru-crawler", daemon=True)
        self.store = store
        self.words = words if words is not None else private_words()
        self.sleep_us = sleep_us
        self.interval = interval
        self.enabled = enabled
        self.running = 0
        self.starts = 0
        self._pending = 0
        self._wake = threading.Event()
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def crawl_now(self) -> None:
        self._wake.set()

    def set_enabled(self, on: bool) -> None:
        """``lru_crawler enable|disable``: a disabled crawler's thread idles."""
        self.enabled = on
        if on:
            self._wake.set()

    def request(self, cids: list[int], tocrawl: int = 0) -> bool:
        """Queue a pass over ``cids`` (checking at most ``tocrawl`` items per class, 0: all);
        False while a pass is running or queued (memcached answers BUSY). The store's lock
        makes the check and the queueing one step across processes."""
        with self.store.lock:
            if self.running or self._pending:
                return False
            self._requested = _mask(cids)
            self._tocrawl = tocrawl
            self._pending = 1
        self._wake.set()
        return True

    def _take_request(self) -> tuple[list[int] | None, int]:
        """The queued request, if any (its classes and tocrawl), marking a pass as running
        while the crawler is enabled."""
        with self.store.lock:
            cids = _classes(self._requested) if self._pending else None
            tocrawl = self._tocrawl
            self._pending = 0
            if self.enabled:
                self.running = 1
        return cids, tocrawl

    def run(self) -> None:
        while not self._stopped.is_set():
            cids, tocrawl = self._take_request()
            if self.enabled:
                try:
                    self.crawl_once(cids, tocrawl)
                finally:
                    self.running = 0
            self._idle()

    def _idle(self) -> None:
        """Wait ``interval`` seconds, or less once a request or an enable arrives (from any
        process: the shared words are polled)."""
        was_enabled = self.enabled
        waited = 0.0
        while waited < self.interval and not self._stopped.is_set():
            if self._wake.wait(min(POLL, self.interval - waited)):
                break
            waited += POLL
            if self._pending or (self.enabled and not was_enabled):
                break
        self._wake.clear()

    def crawl_once(self, cids: list[int] | None = None, tocrawl: int = 0) -> int:
        """One pass over ``cids`` (default every class); returns how many items it reclaimed."""
        self.running = 1
        self.starts += 1
        total = 0
        try:
            for cid in cids or range(1, len(self.store.classes)):
                if cid >= len(self.store.classes):
                    continue
                start = 0
                budget = tocrawl or (1 << 62)
                while start >= 0 and budget > 0 and not self._stopped.is_set():
                    if not self.store.classes[cid].npages:
                        break
                    batch = min(BATCH, budget)
                    start, n = self.store.crawl(cid, start, batch)
                    budget -= batch
                    total += n
                    pause = self.sleep_us * batch / 1_000_000
                    if pause:
                        self._stopped.wait(pause)
        finally:
            self.running = 0
        return total
