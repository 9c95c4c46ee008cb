"""Memcached text protocol: request encoding and incremental response parsing.

Parsing is written for a hot loop: it works on one ``bytes`` buffer with an offset and returns
``None`` while a response is incomplete, so a caller can append the next ``recv`` and retry.
"""

from __future__ import annotations


class ProtocolError(Exception):
    """The byte stream is not a valid response: framing is lost, the connection must be reset."""


class ErrorReply(Exception):
    """A well-framed error line (``ERROR``, ``CLIENT_ERROR ...``, ``SERVER_ERROR ...``) or an
    unexpected status; it consumed the response, so the stream can continue at ``next_pos``."""

    def __init__(self, kind: str, line: bytes, next_pos: int) -> None:
        super().__init__(f"{kind}: {line[:80]!r}")
        self.kind = kind
        self.line = line
        self.next_pos = next_pos


def encode_get(keys: list[bytes]) -> bytes:
    return b"get " + b" ".join(keys) + b"\r\n"


def encode_set(key: bytes, value: bytes, ttl: int, flags: int = 0) -> bytes:
    return b"set %s %d %d %d\r\n%s\r\n" % (key, flags, ttl, len(value), value)


def _error_line(line: bytes, next_pos: int) -> ErrorReply:
    if line.startswith(b"SERVER_ERROR"):
        return ErrorReply("server_error", line, next_pos)
    if line == b"ERROR" or line.startswith(b"CLIENT_ERROR"):
        return ErrorReply("client_error", line, next_pos)
    raise ProtocolError(f"malformed response line {line[:80]!r}")


def parse_get(buf: bytes, pos: int) -> tuple[int, list[tuple[bytes, bytes, bytes]]] | None:
    """Parse ``VALUE key flags bytes\\r\\n<data>\\r\\n``... ``END\\r\\n`` starting at ``pos``.

    Returns ``(next_pos, [(key, flags, data), ...])`` or ``None`` if more bytes are needed.
    """
    values: list[tuple[bytes, bytes, bytes]] = []
    size = len(buf)
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            if size - pos > 8192:
                raise ProtocolError("response line too long")
            return None
        if eol == pos + 3 and buf[pos : pos + 3] == b"END":
            return eol + 2, values
        if buf.startswith(b"VALUE ", pos):
            parts = buf[pos + 6 : eol].split(b" ")
            if len(parts) not in (3, 4) or not parts[2].isdigit():
                raise ProtocolError(f"malformed VALUE line {buf[pos:eol][:80]!r}")
            end = eol + 2 + int(parts[2])
            if size < end + 2:
                return None
            if buf[end : end + 2] != b"\r\n":
                raise ProtocolError("value not terminated by \\r\\n (length mismatch)")
            values.append((parts[0], parts[1], buf[eol + 2 : end]))
            pos = end + 2
            continue
        if values:
            raise ProtocolError(f"unexpected line inside get response {buf[pos:eol][:80]!r}")
        raise _error_line(buf[pos:eol], eol + 2)


def parse_set(buf: bytes, pos: int) -> int | None:
    """Parse the reply to ``set``; returns the next offset, ``None`` if incomplete."""
    eol = buf.find(b"\r\n", pos)
    if eol < 0:
        if len(buf) - pos > 8192:
            raise ProtocolError("response line too long")
        return None
    if eol == pos + 6 and buf[pos:eol] == b"STORED":
        return eol + 2
    line = buf[pos:eol]
    if line == b"NOT_STORED":
        raise ErrorReply("not_stored", line, eol + 2)
    raise _error_line(line, eol + 2)
