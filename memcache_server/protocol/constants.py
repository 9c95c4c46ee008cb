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
GET_NO_MEMORY = b"SERVER_ERROR out of memory writing get response\r\n"
SHUTDOWN_DISABLED = b"ERROR: shutdown not enabled\r\n"
SHUTDOWN_USAGE = b"CLIENT_ERROR invalid shutdown mode\r\n"
TOO_MANY_CONNECTIONS = b"ERROR Too many open connections\r\n"
MEMLIMIT_TOO_SMALL = b"MEMLIMIT_TOO_SMALL cannot set maxbytes to less than 8m\r\n"
MEMLIMIT_ADJUST = b"MEMLIMIT_ADJUST_FAILED input value is megabytes not bytes\r\n"

# admin, slabs, stats and meta replies (memcached 1.6.18's words)
CRAWLER_DISABLED = b"CLIENT_ERROR lru crawler disabled\r\n"
CRAWLER_BADCLASS = b"BADCLASS invalid class id\r\n"
CRAWLER_BUSY = b"BUSY currently processing crawler request\r\n"
METADUMP_NOT_ALLOWED = b"ERROR metadump not allowed\r\n"
METADUMP_PIPELINED = b"ERROR cannot pipeline other commands before metadump\r\n"
CRAWLER_SLEEP_TOO_LONG = b"CLIENT_ERROR sleep must be one second or less\r\n"
CRAWLER_START_FAILED = b"ERROR failed to start lru crawler thread\r\n"
WATCH_NOT_ALLOWED = b"CLIENT_ERROR watch commands not allowed\r\n"
WATCH_PIPELINED = b"ERROR cannot pipeline other commands before watch\r\n"
WATCHER_TOO_MANY = b"WATCHER_TOO_MANY log watcher limit reached\r\n"
ITEM_NO_MEMORY = b"SERVER_ERROR Out of memory allocating new item\r\n"
REASSIGN_DISABLED = b"CLIENT_ERROR slab reassignment disabled\r\n"
REASSIGN_BUSY = b"BUSY currently processing reassign request\r\n"
REASSIGN_BADCLASS = b"BADCLASS invalid src or dst class id\r\n"
REASSIGN_NOSPARE = b"NOSPARE source class has no spare pages\r\n"
REASSIGN_SAME = b"SAME src and dst class are identical\r\n"
DETAIL_USAGE = b"CLIENT_ERROR usage: stats detail on|off|dump\r\n"
SIZES_DISABLED = b"STAT sizes_status disabled\r\n"
SIZES_ENABLED = b"STAT sizes_status enabled\r\n"
SIZES_NEED_CAS = b"STAT sizes_status error\r\nSTAT sizes_error cas_support_disabled\r\n"
CACHEDUMP_NOT_ALLOWED = b"CLIENT_ERROR stats cachedump not allowed\r\n"
CACHEDUMP_BAD_SLAB = b"CLIENT_ERROR Illegal slab id\r\n"
EN = b"EN\r\n"
MN = b"MN\r\n"

KEY_MAX_LENGTH = 250
MAX_TOKENS = 24  # memcached tokenises at most 23 tokens plus a terminal one
MAX_LINE = 2048  # a line longer than this without a newline closes the connection...
MAX_GET_LINE = 8 * 1024 * 1024  # ...unless it is a get/gets, which may run long (bounded here)


def value_header(key: bytes, flags: int, nbytes: int) -> bytes:
    """The ``VALUE <key> <flags> <bytes>\\r\\n`` line of a hit; nbytes counts the value's CRLF."""
    return b"VALUE %b %d %d\r\n" % (key, flags, nbytes - 2)


VALUE_KEY_OFFSET = len(VALUE)  # where the key starts inside value_header()
