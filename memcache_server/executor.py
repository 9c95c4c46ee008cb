"""The one module that knows both the protocol and the store: requests in, reply bytes out.

A ``Session`` belongs to one connection and is driven by that connection's worker thread only.
``process()`` runs every complete request in what has been fed, appending replies to one output
buffer that the worker sends once per read batch. Command handlers are looked up in a table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from memcache_server.commands.cluster import LEGACY_READ_ONLY
from memcache_server.protocol import constants as C
from memcache_server.protocol.document import LEGACY_KEY
from memcache_server.protocol.framer import CLOSE, CMD, MSTORE, REPLY, STORE, Framer, Request
from memcache_server.protocol.numbers import strtol32, strtoul32, strtoull
from memcache_server.storage.store import Mode, Outcome

if TYPE_CHECKING:
    from memcache_server.app import Node
    from memcache_server.stats import ThreadStats

__all__ = ["Session"]

STORE_MODES = {
    b"set": Mode.SET,
    b"add": Mode.ADD,
    b"replace": Mode.REPLACE,
    b"append": Mode.APPEND,
    b"prepend": Mode.PREPEND,
    b"cas": Mode.CAS,
}
OUTCOME_REPLY = {
    Outcome.STORED: C.STORED,
    Outcome.NOT_STORED: C.NOT_STORED,
    Outcome.EXISTS: C.EXISTS,
    Outcome.NOT_FOUND: C.NOT_FOUND,
    Outcome.TOO_LARGE: C.TOO_LARGE,
    Outcome.NO_MEMORY: C.NO_MEMORY,
}
_STORED = Outcome.STORED
_GET_KEYS_MAX = C.KEY_MAX_LENGTH

Handler = Callable[["Session", list[bytes]], None]


class Suspended(Exception):
    """Raised by a multi-key get that stopped once its reply passed ``out_limit``.

    Why: a get line of a few KB can name the same large item thousands of times; building the
    whole reply in memory first (memcached only links items into its reply) would let one
    request take gigabytes. The rest of the keys wait in ``Session.resume`` until the worker has
    sent what was produced. An exception keeps the per-request path free of an extra test.
    """


def vlen_of(req: Request) -> int:
    """The declared data length (with CRLF) of a storage request, read as the framer read it."""
    return (strtol32(req[1][4]) or 0) + 2


class Session:
    """Protocol state of one connection. Not thread-safe: its worker owns it."""

    __slots__ = (
        "node",
        "store",
        "stats",
        "framer",
        "out",
        "close_after",
        "last_cmd",
        "want_close",
        "peer",
        "fd",
        "resume",
        "out_limit",
    )

    def __init__(self, node: Node, stats: ThreadStats, peer: str = "", fd: int = -1) -> None:
        self.node = node
        self.store = node.store
        self.stats = stats
        self.framer = Framer(node.config.item_size_max)
        self.out = bytearray()
        self.close_after = False  # close once the output is flushed (quit, errors)
        self.want_close = False  # close now, without flushing (HTTP, line too long)
        self.last_cmd = 0
        self.peer = peer
        self.fd = fd
        self.resume: tuple[Handler, list[bytes]] | None = None  # a multi-get to continue
        self.out_limit = node.config.max_output_buffer

    # ------------------------------------------------------------------ driving

    def feed(self, data: bytes) -> None:
        self.stats.bytes_read += len(data)
        self.framer.feed(data)

    def process(self, limit: int) -> bool:
        """Run up to ``limit`` requests. Returns True if more complete requests may be waiting."""
        framer = self.framer
        handlers = HANDLERS
        n = 0
        if self.resume is not None and self._resume():
            return True
        while n < limit:
            req = framer.next_request()
            if req is None:
                return False
            n += 1
            kind = req[0]
            if kind == CMD:
                tokens: list[bytes] = req[1]
                if not tokens:
                    self.out += C.ERROR
                    continue
                h = handlers.get(tokens[0])
                if h is not None:
                    try:
                        h(self, tokens)
                    except Suspended:
                        return True
                elif tokens[-1].startswith(b"HTTP/"):
                    self.want_close = True
                    return False
                else:
                    self.out += C.ERROR
            elif kind == STORE:
                self._store(req)
            elif kind == REPLY:
                self.out += req[1]
            elif kind == CLOSE:
                self.want_close = True
                return False
            elif kind == MSTORE:
                meta_store(self, req)
            if self.close_after or self.want_close:
                return False
        self.last_cmd = self.node.clock.now
        return True

    def _resume(self) -> bool:
        """Continue a suspended multi-get; True if it had to stop again."""
        assert self.resume is not None
        handler, tokens = self.resume
        self.resume = None
        try:
            handler(self, tokens)
        except Suspended:
            return True
        return False

    def _suspend(self, handler: Handler, head: list[bytes], rest: list[bytes]) -> None:
        """Stop a multi-get here; its remaining keys run when the output has drained."""
        for key in rest:
            if len(key) > _GET_KEYS_MAX:
                # memcached checks every key before anything is sent: same reply as unsuspended
                self.out.clear()
                self.out += C.BAD_FORMAT
                return
        self.resume = (handler, head + rest)
        raise Suspended

    # ------------------------------------------------------------------ storage

    def _store(self, req: Request) -> None:
        _, tokens, key, flags, exptime, cas, body, noreply = req
        if key == LEGACY_KEY and self.node.cluster.legacy_read_only:
            if not noreply:
                self.out += LEGACY_READ_ONLY  # the discovery key is not the clients' to write
            return
        observed = self.node.observed
        if observed:
            observe_store(self, req, None)
        if body is None:
            # Over -I: memcached refuses it before reading and drops the old value of a set.
            self.stats.store_too_large += 1
            if tokens[0] == b"set":
                self.store.drop(key)
            if observed:
                observe_store(self, req, Outcome.TOO_LARGE)
            if not noreply:
                self.out += C.TOO_LARGE
            return
        if not body:
            self.store.count_set(len(key), flags, vlen_of(req))
            if not noreply:
                self.out += C.BAD_CHUNK
            return
        outcome = self.store.store(
            STORE_MODES[tokens[0]],
            key,
            flags,
            exptime,
            body,
            cas,
        )
        if outcome != _STORED:
            if outcome == Outcome.NOT_FOUND:
                self.stats.cas_misses += 1
            elif outcome == Outcome.TOO_LARGE:
                self.stats.store_too_large += 1
            elif outcome == Outcome.NO_MEMORY:
                self.stats.store_no_memory += 1
        if observed:
            observe_store(self, req, outcome)
        if not noreply:
            self.out += OUTCOME_REPLY[outcome]

    # ------------------------------------------------------------------ retrieval

    def cmd_get(self, tokens: list[bytes]) -> None:
        n = len(tokens)
        if n < 2:
            self.out += C.ERROR
            return
        if self.node.observed:
            self._get_with(tokens, False, False)  # the same reply, with stats detail/watchers
            return
        out = self.out
        get_into = self.store.get_into
        stats = self.stats
        if n == 2:
            key = tokens[1]
            if len(key) > _GET_KEYS_MAX:
                out.clear()  # memcached releases every reply still queued on the connection
                out += C.BAD_FORMAT
                return
            stats.get_cmds += 1
            r = get_into(key, out)
            if r != 1 and not (key == LEGACY_KEY and self._legacy_get(key)):
                self._miss(r)
            out += C.END
            return
        keys = iter(tokens)
        next(keys)
        limit = self.out_limit
        for key in keys:
            if len(key) > _GET_KEYS_MAX:
                out.clear()  # memcached releases every reply still queued on the connection
                out += C.BAD_FORMAT
                return
            stats.get_cmds += 1
            r = get_into(key, out)
            if r != 1 and not (key == LEGACY_KEY and self._legacy_get(key)):
                self._miss(r)
            elif len(out) > limit:
                rest = list(keys)
                if rest:
                    self._suspend(Session.cmd_get, tokens[:1], rest)
                    return
        out += C.END

    def _legacy_get(self, key: bytes) -> bool:
        """A miss on ``AmazonElastiCache:cluster``: the cluster document instead (checked only on
        a miss, with one bytes comparison, so ordinary gets pay nothing for it)."""
        return self.node.cluster.legacy_value_into(key, self.out)

    def _miss(self, r: int) -> None:
        stats = self.stats
        stats.get_misses += 1
        if r == -1:
            stats.get_expired += 1
        elif r == -2:
            stats.get_flushed += 1

    def _get_with(self, tokens: list[bytes], with_cas: bool, touch: bool) -> None:
        out = self.out
        first = 1
        exptime: int | None = None
        if touch:
            if len(tokens) < 2:
                out += C.ERROR
                return
            exptime = strtol32(tokens[1])
            if exptime is None:
                out += C.BAD_EXPTIME
                return
            first = 2
        stats = self.stats
        get_parts = self.store.get_parts
        observed = self.node.observed
        keys = iter(tokens)
        for _ in range(first):
            next(keys)
        limit = self.out_limit
        for key in keys:
            if len(key) > _GET_KEYS_MAX:
                out.clear()  # memcached releases every reply still queued on the connection
                out += C.BAD_FORMAT
                return
            r = get_parts(key, exptime)
            if observed:
                observe_get(self, key, r)
            if touch:
                stats.touch_cmds += 1
            else:
                stats.get_cmds += 1
            if isinstance(r, int):
                if touch:
                    stats.touch_misses += 1
                elif not (key == LEGACY_KEY and not with_cas and self._legacy_get(key)):
                    self._miss(r)
                continue
            header, body, cas = r
            if with_cas:
                out += header[:-2]
                out += b" %d\r\n" % cas
            else:
                out += header
            out += body
            if len(out) > limit:
                rest = list(keys)
                if rest:
                    self._suspend(_GET_WITH[with_cas, touch], tokens[:first], rest)
                    return
        out += C.END

    def cmd_gets(self, tokens: list[bytes]) -> None:
        if len(tokens) < 2:
            self.out += C.ERROR
            return
        self._get_with(tokens, True, False)

    def cmd_gat(self, tokens: list[bytes]) -> None:
        if len(tokens) < 2:
            self.out += C.ERROR
            return
        self._get_with(tokens, False, True)

    def cmd_gats(self, tokens: list[bytes]) -> None:
        if len(tokens) < 2:
            self.out += C.ERROR
            return
        self._get_with(tokens, True, True)

    # ------------------------------------------------------------------ other item commands

    def cmd_delete(self, tokens: list[bytes]) -> None:
        n = len(tokens)
        if n < 2 or n > 4:
            self.out += C.ERROR
            return
        noreply = tokens[-1] == b"noreply"
        if n > 2:
            hold_is_zero = tokens[2] == b"0"
            valid = (n == 3 and (hold_is_zero or noreply)) or (n == 4 and hold_is_zero and noreply)
            if not valid:
                if not noreply:
                    self.out += C.DELETE_USAGE
                return
        key = tokens[1]
        if len(key) > C.KEY_MAX_LENGTH:
            if not noreply:
                self.out += C.BAD_FORMAT
            return
        observed = self.node.observed
        if observed:
            observe_delete(self, key, None)
        if self.store.delete(key):
            if observed:
                observe_delete(self, key, b"delete")
            reply = C.DELETED
        else:
            self.stats.delete_misses += 1
            reply = C.NOT_FOUND
        if not noreply:
            self.out += reply

    def _key_number(
        self,
        tokens: list[bytes],
        parse: Callable[[bytes], int | None],
        bad_number: bytes,
        act: Callable[[bytes, int], bytes],
    ) -> None:
        """``<cmd> <key> <number> [noreply]`` (incr, decr, touch): memcached's shared checks, in
        its order (token count, key length, the number), then ``act(key, number)``'s reply."""
        n = len(tokens)
        if n != 3 and n != 4:
            self.out += C.ERROR
            return
        noreply = n == 4 and tokens[3] == b"noreply"
        key = tokens[1]
        if len(key) > C.KEY_MAX_LENGTH:
            reply = C.BAD_FORMAT
        else:
            number = parse(tokens[2])
            reply = bad_number if number is None else act(key, number)
        if not noreply:
            self.out += reply

    def _delta(self, key: bytes, delta: int, incr: bool) -> bytes:
        outcome, value = self.store.incr_decr(key, delta, incr)
        if outcome == Outcome.DELTA_OK:
            return b"%d\r\n" % value
        if outcome == Outcome.NOT_FOUND:
            if incr:
                self.stats.incr_misses += 1
            else:
                self.stats.decr_misses += 1
            return C.NOT_FOUND
        if outcome == Outcome.NON_NUMERIC:
            return C.NON_NUMERIC
        return C.DELTA_NO_MEMORY

    def _touch(self, key: bytes, exptime: int) -> bytes:
        self.stats.touch_cmds += 1
        if self.store.touch(key, exptime):
            return C.TOUCHED
        self.stats.touch_misses += 1
        return C.NOT_FOUND

    def cmd_incr(self, tokens: list[bytes]) -> None:
        self._key_number(tokens, strtoull, C.BAD_DELTA, lambda k, d: self._delta(k, d, True))

    def cmd_decr(self, tokens: list[bytes]) -> None:
        self._key_number(tokens, strtoull, C.BAD_DELTA, lambda k, d: self._delta(k, d, False))

    def cmd_touch(self, tokens: list[bytes]) -> None:
        self._key_number(tokens, strtol32, C.BAD_EXPTIME, self._touch)

    # ------------------------------------------------------------------ server commands

    def cmd_flush_all(self, tokens: list[bytes]) -> None:
        n = len(tokens)
        if n > 3:
            self.out += C.ERROR
            return
        noreply = n > 1 and tokens[-1] == b"noreply"
        self.stats.flush_cmds += 1
        if not self.node.config.flush_enabled:
            if not noreply:
                self.out += C.FLUSH_DISABLED
            return
        exptime = 0
        if n != (2 if noreply else 1):
            v = strtol32(tokens[1])
            if v is None:
                if not noreply:
                    self.out += C.BAD_EXPTIME
                return
            exptime = v
        self.store.flush_all(exptime)
        if not noreply:
            self.out += C.OK

    def cmd_version(self, tokens: list[bytes]) -> None:
        self.out += b"VERSION %s\r\n" % self.node.version.encode()

    def cmd_quit(self, tokens: list[bytes]) -> None:
        self.close_after = True

    def cmd_verbosity(self, tokens: list[bytes]) -> None:
        n = len(tokens)
        if n != 2 and n != 3:
            self.out += C.ERROR
            return
        noreply = tokens[-1] == b"noreply"
        level = strtoul32(tokens[1])
        if level is None:
            reply = C.BAD_FORMAT
        else:
            self.node.set_verbosity(min(level, 2))
            reply = C.OK
        if not noreply:
            self.out += reply

    def cmd_cache_memlimit(self, tokens: list[bytes]) -> None:
        n = len(tokens)
        if n != 2 and n != 3:
            self.out += C.ERROR
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
            self.store.set_memory_limit(mb * 1024 * 1024)
            self.node.memory_limit_changed(mb * 1024 * 1024)
            reply = C.OK
        if not noreply:
            self.out += reply

    def cmd_shutdown(self, tokens: list[bytes]) -> None:
        if not self.node.config.shutdown_enabled:
            self.out += C.SHUTDOWN_DISABLED
            return
        n = len(tokens)
        if n == 1:
            self.want_close = True
            self.node.request_shutdown(graceful=False)
        elif n == 2 and tokens[1] == b"graceful":
            self.want_close = True
            self.node.request_shutdown(graceful=True)
        else:
            self.out += C.SHUTDOWN_USAGE

    def cmd_stats(self, tokens: list[bytes]) -> None:
        self.out += self.node.stats_reply(tokens[1:], self)

    def cmd_refresh_certs(self, tokens: list[bytes]) -> None:
        reply = self.node.refresh_certs()
        if tokens[-1] != b"noreply":
            self.out += reply

    def cmd_config(self, tokens: list[bytes]) -> None:
        self.out += self.node.config_reply(tokens[1:])


HANDLERS: dict[bytes, Handler] = {
    b"get": Session.cmd_get,
    b"bget": Session.cmd_get,
    b"gets": Session.cmd_gets,
    b"gat": Session.cmd_gat,
    b"gats": Session.cmd_gats,
    b"delete": Session.cmd_delete,
    b"incr": Session.cmd_incr,
    b"decr": Session.cmd_decr,
    b"touch": Session.cmd_touch,
    b"flush_all": Session.cmd_flush_all,
    b"version": Session.cmd_version,
    b"quit": Session.cmd_quit,
    b"verbosity": Session.cmd_verbosity,
    b"cache_memlimit": Session.cmd_cache_memlimit,
    b"shutdown": Session.cmd_shutdown,
    b"stats": Session.cmd_stats,
    b"config": Session.cmd_config,
    b"refresh_certs": Session.cmd_refresh_certs,
}


_GET_WITH: dict[tuple[bool, bool], Handler] = {
    (False, False): Session.cmd_get,  # a plain get takes this path when stats detail is on
    (True, False): Session.cmd_gets,
    (False, True): Session.cmd_gat,
    (True, True): Session.cmd_gats,
}


def _wrong_arity(session: Session, tokens: list[bytes]) -> None:
    """A storage command with the wrong number of tokens arrives as a CMD: memcached says ERROR."""
    session.out += C.ERROR


for _name in STORE_MODES:
    HANDLERS[_name] = _wrong_arity

# Meta commands live in their own module; imported last because it refers back to Session.
from memcache_server.meta_executor import META_HANDLERS, meta_store  # noqa: E402
from memcache_server.ops import (  # noqa: E402
    OPS_HANDLERS,
    observe_delete,
    observe_get,
    observe_store,
)

HANDLERS.update(META_HANDLERS)
HANDLERS.update(OPS_HANDLERS)
