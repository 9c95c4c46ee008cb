"""Meta command handlers (``mg ms md ma mn me``): parsed flags -> store operation -> reply bytes.

Like ``items``, this is glue between the sans-IO protocol (``protocol.meta``) and the store
(``storage.metastore``); handlers run on the connection's worker thread and append to the
session's output buffer. They are separate from the classic handlers so the classic get/set path
pays nothing for the meta protocol. Reply details (which flags echo on a miss, what ``q``
suppresses, which error wins) follow memcached 1.6.18, compared byte for byte.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from memcache_server import watch
from memcache_server.protocol import constants as C
from memcache_server.protocol import meta as M
from memcache_server.protocol.document import LEGACY_KEY, LEGACY_READ_ONLY
from memcache_server.protocol.numbers import strtol32
from memcache_server.stats import (
    CAS_MISSES,
    DECR_MISSES,
    DELETE_MISSES,
    GET_CMDS,
    GET_EXPIRED,
    GET_FLUSHED,
    GET_MISSES,
    INCR_MISSES,
    META_CMDS,
    STORE_NO_MEMORY,
    STORE_TOO_LARGE,
    TOUCH_CMDS,
)
from memcache_server.storage.clock import exptime_to_abs
from memcache_server.storage.items import (
    ADD,
    APPEND,
    CAS,
    EXISTS,
    NOT_FOUND,
    NOT_STORED,
    PREPEND,
    REPLACE,
    SET,
    STORED,
    TOO_LARGE,
)
from memcache_server.storage.metastore import (
    EV_RECACHE,
    EV_SET_TTL,
    EV_SHOW_TTL,
    EV_VIVIFY_TTL,
    MetaHit,
    MetaResult,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from memcache_server.commands.session import Session
    from memcache_server.protocol.framer import Request

__all__ = ["META_HANDLERS", "meta_store"]

HD = b"HD"
U32 = 0xFFFFFFFF

_MS_MODES = {
    0: SET,
    0x53: SET,  # S
    0x45: ADD,  # E
    0x41: APPEND,  # A
    0x50: PREPEND,  # P
    0x52: REPLACE,  # R
}
_MS_STATUS = {
    STORED: HD,
    EXISTS: b"EX",
    NOT_FOUND: b"NF",
    NOT_STORED: b"NS",
}
_MA_INCR = {0: True, 0x49: True, 0x2B: True, 0x44: False, 0x2D: False}  # none I + D -


def _events(
    s: Session, f: M.MetaFlags, tokens: list[bytes], start: int, stop: int
) -> tuple[tuple[int, int], ...]:
    """The TTL-related flags in the client's order, with their times made absolute."""
    clock = s.ctx.clock
    ev: list[tuple[int, int]] = []
    for i in range(start, stop):
        o = tokens[i][0]
        if o == 0x74:  # t
            ev.append((EV_SHOW_TTL, 0))
        elif o == 0x54:  # T
            ev.append((EV_SET_TTL, exptime_to_abs(f.exptime, clock)))
        elif o == 0x4E:  # N
            ev.append((EV_VIVIFY_TTL, exptime_to_abs(f.autoviv, clock)))
        elif o == 0x52:  # R
            ev.append((EV_RECACHE, exptime_to_abs(f.recache, clock)))
    return tuple(ev)


def _ttl(exp: int, now: int, started: int) -> bytes:
    """`` t<seconds left>``; memcached prints the difference as an unsigned 32-bit number."""
    if exp == 0:
        return b" t-1"
    return b" t%d" % ((_rel(exp, started) - _rel(now, started)) & U32)


# memcached's relative clock starts at ITEM_UPDATE_INTERVAL + 2 seconds (ours at 2).
START_SKEW = 60


def _rel(t: int, started: int) -> int:
    """An absolute time as memcached's relative time; "already expired" (1) stays 1 there."""
    return 1 if t == 1 else t - started + START_SKEW


def _echo(tokens: list[bytes], start: int, key: bytes, binary: bool) -> bytes:
    """The return flags every status line carries: opaque tokens and the key."""
    parts = []
    for i in range(start, len(tokens)):
        tok = tokens[i]
        o = tok[0]
        if o == 0x4F:  # O
            parts.append(b" " + tok)
        elif o == 0x6B:  # k
            parts.append(M.key_token(key, binary))
    return b"".join(parts)


def _prelude(s: Session, tokens: list[bytes], too_long: bytes) -> bool:
    """The checks every meta command makes before its flags; False when it already replied."""
    n = len(tokens)
    if n < 2:
        s.out += C.ERROR
        return False
    if len(tokens[1]) > C.KEY_MAX_LENGTH:
        s.out += C.BAD_FORMAT
        return False
    if n > M.MAX_META_TOKENS:
        s.out += too_long
        return False
    return True


# ------------------------------------------------------------------ mg


def cmd_mg(s: Session, tokens: list[bytes]) -> None:
    if not _prelude(s, tokens, M.ERR_MG_TOO_LONG):
        return
    f = M.parse_flags(tokens, 2)
    if f.error:
        s.out += f.error
        return
    n = len(tokens)
    cut = M.opaque_error_at(tokens, 2)
    events = _events(s, f, tokens, 2, cut)
    touch = f.new_ttl and any(tokens[i][0] == 0x54 for i in range(2, cut))
    r = s.ctx.meta.get(f.key, events, not f.no_update, f.vivify, f.value, touch, cut == n)
    if s.ctx.observed[0] and s.ctx.logger.mask & watch.FETCHERS:
        if isinstance(r, int):
            watch.log_get(s.ctx.logger, s.cid, f.key, r, 0, 0)
        else:
            t = s.ctx.table
            cid = t.class_for(t.item_size(len(f.key), r.flags, r.nbytes + 2))
            watch.log_get(s.ctx.logger, s.cid, f.key, 1, cid, r.nbytes)
    stats = s.stats
    if isinstance(r, int):
        stats[GET_CMDS] += 1
        stats[GET_MISSES] += 1
        if r == -1:
            stats[GET_EXPIRED] += 1
        elif r == -2:
            stats[GET_FLUSHED] += 1
        if cut < n:
            s.out += M.ERR_OPAQUE
        elif not f.no_reply:
            s.out += b"EN" + _echo(tokens, 2, f.key, f.key_binary) + C.CRLF
        return
    if cut < n:
        s.out += M.ERR_OPAQUE
        return
    if touch:
        stats[TOUCH_CMDS] += 1
    else:
        stats[GET_CMDS] += 1
    s.out += _mg_line(s, r, tokens, f.value)


def _mg_line(s: Session, r: MetaHit, tokens: list[bytes], value: bool) -> bytes:
    now = s.ctx.clock.now
    parts = [b"VA %d" % r.nbytes if value else HD]
    marks = iter(r.ttls)
    for i in range(2, len(tokens)):
        tok = tokens[i]
        o = tok[0]
        if o == 0x73:  # s
            parts.append(b" s%d" % r.nbytes)
        elif o == 0x74:  # t
            parts.append(_ttl(next(marks), now, s.ctx.clock.started))
        elif o == 0x63:  # c
            parts.append(b" c%d" % r.cas)
        elif o == 0x66:  # f
            parts.append(b" f%d" % r.flags)
        elif o == 0x6C:  # l
            parts.append(b" l%d" % (r.la & U32))
        elif o == 0x68:  # h
            parts.append(b" h1" if r.fetched else b" h0")
        elif o == 0x4F:  # O
            parts.append(b" " + tok)
        elif o == 0x6B:  # k
            parts.append(M.key_token(r.key, r.key_binary))
    if r.token_sent:
        parts.append(b" Z")
    if r.stale:
        parts.append(b" X")
    if r.won:
        parts.append(b" W")
    parts.append(C.CRLF)
    if value:
        parts.append(r.value)
    return b"".join(parts)


# ------------------------------------------------------------------ ms


def meta_store(s: Session, req: Request) -> None:
    """An ``ms`` whose header framed and whose data block has been read (or swallowed)."""
    tokens: list[bytes] = req[1]
    body: bytes | None = req[2]
    out = s.out
    f = M.parse_flags(tokens, 3)
    if f.error:
        out += f.error
        return
    if f.key == LEGACY_KEY and s.ctx.cluster.legacy_read_only:
        out += LEGACY_READ_ONLY  # the discovery key is not the clients' to write
        return
    mode = _MS_MODES.get(f.mode)
    if mode is None:
        out += M.ERR_MS_MODE
        return
    if f.has_cas and mode in (SET, REPLACE):
        mode = CAS
    if M.opaque_error_at(tokens, 3) < len(tokens):
        out += M.ERR_OPAQUE
        return
    meta = s.ctx.meta
    if body is None:
        # Certainly over -I: memcached refuses it without reading it and drops the old value.
        s.stats[STORE_TOO_LARGE] += 1
        meta.store.drop(f.key)
        out += C.TOO_LARGE
        return
    if not body:
        # the framer accepted the length as memcached's strtol does ("1\t" is 1), not int()
        s.store.count_set(len(f.key), f.client_flags, (strtol32(tokens[2]) or 0) + 2)
        out += C.BAD_CHUNK
        return
    exp = exptime_to_abs(f.exptime, s.ctx.clock) if f.exptime else 0
    outcome, cas = meta.set(
        mode,
        f.key,
        f.key_binary,
        f.client_flags,
        exp,
        body,
        f.req_cas,
        f.set_stale and mode == CAS,
    )
    if s.ctx.observed[0]:
        t = s.ctx.table
        cid = t.class_for(t.item_size(len(f.key), f.client_flags, len(body)))
        ttl = f.exptime if 0 <= f.exptime <= 2592000 else max(0, exp - s.ctx.clock.now)
        watch.log_store(s.ctx.logger, s.cid, b"ms", f.key, ttl, cid, len(body) - 2, outcome)
    status = _MS_STATUS.get(outcome)
    if status is None:
        if outcome == TOO_LARGE:
            s.stats[STORE_TOO_LARGE] += 1
            out += C.TOO_LARGE
        else:
            s.stats[STORE_NO_MEMORY] += 1
            out += C.NO_MEMORY
        return
    if outcome == STORED:
        if f.no_reply:
            return
    elif outcome == NOT_FOUND:
        s.stats[CAS_MISSES] += 1
    parts = [status]
    for i in range(3, len(tokens)):
        tok = tokens[i]
        o = tok[0]
        if o == 0x4F:  # O
            parts.append(b" " + tok)
        elif o == 0x6B:  # k
            parts.append(M.key_token(f.key, f.key_binary))
        elif o == 0x63:  # c: the CAS of what was stored (0 when nothing was)
            parts.append(b" c%d" % cas)
    parts.append(C.CRLF)
    out += b"".join(parts)


# ------------------------------------------------------------------ md


def cmd_md(s: Session, tokens: list[bytes]) -> None:
    if not _prelude(s, tokens, M.ERR_TOO_LONG):
        return
    f = M.parse_flags(tokens, 2)
    if f.error:
        s.out += M.ERR_INVALID_OR_DUP
        return
    if M.opaque_error_at(tokens, 2) < len(tokens):
        s.out += M.ERR_OPAQUE
        return
    new_exp = exptime_to_abs(f.exptime, s.ctx.clock) if f.new_ttl else None
    r = s.ctx.meta.delete(f.key, f.req_cas if f.has_cas else None, f.set_stale, new_exp)
    if r == MetaResult.OK:
        if s.ctx.observed[0] and not f.set_stale:
            watch.log_delete(s.ctx.logger, s.cid, b"md", f.key, 0, 0)
        if f.no_reply:
            return
        status = HD
    else:
        s.stats[DELETE_MISSES] += 1
        status = b"NF" if r == MetaResult.NOT_FOUND else b"EX"
    s.out += status + _echo(tokens, 2, f.key, f.key_binary) + C.CRLF


# ------------------------------------------------------------------ ma


def cmd_ma(s: Session, tokens: list[bytes]) -> None:
    if not _prelude(s, tokens, M.ERR_TOO_LONG):
        return
    f = M.parse_flags(tokens, 2)
    if f.error:
        s.out += M.ERR_INVALID_OR_DUP
        return
    incr = _MA_INCR.get(f.mode)
    if incr is None:
        s.out += M.ERR_MA_MODE
        return
    n = len(tokens)
    cut = M.opaque_error_at(tokens, 2)
    events = _events(s, f, tokens, 2, cut)
    r, hit = s.ctx.meta.arith(f.key, incr, f.delta, f.req_cas, f.vivify, f.initial, events)
    out = s.out
    if r == MetaResult.NON_NUMERIC:
        out += C.NON_NUMERIC
        return
    if r == MetaResult.NO_MEMORY:
        out += C.DELTA_NO_MEMORY
        return
    if r == MetaResult.NOT_STORED:
        out += C.ITEM_NO_MEMORY
        return
    if hit is None:
        if r == MetaResult.NOT_FOUND:
            if incr:
                s.stats[INCR_MISSES] += 1
            else:
                s.stats[DECR_MISSES] += 1
            status = b"NF"
        else:
            status = b"EX"
        if cut < n:
            out += M.ERR_OPAQUE
            return
        out += status + _echo(tokens, 2, f.key, f.key_binary) + C.CRLF
        return
    if cut < n:
        out += M.ERR_OPAQUE
        return
    if f.no_reply and not hit.created:
        return
    now = s.ctx.clock.now
    digits = hit.value
    parts = [b"VA %d" % len(digits) if f.value else HD]
    marks = iter(hit.ttls)
    for i in range(2, n):
        tok = tokens[i]
        o = tok[0]
        if o == 0x63:  # c
            parts.append(b" c%d" % hit.cas)
        elif o == 0x74:  # t
            parts.append(_ttl(next(marks), now, s.ctx.clock.started))
        elif o == 0x4F:  # O
            parts.append(b" " + tok)
        elif o == 0x6B:  # k
            parts.append(M.key_token(f.key, f.key_binary))
    if f.value:
        parts.append(C.CRLF)
        parts.append(digits)
    parts.append(C.CRLF)
    out += b"".join(parts)


# ------------------------------------------------------------------ me, mn


def cmd_me(s: Session, tokens: list[bytes]) -> None:
    n = len(tokens)
    if n < 2 or len(tokens[1]) > C.KEY_MAX_LENGTH:
        s.out += C.BAD_FORMAT
        return
    key = tokens[1]
    if n >= 3 and tokens[2] == b"b":
        key = M.b64decode(key)
        if not key:
            s.out += C.BAD_FORMAT
            return
    s.stats[META_CMDS] += 1
    hit = s.ctx.meta.debug(key)
    if hit is None:
        s.out += C.EN
        return
    now = s.ctx.clock.now
    shown = M.b64encode(hit.key) if hit.key_binary else hit.key
    started = s.ctx.clock.started
    exp = -1 if hit.exp == 0 else _rel(now, started) - _rel(hit.exp, started)
    s.out += b"ME %b exp=%d la=%d cas=%d fetch=%s cls=%d size=%d\r\n" % (
        shown,
        exp,
        hit.la,
        hit.cas,
        b"yes" if hit.fetched else b"no",
        hit.cid,
        hit.ntotal,
    )


def cmd_mn(s: Session, tokens: list[bytes]) -> None:
    s.out += C.MN


META_HANDLERS: dict[bytes, Callable[[Session, list[bytes]], None]] = {
    b"mg": cmd_mg,
    b"md": cmd_md,
    b"ma": cmd_ma,
    b"me": cmd_me,
    b"mn": cmd_mn,
}
