"""Lazy loading and write-through against a real node, and against a cache that is down."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from procs import ServerProc, free_port, start_node
from pymemcache.client.base import Client, PooledClient

from memcache_server.discovery.patterns import StampedeGuard, lazy_load, write_through


@pytest.fixture(scope="module")
def shared_node() -> Iterator[ServerProc]:
    srv = start_node()
    yield srv
    srv.stop()


@pytest.fixture
def cache(shared_node: ServerProc) -> Iterator[PooledClient]:
    # replies are waited for: an add sent with noreply cannot tell who got the lock
    client = PooledClient(shared_node.address, default_noreply=False, connect_timeout=2, timeout=2)
    client.flush_all()
    yield client
    client.close()


@pytest.fixture
def dead_cache() -> Iterator[Client]:
    """A client of a port nothing listens on: every call is refused."""
    client = Client(("127.0.0.1", free_port()), default_noreply=False, connect_timeout=0.5)
    yield client
    client.close()


class Store:
    """A data store that counts its reads and writes."""

    def __init__(self, delay: float = 0.0) -> None:
        self.data: dict[str, bytes] = {}
        self.loads = 0
        self.writes = 0
        self.delay = delay
        self._lock = threading.Lock()

    def loader(self, key: str) -> bytes:
        with self._lock:
            self.loads += 1
        time.sleep(self.delay)
        return self.data[key]

    def write(self, key: str, value: bytes) -> None:
        self.writes += 1
        self.data[key] = value


def test_miss_loads_and_stores_then_hits(cache: PooledClient) -> None:
    store = Store()
    store.data["user:1"] = b"alice"
    assert lazy_load(cache, "user:1", lambda: store.loader("user:1"), ttl=60) == b"alice"
    assert cache.get("user:1") == b"alice"
    assert lazy_load(cache, "user:1", lambda: store.loader("user:1"), ttl=60) == b"alice"
    assert store.loads == 1
    assert cache.get("user:1:lock") is None  # the lock is released


def test_ttl_is_applied(cache: PooledClient) -> None:
    lazy_load(cache, "short", lambda: b"v", ttl=1)
    assert cache.get("short") == b"v"
    deadline = time.monotonic() + 5
    while cache.get("short") is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert cache.get("short") is None


def test_none_is_returned_not_cached(cache: PooledClient) -> None:
    calls = []
    for _ in range(2):
        assert lazy_load(cache, "absent", lambda: calls.append(1), ttl=60) is None
    assert len(calls) == 2


def test_stampede_runs_one_loader(cache: PooledClient) -> None:
    store = Store(delay=0.3)
    store.data["hot"] = b"value"
    results: list[bytes] = []
    guard = StampedeGuard(lock_ttl=5, lock_wait=5.0, poll=0.02)

    def reader() -> None:
        results.append(lazy_load(cache, "hot", lambda: store.loader("hot"), 60, guard=guard))

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == [b"value"] * 8
    assert store.loads == 1


def test_a_lock_won_after_another_loader_finished_does_not_load_again(
    cache: PooledClient,
) -> None:
    """The race behind a double load: our get misses, then another caller loads, stores and
    unlocks, then our add wins the lock. Played here in that order on a real node."""
    store = Store()
    store.data["late"] = b"value"

    class OtherLoaderFinishesFirst:
        def get(self, key: str) -> object:
            return cache.get(key)

        def add(self, key: str, value: bytes, expire: int) -> bool:
            cache.set("late", b"value", 60)  # the other caller's store, then its unlock
            return bool(cache.add(key, value, expire, noreply=False))

        def delete(self, key: str) -> object:
            return cache.delete(key)

        def set(self, key: str, value: bytes, expire: int) -> object:
            return cache.set(key, value, expire)

    other = OtherLoaderFinishesFirst()
    got = lazy_load(other, "late", lambda: store.loader("late"), 60, guard=StampedeGuard())
    assert got == b"value"
    assert store.loads == 0
    assert cache.get("late" + StampedeGuard().suffix) is None  # the lock was released


def test_without_guard_every_miss_loads(cache: PooledClient) -> None:
    store = Store(delay=0.2)
    store.data["hot"] = b"value"
    threads = [
        threading.Thread(target=lazy_load, args=(cache, "hot", lambda: store.loader("hot"), 60))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert store.loads == 1  # the default guard is on
    cache.delete("hot")
    store.loads = 0
    threads = [
        threading.Thread(
            target=lambda: lazy_load(cache, "hot", lambda: store.loader("hot"), 60, guard=None)
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert store.loads == 4


def test_a_stuck_lock_delays_but_never_blocks(cache: PooledClient) -> None:
    cache.add("k:lock", b"1", expire=30)  # a loader that died holding the lock
    started = time.monotonic()
    guard = StampedeGuard(lock_ttl=5, lock_wait=0.3, poll=0.05)
    assert lazy_load(cache, "k", lambda: b"fresh", 60, guard=guard) == b"fresh"
    assert 0.25 < time.monotonic() - started < 3
    assert cache.get("k") == b"fresh"


def test_a_failing_loader_releases_the_lock(cache: PooledClient) -> None:
    def broken() -> bytes:
        raise LookupError("store says no")

    with pytest.raises(LookupError):
        lazy_load(cache, "k", broken, 60)
    assert cache.get("k:lock") is None
    assert lazy_load(cache, "k", lambda: b"second try", 60) == b"second try"


def test_cache_down_degrades_to_the_store(dead_cache: Client) -> None:
    store = Store()
    store.data["user:1"] = b"alice"
    for _ in range(3):
        assert lazy_load(dead_cache, "user:1", lambda: store.loader("user:1"), 60) == b"alice"
    assert store.loads == 3
    assert (
        write_through(dead_cache, "user:1", b"bob", lambda v: store.write("user:1", v), 60) is False
    )
    assert store.data["user:1"] == b"bob"


def test_write_through_updates_store_then_cache(cache: PooledClient) -> None:
    store = Store()
    assert write_through(cache, "user:2", b"carol", lambda v: store.write("user:2", v), 60)
    assert store.data["user:2"] == b"carol"
    assert cache.get("user:2") == b"carol"


def test_write_through_store_failure_leaves_cache_alone(cache: PooledClient) -> None:
    cache.set("user:3", b"old")

    def refuse(value: bytes) -> None:
        raise PermissionError("read-only store")

    with pytest.raises(PermissionError):
        write_through(cache, "user:3", b"new", refuse, 60)
    assert cache.get("user:3") == b"old"


def test_write_through_refused_by_cache_drops_the_stale_copy(cache: PooledClient) -> None:
    store = Store()
    cache.set("blob", b"old")
    big = b"x" * (2 * 1024 * 1024)  # over the node's 1 MB item limit: SERVER_ERROR
    assert write_through(cache, "blob", big, lambda v: store.write("blob", v), 60) is False
    assert store.data["blob"] == big
    assert cache.get("blob") is None  # the next read goes to the store, not the old value
