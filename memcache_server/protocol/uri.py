"""memcached's URI encoding of keys in text it emits (watch lines, ``lru_crawler metadump``).

Why its own module: two producers (the log streams and the metadump command) must encode keys
the same way, and neither should import the other. Pure bytes in, bytes out.
"""

from __future__ import annotations

__all__ = ["uriencode"]

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def uriencode(key: bytes) -> bytes:
    """memcached's uriencode: unreserved bytes as they are, every other byte as %XX."""
    if all(b in _UNRESERVED for b in key):
        return key
    return b"".join(bytes((b,)) if b in _UNRESERVED else b"%%%02X" % b for b in key)
