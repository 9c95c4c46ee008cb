"""Framing before authentication (``-Y``): memcached's ``try_read_command_asciiauth``, sans I/O.

Until a connection authenticates, memcached reads it with a separate, much smaller parser: the
only request it accepts is ``set <any> <any> <any> <n>\\r\\n`` followed by an ``n``-byte block
holding ``user pass``. Everything else is answered ``CLIENT_ERROR unauthenticated`` and dropped
line by line. This module reproduces that parser's rules, including its edges (a block that
does not end in CRLF, a length that wraps memcached's 32-bit arithmetic, a credential block
larger than memcached's read buffer), so an unauthenticated client sees the same bytes.

Owned by one connection; not thread-safe. ``AuthFramer.next_event()`` returns:

- ``(AUTH_REPLY, reply_bytes, b"")``: an error to send; the connection stays unauthenticated.
- ``(AUTH_CREDENTIALS, user, password)``: a well-formed credential block to check.
- ``(AUTH_CLOSE, reason, b"")``: memcached closes the connection here.
- ``None``: more bytes needed.
"""

from __future__ import annotations

__all__ = [
    "AuthFramer",
    "AUTH_REPLY",
    "AUTH_CREDENTIALS",
    "AUTH_CLOSE",
    "UNAUTHENTICATED",
    "AUTH_FAILURE",
    "BAD_TOKEN_FORMAT",
    "BAD_TERMINATION",
    "AUTH_MAX_LINE",
    "AUTH_MAX_BLOCK",
    "safe_strtoul",
]

AUTH_REPLY = 0
AUTH_CREDENTIALS = 1
AUTH_CLOSE = 2

UNAUTHENTICATED = b"CLIENT_ERROR unauthenticated\r\n"
AUTH_FAILURE = b"CLIENT_ERROR authentication failure\r\n"
BAD_TOKEN_FORMAT = b"CLIENT_ERROR bad authentication token format\r\n"
BAD_TERMINATION = b"CLIENT_ERROR bad command line termination\r\n"

# memcached closes an unauthenticated connection that sends this much without a newline...
AUTH_MAX_LINE = 2048
# ...or whose line or credential block (value + CRLF) does not fit its 16 KB read buffer once
# more bytes arrive (it waits until then: the read into a full buffer is what closes).
AUTH_MAX_BLOCK = 16384

_U32 = 0xFFFFFFFF
_U64 = 1 << 64
_C_SPACE = b" \t\n\v\f\r"

Event = tuple[int, bytes, bytes]


def safe_strtoul(tok: bytes) -> int | None:
    """memcached's ``safe_strtoul``: C ``strtoul`` (64-bit) then its checks, into a uint32_t.

    Leading C whitespace and a sign are accepted, the digits must be followed by whitespace or
    the end, a minus sign is refused only when the unsigned result looks negative as a signed
    long (so ``-0`` is 0), and the result is truncated to 32 bits (4294967296 reads as 0).
    """
    body = tok.lstrip(_C_SPACE)
    neg = False
    if body[:1] in (b"+", b"-"):
        neg = body[:1] == b"-"
        body = body[1:]
    n = 0
    while n < len(body) and 48 <= body[n] <= 57:
        n += 1
    if n == 0:
        return None
    if n < len(body) and body[n] not in _C_SPACE:
        return None
    mag = int(body[:n])
    if mag >= _U64:
        return None  # ERANGE
    value = (_U64 - mag) % _U64 if neg else mag
    if value >= 1 << 63 and neg:
        return None
    return value & _U32


def _tokens(line: bytes) -> list[bytes]:
    """memcached's tokenizer for this purpose: stop at a NUL, split on spaces, skip empties."""
    nul = line.find(b"\0")
    if nul >= 0:
        line = line[:nul]
    return [t for t in line.split(b" ") if t]


class AuthFramer:
    """Pre-authentication framing state of one connection."""

    __slots__ = ("buf", "need")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.need = -1  # -1: waiting for the ``set`` line; else: bytes of the credential block

    def feed(self, data: bytes) -> None:
        self.buf += data

    def buffered(self) -> int:
        return len(self.buf)

    def take_rest(self) -> bytes:
        """The bytes after the credentials, handed to the normal framer once authenticated."""
        rest = bytes(self.buf)
        self.buf.clear()
        return rest

    def next_event(self) -> Event | None:
        buf = self.buf
        if self.need < 0:
            if len(buf) < 2:
                return None  # memcached waits for at least two bytes
            eol = buf.find(b"\n", 0, AUTH_MAX_BLOCK)
            if eol < 0:
                if len(buf) > AUTH_MAX_LINE:
                    return (AUTH_CLOSE, b"line too long", b"")
                return None
            tokens = _tokens(bytes(buf[:eol]))
            del buf[: eol + 1]
            size = safe_strtoul(tokens[4]) if len(tokens) >= 5 and tokens[0] == b"set" else None
            if size is None:
                return (AUTH_REPLY, UNAUTHENTICATED, b"")
            self.need = (size + 2) & _U32  # memcached adds the CRLF in 32-bit arithmetic
        need = self.need
        if need > AUTH_MAX_BLOCK and len(buf) > AUTH_MAX_BLOCK:
            return (AUTH_CLOSE, b"credential block too large", b"")
        if len(buf) < need:
            return None
        block = bytes(buf[:need])
        del buf[:need]
        self.need = -1
        if need < 2 or block[-2:] != b"\r\n":
            return (AUTH_REPLY, BAD_TERMINATION, b"")
        tokens = _tokens(block[:-2])
        if len(tokens) < 2:
            return (AUTH_REPLY, BAD_TOKEN_FORMAT, b"")
        return (AUTH_CREDENTIALS, tokens[0], tokens[1])
