"""The LRU crawler: a background thread that reclaims expired items nobody reads again.

Lazy expiry alone would let dead items hold memory until their class evicts; memcached's crawler
walks items and frees the expired ones. Ours walks each class's slots in small batches
(``BATCH``), taking the store lock once per batch, sleeping between batches so the request path
never waits long. A full pass runs every ``interval`` seconds, or at once when asked.
"""

from __future__ import annotations

import threading

from memcache_server.storage.store import Store

__all__ = ["Crawler"]

BATCH = 500


class Crawler(threading.Thread):
    def __init__(self, store: Store, sleep_us: int, interval: float = 5.0) -> None:
        super().__init__(name="lru-crawler", daemon=True)
        self.store = store
        self.sleep_us = sleep_us
        self.interval = interval
        self.running = False
        self.starts = 0
        self._wake = threading.Event()
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()
        self._wake.set()

    def crawl_now(self) -> None:
        self._wake.set()

    def run(self) -> None:
        while not self._stopped.is_set():
            self.crawl_once()
            self._wake.wait(self.interval)
            self._wake.clear()

    def crawl_once(self) -> int:
        """One pass over every class; returns how many items it reclaimed."""
        self.running = True
        self.starts += 1
        total = 0
        pause = self.sleep_us * BATCH / 1_000_000
        try:
            for cid in range(1, len(self.store.classes)):
                start = 0
                while start >= 0 and not self._stopped.is_set():
                    if not self.store.classes[cid].pages:
                        break
                    start, n = self.store.crawl(cid, start, BATCH)
                    total += n
                    if pause:
                        self._stopped.wait(pause)
        finally:
            self.running = False
        return total
