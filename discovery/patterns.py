"""Caching strategies on top of any memcached client: lazy loading and write-through.

The cache is an optimisation, the data store is the truth, so every helper here treats a cache
failure (an exception from any cache call) as "no cache" and carries on with the data store: a
cache outage makes requests slower, never failed. Exceptions from the data store (the loader,
the writer) are the application's and propagate unchanged.

Pure policy: no sockets of its own, no threads. ``cache`` is anything with ``get``, ``set``,
``add`` and ``delete`` that raises on a connection error (``ClusterClient`` passes itself in that
mode). With a client that swallows errors instead (``ignore_exc=True``), an outage looks like a
miss and a failed ``add`` like a held lock: still correct, but a caller may wait up to
``lock_wait`` before loading.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

__all__ = [
    "DEFAULT_GUARD",
    "CacheLike",
    "StampedeGuard",
    "lazy_load",
    "write_through",
]

log = logging.getLogger(__name__)
V = TypeVar("V")


class CacheLike(Protocol):
    """The four calls the patterns use. ``get`` returns ``None`` on a miss; ``add`` returns
    ``False`` when the key already exists; every call raises on a connection error."""

    def get(self, key: str) -> Any: ...

    def set(self, key: str, value: Any, expire: int = 0) -> bool: ...

    def add(self, key: str, value: Any, expire: int = 0) -> bool: ...

    def delete(self, key: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class StampedeGuard:
    """One loader per missing hot key: the first caller takes a short lock key with ``add``.

    The others poll the cache every ``poll`` seconds for up to ``lock_wait`` seconds for the
    value to appear, then load it themselves (a bounded wait: a slow or crashed loader delays
    the others, it never blocks them). ``lock_ttl`` (whole seconds, memcached's granularity)
    frees the lock if its holder dies before deleting it.
    """

    lock_ttl: int = 5
    lock_wait: float = 5.0
    poll: float = 0.05
    suffix: str = ":lock"


DEFAULT_GUARD = StampedeGuard()


def _cache_call(what: str, key: str, call: Callable[[], Any]) -> tuple[bool, Any]:
    """Run one cache call; ``(False, None)`` if the cache failed (logged, never raised)."""
    try:
        return True, call()
    except Exception as exc:  # any cache failure degrades to the data store
        log.debug("cache %s %r failed: %s", what, key, exc)
        return False, None


def lazy_load(
    cache: CacheLike,
    key: str,
    loader: Callable[[], V],
    ttl: int,
    *,
    guard: StampedeGuard | None = DEFAULT_GUARD,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> V:
    """Cache-aside read: the cached value of ``key``, or ``loader()`` stored with ``ttl``.

    - hit: the cached value (it must round-trip through the client's serde; without one,
      store bytes);
    - miss: ``loader()`` is called, its result stored for ``ttl`` seconds and returned; a
      ``None`` result is returned but not cached (memcached cannot tell it from a miss);
    - cache down (``get`` raises): ``loader()`` is returned, nothing else is tried;
    - ``set`` fails after loading: the loaded value is still returned;
    - with ``guard``, concurrent misses on one key run the loader once (see
      ``StampedeGuard``); ``guard=None`` lets every caller load.
    """
    ok, value = _cache_call("get", key, lambda: cache.get(key))
    if not ok:
        return loader()
    if value is not None:
        return cast(V, value)
    if guard is None:
        return _load_and_store(cache, key, loader, ttl)
    lock_key = key + guard.suffix
    deadline = clock() + guard.lock_wait
    while True:
        ok, locked = _cache_call("add", lock_key, lambda: cache.add(lock_key, b"1", guard.lock_ttl))
        if not ok:
            return _load_and_store(cache, key, loader, ttl)
        if locked:
            try:
                # Another caller may have loaded, stored and unlocked between our miss and our
                # add: look once more before loading.
                ok, value = _cache_call("get", key, lambda: cache.get(key))
                if ok and value is not None:
                    return cast(V, value)
                return _load_and_store(cache, key, loader, ttl)
            finally:
                _cache_call("delete", lock_key, lambda: cache.delete(lock_key))
        if clock() >= deadline:
            log.debug("gave up waiting for the loader of %r", key)
            return _load_and_store(cache, key, loader, ttl)
        sleep(guard.poll)
        ok, value = _cache_call("get", key, lambda: cache.get(key))
        if not ok:
            return loader()
        if value is not None:
            return cast(V, value)


def _load_and_store(cache: CacheLike, key: str, loader: Callable[[], V], ttl: int) -> V:
    value = loader()
    if value is not None:
        _cache_call("set", key, lambda: cache.set(key, value, ttl))
    return value


def write_through(
    cache: CacheLike,
    key: str,
    value: V,
    store_write: Callable[[V], object],
    ttl: int,
) -> bool:
    """Write ``value`` to the data store, then to the cache; ``True`` if the cache has it.

    - the store is written first: if ``store_write`` raises, the cache is not touched and the
      exception propagates (the cache never holds a value the store refused);
    - cache ``set`` fails or is refused: the stale cached copy is deleted so the next read
      loads the new value; returns ``False``;
    - cache down altogether: returns ``False``; a node that was unreachable during the write
      may still hold the old value when it comes back, until ``ttl`` expires it, which is why
      cached values should always carry a TTL.
    """
    store_write(value)
    ok, stored = _cache_call("set", key, lambda: cache.set(key, value, ttl))
    if ok and stored:
        return True
    _cache_call("delete", key, lambda: cache.delete(key))
    return False
