"""Counters: plain ints owned by one worker each, summed only when someone asks.

Why: a counter increment on the request path must cost nothing (an attribute ``+= 1``), never a
lock. ``stats`` and the metrics collector aggregate a snapshot across workers at read time; a
slightly stale sum is fine, as it is in memcached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ThreadStats", "ServerCounters", "THREAD_FIELDS"]

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
