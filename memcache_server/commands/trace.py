"""-vv: log each request and its reply on stderr, line for line as memcached 1.6.18 does.

memcached at verbosity 2 writes ``<fd <command line>`` for every command line it reads (the line
as received, without its CRLF, up to a NUL byte; never a data block), and ``>fd <reply>`` for
every reply it builds with ``out_string``: the one-line replies of the classic commands,
``>fd NOREPLY <reply>`` when ``noreply`` silences one, ``>fd sending key <key>`` per hit and
``>fd END`` for the get family, and for meta commands only ``MN``, ``me``'s ``EN`` and the
errors. Replies written whole (``stats`` and its kin, meta hits and misses) are not logged. The
first command of a connection adds ``<fd>: Client using the ascii protocol``.

Why here and not in the handlers: the hot loop in ``Session.process`` stays untouched and pays
one test per batch; this loop runs instead at verbosity 2, reads the line from the framer's
buffer and the reply from what the request appended to the output. A ``noreply`` request is
run as its replying twin (the same request without ``noreply``, which takes exactly the same
path) so the silenced reply can be logged, then the reply is dropped. Twins exist for the
storage commands and for the commands below whose ``noreply`` form has a fixed token count;
others (``verbosity noreply`` alone, a storage header refused before its data) log no reply.
Lines go to stderr as bytes, once per batch, so a key that is not UTF-8 is logged as sent.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from memcache_server.protocol.framer import CLOSE, CMD, MSTORE, REPLY, STORE, Request

if TYPE_CHECKING:
    from memcache_server.commands.session import Session

__all__ = ["process_traced", "raw_line", "reply_lines"]

GET_FAMILY = frozenset((b"get", b"gets", b"gat", b"gats", b"bget"))
META = frozenset((b"mg", b"ms", b"md", b"ma", b"mn", b"me"))
STATS = b"stats"
ERRORS = (b"ERROR", b"CLIENT_ERROR", b"SERVER_ERROR")
# command -> token counts (trailing noreply included) at which dropping the noreply leaves a
# request that the handler runs down exactly the same path
NOREPLY_TWINS: dict[bytes, tuple[int, ...]] = {
    b"incr": (4,),
    b"decr": (4,),
    b"touch": (4,),
    b"delete": (3, 4),
    b"flush_all": (2, 3),
    b"verbosity": (3,),
    b"cache_memlimit": (3,),
}
ASCII = b": Client using the ascii protocol"


def raw_line(buf: bytes, pos: int) -> bytes:
    """The command line at ``pos`` as memcached prints it: without its LF or CRLF (a CR that is
    the line's only byte stays, as memcached keeps it), cut at the first NUL (``%s``)."""
    eol = buf.find(b"\n", pos)
    end = len(buf) if eol < 0 else eol
    if end - pos > 1 and buf[end - 1] == 13:
        end -= 1
    line = buf[pos:end]
    nul = line.find(b"\0")
    return line if nul < 0 else line[:nul]


def reply_lines(command: bytes, reply: bytes) -> list[bytes]:
    """What memcached logs (after ``>fd ``) for ``reply`` to a command named ``command``."""
    if not reply:
        return []
    if command in GET_FAMILY:
        out: list[bytes] = []
        i = 0
        while i < len(reply):
            j = reply.find(b"\r\n", i)
            if j < 0:
                break
            line = reply[i:j]
            if line.startswith(b"VALUE "):
                parts = line.split(b" ")
                out.append(b"sending key " + parts[1])
                i = j + 2 + int(parts[3]) + 2  # past the data block and its CRLF
            else:
                out.append(line)
                i = j + 2
        return out
    if reply.find(b"\r\n") != len(reply) - 2:
        return []  # written whole (stats, config get, dumps): never logged
    line = reply[:-2]
    if command in META:
        if line == b"MN" or (command == b"me" and line == b"EN") or line.startswith(ERRORS):
            return [line]
        return []
    if command == STATS and line == b"END":
        return []  # an empty `stats items`, `stats detail dump`: the list's end, not a reply
    return [line]


def process_traced(s: Session, limit: int) -> bool:
    """``Session.process`` at verbosity 2: the same requests, each logged with its reply."""
    framer = s.framer
    fd = b"%d" % s.cid  # the node-wide id, as the open and close lines print it
    log: list[bytes] = []
    try:
        if s.resume is not None:
            mark = len(s.out)
            stopped = s.resume_get()
            log += [b">" + fd + b" " + line for line in reply_lines(b"get", bytes(s.out[mark:]))]
            if stopped:
                return True
        n = 0
        while n < limit:
            started = framer.started
            buf = framer.buf
            pos = framer.pos
            req = framer.next_request()
            if not started and framer.started:
                # memcached says so at the first read, even before a whole line has arrived
                log.append(fd + ASCII)
            if req is None:
                return False
            n += 1
            kind = req[0]
            if kind != CLOSE:
                line = raw_line(buf, pos)
                log.append(b"<" + fd + b" " + line)
            req, silenced = _twin(req)
            mark = len(s.out)
            result = s.dispatch(req)
            reply = bytes(s.out[mark:])
            if silenced:
                del s.out[mark:]
            if kind != CLOSE:
                head = b">" + fd + (b" NOREPLY " if silenced else b" ")
                log += [head + r for r in reply_lines(_command(req, line), reply)]
            if result is not None:
                return result
        s.last_cmd = s.ctx.clock.now
        return True
    finally:
        if log:
            _write(log)


def _twin(req: Request) -> tuple[Request, bool]:
    """The replying twin of a ``noreply`` request, and whether it is one."""
    kind = req[0]
    if kind == STORE and req[7]:
        return req[:7] + (False,), True
    if kind == CMD:
        tokens: list[bytes] = req[1]
        if tokens and tokens[-1] == b"noreply" and len(tokens) in NOREPLY_TWINS.get(tokens[0], ()):
            return (CMD, tokens[:-1]), True
    return req, False


def _command(req: Request, line: bytes) -> bytes:
    kind = req[0]
    if kind in (CMD, STORE, MSTORE) and req[1]:
        return bytes(req[1][0])
    if kind == REPLY:
        words = line.split()
        return words[0] if words else b""
    return b""


def _write(log: list[bytes]) -> None:
    """One write(2) of whole lines: worker processes share stderr, and a line written in
    pieces could be cut by another process's line."""
    sys.stderr.flush()  # anything printed as text first keeps its order
    os.write(2, b"\n".join(log) + b"\n")
