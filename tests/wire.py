"""Raw-socket conversations with a server, for tests that compare bytes with real memcached.

Reading rule (why it is both fast and robust on a loaded machine): wait up to ``first_wait`` for
a reply to start, then stop once the peer has been quiet for ``quiet`` after the end of a reply
(``replies.reply_complete``: a closing line, not a header, not inside a data block). A server
that stalls mid-reply (scheduler hiccup) is waited for, because a reply that has not reached its
end marker keeps the long wait. Steps that expect no reply at all pay ``first_wait``; callers run
independent conversations in parallel (``in_parallel``) so those waits overlap.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from procs import ServerProc
from replies import reply_complete

EOF_MARK = b"<EOF>"

T = TypeVar("T")
R = TypeVar("R")

Sock = socket.socket | ssl.SSLSocket


def read_settled(
    sock: Sock, first_wait: float = 1.5, quiet: float = 0.05, max_wait: float = 8.0
) -> tuple[bytes, bool]:
    """Read one reply as described in the module docstring. Returns (bytes, peer closed)."""
    buf = bytearray()
    deadline = time.monotonic() + max_wait
    wait = first_wait
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(buf), False
        sock.settimeout(min(wait, remaining))
        try:
            data = sock.recv(1 << 20)
        except (TimeoutError, ssl.SSLWantReadError):
            return bytes(buf), False
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return bytes(buf), True
        if not data:
            return bytes(buf), True
        buf += data
        wait = quiet if reply_complete(bytes(buf)) else first_wait


def converse(
    sock: Sock, chunks: Sequence[bytes], first_wait: float = 1.5, close: bool = True
) -> list[bytes]:
    """Send each chunk and read its reply; a reply after which the peer closed ends in <EOF>."""
    replies: list[bytes] = []
    try:
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except OSError:
                replies.append(EOF_MARK)
                break
            reply, closed = read_settled(sock, first_wait)
            if closed:
                replies.append(reply + EOF_MARK)
                break
            replies.append(reply)
    finally:
        if close:
            sock.close()
    return replies


def talk(srv: ServerProc, chunks: Sequence[bytes], first_wait: float = 1.5) -> list[bytes]:
    """``converse`` on a new connection to ``srv``."""
    return converse(srv.connect(), chunks, first_wait)


def in_parallel(fn: Callable[[T], R], items: Sequence[T], workers: int = 32) -> list[R]:
    """Map ``fn`` over ``items`` on threads (conversations spend their time waiting)."""
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(items)))) as pool:
        return list(pool.map(fn, items))


def stats(sock: Sock, sub: bytes = b"") -> dict[str, str]:
    """``stats [sub]`` as a dict (on an already authenticated/handshaken socket)."""
    sock.sendall(b"stats " + sub + b"\r\n" if sub else b"stats\r\n")
    buf = bytearray()
    deadline = time.monotonic() + 8.0
    while not buf.endswith(b"END\r\n") and time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(1 << 16)
        if not data:
            break
        buf += data
    out: dict[str, str] = {}
    for line in bytes(buf).split(b"\r\n"):
        parts = line.split(b" ", 2)
        if len(parts) == 3 and parts[0] == b"STAT":
            out[parts[1].decode()] = parts[2].decode()
    return out


def rss_mb(pid: int) -> float:
    """Resident set size of a process, in MB (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def server_stats(srv: ServerProc, sub: bytes = b"") -> dict[str, str]:
    """``stats [sub]`` on a fresh connection."""
    sock = srv.connect()
    try:
        return stats(sock, sub)
    finally:
        sock.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
