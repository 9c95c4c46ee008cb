"""Meta protocol (``mg ms md ma mn me``): flag parsing and reply building, sans I/O.

memcached parses meta flags in one pass over the tokens after the key (``_meta_flag_preparse``)
and builds the reply line in a second pass, in the order the client gave the flags. Both passes
live here as pure functions over byte tokens so they can be tested without a socket or a store;
``commands/meta.py`` glues them to the store. Error strings and their precedence are
memcached 1.6.18's, checked side by side with the real server.
"""

from __future__ import annotations

import base64

from memcache_server.protocol.numbers import strtol32, strtoul32, strtoull

__all__ = [
    "MetaFlags",
    "parse_flags",
    "b64decode",
    "b64encode",
    "opaque_error_at",
    "key_token",
    "MAX_META_TOKENS",
    "MAX_OPAQUE",
]

# memcached's MFLAG_MAX_OPT_LENGTH counts its terminal token: more than 19 real tokens is refused.
MAX_META_TOKENS = 19
MAX_OPAQUE = 32  # MFLAG_MAX_OPAQUE_LENGTH, the 'O' included

ERR_DUPLICATE = b"CLIENT_ERROR duplicate flag\r\n"
ERR_INVALID = b"CLIENT_ERROR invalid flag\r\n"
ERR_BAD_TOKEN = b"CLIENT_ERROR bad token in command line format\r\n"
ERR_DECODE_KEY = b"CLIENT_ERROR error decoding key\r\n"
ERR_M_LENGTH = b"CLIENT_ERROR incorrect length for M token\r\n"
ERR_INITIAL = b"CLIENT_ERROR invalid numeric initial value\r\n"
ERR_DELTA = b"CLIENT_ERROR invalid numeric delta value\r\n"
ERR_OPAQUE = b"CLIENT_ERROR opaque token too long\r\n"
ERR_BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
ERR_MG_TOO_LONG = b"CLIENT_ERROR options flags are too long\r\n"
ERR_TOO_LONG = b"CLIENT_ERROR options flags too long\r\n"
ERR_INVALID_OR_DUP = b"CLIENT_ERROR invalid or duplicate flag\r\n"
ERR_MS_MODE = b"CLIENT_ERROR invalid mode for ms M token\r\n"
ERR_MA_MODE = b"CLIENT_ERROR invalid mode for ma M token\r\n"


class MetaFlags:
    """What a meta request's flags ask for (memcached's ``struct _meta_flags``).

    TTL-like values stay as the client's signed 32-bit numbers: turning them into absolute times
    needs the server clock, which this layer never touches.
    """

    __slots__ = (
        "error",
        "key",
        "key_binary",
        "no_update",
        "locked",
        "vivify",
        "la",
        "value",
        "set_stale",
        "no_reply",
        "has_cas",
        "new_ttl",
        "mode",
        "exptime",
        "autoviv",
        "recache",
        "client_flags",
        "req_cas",
        "delta",
        "initial",
    )

    def __init__(self, key: bytes) -> None:
        self.error = b""  # the reply line when parsing failed
        self.key = key
        self.key_binary = False
        self.no_update = False
        self.locked = False
        self.vivify = False
        self.la = False
        self.value = False
        self.set_stale = False
        self.no_reply = False
        self.has_cas = False
        self.new_ttl = False
        self.mode = 0
        self.exptime = 0
        self.autoviv = 0
        self.recache = 0
        self.client_flags = 0
        self.req_cas = 0
        self.delta = 1
        self.initial = 0


def parse_flags(tokens: list[bytes], start: int) -> MetaFlags:
    """memcached's ``_meta_flag_preparse`` over ``tokens[start:]``; the key is ``tokens[1]``.

    A repeated or unknown flag stops parsing at once; a bad value only records its message and
    parsing goes on, so a later, different error wins (memcached overwrites its errstr).
    """
    f = MetaFlags(tokens[1])
    seen = 0
    has_error = False
    err = ERR_BAD_FORMAT
    for i in range(start, len(tokens)):
        tok = tokens[i]
        o = tok[0]
        bit = 1 << o
        if o >= 127 or seen & bit:
            f.error = ERR_DUPLICATE
            return f
        seen |= bit
        if o == 0x62:  # b: the key is base64
            decoded = b64decode(tokens[1])
            if not decoded:
                err = ERR_DECODE_KEY
                has_error = True
            f.key = decoded
            f.key_binary = True
        elif o == 0x4E:  # N: vivify on miss with this TTL
            f.locked = f.vivify = True
            v = strtol32(tok[1:])
            if v is None:
                err, has_error = ERR_BAD_TOKEN, True
            else:
                f.autoviv = v
        elif o == 0x54:  # T: new TTL
            f.locked = True
            v = strtol32(tok[1:])
            if v is None:
                err, has_error = ERR_BAD_TOKEN, True
            else:
                f.exptime = v
                f.new_ttl = True
        elif o == 0x52:  # R: recache when TTL is below this
            f.locked = True
            v = strtol32(tok[1:])
            if v is None:
                err, has_error = ERR_BAD_TOKEN, True
            else:
                f.recache = v
        elif o == 0x6C:  # l: last access
            f.la = f.locked = True
        elif o in _PASSIVE:
            pass
        elif o == 0x76:  # v
            f.value = True
        elif o == 0x68:  # h
            f.locked = True
        elif o == 0x75:  # u
            f.no_update = True
        elif o == 0x71:  # q
            f.no_reply = True
        elif o == 0x46:  # F: client flags (an error here keeps the generic message)
            u = strtoul32(tok[1:])
            if u is None:
                has_error = True
            else:
                f.client_flags = u
        elif o == 0x43:  # C: compare CAS
            u = strtoull(tok[1:])
            if u is None:
                err, has_error = ERR_BAD_TOKEN, True
            else:
                f.req_cas = u
                f.has_cas = True
        elif o == 0x4D:  # M: mode switch
            if len(tok) != 2:
                err, has_error = ERR_M_LENGTH, True
            else:
                f.mode = tok[1]
        elif o == 0x4A:  # J: ma initial value
            u = strtoull(tok[1:])
            if u is None:
                err, has_error = ERR_INITIAL, True
            else:
                f.initial = u
        elif o == 0x44:  # D: ma delta
            u = strtoull(tok[1:])
            if u is None:
                err, has_error = ERR_DELTA, True
            else:
                f.delta = u
        elif o == 0x49:  # I: invalidate / set stale
            f.set_stale = True
        else:
            f.error = ERR_INVALID
            return f
    if has_error:
        f.error = err
    return f


# Flags accepted and handled while building the reply (or only by the proxy): O P L k s t c f.
_PASSIVE = frozenset(b"OPLkstcf")


def opaque_error_at(tokens: list[bytes], start: int) -> int:
    """Index of the first opaque token longer than memcached allows, or len(tokens)."""
    for i in range(start, len(tokens)):
        tok = tokens[i]
        if tok[0] == 0x4F and len(tok) > MAX_OPAQUE:
            return i
    return len(tokens)


def key_token(key: bytes, binary: bool) -> bytes:
    """The `` k<key>`` return flag; a binary key goes back base64 encoded, followed by `` b``."""
    if binary:
        return b" k" + b64encode(key) + b" b"
    return b" k" + key


# ------------------------------------------------------------------ base64, memcached's way

_B64 = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _decode_table() -> tuple[int, ...]:
    table = [0x80] * 256
    for i, ch in enumerate(_B64):
        table[ch] = i
    table[0x3D] = 0  # '=' decodes as zero bits and marks padding
    return tuple(table)


_DTABLE = _decode_table()


def b64decode(src: bytes) -> bytes:
    """memcached's base64_decode: bytes outside the alphabet are skipped, the rest must come in
    groups of four, padding ends decoding. Returns b"" where memcached returns 0 (failure)."""
    dt = _DTABLE
    count = sum(1 for ch in src if dt[ch] != 0x80)
    if count == 0 or count % 4 or count // 4 * 3 > len(src):
        return b""
    out = bytearray()
    block = [0, 0, 0, 0]
    n = 0
    pad = 0
    for ch in src:
        t = dt[ch]
        if t == 0x80:
            continue
        if ch == 0x3D:
            pad += 1
        block[n] = t
        n += 1
        if n == 4:
            out.append(((block[0] << 2) | (block[1] >> 4)) & 0xFF)
            out.append(((block[1] << 4) | (block[2] >> 2)) & 0xFF)
            out.append(((block[2] << 6) | block[3]) & 0xFF)
            n = 0
            if pad:
                if pad == 1:
                    del out[-1:]
                elif pad == 2:
                    del out[-2:]
                else:
                    return b""
                break
    return bytes(out)


def b64encode(src: bytes) -> bytes:
    """Standard base64 with padding and no line breaks (what memcached sends for binary keys)."""
    return base64.b64encode(src)
