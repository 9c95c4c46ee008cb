"""Deterministic, self-checking values, so every hit is verified rather than trusted.

Layout of a value of ``size`` bytes (``size >= HEADER_SIZE``)::

    version: 4 bytes big-endian | check: 4 bytes = crc32(key, version, size) | body

``body`` is MD5(key ":" version) repeated and cut to length.  A reader that knows only the key
can therefore recompute the whole value from its header:

* ``short``   - shorter than the header: not one of ours;
* ``foreign`` - header checksum does not match this key/length (another key's value, another
  writer's value, or a damaged header);
* ``torn``    - header fine but the body differs (e.g. halves of two writes, or corruption).
"""

from __future__ import annotations

import hashlib
import struct
import zlib

HEADER_SIZE = 8
_HEADER = struct.Struct(">II")


_CACHE_LIMIT_BYTES = 32 << 20
_body_cache: dict[tuple[bytes, int, int], bytes] = {}
_cache_bytes = 0


def _check(key: bytes, version: int, size: int) -> int:
    return zlib.crc32(b"%s:%d:%d" % (key, version, size))


def _body(key: bytes, version: int, body_len: int) -> bytes:
    """Expected body; memoised (bounded) because gets re-read the same versions a lot."""
    global _cache_bytes
    ck = (key, version, body_len)
    body = _body_cache.get(ck)
    if body is None:
        pattern = hashlib.md5(b"%s:%d" % (key, version)).digest()
        body = (pattern * (body_len // 16 + 1))[:body_len]
        if _cache_bytes > _CACHE_LIMIT_BYTES:
            _body_cache.clear()
            _cache_bytes = 0
        _body_cache[ck] = body
        _cache_bytes += body_len + 64
    return body


def make_value(key: bytes, version: int, size: int) -> bytes:
    """The value written for ``key`` at ``version``; ``size`` is clamped up to the header."""
    size = max(size, HEADER_SIZE)
    version &= 0xFFFFFFFF
    return _HEADER.pack(version, _check(key, version, size)) + _body(
        key, version, size - HEADER_SIZE
    )


def verify_value(key: bytes, data: bytes) -> str | None:
    """``None`` if ``data`` is a value this generator wrote for ``key``; else the error kind."""
    size = len(data)
    if size < HEADER_SIZE:
        return "short"
    version, check = _HEADER.unpack_from(data)
    if check != _check(key, version, size):
        return "foreign"
    if data[HEADER_SIZE:] != _body(key, version, size - HEADER_SIZE):
        return "torn"
    return None
