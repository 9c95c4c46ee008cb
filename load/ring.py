"""libketama-like consistent hashing: which server owns a key.

Each server ``"host:port"`` gets 160 points on a 32-bit ring: for ``i`` in 0..39 the MD5 of
``"host:port-i"`` yields four little-endian 32-bit points.  A key hashes to the first four bytes
of its MD5 (little-endian) and belongs to the first point at or after it, wrapping around.
Adding or removing one server moves only ~1/N of the keys, as with libmemcached's ketama mode
(the point strings are not byte-identical to libmemcached's, so do not mix clients).
"""

from __future__ import annotations

import bisect
import hashlib
import struct

POINTS_PER_HASH = 4
HASHES_PER_SERVER = 40
_U32X4 = struct.Struct("<4I")


class Ring:
    """An immutable ketama ring over server names."""

    def __init__(self, servers: list[str]) -> None:
        if not servers:
            raise ValueError("a ring needs at least one server")
        points: list[tuple[int, int]] = []
        for index, name in enumerate(servers):
            for i in range(HASHES_PER_SERVER):
                digest = hashlib.md5(f"{name}-{i}".encode()).digest()
                points.extend((p, index) for p in _U32X4.unpack(digest))
        points.sort()
        self.servers = list(servers)
        self._hashes = [p for p, _ in points]
        self._owners = [o for _, o in points]

    def owner(self, key: bytes) -> int:
        """Index (into ``servers``) of the server that owns ``key``."""
        if len(self.servers) == 1:
            return 0
        h = int.from_bytes(hashlib.md5(key).digest()[:4], "little")
        i = bisect.bisect_left(self._hashes, h)
        return self._owners[i if i < len(self._owners) else 0]
