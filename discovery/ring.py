"""Which node owns a key: libketama's consistent-hash ring, and pymemcache's rendezvous hashing.

Pure code: no sockets, no threads, no clock. A ring is immutable once built; the client swaps a
whole new ring in when the membership changes, so a lookup never sees a half-built ring and
needs no lock.

The default ring is bit for bit libmemcached's ``ketama_weighted`` continuum (pylibmc
``ketama_weighted=True``, PHP ``OPT_LIBKETAMA_COMPATIBLE``), so Python, PHP and C clients pointed
at the same cluster agree on every key's owner:

- a member's name is its hostname, plus ``:port`` unless the port is 11211;
- for ``i`` in 0..39 the MD5 of ``"<name>-<i>"`` gives four little-endian uint32 points (160 per
  member);
- a key's position is the first four bytes of MD5(key) as a little-endian uint32 (``str`` keys
  are encoded as UTF-8); its owner is the member of the first point >= the position, wrapping.

Rendezvous (highest random weight) hashing is offered for applications that already run
pymemcache's ``HashClient`` with its default hasher, so that switching to our client moves no key.
"""

from __future__ import annotations

import bisect
import enum
import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from pymemcache.client.rendezvous import RendezvousHash

__all__ = [
    "DEFAULT_PORT",
    "HashRing",
    "KetamaHasher",
    "Naming",
    "Node",
    "Scheme",
    "ketama_key_hash",
    "ketama_name",
    "ketama_points",
]

DEFAULT_PORT = 11211
#: libmemcached's MEMCACHED_POINTS_PER_SERVER_KETAMA: 40 MD5 digests of 4 points each
HASHES_PER_MEMBER = 40
POINTS_PER_HASH = 4
_U32X4 = struct.Struct("<4I")
_U32 = struct.Struct("<I")


@dataclass(frozen=True, slots=True, order=True)
class Node:
    """One cache node as the cluster document names it: ``hostname|ip|port``.

    The hostname is its identity (stable across an in-place replacement that changes the IP, as
    in libmemcached); the ip, when known, is where we connect.
    """

    hostname: str
    ip: str
    port: int

    @property
    def address(self) -> tuple[str, int]:
        """Where to connect: the IP if the document gave one, else the hostname."""
        return (self.ip or self.hostname, self.port)

    @classmethod
    def from_spec(cls, spec: str) -> Node:
        """``host``, ``host:port`` or ``[v6]:port`` -> a node named and reached by that host."""
        spec = spec.strip()
        host, port = spec, DEFAULT_PORT
        if spec.startswith("["):
            end = spec.find("]")
            if end < 0:
                raise ValueError(f"bad node address {spec!r}")
            host, rest = spec[1:end], spec[end + 1 :]
            if rest:
                if not rest.startswith(":"):
                    raise ValueError(f"bad node address {spec!r}")
                port = _parse_port(rest[1:], spec)
        elif spec.count(":") == 1:
            host, _, text = spec.partition(":")
            port = _parse_port(text, spec)
        if not host:
            raise ValueError(f"bad node address {spec!r}")
        return cls(host, "", port)

    def __str__(self) -> str:
        return f"{self.hostname}|{self.ip}|{self.port}"


def _parse_port(text: str, spec: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in node address {spec!r}")
    return int(text)


class Scheme(enum.Enum):
    """How keys are placed on members."""

    #: libmemcached's libketama continuum (the cross-language default)
    KETAMA = "ketama"
    #: pymemcache HashClient's default RendezvousHash (murmur3 of ``"<host>:<port>-<key>"``)
    RENDEZVOUS = "rendezvous"


class Naming(enum.Enum):
    """Which name of a node goes into the hash (it decides placement, not where we connect)."""

    #: the document's hostname: what libmemcached and the AWS clients hash in dynamic mode
    HOSTNAME = "hostname"
    #: the IP (the hostname when the document has none): matches clients configured with IPs
    IP = "ip"


def ketama_name(host: str, port: int) -> str:
    """libmemcached's server name string: ``host``, plus ``:port`` unless the port is 11211."""
    return host if port == DEFAULT_PORT else f"{host}:{port}"


def ketama_points(name: str) -> list[int]:
    """The 160 continuum points of one member, in libmemcached's order."""
    points: list[int] = []
    for i in range(HASHES_PER_MEMBER):
        points.extend(_U32X4.unpack(hashlib.md5(f"{name}-{i}".encode()).digest()))
    return points


def _key_bytes(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else bytes(key)


def ketama_key_hash(key: str | bytes) -> int:
    """A key's position on the continuum: MD5(key)[0:4] as a little-endian uint32."""
    return int(_U32.unpack_from(hashlib.md5(_key_bytes(key)).digest())[0])


class HashRing:
    """An immutable key -> node map over a set of nodes.

    Ketama lookups are one MD5 and one ``bisect`` (O(log n) in the number of points); rendezvous
    lookups score every member (O(n)), as pymemcache does. Build a new ring to change members:
    ``with_nodes``/``without`` are cheap enough (160 MD5s per member) to run on every change.
    """

    __slots__ = (
        "nodes",
        "scheme",
        "naming",
        "_names",
        "_by_name",
        "_hashes",
        "_owners",
        "_rendezvous",
    )

    def __init__(
        self,
        nodes: Iterable[Node],
        *,
        scheme: Scheme = Scheme.KETAMA,
        naming: Naming = Naming.HOSTNAME,
    ) -> None:
        self.nodes: tuple[Node, ...] = tuple(sorted(set(nodes)))
        self.scheme = scheme
        self.naming = naming
        self._names: tuple[str, ...] = tuple(self.member_name(n) for n in self.nodes)
        self._by_name: dict[str, Node] = {}
        for node, name in zip(self.nodes, self._names, strict=True):
            if name in self._by_name:
                # two nodes hashing under one name would silently share its keys
                raise ValueError(f"nodes {self._by_name[name]} and {node} share the name {name!r}")
            self._by_name[name] = node
        self._hashes: list[int] = []
        self._owners: list[Node] = []
        if scheme is Scheme.KETAMA:
            points = [(point, name) for name in self._names for point in ketama_points(name)]
            # libmemcached sorts by point value only; equal points of two members (about one
            # pair per 50-member ring) are ordered by name here so every build agrees
            points.sort()
            self._hashes = [p for p, _ in points]
            self._owners = [self._by_name[name] for _, name in points]
        # pymemcache's own RendezvousHash (murmur3 of "<name>-<key>", ties to the larger name):
        # placement is then pymemcache HashClient's by construction, not by a copy of its code
        self._rendezvous = RendezvousHash(nodes=list(self._names))

    def member_name(self, node: Node) -> str:
        """The string this ring hashes for ``node`` (depends on the scheme and the naming)."""
        host = node.hostname if self.naming is Naming.HOSTNAME else (node.ip or node.hostname)
        if self.scheme is Scheme.KETAMA:
            return ketama_name(host, node.port)
        return f"{host}:{node.port}"

    def __len__(self) -> int:
        return len(self.nodes)

    def __bool__(self) -> bool:
        return bool(self.nodes)

    def __contains__(self, node: object) -> bool:
        return node in self._by_name.values()

    def __repr__(self) -> str:
        return f"HashRing({len(self.nodes)} nodes, {self.scheme.value}, {self.naming.value})"

    def owner(self, key: str | bytes) -> Node:
        """The node that owns ``key``. Raises ``LookupError`` on an empty ring."""
        if not self.nodes:
            raise LookupError("the ring has no nodes")
        if self.scheme is Scheme.KETAMA:
            i = bisect.bisect_left(self._hashes, ketama_key_hash(key))
            return self._owners[i if i < len(self._owners) else 0]
        return self._rendezvous_owner(key)

    def _rendezvous_owner(self, key: str | bytes) -> Node:
        # pymemcache formats the key into the scored string as given: a bytes key scores as
        # "b'...'", so b"foo" and "foo" may land on different nodes. Kept for compatibility.
        name: str = self._rendezvous.get_node(key)
        return self._by_name[name]

    def with_nodes(self, nodes: Iterable[Node]) -> HashRing:
        """A new ring with ``nodes`` added (same scheme and naming)."""
        return HashRing((*self.nodes, *nodes), scheme=self.scheme, naming=self.naming)

    def without(self, nodes: Iterable[Node]) -> HashRing:
        """A new ring with ``nodes`` removed (same scheme and naming)."""
        gone = set(nodes)
        return HashRing(
            (n for n in self.nodes if n not in gone), scheme=self.scheme, naming=self.naming
        )

    def shares(self) -> dict[Node, float]:
        """Exact fraction of the 32-bit key space each node owns (ketama only).

        Used to state balance without sampling keys: the arc that ends at each point belongs to
        that point's member.
        """
        if self.scheme is not Scheme.KETAMA:
            raise ValueError("shares are defined for the ketama ring only")
        share = dict.fromkeys(self.nodes, 0)
        prev = self._hashes[-1] - (1 << 32) if self._hashes else 0
        for point, node in zip(self._hashes, self._owners, strict=True):
            share[node] += point - prev
            prev = point
        return {node: arc / float(1 << 32) for node, arc in share.items()}


class KetamaHasher:
    """libketama placement as a pymemcache ``HashClient`` hasher.

    ``HashClient`` names each server ``"host:port"`` and calls ``add_node``/``remove_node``/
    ``get_node`` with that name. By default the ring member for ``"host:port"`` is libmemcached's
    name of that host (``host`` on 11211, else ``host:port``); pass ``names`` to hash some other
    name, e.g. the document's hostname for a server reached by IP::

        HashClient(servers, hasher=lambda: KetamaHasher({"10.0.0.5:11211": "node-a.local"}))
    """

    def __init__(self, names: Mapping[str, str] | None = None) -> None:
        self._names = dict(names or {})
        self._members: dict[str, str] = {}  # ring member name -> HashClient server key
        self._ring = HashRing(())

    def _member(self, key: str) -> str:
        if key in self._names:
            return self._names[key]
        host, sep, port = key.rpartition(":")
        if sep and port.isdigit():
            return ketama_name(host, int(port))
        return key

    def add_node(self, node: str) -> None:
        member = self._member(node)
        if self._members.get(member) == node:
            return
        self._members[member] = node
        self._rebuild()

    def remove_node(self, node: str) -> None:
        member = self._member(node)
        if self._members.get(member) != node:
            raise ValueError(f"No such node {node} to remove")
        del self._members[member]
        self._rebuild()

    def get_node(self, key: str | bytes) -> str | None:
        if not self._ring:
            return None
        return self._members[self._ring.owner(key).hostname]

    def _rebuild(self) -> None:
        # a member name is used as a node whose hostname is that name on port 11211, so
        # ketama_name() hands the name back unchanged
        self._ring = HashRing(Node(m, "", DEFAULT_PORT) for m in self._members)
