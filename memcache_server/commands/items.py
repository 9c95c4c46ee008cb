"""Classic item commands: storage (``set add replace append prepend cas``), ``get gets gat
gats bget``, ``delete``, ``incr decr``, ``touch``.

The hot path: a get is a lookup that appends the item's stored header and value to the output
buffer; nothing is formatted per hit except a CAS. Handlers run on the connection's worker
thread and use only the session's item context (``s.ctx``). Replies are memcached 1.6.18's,
byte for byte; the checks run in its order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from memcache_server import watch
from memcache_server.commands.respbudget import keys_allowed
from memcache_server.protocol import constants as C
from memcache_server.protocol.document import LEGACY_KEY, LEGACY_READ_ONLY
from memcache_server.protocol.framer import Request
from memcache_server.protocol.numbers import strtol32, strtoull
from memcache_server.stats import (
    CAS_MISSES,
    DECR_MISSES,
    DELETE_MISSES,
    GET_CMDS,
    GET_EXPIRED,
    GET_FLUSHED,
    GET_MISSES,
    INCR_MISSES,
    RESPONSE_OBJ_OOM,
    STORE_NO_MEMORY,
    STORE_TOO_LARGE,
    TOUCH_CMDS,
    TOUCH_MISSES,
)
from memcache_server.storage.items import (
    ADD,
    APPEND,
    CAS,
    DELTA_OK,
    EXISTS,
    NO_MEMORY,
    NON_NUMERIC,
    NOT_FOUND,
    NOT_STORED,
    PREPEND,
    REPLACE,
    SET,
    STORED,
    TOO_LARGE,
)

if TYPE_CHECKING:
    from memcache_server.commands.session import Handler, Session

__all__ = ["ITEM_COMMAND_HANDLERS", "STORE_MODES", "store_request", "vlen_of"]

STORE_MODES = {
    b"set": SET,
    b"add": ADD,
    b"replace": REPLACE,
    b"append": APPEND,
    b"prepend": PREPEND,
    b"cas": CAS,
}
OUTCOME_REPLY = {
    STORED: C.STORED,
    NOT_STORED: C.NOT_STORED,
    EXISTS: C.EXISTS,
    NOT_FOUND: C.NOT_FOUND,
    TOO_LARGE: C.TOO_LARGE,
    NO_MEMORY: C.NO_MEMORY,
}
_GET_KEYS_MAX = C.KEY_MAX_LENGTH
_END = C.END  # module constants on the get path: one lookup, not two


def vlen_of(req: Request) -> int:
    """The declared data length (with CRLF) of a storage request, read as the framer read it."""
    return (strtol32(req[1][4]) or 0) + 2


# ------------------------------------------------------------------ storage

def store_request(s: Session, req: Request) -> None:
    _, tokens, key, flags, exptime, cas, body, noreply = req
    if key == LEGACY_KEY and s.ctx.cluster.legacy_read_only:
        if not noreply:
            s.out += LEGACY_READ_ONLY  # the discovery key is not the clients' to write
        return
    observed = s.ctx.observed[0]
    if observed:
        observe_store(s, req, None)
    if body is None:
        # Over -I: memcached refuses it before reading and drops the old value of a set.
        s.stats[STORE_TOO_LARGE] += 1
        if tokens[0] == b"set":
            s.store.drop(key)
        if observed:
            observe_store(s, req, TOO_LARGE)
        if not noreply:
            s.out += C.TOO_LARGE
        return
    if not body:
        s.store.count_set(len(key), flags, vlen_of(req))
        if not noreply:
            s.out += C.BAD_CHUNK
        return
    outcome = s.store.store(
        STORE_MODES[tokens[0]],
        key,
        flags,
        exptime,
        body,
        cas,
    )
    if outcome != STORED:
        if outcome == NOT_FOUND:
            s.stats[CAS_MISSES] += 1
        elif outcome == TOO_LARGE:
            s.stats[STORE_TOO_LARGE] += 1
        elif outcome == NO_MEMORY:
            s.stats[STORE_NO_MEMORY] += 1
    if observed:
        observe_store(s, req, outcome)
    if not noreply:
        s.out += OUTCOME_REPLY[outcome]

# ------------------------------------------------------------------ retrieval


def get_one(s: Session, key: bytes) -> None:
    """The reply to a get of one key (with no stats detail or watcher to feed): ``cmd_get``'s
    and ``Session.serve``'s, which answers a read that is one get line without tokenising."""
    out = s.out
    if len(key) > _GET_KEYS_MAX:
        out.clear()  # memcached releases every reply still queued on the connection
        out += C.BAD_FORMAT
        return
    s.stats[GET_CMDS] += 1
    r = s.store.get_into(key, out)
    if r != 1 and not (key == LEGACY_KEY and _legacy_get(s, key)):
        _miss(s, r)
    out += _END


def cmd_get(s: Session, tokens: list[bytes]) -> None:
    n = len(tokens)
    if n < 2:
        s.out += C.ERROR
        return
    if s.ctx.observed[0]:
        _get_with(s, tokens, False, False)  # the same reply, with stats detail/watchers
        return
    if n == 2:
        get_one(s, tokens[1])
        return
    out = s.out
    get_into = s.store.get_into
    stats = s.stats
    if s.get_buffers and _out_of_responses(s, tokens, 1, None, False):
        return
    limit = s.out_limit
    if LEGACY_KEY not in tokens and max(map(len, tokens)) <= _GET_KEYS_MAX:
        # every key valid and none the cluster document's: one hold of the store lock
        stats[GET_CMDS] += n - 1
        codes: list[int] = []
        stop = s.store.get_many_into(tokens, 1, out, limit, codes)
        for r in codes:
            if r != 1:
                _miss(s, r)
        if stop < n:
            stats[GET_CMDS] -= n - stop  # counted when the get resumes
            s.suspend(cmd_get, tokens[:1], tokens[stop:])
            return
        out += _END
        return
    keys = iter(tokens)
    next(keys)
    # cmd_get counts every key up front (one counter write, not one per key) and takes back
    # the keys it does not reach: a bad key and those after it, the rest of a suspended get
    stats[GET_CMDS] += n - 1
    for key in keys:
        if len(key) > _GET_KEYS_MAX:
            stats[GET_CMDS] -= 1 + sum(1 for _ in keys)
            out.clear()  # memcached releases every reply still queued on the connection
            out += C.BAD_FORMAT
            return
        r = get_into(key, out)
        if r != 1 and not (key == LEGACY_KEY and _legacy_get(s, key)):
            _miss(s, r)
        elif len(out) > limit:
            rest = list(keys)
            if rest:
                stats[GET_CMDS] -= len(rest)  # counted when the get resumes
                s.suspend(cmd_get, tokens[:1], rest)
                return
    out += _END

def _legacy_get(s: Session, key: bytes) -> bool:
    """A miss on ``AmazonElastiCache:cluster``: the cluster document instead (checked only on
    a miss, with one bytes comparison, so ordinary gets pay nothing for it)."""
    return s.ctx.cluster.legacy_value_into(key, s.out)

def _miss(s: Session, r: int) -> None:
    stats = s.stats
    stats[GET_MISSES] += 1
    if r == -1:
        stats[GET_EXPIRED] += 1
    elif r == -2:
        stats[GET_FLUSHED] += 1

def _get_with(
    s: Session, tokens: list[bytes], with_cas: bool, touch: bool
) -> None:
    out = s.out
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
    if s.get_buffers and _out_of_responses(s, tokens, first, exptime, with_cas):
        return
    stats = s.stats
    get_parts = s.store.get_parts
    observed = s.ctx.observed[0]
    keys = iter(tokens)
    for _ in range(first):
        next(keys)
    limit = s.out_limit
    for key in keys:
        if len(key) > _GET_KEYS_MAX:
            out.clear()  # memcached releases every reply still queued on the connection
            out += C.BAD_FORMAT
            return
        r = get_parts(key, exptime)
        if observed:
            observe_get(s, key, r)
        if touch:
            stats[TOUCH_CMDS] += 1
        else:
            stats[GET_CMDS] += 1
        if isinstance(r, int):
            if touch:
                stats[TOUCH_MISSES] += 1
            elif not (key == LEGACY_KEY and not with_cas and _legacy_get(s, key)):
                _miss(s, r)
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
                s.suspend(_GET_WITH[with_cas, touch], tokens[:first], rest)
                return
    out += C.END

def _out_of_responses(
    s: Session, tokens: list[bytes], first: int, exptime: int | None, with_cas: bool
) -> bool:
    """memcached's get past its response buffers (see respbudget.py): the keys that fit are
    looked up and counted, and the get answers SERVER_ERROR alone (replies of earlier gets
    stay: memcached has sent them before it reads the next command). False (nothing done)
    when the keys fit. A get resumed after its reply filled the output buffer was checked
    with all its keys, and its rest names fewer."""
    allowed = keys_allowed(s.get_buffers, tokens)
    if len(tokens) - first <= allowed:
        return False
    out = s.out
    start = len(out)
    stats = s.stats
    touch = exptime is not None
    observed = s.ctx.observed[0]
    for key in tokens[first : first + allowed]:
        if len(key) > _GET_KEYS_MAX:
            del out[start:]
            out += C.BAD_FORMAT
            return True
        r = s.store.get_parts(key, exptime)  # counts a hit (or touch) in the item's class
        if observed:
            observe_get(s, key, r)
        stats[TOUCH_CMDS if touch else GET_CMDS] += 1
        if isinstance(r, int):
            if touch:
                stats[TOUCH_MISSES] += 1
            elif not (key == LEGACY_KEY and not with_cas and _legacy_get(s, key)):
                _miss(s, r)
    stats[RESPONSE_OBJ_OOM] += 1
    del out[start:]  # what a miss on the cluster document's legacy key added
    out += C.GET_NO_MEMORY
    return True

def cmd_gets(s: Session, tokens: list[bytes]) -> None:
    if len(tokens) < 2:
        s.out += C.ERROR
        return
    _get_with(s, tokens, True, False)

def cmd_gat(s: Session, tokens: list[bytes]) -> None:
    if len(tokens) < 2:
        s.out += C.ERROR
        return
    _get_with(s, tokens, False, True)

def cmd_gats(s: Session, tokens: list[bytes]) -> None:
    if len(tokens) < 2:
        s.out += C.ERROR
        return
    _get_with(s, tokens, True, True)

# ------------------------------------------------------------------ other item commands


def cmd_delete(s: Session, tokens: list[bytes]) -> None:
    n = len(tokens)
    if n < 2 or n > 4:
        s.out += C.ERROR
        return
    # memcached looks for noreply only after a key: `delete noreply` deletes the key "noreply"
    noreply = n > 2 and tokens[-1] == b"noreply"
    if n > 2:
        hold_is_zero = tokens[2] == b"0"
        valid = (n == 3 and (hold_is_zero or noreply)) or (n == 4 and hold_is_zero and noreply)
        if not valid:
            if not noreply:
                s.out += C.DELETE_USAGE
            return
    key = tokens[1]
    if len(key) > C.KEY_MAX_LENGTH:
        if not noreply:
            s.out += C.BAD_FORMAT
        return
    observed = s.ctx.observed[0]
    if observed:
        observe_delete(s, key, None)
    if s.store.delete(key):
        if observed:
            observe_delete(s, key, b"delete")
        reply = C.DELETED
    else:
        s.stats[DELETE_MISSES] += 1
        reply = C.NOT_FOUND
    if not noreply:
        s.out += reply

def _key_number(
    s: Session,
    tokens: list[bytes],
    parse: Callable[[bytes], int | None],
    bad_number: bytes,
    act: Callable[[bytes, int], bytes],
) -> None:
    """``<cmd> <key> <number> [noreply]`` (incr, decr, touch): memcached's shared checks, in
    its order (token count, key length, the number), then ``act(key, number)``'s reply."""
    n = len(tokens)
    if n != 3 and n != 4:
        s.out += C.ERROR
        return
    noreply = n == 4 and tokens[3] == b"noreply"
    key = tokens[1]
    if len(key) > C.KEY_MAX_LENGTH:
        reply = C.BAD_FORMAT
    else:
        number = parse(tokens[2])
        reply = bad_number if number is None else act(key, number)
    if not noreply:
        s.out += reply

def _delta(s: Session, key: bytes, delta: int, incr: bool) -> bytes:
    outcome, value = s.store.incr_decr(key, delta, incr)
    if outcome == DELTA_OK:
        return b"%d\r\n" % value
    if outcome == NOT_FOUND:
        if incr:
            s.stats[INCR_MISSES] += 1
        else:
            s.stats[DECR_MISSES] += 1
        return C.NOT_FOUND
    if outcome == NON_NUMERIC:
        return C.NON_NUMERIC
    return C.DELTA_NO_MEMORY

def _touch(s: Session, key: bytes, exptime: int) -> bytes:
    s.stats[TOUCH_CMDS] += 1
    if s.store.touch(key, exptime):
        return C.TOUCHED
    s.stats[TOUCH_MISSES] += 1
    return C.NOT_FOUND

def cmd_incr(s: Session, tokens: list[bytes]) -> None:
    _key_number(s, tokens, strtoull, C.BAD_DELTA, lambda k, d: _delta(s, k, d, True))

def cmd_decr(s: Session, tokens: list[bytes]) -> None:
    _key_number(s, tokens, strtoull, C.BAD_DELTA, lambda k, d: _delta(s, k, d, False))

def cmd_touch(s: Session, tokens: list[bytes]) -> None:
    _key_number(s, tokens, strtol32, C.BAD_EXPTIME, lambda k, e: _touch(s, k, e))


_GET_WITH: dict[tuple[bool, bool], Handler] = {
    (False, False): cmd_get,  # a plain get takes this path when stats detail is on
    (True, False): cmd_gets,
    (False, True): cmd_gat,
    (True, True): cmd_gats,
}


def _wrong_arity(s: Session, tokens: list[bytes]) -> None:
    """A storage command with the wrong number of tokens arrives as a CMD: memcached says ERROR."""
    s.out += C.ERROR


ITEM_COMMAND_HANDLERS: dict[bytes, Handler] = {
    b"get": cmd_get,
    b"bget": cmd_get,
    b"gets": cmd_gets,
    b"gat": cmd_gat,
    b"gats": cmd_gats,
    b"delete": cmd_delete,
    b"incr": cmd_incr,
    b"decr": cmd_decr,
    b"touch": cmd_touch,
    **{name: _wrong_arity for name in STORE_MODES},
}

# ------------------------------------------------------------------ observing item requests
# Called only while ``ctx.observed`` (stats detail on, or an item log stream watched); never on
# the plain request path.


def observe_get(s: Session, key: bytes, r: tuple[bytes, bytes, int] | int) -> None:
    """A get/gets/gat/gats key: per-prefix counts and the fetchers stream."""
    ctx = s.ctx
    hit = not isinstance(r, int)
    if ctx.detail is not None:
        ctx.detail.record_get(key, hit)
    if ctx.logger.mask & watch.FETCHERS:
        if isinstance(r, int):
            watch.log_get(ctx.logger, s.cid, key, r, 0, 0)
        else:
            header, body, _ = r
            flags = int(header.rsplit(b" ", 2)[1])
            cid = ctx.table.class_for(ctx.table.item_size(len(key), flags, len(body)))
            watch.log_get(ctx.logger, s.cid, key, 1, cid, len(body) - 2)


def observe_store(s: Session, req: Request, outcome: int | None) -> None:
    """A storage command: counted before it runs (None), logged once it has an outcome."""
    ctx = s.ctx
    _, tokens, key, flags, exptime, _, body, _ = req
    if outcome is None:
        if ctx.detail is not None:
            ctx.detail.record_set(key)
        return
    if ctx.logger.mask & watch.MUTATIONS:
        nbytes = int(tokens[4]) + 2 if tokens[4].isdigit() else 2
        cid = ctx.table.class_for(ctx.table.item_size(len(key), flags, nbytes))
        ttl = exptime if 0 <= exptime <= 2592000 else max(0, exptime - ctx.clock.now)
        watch.log_store(ctx.logger, s.cid, tokens[0], key, ttl, cid, nbytes - 2, outcome)


def observe_delete(s: Session, key: bytes, cmd: bytes | None) -> None:
    """A delete: counted before it runs (None); logged as ``cmd`` when it removed the item."""
    ctx = s.ctx
    if cmd is None:
        if ctx.detail is not None:
            ctx.detail.record_delete(key)
    elif ctx.logger.mask & watch.DELETIONS:
        watch.log_delete(ctx.logger, s.cid, cmd, key, 0, 0)
