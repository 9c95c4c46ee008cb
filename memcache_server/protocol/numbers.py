"""memcached's safe_strto* number parsing, reproduced bit for bit.

memcached parses request numbers with strtol/strtoul and then *truncates* them to 32 bits (so a
length of 4294967296 reads as 0) and rejects a minus sign on unsigned fields only when the result
looks negative. Clients and fuzzers hit these edges, so we reproduce them rather than Python's
``int()``, which would also accept underscores, whitespace and non-ASCII digits.
"""

from __future__ import annotations

import math
import re

__all__ = ["strtol32", "strtoul32", "strtoull", "strtoll", "strtod"]

_U64 = 1 << 64
_I64_MAX = (1 << 63) - 1


_SPACE = b" \t\n\v\f\r"


def _c_digits(tok: bytes) -> tuple[bool, int] | None:
    """(negative, magnitude) as strtol reads them; None where memcached's check fails.

    strtol skips leading whitespace and stops at the first non-digit; memcached then accepts the
    number only if that character is whitespace or the end (so ``5\t`` and ``5\tjunk`` read as
    5, ``5x`` does not).
    """
    body = tok.lstrip(_SPACE)
    neg = False
    if body[:1] in (b"-", b"+"):
        neg = body[:1] == b"-"
        body = body[1:]
    n = 0
    end = len(body)
    while n < end and 48 <= body[n] <= 57:
        n += 1
    if n == 0 or (n < end and body[n] not in _SPACE):
        return None
    return neg, int(body[:n])


def strtoll(tok: bytes) -> int | None:
    """safe_strtoll: a signed 64-bit value or None (ERANGE or junk)."""
    if tok.isdigit() and len(tok) < 19:
        return int(tok)
    parsed = _c_digits(tok)
    if parsed is None:
        return None
    neg, mag = parsed
    v = -mag if neg else mag
    if v > _I64_MAX or v < -_I64_MAX - 1:
        return None
    return v


def strtol32(tok: bytes) -> int | None:
    """safe_strtol into an int32_t: parse as a 64-bit long, then truncate to 32 bits."""
    if tok.isdigit() and len(tok) < 10:
        return int(tok)
    v = strtoll(tok)
    if v is None:
        return None
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def strtoull(tok: bytes) -> int | None:
    """safe_strtoull: unsigned 64-bit; a minus sign is refused when the result looks negative."""
    if tok.isdigit() and len(tok) < 20:
        return int(tok)
    parsed = _c_digits(tok)
    if parsed is None:
        return None
    neg, mag = parsed
    if mag >= _U64:
        return None
    v = (_U64 - mag) % _U64 if neg else mag
    if v > _I64_MAX and neg:
        return None
    return v


def strtoul32(tok: bytes) -> int | None:
    """safe_strtoul into a uint32_t: 64-bit strtoul, sign rule as above, truncated to 32 bits."""
    if tok.isdigit() and len(tok) < 10:
        return int(tok)
    v = strtoull(tok)
    if v is None:
        return None
    return v & 0xFFFFFFFF


_DBL_MIN = 2.2250738585072014e-308  # below it glibc's strtod reports ERANGE
_FLOAT = re.compile(
    rb"[+-]?(?:"
    rb"0[xX](?P<hex>(?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?)"
    rb"|(?P<dec>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    rb"|(?P<inf>(?i:infinity|inf))"
    rb"|(?P<nan>(?i:nan)(?:\([0-9A-Za-z_]*\))?)"
    rb")"
)


def strtod(tok: bytes) -> float | None:
    """safe_strtod: strtod (decimal, hex, inf, nan), then only whitespace may follow; an
    out-of-range value (overflow or underflow, glibc's ERANGE) is refused."""
    body = tok.lstrip(_SPACE)
    m = _FLOAT.match(body)
    if m is None:
        return None
    rest = body[m.end() :]
    if rest and rest[0] not in _SPACE:
        return None
    text = m.group(0)
    neg = text[:1] == b"-"
    if m.group("inf") is not None:
        return -math.inf if neg else math.inf
    if m.group("nan") is not None:
        return math.nan
    hexpart = m.group("hex")
    if hexpart is not None:
        mant, _, exp = hexpart.lower().partition(b"p")
        if b"." not in mant:
            mant += b"."
        v = float.fromhex(("-" if neg else "") + "0x" + (mant + b"p" + (exp or b"0")).decode())
        digits = mant
    else:
        v = float(text)
        digits = m.group("dec").lower().partition(b"e")[0]
    if math.isinf(v) or (v == 0.0 and digits.strip(b"0.")) or 0 < abs(v) < _DBL_MIN:
        return None
    return v
