"""Request framing: turn a byte stream into requests, exactly as memcached's text parser does.

Sans I/O: ``feed()`` bytes, then call ``next_request()`` until it returns None (more bytes
needed). Requests are plain tuples (cheap on the hot path):

- ``(CMD, tokens)``: any non-storage command line, split on single spaces like memcached
  (tabs and other bytes are part of tokens; keys may hold any byte but space and newline).
- ``(STORE, tokens, key, flags, exptime, cas, body, noreply)``: a storage command whose header
  parsed and whose data block arrived; ``body`` is the value followed by its CRLF, or None when
  the block was over ``max_value`` and has been (or is being) discarded, or ``b""`` when
  the block did not end with CRLF (memcached's "bad data chunk").
- ``(REPLY, reply_bytes)``: an error found while framing, with memcached's exact reply
  (empty when ``noreply`` suppressed it).
- ``(CLOSE, reason)``: memcached would close the connection here.
- ``(MSTORE, tokens, body)``: a meta set (``ms <key> <datalen> <flag>*``) whose data block
  arrived; ``body`` as for STORE. Its flags are left to the meta layer.

Bounds: a line without a newline may grow to MAX_LINE bytes (to MAX_GET_LINE for get/gets);
a data block larger than ``max_value`` is refused and swallowed without being buffered.
"""

from __future__ import annotations

from typing import Any

from memcache_server.protocol import constants as C
from memcache_server.protocol.numbers import strtol32, strtoul32, strtoull

__all__ = ["Framer", "CMD", "STORE", "REPLY", "CLOSE", "MSTORE", "STORAGE_COMMANDS"]

CMD = 0
STORE = 1
REPLY = 2
CLOSE = 3
MSTORE = 4

# command -> number of tokens (without memcached's terminal token) with and without noreply
STORAGE_COMMANDS: dict[bytes, int] = {
    b"set": 5,
    b"add": 5,
    b"replace": 5,
    b"append": 5,
    b"prepend": 5,
    b"cas": 6,
    b"ms": -2,  # meta set: never a classic token count, so _storage hands it to _meta_storage
}
META_MAX_TOKENS = 19  # memcached refuses a meta command with more tokens (before its data)
META_TOO_LONG = b"CLIENT_ERROR options flags too long\r\n"

# Lines that may carry a data block: the storage commands, and ElastiCache's
# `config set <key> <flags> <bytes> [noreply]` (0: its layout differs, see _config).
_BLOCK_LINES: dict[bytes, int] = {**STORAGE_COMMANDS, b"config": 0}

Request = tuple[Any, ...]

# Bytes searched for as ints: `b"\0" in line` first tries its operand as an int, and the
# TypeError that raises and clears (a formatted message) cost more than the search itself, on
# every request line.
_NUL = 0
_NL = 10
_TOKENS_MAX = C.MAX_TOKENS - 1  # a module constant: one lookup per line rather than two


class Framer:
    """Per-connection framing state. Owned by one connection; not thread-safe."""

    __slots__ = (
        "buf",
        "pos",
        "need",
        "need_line",
        "pending",
        "pending_len",
        "swallow",
        "max_value",
        "closed", "started",
    )

    def __init__(self, max_value: int) -> None:
        self.buf = b""
        self.pos = 0
        self.need = 0  # bytes required from pos before parsing can progress
        self.need_line = False  # or: hold chunks until one brings a newline
        self.pending: list[bytes] = []  # chunks held back while a large block arrives
        self.pending_len = 0
        self.swallow = 0  # bytes of a refused data block still to discard
        self.max_value = max_value
        self.closed = False
        self.started = False  # the protocol is chosen by a connection's first byte

    def feed(self, data: bytes) -> None:
        if self.swallow:
            n = min(self.swallow, len(data))
            self.swallow -= n
            data = data[n:]
            if not data:
                return
        if self.need:
            self.pending.append(data)
            self.pending_len += len(data)
            if self.pending_len < self.need and not (self.need_line and _NL in data):
                return
            data = b"".join(self.pending)
            self.pending = []
            self.pending_len = 0
            self.need = 0
            self.need_line = False
        if self.pos < len(self.buf):
            self.buf = self.buf[self.pos :] + data
        else:
            self.buf = data
        self.pos = 0

    def discard_input(self) -> None:
        """Drop what is buffered and everything fed from now on (a connection that became a
        ``watch`` stream reads no more commands)."""
        self.buf = b""
        self.pos = 0
        self.pending = []
        self.pending_len = 0
        self.need = 0
        self.need_line = False
        self.swallow = 1 << 62

    def buffered(self) -> int:
        """Bytes received but not yet consumed (for read-buffer accounting)."""
        return len(self.buf) - self.pos + self.pending_len

    def _hold(self, need: int) -> None:
        """Keep the unconsumed tail and wait until ``need`` bytes are available from it."""
        rest = self.buf[self.pos :]
        self.buf = b""
        self.pos = 0
        self.pending = [rest]
        self.pending_len = len(rest)
        self.need = need

    def next_request(self) -> Request | None:
        if self.need or self.closed:
            return None
        buf = self.buf
        pos = self.pos
        if pos >= len(buf):
            return None
        if buf[pos] == 0x80 and not self.started:
            # A binary-protocol request as the first byte: we speak only the text protocol.
            self.closed = True
            return (CLOSE, b"binary protocol not supported")
        self.started = True
        eol = buf.find(b"\n", pos)
        if eol < 0:
            return self._no_newline()
        end = eol
        if end - pos > 1 and buf[end - 1] == 13:
            end -= 1
        line = buf[pos:end]
        if _NUL in line:
            line = line[: line.index(_NUL)]  # memcached's tokenizer stops at a NUL byte
        tokens = line.split(b" ")
        if b"" in tokens:
            tokens = [t for t in tokens if t]
        if len(tokens) > _TOKENS_MAX and tokens[0] not in (
            b"get",
            b"gets",
            b"gat",
            b"gats",
            b"bget",
        ):
            # memcached stops tokenising at 23 tokens; the rest becomes one (uncounted) token
            tokens = tokens[: C.MAX_TOKENS - 1] + [b" ".join(tokens[C.MAX_TOKENS - 1 :])]
        if tokens:
            ntok = _BLOCK_LINES.get(tokens[0])
            if ntok is not None:
                return self._storage(tokens, ntok, eol + 1)
        self.pos = eol + 1
        return (CMD, tokens)

    def _no_newline(self) -> Request | None:
        """memcached keeps waiting for a newline up to 2048 bytes, longer only for get/gets."""
        pending = len(self.buf) - self.pos
        if pending <= C.MAX_LINE:
            return None
        head = self.buf[self.pos : self.pos + 200]
        stripped = head.lstrip(b" ")
        is_get = len(head) - len(stripped) <= 100 and (
            stripped.startswith(b"get ") or stripped.startswith(b"gets ")
        )
        if is_get and pending <= C.MAX_GET_LINE:
            # A long multiget: collect chunks without re-joining until a newline arrives.
            self._hold(C.MAX_GET_LINE + 1)
            self.need_line = True
            return None
        self.closed = True
        return (CLOSE, b"line too long")

    def _discard_block(self, data_start: int, total: int) -> None:
        """Skip a refused data block: what has arrived now, the rest as it streams in."""
        avail = len(self.buf) - data_start
        if avail >= total:
            self.pos = data_start + total
        else:
            self.buf = b""
            self.pos = 0
            self.swallow = total - avail

    def _storage(self, tokens: list[bytes], ntok: int, data_start: int) -> Request | None:
        if not ntok:
            return self._config(tokens, data_start)
        n = len(tokens)
        if n != ntok and n != ntok + 1:
            if ntok < 0:
                return self._meta_storage(tokens, data_start)
            self.pos = data_start
            return (CMD, tokens)  # wrong token count: the handler answers ERROR
        noreply = n == ntok + 1 and tokens[-1] == b"noreply"
        key = tokens[1]
        if len(key) > C.KEY_MAX_LENGTH:
            self.pos = data_start
            return (REPLY, b"" if noreply else C.BAD_FORMAT)
        t_flags, t_exp, t_len = tokens[2], tokens[3], tokens[4]
        if (t_flags.isdigit() and t_exp.isdigit() and t_len.isdigit()
                and len(t_flags) < 10 and len(t_exp) < 10 and len(t_len) < 10):
            # what every client sends: the parsers' own first case, without three calls
            flags: int | None = int(t_flags)
            exptime: int | None = int(t_exp)
            vlen: int | None = int(t_len)
        else:
            flags = strtoul32(t_flags)
            exptime = strtol32(t_exp)
            vlen = strtol32(t_len)
        if flags is None or exptime is None or vlen is None:
            self.pos = data_start
            return (REPLY, b"" if noreply else C.BAD_FORMAT)
        cas = 0
        if ntok == 6:
            cas_v = strtoull(tokens[5])
            if cas_v is None:
                self.pos = data_start
                return (REPLY, b"" if noreply else C.BAD_FORMAT)
            cas = cas_v
        if vlen < 0 or vlen > 0x7FFFFFFF - 2:
            self.pos = data_start
            return (REPLY, b"" if noreply else C.BAD_FORMAT)
        total = vlen + 2
        if vlen > self.max_value:
            # Certainly over -I: refuse now and discard the block as it streams in.
            self._discard_block(data_start, total)
            return (STORE, tokens, key, flags, exptime, cas, None, noreply)
        end = data_start + total
        if end > len(self.buf):
            self._hold(end - self.pos)
            return None
        body = self.buf[data_start:end]
        self.pos = end
        if body[-2:] != b"\r\n":
            return (STORE, tokens, key, flags, exptime, cas, b"", noreply)
        return (STORE, tokens, key, flags, exptime, cas, body, noreply)

    def _meta_storage(self, tokens: list[bytes], data_start: int) -> Request | None:
        """Frame ``ms``: header errors are answered before (and without) reading the data block,
        exactly where memcached answers them; a header that parses waits for its data block."""
        n = len(tokens)
        if n < 2:
            self.pos = data_start
            return (REPLY, C.ERROR)
        if len(tokens[1]) > C.KEY_MAX_LENGTH or n == 2:
            self.pos = data_start
            return (REPLY, C.BAD_FORMAT)
        if n > META_MAX_TOKENS:
            self.pos = data_start
            return (REPLY, META_TOO_LONG)
        vlen = strtol32(tokens[2])
        if vlen is None or vlen < 0 or vlen > 0x7FFFFFFF - 2:
            self.pos = data_start
            return (REPLY, C.BAD_FORMAT)
        total = vlen + 2
        if vlen > self.max_value:
            self._discard_block(data_start, total)
            return (MSTORE, tokens, None)
        end = data_start + total
        if end > len(self.buf):
            self._hold(end - self.pos)
            return None
        body = self.buf[data_start:end]
        self.pos = end
        if body[-2:] != b"\r\n":
            return (MSTORE, tokens, b"")
        return (MSTORE, tokens, body)

    def _config(self, tokens: list[bytes], data_start: int) -> Request | None:
        """``config set`` reads its data block like a storage command, so the stream stays in
        sync whether the node accepts or refuses the write. It is delivered as a CMD whose tokens
        are always ``[config, set, key, flags, bytes, noreply-or-empty, block]`` (``block`` with
        its CRLF, as received). Other ``config`` lines are ordinary commands."""
        if len(tokens) < 2 or tokens[1] != b"set":
            self.pos = data_start
            return (CMD, tokens)
        n = len(tokens)
        noreply = n == 6 and tokens[5] == b"noreply"
        vlen = strtol32(tokens[4]) if n == 5 or n == 6 else None
        if vlen is None or vlen < 0 or vlen > 0x7FFFFFFF - 2:
            self.pos = data_start
            return (REPLY, C.ERROR if n != 5 and n != 6 else b"" if noreply else C.BAD_FORMAT)
        if len(tokens[2]) > C.KEY_MAX_LENGTH or strtoul32(tokens[3]) is None:
            self.pos = data_start
            return (REPLY, b"" if noreply else C.BAD_FORMAT)
        total = vlen + 2
        if vlen > self.max_value:
            self._discard_block(data_start, total)
            return (REPLY, b"" if noreply else C.TOO_LARGE)
        end = data_start + total
        if end > len(self.buf):
            self._hold(end - self.pos)  # pos is still this line's start: it is parsed again
            return None
        self.pos = end
        flag = b"noreply" if noreply else b""
        block = self.buf[data_start:end]
        return (CMD, [b"config", b"set", tokens[2], tokens[3], tokens[4], flag, block])
