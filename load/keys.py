"""Key naming and key choice (uniform or Zipf), restricted to the keys one server owns.

Each connection is pinned to one server (as a real client keeps a pool per server), so it draws
keys from the workload's distribution *conditioned on* that server's share of the ring.
"""

from __future__ import annotations

import bisect
import itertools
import random
from array import array

from memcache_server.discovery.ring import HashRing, Node


def key_name(prefix: bytes, index: int) -> bytes:
    return b"%s%d" % (prefix, index)


def server_ring(servers: list[tuple[str, int]]) -> HashRing:
    """The libketama ring a ketama client builds over ``servers`` (reached and named by address).

    It is the cluster client's own ring, so a load run places keys exactly as pylibmc,
    libmemcached and our ClusterClient do.
    """
    return HashRing(Node(host, host, port) for host, port in servers)


def partition(prefix: bytes, keys: int, servers: list[tuple[str, int]]) -> list[array[int]]:
    """Key indexes owned by each of ``servers``, in order (MD5 per key: a one-off start-up cost)."""
    parts: list[array[int]] = [array("q") for _ in servers]
    if len(servers) == 1:
        parts[0] = array("q", range(keys))
        return parts
    ring = server_ring(servers)
    position = {addr: i for i, addr in enumerate(servers)}
    for i in range(keys):
        parts[position[ring.owner(key_name(prefix, i)).address]].append(i)
    return parts


class KeyChooser:
    """Picks key indexes from one server's partition."""

    def __init__(self, ids: array[int], dist: str, zipf_s: float, rng: random.Random) -> None:
        if not ids:
            raise ValueError("a server owns no keys; use a larger --keys")
        self._ids = ids
        self._rng = rng
        self._cum: array[float] | None = None
        if dist == "zipf":
            # Rank r (0 = hottest) has weight 1/(r+1)^s; key index == rank.
            weights = ((i + 1) ** -zipf_s for i in ids)
            self._cum = array("d", itertools.accumulate(weights))

    def pick(self) -> int:
        if self._cum is None:
            return self._ids[int(self._rng.random() * len(self._ids))]
        x = self._rng.random() * self._cum[-1]
        return self._ids[min(bisect.bisect_right(self._cum, x), len(self._ids) - 1)]

    def pick_distinct(self, n: int) -> list[int]:
        """``n`` keys for one multi-get, distinct when the partition is large enough."""
        n = min(n, len(self._ids))
        out: list[int] = []
        seen: set[int] = set()
        for _ in range(n * 20):
            k = self.pick()
            if k not in seen:
                seen.add(k)
                out.append(k)
                if len(out) == n:
                    break
        return out
