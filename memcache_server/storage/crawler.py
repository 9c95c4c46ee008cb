"""The LRU crawler: a background thread that reclaims expired items nobody reads again.

Lazy expiry alone would let dead items hold memory until their class evicts; memcached's crawler
walks items and frees the expired ones. Ours walks each class's slots in small batches
(``BATCH``), taking the store lock once per batch, sleeping between batches so the request path
never waits long. A full pass runs every ``interval`` seconds, or at once when asked
(``lru_crawler crawl <classes>``); ``lru_crawler disable`` leaves the thread idle.
"""

from __future__ import annotations

import threading

from memcache_server.storage.store import Store

__all__ = ["Crawler"]

BATCH = 500


class Crawler(threading.Thread):
    """The crawler thread. ``enabled``/``sleep_us`` may be changed by any thread (plain
    attribute writes); crawl requests go through ``request()``, refused while a pass runs."""

    def __init__(
        self, store: Store, sleep_us: int, interval: float = 5.0, enabled: bool = True
    ) -> None:
        super().__init__(name="lru-crawler", daemon=True)
        self.store = store
        self.sleep_us = sleep_us
        self.interval = interval
        self.enabled = enabled
        self.running = False
        self.starts = 0
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._requested: list[int] | None = None  # classes asked for by `lru_crawler crawl`
        self._tocrawl = 0

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
        False while a pass is running or queued (memcached answers BUSY)."""
        with self._lock:
            if self.running or self._requested is not None:
                return False
            self._requested = cids
            self._tocrawl = tocrawl
        self._wake.set()
        return True

    def run(self) -> None:
        while not self._stopped.is_set():
            with self._lock:
                cids, self._requested = self._requested, None
                tocrawl = self._tocrawl
                if self.enabled:
                    self.running = True
            if self.enabled:
                try:
                    self.crawl_once(cids, tocrawl)
                finally:
                    self.running = False
            self._wake.wait(self.interval)
            self._wake.clear()

    def crawl_once(self, cids: list[int] | None = None, tocrawl: int = 0) -> int:
        """One pass over ``cids`` (default every class); returns how many items it reclaimed."""
        self.running = True
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
            self.running = False
        return total
