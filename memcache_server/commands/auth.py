"""A Session that must authenticate first (``-Y``), as memcached's ASCII authentication works.

Why a subclass: nodes without ``-Y`` keep the plain ``Session`` and pay nothing. Here, until the
client sends valid credentials, bytes go to the small pre-authentication framer
(``protocol.asciiauth``) instead of the command framer; once a ``set`` carrying ``user pass``
matches the table the reply is ``STORED``, whatever follows in the same read is handed to the
normal framer, and every later call goes straight to ``Session``.

Driven by its connection's worker thread only, like ``Session``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memcache_server.commands.session import Session
from memcache_server.protocol import constants as C
from memcache_server.protocol.asciiauth import AUTH_CLOSE, AUTH_FAILURE, AUTH_REPLY, AuthFramer
from memcache_server.stats import (
    AUTH_CMDS,
    AUTH_ERRORS,
    BYTES_READ,
)

if TYPE_CHECKING:
    from memcache_server.auth import AuthTable
    from memcache_server.commands.context import AdminContext, ItemContext
    from memcache_server.stats import ThreadStats

__all__ = ["AuthSession"]


class AuthSession(Session):
    """Protocol state of one connection on a node started with ``-Y``."""

    __slots__ = ("gate", "table", "authenticated")

    def __init__(
        self,
        ctx: ItemContext,
        stats: ThreadStats,
        peer: str,
        fd: int,
        admin: AdminContext | None,
        table: AuthTable,
    ) -> None:
        super().__init__(ctx, stats, peer, fd, admin)
        self.table = table
        self.gate = AuthFramer()
        self.authenticated = False

    def feed(self, data: bytes) -> None:
        if self.authenticated:
            Session.feed(self, data)
            return
        self.stats[BYTES_READ] += len(data)
        self.gate.feed(data)

    def serve(self, data: bytes, limit: int) -> bool:
        if self.authenticated:
            return Session.serve(self, data, limit)
        self.feed(data)  # not one get line's shortcut: it must pass the gate first
        return self.process(limit)

    def process(self, limit: int) -> bool:
        if self.authenticated:
            return Session.process(self, limit)
        gate = self.gate
        stats = self.stats
        n = 0
        while n < limit:
            event = gate.next_event()
            if event is None:
                return False
            n += 1
            kind = event[0]
            if kind == AUTH_REPLY:
                self.out += event[1]
                continue
            if kind == AUTH_CLOSE:
                self.want_close = True
                return False
            stats[AUTH_CMDS] += 1
            if not self.table.check(event[1], event[2]):
                stats[AUTH_ERRORS] += 1
                self.out += AUTH_FAILURE
                continue
            self.out += C.STORED
            self._become_authenticated()
            return Session.process(self, limit - n)
        return True

    def _become_authenticated(self) -> None:
        """Hand the bytes after the credentials to the command framer; from now on, normal."""
        self.authenticated = True
        framer = self.framer
        framer.started = True  # the protocol is settled: a later 0x80 byte is just a byte
        rest = self.gate.take_rest()
        if rest:
            framer.feed(rest)
