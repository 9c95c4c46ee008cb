"""A connection's protocol state: bytes fed in, every complete request run, reply bytes out.

A ``Session`` belongs to one connection and is driven by that connection's worker thread only.
``process()`` runs every complete request in what has been fed, appending replies to one output
buffer that the worker sends once per read batch. Handlers come from one dispatch table
(``commands/table.py``); they reach the node's parts through the session's contexts only.

Build one from a store, a clock and a config (``Session(NodeParts(config, clock, store),
ThreadStats())``) and drive it with bytes: no socket, no thread, no node.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from memcache_server.commands.items import get_one, store_request
from memcache_server.commands.meta import meta_store
from memcache_server.commands.respbudget import get_keys_budget
from memcache_server.commands.table import HANDLERS, ITEM_HANDLERS
from memcache_server.commands.trace import process_traced
from memcache_server.protocol import constants as C
from memcache_server.protocol.framer import CLOSE, CMD, MSTORE, REPLY, STORE, Framer, Request
from memcache_server.stats import BYTES_READ

if TYPE_CHECKING:
    from memcache_server.commands.context import AdminContext, ItemContext
    from memcache_server.stats import ThreadStats

__all__ = ["Session", "Suspended"]

# A read that is one get line: one space, then the key (no space, NUL or newline), then CRLF.
# The framer reads the same line the same way: the key ends at the last CR before the LF.
_LONE_GET = re.compile(rb"get ([^ \x00\n]+)\r\n").fullmatch

Handler = Callable[["Session", list[bytes]], None]


class Suspended(Exception):
    """Raised by a multi-key get that stopped once its reply passed ``out_limit``.

    Why: a get line of a few KB can name the same large item thousands of times; building the
    whole reply in memory first (memcached only links items into its reply) would let one
    request take gigabytes. The rest of the keys wait in ``Session.resume`` until the worker has
    sent what was produced. An exception keeps the per-request path free of an extra test.
    """


class Session:
    """Protocol state of one connection. Not thread-safe: its worker owns it."""

    __slots__ = (
        "ctx",
        "admin",
        "handlers",
        "store",
        "stats",
        "framer",
        "out",
        "close_after",
        "last_cmd",
        "want_close",
        "peer",
        "fd",
        "cid",
        "resume",
        "out_limit",
        "get_buffers",
    )

    def __init__(
        self,
        ctx: ItemContext,
        stats: ThreadStats,
        peer: str = "",
        fd: int = -1,
        admin: AdminContext | None = None,
    ) -> None:
        self.ctx = ctx
        # node-wide commands (stats, shutdown, slabs, ...) are dispatched only with a node
        self.admin = admin
        self.handlers = HANDLERS if admin is not None else ITEM_HANDLERS
        self.store = ctx.store
        self.stats = stats
        self.framer = Framer(ctx.config.item_size_max)
        self.out = bytearray()
        self.close_after = False  # close once the output is flushed (quit, errors)
        self.want_close = False  # close now, without flushing (HTTP, line too long)
        self.last_cmd = 0
        self.peer = peer
        self.fd = fd
        # the node-wide connection id (``stats conns``, watch lines' cfd); the worker sets it
        self.cid = fd
        self.resume: tuple[Handler, list[bytes]] | None = None  # a multi-get to continue
        self.out_limit = ctx.config.max_output_buffer
        # memcached's response buffers a thread may hold under read_buf_mem_limit (0: no
        # limit): how many keys one get may name, see respbudget.py
        self.get_buffers = get_keys_budget(ctx.config.read_buf_mem_limit, ctx.config.threads)

    def node_wide(self) -> AdminContext:
        """The node-wide context, for handlers that are only in a node session's table."""
        admin = self.admin
        assert admin is not None, "a node-wide command on a session built without a node"
        return admin

    # ------------------------------------------------------------------ driving

    def feed(self, data: bytes) -> None:
        self.stats[BYTES_READ] += len(data)
        framer = self.framer
        if framer.pos >= len(framer.buf) and not (framer.need or framer.swallow):
            # Framer.feed's common case, inline (a call per read saved): everything before
            # was consumed and no block is being gathered or skipped, so the data is the buffer
            framer.buf = data
            framer.pos = 0
        else:
            framer.feed(data)

    def serve(self, data: bytes, limit: int) -> bool:
        """``feed(data)`` then ``process(limit)``: the worker's step for every read.

        Why: a client with one request in flight sends each get as one read of one line
        (memcaslap does too). When the read is exactly ``get <key>\\r\\n`` (``_LONE_GET``),
        with nothing buffered or suspended before it, no -vv tracing, no stats detail and no
        watcher, ``get_one`` answers it here: no framer, no dispatch loop, no handler lookup,
        and one regular expression in place of a dozen tests. In-process a get's path went
        from 3.57 to 2.85 us; the one-connection p50 against memcached's, in three alternated
        runs of 6-8 pairs, from 1.66, 1.58 and 1.66x to 1.61, 1.59 and 1.49x (a request runs
        after a context switch there, with cold caches, so each step saved counts about
        twice). Anything else takes the general path."""
        line = _LONE_GET(data)
        if line is not None:
            framer = self.framer
            if (
                framer.pos >= len(framer.buf)
                and not (framer.need or framer.swallow or framer.closed)
                and self.resume is None
                and not self.ctx.tracing
                and not self.ctx.observed[0]
            ):
                self.stats[BYTES_READ] += len(data)
                framer.started = True  # the first byte was not a binary request's
                get_one(self, line[1])
                return False
        self.feed(data)
        return self.process(limit)

    def process(self, limit: int) -> bool:
        """Run up to ``limit`` requests. Returns True if more complete requests may be waiting.

        At verbosity 2 the batch runs through ``trace.process_traced`` instead, which logs what
        memcached -vv logs; otherwise that costs this one test per batch."""
        if self.ctx.tracing:
            return process_traced(self, limit)
        framer = self.framer
        handlers = self.handlers
        n = 0
        if self.resume is not None and self._resume():
            return True
        while n < limit:
            if framer.pos >= len(framer.buf):
                # all consumed (or a block is being gathered, which empties the buffer):
                # next_request would return None; the test costs less than its call
                return False
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
                store_request(self, req)
            elif kind == REPLY:
                self.out += req[1]
            elif kind == CLOSE:
                self.want_close = True
                return False
            elif kind == MSTORE:
                meta_store(self, req)
            if self.close_after or self.want_close:
                return False
        self.last_cmd = self.ctx.clock.now
        return True

    def dispatch(self, req: Request) -> bool | None:
        """Run one framed request. None: go on; otherwise what ``process`` returns now (False:
        run nothing more, the connection closes; True: a multi-get stopped at the output limit).
        The traced loop's step: ``process`` inlines the same dispatch on its hot path."""
        kind = req[0]
        if kind == CMD:
            tokens: list[bytes] = req[1]
            if not tokens:
                self.out += C.ERROR
                return None
            h = self.handlers.get(tokens[0])
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
            store_request(self, req)
        elif kind == REPLY:
            self.out += req[1]
        elif kind == CLOSE:
            self.want_close = True
            return False
        elif kind == MSTORE:
            meta_store(self, req)
        return False if self.close_after or self.want_close else None

    def resume_get(self) -> bool:
        """Continue a suspended multi-get; True if it had to stop again."""
        return self._resume()

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

    def suspend(self, handler: Handler, head: list[bytes], rest: list[bytes]) -> None:
        """Stop a multi-get here; its remaining keys run when the output has drained."""
        for key in rest:
            if len(key) > C.KEY_MAX_LENGTH:
                # memcached checks every key before anything is sent: same reply as unsuspended
                self.out.clear()
                self.out += C.BAD_FORMAT
                return
        self.resume = (handler, head + rest)
        raise Suspended
