"""Wire tokens: every reply the text protocol sends, defined once."""

from __future__ import annotations

CRLF = b"\r\n"
STORED = b"STORED\r\n"
NOT_STORED = b"NOT_STORED\r\n"
EXISTS = b"EXISTS\r\n"
NOT_FOUND = b"NOT_FOUND\r\n"
DELETED = b"DELETED\r\n"
TOUCHED = b"TOUCHED\r\n"
END = b"END\r\n"
OK = b"OK\r\n"
RESET = b"RESET\r\n"
ERROR = b"ERROR\r\n"
VALUE = b"VALUE "
STAT = b"STAT "

BAD_FORMAT = b"CLIENT_ERROR bad command line format\r\n"
BAD_CHUNK = b"CLIENT_ERROR bad data chunk\r\n"
BAD_DELTA = b"CLIENT_ERROR invalid numeric delta argument\r\n"
NON_NUMERIC = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
BAD_EXPTIME = b"CLIENT_ERROR invalid exptime argument\r\n"
DELETE_USAGE = b"CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n"
FLUSH_DISABLED = b"CLIENT_ERROR flush_all not allowed\r\n"
STATS_BAD = b"CLIENT_ERROR bad command line\r\n"
TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"
NO_MEMORY = b"SERVER_ERROR out of memory storing object\r\n"
DELTA_NO_MEMORY = b"SERVER_ERROR out of memory\r\n"
SHUTDOWN_DISABLED = b"ERROR: shutdown not enabled\r\n"
SHUTDOWN_USAGE = b"CLIENT_ERROR invalid shutdown mode\r\n"
TOO_MANY_CONNECTIONS = b"ERROR Too many open connections\r\n"
MEMLIMIT_TOO_SMALL = b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"
MEMLIMIT_ADJUST = b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n"

KEY_MAX_LENGTH = 250
MAX_TOKENS = 24  # memcached tokenises at most 23 tokens plus a terminal one
MAX_LINE = 2048  # a line longer than this without a newline closes the connection...
MAX_GET_LINE = 8 * 1024 * 1024  # ...unless it is a get/gets, which may run long (bounded here)


def value_header(key: bytes, flags: int, nbytes: int) -> bytes:
    """The ``VALUE <key> <flags> <bytes>\\r\\n`` line of a hit; nbytes counts the value's CRLF."""
    return b"VALUE %b %d %d\r\n" % (key, flags, nbytes - 2)


VALUE_KEY_OFFSET = len(VALUE)  # where the key starts inside value_header()
