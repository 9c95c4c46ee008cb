"""Client side of the discovery wire: parse a cluster document, frame a ``config get`` reply.

Pure code, bytes in and values out; the socket work lives in ``client.py``. Kept private and
tiny (``parse_document`` is bytes -> (version, [(host, ip, port), ...])) so it can give way to the
shared document codec without touching its callers.

Rules (spec/discovery.md §1): a version 1..2^31-1, LF (CRLF accepted), then nodes
``hostname|ip|port`` separated by runs of whitespace, optional trailing newline. A node token
without exactly two ``|`` is an error, as is an empty node list.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONFIG_GET",
    "LEGACY_GET",
    "MAX_DOCUMENT",
    "DocumentError",
    "NodeTuple",
    "Reply",
    "parse_document",
    "parse_reply",
]

NodeTuple = tuple[str, str, int]

CONFIG_GET = b"config get cluster\r\n"
LEGACY_GET = b"get AmazonElastiCache:cluster\r\n"
#: refuse a document larger than this (a thousand-node cluster is ~70 KB)
MAX_DOCUMENT = 1 << 20
MAX_VERSION = (1 << 31) - 1
_MAX_HEADER = 512


class DocumentError(ValueError):
    """The bytes are not a cluster document (or not a discovery reply)."""


def parse_document(data: bytes) -> tuple[int, list[NodeTuple]]:
    """``b"12\\nhost|10.0.0.1|11211 ...\\n"`` -> ``(12, [("host", "10.0.0.1", 11211), ...])``."""
    head, sep, rest = data.partition(b"\n")
    if not sep:
        raise DocumentError("no newline after the version")
    if head.endswith(b"\r"):
        head = head[:-1]
    if not head.isdigit():
        raise DocumentError(f"bad version {head[:32]!r}")
    version = int(head)
    if not 1 <= version <= MAX_VERSION:
        raise DocumentError(f"version {version} is outside 1..2^31-1")
    nodes: list[NodeTuple] = []
    for token in rest.split():
        parts = token.split(b"|")
        if len(parts) != 3:
            raise DocumentError(f"node {token[:64]!r} is not hostname|ip|port")
        host, ip, port = parts
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise DocumentError(f"bad node {token[:64]!r}")
        try:
            nodes.append((host.decode("ascii"), ip.decode("ascii"), int(port)))
        except UnicodeDecodeError:
            raise DocumentError(f"non-ASCII node {token[:64]!r}") from None
    if not nodes:
        raise DocumentError("the document lists no node")
    return version, nodes


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
    """Frame one reply to ``config get cluster`` or ``get AmazonElastiCache:cluster``.

    Returns ``None`` while more bytes are needed; raises ``DocumentError`` on anything that is
    not one of ``CONFIG cluster <flags> <n>``/``VALUE <key> <flags> <n>`` + n bytes + CRLF +
    ``END``, a bare ``END`` or ``ERROR``. The byte count is trusted, as libmemcached and the
    Java client do, rather than scanning for an end marker.
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
    if len(tokens) != 4 or tokens[0] not in (b"CONFIG", b"VALUE") or not tokens[3].isdigit():
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
