"""Admin commands: ``lru_crawler``, ``debugtime``, ``watch``, ``flush_all``, ``verbosity``,
``cache_memlimit``, ``shutdown``, ``refresh_certs``, ``version``, ``quit``.

Commands operators run from scripts and dashboards, rarely and never on the request hot path;
handlers run on the calling connection's worker thread. Runtime-tunable settings that memcached
lets these commands change (crawler sleep, tocrawl) live in ``OpsState``, not in the frozen
config. Handlers that need only the item context (``s.ctx``) work on any session; the node-wide
ones use ``s.admin``, which a session built without a node lacks (they are not in its table).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memcache_server.config import EMULATED_VERSION
from memcache_server.protocol import constants as C
from memcache_server.protocol.numbers import strtol32, strtoll, strtoul32
from memcache_server.protocol.uri import uriencode
from memcache_server.stats import FLUSH_CMDS
from memcache_server.storage.segment import Word
from memcache_server.storage.settings import S_CRAWLER_SLEEP, S_CRAWLER_TOCRAWL, private_words
from memcache_server.watch import FETCHERS, STREAMS

if TYPE_CHECKING:
    from memcache_server.commands.session import Session
    from memcache_server.config import ServerConfig
    from memcache_server.stats import PrefixStats
    from memcache_server.storage.metastore import MetaStore

__all__ = ["OpsState", "ITEM_ADMIN_HANDLERS", "NODE_ADMIN_HANDLERS"]

_VERSION_LINE = b"VERSION %s\r\n" % EMULATED_VERSION.encode()


class OpsState:
    """Settings the admin commands change at run time (memcached's ``settings``): words of the
    node's shared settings area (the crawler reads the same ones), so a change made in one
    worker process holds for all."""

    crawler_sleep = Word(S_CRAWLER_SLEEP)
    crawler_tocrawl = Word(S_CRAWLER_TOCRAWL)

    def __init__(self, cfg: ServerConfig, prefix_stats: PrefixStats,
                 words: memoryview | None = None) -> None:
        self.words = words if words is not None else private_words()
        self.crawler_sleep = cfg.lru_crawler_sleep
        self.crawler_tocrawl = cfg.lru_crawler_tocrawl
        self.prefix_stats = prefix_stats  # node-wide, in the segment (see stats.PrefixStats)


# ------------------------------------------------------------------ lru_crawler


def cmd_lru_crawler(s: Session, tokens: list[bytes]) -> None:
    node = s.node_wide()
    crawler = node.crawler
    n = len(tokens)
    sub = tokens[1] if n > 1 else b""
    out = s.out
    if n == 3 and sub == b"crawl":
        if not crawler.enabled:
            out += C.CRAWLER_DISABLED
            return
        cids = _classes(tokens[2])
        if cids is None:
            out += C.CRAWLER_BADCLASS
        elif not crawler.request(cids, node.ops.crawler_tocrawl):
            out += C.CRAWLER_BUSY
        else:
            out += C.OK
    elif n == 3 and sub == b"metadump":
        if not crawler.enabled:
            out += C.CRAWLER_DISABLED
        elif not node.config.dump_enabled:
            out += C.METADUMP_NOT_ALLOWED
        elif out:
            out += C.METADUMP_PIPELINED
        elif tokens[2] == b"hash":
            out += metadump(s.ctx.meta, list(range(1, len(s.ctx.store.classes))))
        else:
            cids = _classes(tokens[2])
            if cids is None:
                out += C.CRAWLER_BADCLASS
            else:
                out += metadump(s.ctx.meta, cids)
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
            out += C.CRAWLER_SLEEP_TOO_LONG
        else:
            node.ops.crawler_sleep = v
            crawler.sleep_us = v
            out += C.OK
    elif n == 2 and sub == b"enable":
        if crawler.enabled:
            out += C.CRAWLER_START_FAILED
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


def metadump(meta: MetaStore, cids: list[int]) -> bytes:
    """One ``key=... exp=... la=... cas=... fetch=... cls=... size=...`` line per live item of
    the classes, then ``END``. Times are absolute unix seconds (-1: never expires); keys are
    URI-encoded. Items are walked in slot order, a batch per lock hold."""
    lines = []
    for key, exp, atime, cas, fetched, cid, size in meta.walk(cids):
        fetch = b"yes" if fetched else b"no"
        lines.append(
            b"key=%b exp=%d la=%d cas=%d fetch=%s cls=%d size=%d\n"
            % (uriencode(key), exp if exp else -1, atime, cas, fetch, cid, size)
        )
    lines.append(C.END)
    return b"".join(lines)


# ------------------------------------------------------------------ debugtime


def cmd_debugtime(s: Session, tokens: list[bytes]) -> None:
    """``debugtime <seconds>``: move the server clock (only with --debug-time, as memcached
    has it only in debug builds), so expiry can be tested without sleeping."""
    if not s.ctx.config.debug_time:
        s.out += C.ERROR
        return
    if len(tokens) < 2:
        s.out += C.ERROR
        return
    delta = strtoll(tokens[1])
    if delta is None:
        s.out += C.ERROR
        return
    clock = s.ctx.clock
    clock.offset += delta
    clock.tick()
    s.out += C.OK




# ------------------------------------------------------------------ server commands


def cmd_flush_all(s: Session, tokens: list[bytes]) -> None:
    n = len(tokens)
    if n > 3:
        s.out += C.ERROR
        return
    noreply = n > 1 and tokens[-1] == b"noreply"
    s.stats[FLUSH_CMDS] += 1
    if not s.ctx.config.flush_enabled:
        if not noreply:
            s.out += C.FLUSH_DISABLED
        return
    exptime = 0
    if n != (2 if noreply else 1):
        v = strtol32(tokens[1])
        if v is None:
            if not noreply:
                s.out += C.BAD_EXPTIME
            return
        exptime = v
    s.ctx.store.flush_all(exptime)
    if not noreply:
        s.out += C.OK


def cmd_version(s: Session, tokens: list[bytes]) -> None:
    s.out += _VERSION_LINE


def cmd_quit(s: Session, tokens: list[bytes]) -> None:
    s.close_after = True


def cmd_cache_memlimit(s: Session, tokens: list[bytes]) -> None:
    n = len(tokens)
    if n != 2 and n != 3:
        s.out += C.ERROR
        return
    noreply = tokens[-1] == b"noreply"
    mb = strtoul32(tokens[1])
    if mb is None:
        reply = C.ERROR
    elif mb < 8:
        reply = C.MEMLIMIT_TOO_SMALL
    elif mb > 1000000000:
        reply = C.MEMLIMIT_ADJUST
    else:
        s.ctx.store.set_memory_limit(mb * 1024 * 1024)
        reply = C.OK
    if not noreply:
        s.out += reply


def cmd_verbosity(s: Session, tokens: list[bytes]) -> None:
    n = len(tokens)
    if n != 2 and n != 3:
        s.out += C.ERROR
        return
    noreply = tokens[-1] == b"noreply"
    level = strtoul32(tokens[1])
    if level is None:
        reply = C.BAD_FORMAT
    else:
        s.node_wide().set_verbosity(min(level, 2))
        reply = C.OK
    if not noreply:
        s.out += reply


def cmd_shutdown(s: Session, tokens: list[bytes]) -> None:
    if not s.ctx.config.shutdown_enabled:
        s.out += C.SHUTDOWN_DISABLED
        return
    n = len(tokens)
    if n == 1:
        s.want_close = True
        s.node_wide().shutdown_command(graceful=False)
    elif n == 2 and tokens[1] == b"graceful":
        s.want_close = True
        s.node_wide().shutdown_command(graceful=True)
    else:
        s.out += C.SHUTDOWN_USAGE


def cmd_refresh_certs(s: Session, tokens: list[bytes]) -> None:
    reply = s.node_wide().refresh_certs()
    if tokens[-1] != b"noreply":
        s.out += reply


# ------------------------------------------------------------------ watch


def cmd_watch(s: Session, tokens: list[bytes]) -> None:
    """``watch [stream ...]`` (fetchers by default): the connection becomes a log stream and
    reads no further commands."""
    if not s.ctx.config.watch_enabled:
        s.out += C.WATCH_NOT_ALLOWED
        return
    if s.out:
        s.out += C.WATCH_PIPELINED
        return
    mask = 0
    for name in tokens[1:]:
        bit = STREAMS.get(name)
        if bit is None:
            s.out += C.ERROR
            return
        mask |= bit
    if not mask:
        mask = FETCHERS
    # Registered before the client can see OK: with worker processes, a request the client
    # sends elsewhere once it reads OK may run before this process would get to register, and
    # its line would be lost. OK goes first in the watcher's own buffer (as memcached queues
    # it), so no line can overtake it.
    if not s.ctx.logger.add(s.fd, mask, C.OK):
        s.out += C.WATCHER_TOO_MANY
        return
    s.node_wide().set_conn_state(s.cid, "conn_watch")  # as `stats conns` shows it
    s.framer.discard_input()


# Need only the item context (any session).
ITEM_ADMIN_HANDLERS = {
    b"flush_all": cmd_flush_all,
    b"version": cmd_version,
    b"quit": cmd_quit,
    b"cache_memlimit": cmd_cache_memlimit,
    b"debugtime": cmd_debugtime,
}
# Node-wide: only in the table of sessions given an AdminContext.
NODE_ADMIN_HANDLERS = {
    b"lru_crawler": cmd_lru_crawler,
    b"verbosity": cmd_verbosity,
    b"shutdown": cmd_shutdown,
    b"refresh_certs": cmd_refresh_certs,
    b"watch": cmd_watch,
}
