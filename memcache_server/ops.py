"""Operational commands: ``lru_crawler``, ``stats detail``, ``debugtime`` (and their state).

These are commands operators run from scripts and dashboards, rarely and never on the request
hot path; handlers run on the calling connection's worker thread. Runtime-tunable settings that
memcached lets these commands change (crawler sleep, tocrawl, detail on/off) live in ``OpsState``
on the node, not in the frozen config.

Per-prefix stats (``stats detail``): the executor's get/set/delete paths test one attribute,
``node.detail``, which is None while detail is off; only when it is on do they pay for recording.
``dump`` lists prefixes in memcached's order (its 256-bucket hash table keyed by MurmurHash3,
newest first within a bucket) so scripts diffing dumps see the same lines.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from memcache_server import watch
from memcache_server.protocol import constants as C
from memcache_server.protocol.numbers import strtoll, strtoul32
from memcache_server.slab_commands import cmd_slabs

if TYPE_CHECKING:
    from memcache_server.app import Node
    from memcache_server.executor import Session
    from memcache_server.protocol.framer import Request

__all__ = ["OpsState", "PrefixStats", "OPS_HANDLERS", "stats_detail", "uriencode", "murmur3_32"]

PREFIX_HASH_SIZE = 256
DETAIL_USAGE = b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"


class OpsState:
    """Settings the operational commands change at run time (memcached's ``settings``)."""

    def __init__(self, node: Node) -> None:
        cfg = node.config
        self.crawler_sleep = cfg.lru_crawler_sleep
        self.crawler_tocrawl = cfg.lru_crawler_tocrawl
        self.prefix_stats = PrefixStats(cfg.prefix_delimiter.encode()[:1] or b":")


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


def stats_detail(node: Node, args: list[bytes]) -> bytes:
    """``stats detail on|off|dump``: off keeps what was counted (dump still shows it)."""
    sub = args[1] if len(args) > 1 else b""
    ps = node.ops.prefix_stats
    if sub == b"on":
        node.detail = ps
        node.refresh_observed()
        return C.OK
    if sub == b"off":
        node.detail = None
        node.refresh_observed()
        return C.OK
    if sub == b"dump":
        return ps.dump()
    return DETAIL_USAGE


# ------------------------------------------------------------------ lru_crawler


def cmd_lru_crawler(s: Session, tokens: list[bytes]) -> None:
    node = s.node
    crawler = node.crawler
    n = len(tokens)
    sub = tokens[1] if n > 1 else b""
    out = s.out
    if n == 3 and sub == b"crawl":
        if not crawler.enabled:
            out += b"CLIENT_ERROR lru crawler disabled\r\n"
            return
        cids = _classes(tokens[2])
        if cids is None:
            out += b"BADCLASS invalid class id\r\n"
        elif not crawler.request(cids, node.ops.crawler_tocrawl):
            out += b"BUSY currently processing crawler request\r\n"
        else:
            out += C.OK
    elif n == 3 and sub == b"metadump":
        if not crawler.enabled:
            out += b"CLIENT_ERROR lru crawler disabled\r\n"
        elif not node.config.dump_enabled:
            out += b"ERROR metadump not allowed\r\n"
        elif out:
            out += b"ERROR cannot pipeline other commands before metadump\r\n"
        elif tokens[2] == b"hash":
            out += metadump(node, list(range(1, len(node.store.classes))))
        else:
            cids = _classes(tokens[2])
            if cids is None:
                out += b"BADCLASS invalid class id\r\n"
            else:
                out += metadump(node, cids)
    elif n == 3 and sub == b"tocrawl":
        v = strtoul32(tokens[2])
        if v is None:
            out += C.BAD_FORMAT
        else:
            node.ops.crawler_tocrawl = v
            out += C.OK
    elif n == 3 and sub == b"sleep":
        v = strtoul32(tokens[2])
        if v is None:
            out += C.BAD_FORMAT
        elif v > 1_000_000:
            out += b"CLIENT_ERROR sleep must be one second or less\r\n"
        else:
            node.ops.crawler_sleep = v
            crawler.sleep_us = v
            out += C.OK
    elif n == 2 and sub == b"enable":
        if crawler.enabled:
            out += b"ERROR failed to start lru crawler thread\r\n"
        else:
            crawler.set_enabled(True)
            out += C.OK
    elif n == 2 and sub == b"disable":
        crawler.set_enabled(False)
        out += C.OK
    else:
        out += C.ERROR


def _classes(arg: bytes) -> list[int] | None:
    """``all`` or comma-separated class ids 1..63 (which need not have pages), else None."""
    if arg == b"all":
        return list(range(1, 64))
    out = []
    for part in arg.split(b","):
        if not part:
            continue
        v = strtoul32(part)
        if v is None or not 1 <= v < 64:
            return None
        out.append(v)
    return out


def metadump(node: Node, cids: list[int]) -> bytes:
    """One ``key=... exp=... la=... cas=... fetch=... cls=... size=...`` line per live item of
    the classes, then ``END``. Times are absolute unix seconds (-1: never expires); keys are
    URI-encoded. Items are walked in slot order, a batch per lock hold."""
    lines = []
    for key, exp, atime, cas, fetched, cid, size in node.meta.walk(cids):
        fetch = b"yes" if fetched else b"no"
        lines.append(
            b"key=%b exp=%d la=%d cas=%d fetch=%s cls=%d size=%d\n"
            % (uriencode(key), exp if exp else -1, atime, cas, fetch, cid, size)
        )
    lines.append(C.END)
    return b"".join(lines)


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def uriencode(key: bytes) -> bytes:
    """memcached's uriencode: unreserved bytes as they are, every other byte as %XX."""
    if all(b in _UNRESERVED for b in key):
        return key
    return b"".join(bytes((b,)) if b in _UNRESERVED else b"%%%02X" % b for b in key)


# ------------------------------------------------------------------ debugtime


def cmd_debugtime(s: Session, tokens: list[bytes]) -> None:
    """``debugtime <seconds>``: move the server clock (only with --debug-time, as memcached
    has it only in debug builds), so expiry can be tested without sleeping."""
    if not s.node.config.debug_time:
        s.out += C.ERROR
        return
    if len(tokens) < 2:
        s.out += C.ERROR
        return
    delta = strtoll(tokens[1])
    if delta is None:
        s.out += C.ERROR
        return
    clock = s.node.clock
    clock.offset += delta
    clock.tick()
    s.out += C.OK


# ------------------------------------------------------------------ hashing


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


OPS_HANDLERS = {
    b"lru_crawler": cmd_lru_crawler,
    b"debugtime": cmd_debugtime,
    b"watch": watch.cmd_watch,
    b"slabs": cmd_slabs,
}


# ------------------------------------------------------------------ observing item requests
# Called by the executor only while ``node.observed`` (stats detail on, or an item log stream
# watched); never on the plain request path.


def observe_get(s: Session, key: bytes, r: tuple[bytes, bytes, int] | int) -> None:
    """A get/gets/gat/gats key: per-prefix counts and the fetchers stream."""
    node = s.node
    hit = not isinstance(r, int)
    if node.detail is not None:
        node.detail.record_get(key, hit)
    if node.logger.mask & watch.FETCHERS:
        if isinstance(r, int):
            watch.log_get(node, s.fd, key, r, 0, 0)
        else:
            header, body, _ = r
            flags = int(header.rsplit(b" ", 2)[1])
            cid = node.table.class_for(node.table.item_size(len(key), flags, len(body)))
            watch.log_get(node, s.fd, key, 1, cid, len(body) - 2)


def observe_store(s: Session, req: Request, outcome: int | None) -> None:
    """A storage command: counted before it runs (None), logged once it has an outcome."""
    node = s.node
    _, tokens, key, flags, exptime, _, body, _ = req
    if outcome is None:
        if node.detail is not None:
            node.detail.record_set(key)
        return
    if node.logger.mask & watch.MUTATIONS:
        nbytes = int(tokens[4]) + 2 if tokens[4].isdigit() else 2
        cid = node.table.class_for(node.table.item_size(len(key), flags, nbytes))
        ttl = exptime if 0 <= exptime <= 2592000 else max(0, exptime - node.clock.now)
        watch.log_store(node, s.fd, tokens[0], key, ttl, cid, nbytes - 2, outcome)


def observe_delete(s: Session, key: bytes, cmd: bytes | None) -> None:
    """A delete: counted before it runs (None); logged as ``cmd`` when it removed the item."""
    node = s.node
    if cmd is None:
        if node.detail is not None:
            node.detail.record_delete(key)
    elif node.logger.mask & watch.DELETIONS:
        watch.log_delete(node, s.fd, cmd, key, 0, 0)
