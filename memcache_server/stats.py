"""Counters: plain ints owned by one worker each, summed only when someone asks.

Why: a counter increment on the request path must cost nothing (an attribute ``+= 1``), never a
lock. ``stats`` and the metrics collector aggregate a snapshot across workers at read time; a
slightly stale sum is fine, as it is in memcached.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from memcache_server.protocol import constants as C

__all__ = ["ThreadStats", "ServerCounters", "THREAD_FIELDS", "PrefixStats", "murmur3_32"]

PREFIX_HASH_SIZE = 256

# Per-worker counters, named as memcached names its thread stats.
THREAD_FIELDS: tuple[str, ...] = (
    "get_cmds",
    "get_misses",
    "get_expired",
    "get_flushed",
    "touch_cmds",
    "touch_misses",
    "delete_misses",
    "incr_misses",
    "decr_misses",
    "cas_misses",
    "bytes_read",
    "bytes_written",
    "flush_cmds",
    "conn_yields",
    "auth_cmds",
    "auth_errors",
    "idle_kicks",
    "meta_cmds",
    "store_too_large",
    "store_no_memory",
    "ssl_handshake_errors",
    "read_buf_oom",
    "response_obj_oom",
)


class ThreadStats:
    """One worker's counters. Only its owner thread writes them."""

    __slots__ = THREAD_FIELDS

    get_cmds: int
    get_misses: int
    get_expired: int
    get_flushed: int
    touch_cmds: int
    touch_misses: int
    delete_misses: int
    incr_misses: int
    decr_misses: int
    cas_misses: int
    bytes_read: int
    bytes_written: int
    flush_cmds: int
    conn_yields: int
    auth_cmds: int
    auth_errors: int
    idle_kicks: int
    meta_cmds: int
    store_too_large: int
    store_no_memory: int
    ssl_handshake_errors: int
    read_buf_oom: int
    response_obj_oom: int

    def __init__(self) -> None:
        for name in THREAD_FIELDS:
            setattr(self, name, 0)

    def reset(self) -> None:
        for name in THREAD_FIELDS:
            setattr(self, name, 0)


def sum_thread_stats(all_stats: list[ThreadStats]) -> dict[str, int]:
    return {name: sum(getattr(s, name) for s in all_stats) for name in THREAD_FIELDS}


@dataclass
class ServerCounters:
    """Connection counters shared by the acceptor and workers (written under the GIL only by
    the acceptor, except ``curr_connections`` which workers decrement through ``closed()``)."""

    total_connections: int = 0
    rejected_connections: int = 0
    curr_connections: int = 0
    connection_structures: int = 0
    accepting_conns: int = 1
    listen_disabled_num: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class PrefixStats:
    """Counters per key prefix (the key up to the first delimiter byte); keys without the
    delimiter are not counted, as in memcached. Workers record concurrently: one lock."""

    def __init__(self, delimiter: bytes) -> None:
        self.delimiter = delimiter
        self._lock = threading.Lock()
        # prefix -> [get, hit, set, del]; insertion order kept per bucket for the dump order
        self._stats: dict[bytes, list[int]] = {}

    def _entry(self, key: bytes) -> list[int] | None:
        i = key.find(self.delimiter)
        if i < 0:
            return None
        prefix = key[:i]
        e = self._stats.get(prefix)
        if e is None:
            e = self._stats[prefix] = [0, 0, 0, 0]
        return e

    def record_get(self, key: bytes, hit: bool) -> None:
        with self._lock:
            e = self._entry(key)
            if e is not None:
                e[0] += 1
                e[1] += hit
        return None

    def record_set(self, key: bytes) -> None:
        with self._lock:
            e = self._entry(key)
            if e is not None:
                e[2] += 1

    def record_delete(self, key: bytes) -> None:
        with self._lock:
            e = self._entry(key)
            if e is not None:
                e[3] += 1

    def clear(self) -> None:
        with self._lock:
            self._stats.clear()

    def dump(self) -> bytes:
        with self._lock:
            items = list(self._stats.items())
        buckets: dict[int, list[tuple[bytes, list[int]]]] = {}
        for prefix, e in items:
            buckets.setdefault(murmur3_32(prefix) % PREFIX_HASH_SIZE, []).append((prefix, e))
        lines = []
        for b in sorted(buckets):
            for prefix, e in reversed(buckets[b]):  # memcached links new prefixes at the front
                lines.append(
                    b"PREFIX %b get %d hit %d set %d del %d\r\n" % (prefix, e[0], e[1], e[2], e[3])
                )
        lines.append(C.END)
        return b"".join(lines)


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86_32, memcached's default hash (here only for the prefix dump order)."""
    c1, c2, m = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed
    n = len(data)
    end = n - n % 4
    for i in range(0, end, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * c1) & m
        k = ((k << 15) | (k >> 17)) & m
        h ^= (k * c2) & m
        h = ((h << 13) | (h >> 19)) & m
        h = (h * 5 + 0xE6546B64) & m
    tail = data[end:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * c1) & m
        k = ((k << 15) | (k >> 17)) & m
        h ^= (k * c2) & m
    h ^= n
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    h ^= h >> 16
    return h
