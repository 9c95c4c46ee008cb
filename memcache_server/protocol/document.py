"""The cluster document: the node list ElastiCache-aware clients fetch, and its exact wire form.

Pure: no sockets, no clock, no threads. The config node, every cache node, the operator CLI and
client-side code share this one codec, so what is emitted and what is accepted cannot drift.

Canonical form (the only one ever emitted): decimal version, LF, the nodes as
``hostname|ip|port`` joined by single spaces and sorted by hostname then port, LF. The parser is
tolerant of what real engines and hand-written fixtures send (CRLF after the version, runs of
whitespace, no final newline) but rejects what would break a client (a token without exactly two
``|``, a bad port, a version outside 1..2^31-1, the same node twice).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "CONFIG_GET",
    "LEGACY_GET",
    "MAX_VERSION",
    "LEGACY_KEY",
    "DocumentError",
    "NodeAddress",
    "ClusterDocument",
    "parse_document",
    "config_reply",
    "legacy_value",
    "parse_config_reply",
    "parse_reply",
    "Reply",
    "node_tuples",
    "supersedes",
    "NO_DOCUMENT",
    "CONFIG_WRITES_REFUSED",
    "LEGACY_READ_ONLY",
    "BAD_DOCUMENT",
    "UNKNOWN_CONFIG_KEY",
]

# libmemcached rejects version 0; the .NET client parses the version as a signed 32-bit integer.
MAX_VERSION = 2**31 - 1
# The item engines before 1.4.14 served the document under (exactly this key: a namespace
# prefix some libmemcached users set is not recognised; they use `config get` first anyway).
LEGACY_KEY = b"AmazonElastiCache:cluster"
# What a node without a document answers to `config get cluster` (memcapable's "no config").
NO_DOCUMENT = b"END\r\n"
# Bounds on what the parser accepts: a hostname is a DNS name, a document a few thousand nodes.
MAX_HOSTNAME = 253
MAX_DOCUMENT = 1 << 20
# What a cache node answers to writes it refuses, and to documents it cannot use.
CONFIG_WRITES_REFUSED = b"CLIENT_ERROR config writes are not allowed on this node\r\n"
LEGACY_READ_ONLY = b"CLIENT_ERROR AmazonElastiCache:cluster is read-only on this node\r\n"
BAD_DOCUMENT = b"CLIENT_ERROR bad cluster document\r\n"
UNKNOWN_CONFIG_KEY = b"CLIENT_ERROR only the cluster config key is supported\r\n"
# What a client sends: `config get` first, the legacy key when the server answers ERROR.
CONFIG_GET = b"config get cluster\r\n"
LEGACY_GET = b"get " + LEGACY_KEY + b"\r\n"
_MAX_HEADER = 512  # a reply header line longer than this is not a discovery reply


class DocumentError(ValueError):
    """A document (or a reply carrying one) that a client could not use."""


def _check_name(text: str, what: str) -> None:
    if not text or len(text) > MAX_HOSTNAME:
        raise DocumentError(f"{what} must be 1..{MAX_HOSTNAME} characters: {text!r}")
    if not text.isascii() or not text.isprintable() or " " in text or "|" in text:
        raise DocumentError(f"{what} must be printable ASCII without spaces or '|': {text!r}")


@dataclass(frozen=True, slots=True)
class NodeAddress:
    """One cache node as clients see it. ``ip`` may be empty (``host||port``), though clients
    that connect by IP (the .NET one) skip such a node, so the config node always fills it."""

    hostname: str
    ip: str
    port: int

    def __post_init__(self) -> None:
        _check_name(self.hostname, "hostname")
        if self.ip:
            _check_name(self.ip, "ip")
        if not 1 <= self.port <= 65535:
            raise DocumentError(f"port out of range: {self.port}")

    @property
    def key(self) -> tuple[str, int]:
        """Identity in the cluster: the same hostname and port is the same member."""
        return (self.hostname, self.port)

    def token(self) -> str:
        return f"{self.hostname}|{self.ip}|{self.port}"

    def checked_ip(self) -> NodeAddress:
        """This address, after checking that ``ip`` is an IP literal (what we emit must be)."""
        if self.ip:
            try:
                ipaddress.ip_address(self.ip)
            except ValueError:
                raise DocumentError(f"not an IP address: {self.ip!r}") from None
        return self


@dataclass(frozen=True, slots=True)
class ClusterDocument:
    """A version and the nodes, kept in canonical order (hostname, then port)."""

    version: int
    nodes: tuple[NodeAddress, ...]

    def __post_init__(self) -> None:
        if not 1 <= self.version <= MAX_VERSION:
            raise DocumentError(f"version must be in 1..{MAX_VERSION}: {self.version}")
        ordered = tuple(sorted(self.nodes, key=lambda n: (n.hostname, n.port)))
        for a, b in zip(ordered, ordered[1:], strict=False):
            if a.key == b.key:
                raise DocumentError(f"node listed twice: {a.hostname}:{a.port}")
        object.__setattr__(self, "nodes", ordered)

    @classmethod
    def of(cls, version: int, nodes: Iterable[NodeAddress]) -> ClusterDocument:
        return cls(version, tuple(nodes))

    def node_line(self) -> bytes:
        """The nodes part alone: what decides whether two documents say the same thing."""
        return " ".join(n.token() for n in self.nodes).encode("ascii")

    def encode(self) -> bytes:
        """The canonical bytes: ``<version>\\n<node> <node> ...\\n``."""
        return b"%d\n%b\n" % (self.version, self.node_line())


def parse_document(data: bytes) -> ClusterDocument:
    """Parse a document as found between ``CONFIG cluster 0 <n>\\r\\n`` and ``\\r\\nEND``.

    Accepts CRLF after the version, any run of ASCII whitespace between nodes, and a missing or
    doubled final newline. A document with no node parses (to an empty tuple): whether to use it
    is the caller's decision (nobody should: see ``supersedes``).
    """
    if len(data) > MAX_DOCUMENT:
        raise DocumentError(f"document longer than {MAX_DOCUMENT} bytes")
    head, sep, rest = data.partition(b"\n")
    if not sep:
        raise DocumentError("no newline after the version")
    vtext = head.strip()
    if not vtext.isdigit():
        raise DocumentError(f"version is not a decimal number: {vtext[:40]!r}")
    version = int(vtext)
    nodes: list[NodeAddress] = []
    for tok in rest.split():
        parts = tok.split(b"|")
        if len(parts) != 3:
            raise DocumentError(f"node token without exactly two '|': {tok[:80]!r}")
        host, ip, port = parts
        if not port.isdigit():
            raise DocumentError(f"bad port in {tok[:80]!r}")
        try:
            nodes.append(NodeAddress(host.decode("ascii"), ip.decode("ascii"), int(port)))
        except UnicodeDecodeError:
            raise DocumentError(f"non-ASCII node token {tok[:80]!r}") from None
    return ClusterDocument(version, tuple(nodes))


def config_reply(document: bytes, flags: int = 0) -> bytes:
    """The whole answer to ``config get cluster``: header, exact byte count, CRLF, ``END``."""
    return b"CONFIG cluster %d %d\r\n%b\r\nEND\r\n" % (flags, len(document), document)


def legacy_value(key: bytes, document: bytes) -> bytes:
    """The document as an ordinary item (flags 0) for ``get AmazonElastiCache:cluster``.

    Without the closing ``END``: a multi-get appends it after its last key."""
    return b"VALUE %b 0 %d\r\n%b\r\n" % (key, len(document), document)


def node_tuples(data: bytes) -> tuple[int, list[tuple[str, str, int]]]:
    """A client's view of a document: ``(version, [(hostname, ip, port), ...])`` in canonical
    order. A document without a node is refused here: a client must keep what it has."""
    doc = parse_document(data)
    if not doc.nodes:
        raise DocumentError("the document lists no node")
    return doc.version, [(n.hostname, n.ip, n.port) for n in doc.nodes]


@dataclass(frozen=True, slots=True)
class Reply:
    """What a discovery request got back, once the whole reply has arrived.

    ``document`` is the payload (``None`` for ``END``, no document), ``unsupported`` is set when
    the server answered ``ERROR`` (a plain memcached: retry with the legacy ``get``), and
    ``consumed`` is how many bytes of the buffer the reply took.
    """

    document: bytes | None
    unsupported: bool
    consumed: int


def parse_reply(buf: bytes) -> Reply | None:
    """Frame one reply to ``config get cluster`` or ``get AmazonElastiCache:cluster``, as it
    arrives: ``None`` while more bytes are needed.

    Raises ``DocumentError`` on anything that is not ``CONFIG cluster <flags> <n>`` or
    ``VALUE <key> <flags> <n>``, then n bytes, CRLF and ``END``; a bare ``END``; or
    ``ERROR``. The byte count is trusted, as libmemcached and the Java client trust it, rather
    than scanning for an end marker.
    """
    eol = buf.find(b"\r\n")
    if eol < 0:
        if len(buf) > _MAX_HEADER:
            raise DocumentError("reply header too long")
        return None
    line = buf[:eol]
    if line == b"END":
        return Reply(None, False, eol + 2)
    if line == b"ERROR":
        return Reply(None, True, eol + 2)
    tokens = line.split(b" ")
    if (
        len(tokens) != 4
        or tokens[0] not in (b"CONFIG", b"VALUE")
        or not tokens[2].isdigit()
        or not tokens[3].isdigit()
    ):
        raise DocumentError(f"unexpected reply {line[:80]!r}")
    size = int(tokens[3])
    if size > MAX_DOCUMENT:
        raise DocumentError(f"document of {size} bytes is too large")
    start = eol + 2
    end = start + size
    trailer = b"\r\nEND\r\n"
    if len(buf) < end + len(trailer):
        return None
    if buf[end : end + len(trailer)] != trailer:
        raise DocumentError("document not followed by CRLF END CRLF (wrong byte count?)")
    return Reply(buf[start:end], False, end + len(trailer))


def parse_config_reply(reply: bytes) -> ClusterDocument | None:
    """Parse a complete ``config get cluster`` reply strictly; ``None`` for a bare ``END``.

    Strict on framing (the count must be exact and followed by CRLF ``END`` CRLF, and nothing
    after it) because the clients that read by count (Java, libmemcached, .NET, emcache) are
    strict too.
    """
    if not reply.startswith((b"CONFIG ", b"END\r\n")):
        raise DocumentError(f"not a CONFIG reply: {reply[:80]!r}")
    framed = parse_reply(reply)
    if framed is None or framed.consumed != len(reply):
        raise DocumentError("byte count does not match, or no CRLF END after the document")
    if framed.document is None:
        return None
    return parse_document(framed.document)


def supersedes(new: ClusterDocument, old: ClusterDocument | None) -> bool:
    """Whether a holder of ``old`` should switch to ``new`` (spec rules, as the strictest clients
    apply them): a higher version, or the same version with a different node list. A lower
    version is stale, and an empty list is never taken (keep serving the last good one)."""
    if not new.nodes:
        return False
    if old is None or new.version > old.version:
        return True
    return new.version == old.version and new.nodes != old.nodes
