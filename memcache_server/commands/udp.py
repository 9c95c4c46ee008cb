"""A UDP request's session: one datagram's requests run, replies cut into memcached's datagrams.

memcached answers UDP per *response object*: one per command, and one per key of a classic
multi-key get (``get``/``gets``/``gat``/``gats``, ``END`` riding on the last key's). Each goes out
in its own datagrams with its own sequence numbers (``protocol/udp.py``). So the session records
where each response ends (``marks``) while the ordinary handlers write into ``out``. It also
flushes where memcached flushes: after each successful classic get and at ``quit`` (which stops
the datagram), and at the end of the datagram. A flush matters beyond ordering: memcached drops
the replies it still has queued when a get names a key that is too long, but not those it has
already sent.

A ``UdpSession`` lives for one datagram (no request state survives into the next one: memcached
keeps a half-read request on its one UDP "connection" and runs it against whichever client's
datagram comes next, which we do not copy). Sans-IO: the server layer takes ``datagrams``.
Bounded: once the queued reply passes ``out_limit`` it is flushed early and ``process`` returns
so the server can send before more is produced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memcache_server.commands.session import Handler, Session
from memcache_server.commands.table import HANDLERS
from memcache_server.protocol import constants as C
from memcache_server.protocol.udp import frame_replies

if TYPE_CHECKING:
    from memcache_server.commands.context import AdminContext, ItemContext
    from memcache_server.stats import ThreadStats

__all__ = ["UdpSession", "UDP_HANDLERS"]


class UdpSession(Session):
    """The requests of one datagram from ``peer``, answered under ``request_id``."""

    __slots__ = ("request_id", "marks", "datagrams", "framed", "continuing")

    def __init__(
        self,
        ctx: ItemContext,
        stats: ThreadStats,
        request_id: int,
        peer: str,
        admin: AdminContext,
    ) -> None:
        super().__init__(ctx, stats, peer, -1, admin)
        self.handlers = UDP_HANDLERS
        self.request_id = request_id
        self.marks = [0]  # offsets in ``out`` where responses end (equal neighbours: empty)
        self.datagrams: list[bytes] = []  # framed, ready to send
        self.framed = 0  # bytes in ``datagrams``
        self.continuing = False  # the last flush was cut short by out_limit, not memcached's

    def process(self, limit: int) -> bool:
        """Run up to ``limit`` requests, one at a time so each response's end is marked.
        True when it stopped early (output to send first, or ``limit``); the datagram's
        replies are all flushed once it returns False."""
        out = self.out
        for _ in range(limit):
            if self.resume is not None:
                if self._resume():
                    return True
                more = True
            else:
                more = Session.process(self, 1)
                if self.resume is not None:
                    return True
            self.end_response()
            if not more or self.close_after or self.want_close:
                self.flush()
                return False
            if len(out) + self.framed > self.out_limit:
                if len(out) > self.out_limit:
                    self.flush(early=True)
                return True  # let the server send what is framed before producing more
        return True

    def end_response(self) -> None:
        """Mark the end of the response being written, if it wrote anything."""
        n = len(self.out)
        marks = self.marks
        if n < marks[-1]:  # a handler dropped the unsent replies (a get key too long)
            marks[:] = [0]
        if n != marks[-1]:
            marks.append(n)

    def flush(self, early: bool = False) -> None:
        """Frame every marked response. ``early``: a cut memcached does not make, so the
        responses that follow are framed as if no flush had happened."""
        self.end_response()
        out = self.out
        framed = frame_replies(self.request_id, out, self.marks, self.continuing)
        self.datagrams += framed
        self.framed += sum(map(len, framed))
        self.continuing = early
        out.clear()
        self.marks = [0]

    def take_datagrams(self) -> list[bytes]:
        datagrams = self.datagrams
        self.datagrams = []
        self.framed = 0
        return datagrams


def _per_key(handler: Handler, first: int) -> Handler:
    """A classic get run key by key, each key its own response, then flushed as memcached
    does; ``first`` is the index of the first key token (2 for ``gat``/``gats``)."""

    def run(s: Session, tokens: list[bytes]) -> None:
        assert isinstance(s, UdpSession)
        out = s.out
        if len(tokens) <= first:
            handler(s, tokens)  # the handler's own arity reply
            return
        head = tokens[:first]
        keys = tokens[first:]
        last = len(keys) - 1
        for i, key in enumerate(keys):
            if len(key) > C.KEY_MAX_LENGTH:
                out.clear()  # memcached culls every reply not yet sent
                s.marks = [0]
                out += C.BAD_FORMAT
                return
            if i:
                s.marks.append(len(out))
            handler(s, [*head, key])
            if not out.endswith(C.END):
                return  # an error reply (gat's exptime): it ends the request
            if i < last:
                del out[-len(C.END) :]
                if len(out) > s.out_limit:
                    s.flush(early=True)
                    s.suspend(run, head, keys[i + 1 :])
                    s.marks = [0]  # not suspended: a later key is too long, out holds the error
                    return
        s.flush()

    return run


def _quit(s: Session, tokens: list[bytes]) -> None:
    """``quit``: an empty response (a bare header when it heads the queue); the rest of the
    datagram is not read."""
    assert isinstance(s, UdpSession)
    s.end_response()
    s.marks.append(len(s.out))
    s.flush()
    s.close_after = True


def _silent(s: Session, tokens: list[bytes]) -> None:
    """Commands that hand memcached's connection to another thread (``watch``, a metadump):
    over UDP nothing comes back."""


def _lru_crawler(s: Session, tokens: list[bytes]) -> None:
    if len(tokens) > 1 and tokens[1] == b"metadump":
        return
    HANDLERS[b"lru_crawler"](s, tokens)


UDP_HANDLERS: dict[bytes, Handler] = {
    **HANDLERS,
    b"get": _per_key(HANDLERS[b"get"], 1),
    b"bget": _per_key(HANDLERS[b"bget"], 1),
    b"gets": _per_key(HANDLERS[b"gets"], 1),
    b"gat": _per_key(HANDLERS[b"gat"], 2),
    b"gats": _per_key(HANDLERS[b"gats"], 2),
    b"quit": _quit,
    b"watch": _silent,
    b"lru_crawler": _lru_crawler,
}
