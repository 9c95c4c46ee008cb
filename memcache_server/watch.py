"""``watch``: live log streams (fetchers, mutations, evictions, connevents, deletions).

Why a separate thread: a watcher that reads slowly must never slow the server. Request paths
only format a line and append it to each interested watcher's bounded buffer (a short lock per
watcher); the logger thread writes buffers out with non-blocking sends. When a buffer is full the
line is dropped and counted, and the watcher later reads ``skipped=<n>`` where lines went
missing, as memcached's logger does. The request paths pay one attribute test (the handlers'
context's ``observed``, or ``logger.mask``) while nobody watches. The ``watch`` command itself is
a handler (``commands/admin.py``).

Line formats are memcached's (logger.c): ``ts=<sec>.<usec> gid=<n> type=<event> ...``; keys are
URI-encoded. ``deletions`` follows newer memcached releases (1.6.18 has no such stream).
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from memcache_server.protocol.uri import uriencode

if TYPE_CHECKING:
    from memcache_server.storage.clock import Clock

__all__ = ["Logger", "STREAMS", "FETCHERS", "MUTATIONS", "EVICTIONS", "CONNEVENTS", "DELETIONS"]

RAWCMDS = 1
EVICTIONS = 2
FETCHERS = 4
MUTATIONS = 8
SYSEVENTS = 16
CONNEVENTS = 32
PROXYREQS = 64
PROXYEVENTS = 128
PROXYUSER = 256
DELETIONS = 512
STREAMS = {
    b"rawcmds": RAWCMDS,
    b"evictions": EVICTIONS,
    b"fetchers": FETCHERS,
    b"mutations": MUTATIONS,
    b"sysevents": SYSEVENTS,
    b"connevents": CONNEVENTS,
    b"proxyreqs": PROXYREQS,
    b"proxyevents": PROXYEVENTS,
    b"proxyuser": PROXYUSER,
    b"deletions": DELETIONS,
}
# Streams whose events come from the item request paths (they set the context's ``observed``).
ITEM_STREAMS = FETCHERS | MUTATIONS | DELETIONS
MAX_WATCHERS = 20  # memcached's WATCHER_LIMIT
FLUSH_INTERVAL = 0.05


class Watcher:
    """One watching connection: its socket (a duplicate of the client's), the streams it asked
    for and its bounded pending output. Producers hold ``lock`` only to append."""

    __slots__ = ("sock", "mask", "buf", "skipped", "lock", "cap")

    def __init__(self, sock: socket.socket, mask: int, cap: int) -> None:
        self.sock = sock
        self.mask = mask
        self.buf = bytearray()
        self.skipped = 0
        self.lock = threading.Lock()
        self.cap = cap


class Logger:
    """The node's log streams; ``mask`` is the union of what current watchers asked for."""

    def __init__(self, cap: int, clock: Clock, on_change: Callable[[], None]) -> None:
        self.cap = cap  # each watcher's pending-output bound (-o watcher_logbuf_size)
        self.clock = clock
        self.on_change = on_change  # told when ``mask`` changes (it gates the request paths)
        self.mask = 0
        self.watchers: list[Watcher] = []
        self._lock = threading.Lock()
        self._gid = itertools.count(1)
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopped = False
        # stats (memcached's log_* fields)
        self.written = 0
        self.sent = 0
        self.skipped = 0

    # ------------------------------------------------------------------ watchers

    def add(self, fd: int, mask: int) -> bool:
        with self._lock:
            if len(self.watchers) >= MAX_WATCHERS:
                return False
            sock = socket.socket(fileno=os.dup(fd))
            sock.setblocking(False)
            self.watchers.append(Watcher(sock, mask, self.cap))
            self._refresh()
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="logger", daemon=True)
                self._thread.start()
        return True

    def _refresh(self) -> None:
        mask = 0
        for w in self.watchers:
            mask |= w.mask
        self.mask = mask
        self.on_change()

    def _drop(self, w: Watcher) -> None:
        with self._lock:
            if w in self.watchers:
                self.watchers.remove(w)
                self._refresh()
        try:
            w.sock.close()
        except OSError:
            pass

    def stop(self) -> None:
        self._stopped = True
        self._wake.set()
        for w in list(self.watchers):
            self._drop(w)

    # ------------------------------------------------------------------ producing

    def emit(self, kind: int, body: bytes) -> None:
        """Queue ``ts=... gid=... <body>`` for every watcher of ``kind`` (any thread)."""
        now = time.time()
        sec = int(now)
        line = b"ts=%d.%d gid=%d %b\n" % (sec, int((now - sec) * 1_000_000), next(self._gid), body)
        self.written += 1
        for w in self.watchers:
            if w.mask & kind:
                with w.lock:
                    if len(w.buf) + len(line) > w.cap:
                        w.skipped += 1
                        self.skipped += 1
                        continue
                    w.buf += line
        self._wake.set()

    # ------------------------------------------------------------------ delivering

    def _run(self) -> None:
        while not self._stopped:
            self._wake.wait(FLUSH_INTERVAL)
            self._wake.clear()
            for w in list(self.watchers):
                self._flush(w)

    def _flush(self, w: Watcher) -> None:
        if not w.buf and not w.skipped:
            try:
                if w.sock.recv(1, socket.MSG_PEEK) == b"":
                    self._drop(w)  # the client hung up
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(w)
            return
        with w.lock:
            if w.skipped and len(w.buf) < w.cap // 2:
                w.buf += b"skipped=%d\n" % w.skipped
                w.skipped = 0
            if not w.buf:
                return
            data = bytes(w.buf)
        try:
            sent = w.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(w)  # the watcher went away
            return
        with w.lock:
            self.sent += data[:sent].count(b"\n")
            del w.buf[:sent]


# ------------------------------------------------------------------ events from request paths

_GET_STATUS = {1: b"found", 0: b"not_found", -1: b"expired", -2: b"flushed"}
_STORE_CMDS = {
    b"set": b"set",
    b"add": b"add",
    b"replace": b"replace",
    b"append": b"append",
    b"prepend": b"prepend",
    b"cas": b"cas",
    b"ms": b"set",
}
_STORE_STATUS = {
    0: b"stored",
    1: b"not_stored",
    2: b"exists",
    3: b"not_found",
    4: b"too_large",
    5: b"no_memory",
}


def log_get(
    logger: Logger, fd: int, key: bytes, code: int, clsid: int, size: int) -> None:
    """An item fetch: ``code`` is 1 for a hit, else a miss code (0, -1 expired, -2 flushed)."""
    if logger.mask & FETCHERS:
        logger.emit(
            FETCHERS,
            b"type=item_get key=%b status=%b clsid=%d cfd=%d size=%d"
            % (
                uriencode(key),
                _GET_STATUS.get(code, b"not_found"),
                clsid if code == 1 else 0,
                fd,
                size if code == 1 else 0,
            ),
        )


def log_store(
    logger: Logger, fd: int, cmd: bytes, key: bytes, ttl: int, clsid: int, size: int, outcome: int
) -> None:
    if logger.mask & MUTATIONS:
        logger.emit(
            MUTATIONS,
            b"type=item_store key=%b status=%b cmd=%b ttl=%d clsid=%d cfd=%d size=%d"
            % (
                uriencode(key),
                _STORE_STATUS.get(outcome, b"error"),
                _STORE_CMDS.get(cmd, cmd),
                ttl,
                clsid,
                fd,
                size,
            ),
        )


def log_delete(
    logger: Logger, fd: int, cmd: bytes, key: bytes, clsid: int, size: int) -> None:
    if logger.mask & DELETIONS:
        logger.emit(
            DELETIONS,
            b"type=deleted key=%b cmd=%b clsid=%d cfd=%d size=%d"
            % (uriencode(key), cmd, clsid, fd, size),
        )


def log_eviction(
    logger: Logger, key: bytes, fetched: bool, exp: int, atime: int, clsid: int, size: int
) -> None:
    """Called by the store (under its lock) for each evicted item while evictions are watched."""
    now = logger.clock.now
    logger.emit(
        EVICTIONS,
        b"type=eviction key=%b fetch=%b ttl=%d la=%d clsid=%d size=%d"
        % (
            uriencode(key),
            b"yes" if fetched else b"no",
            exp - now if exp else -1,
            now - atime,
            clsid,
            size,
        ),
    )


def log_slab_move(
    logger: Logger, src: int, dst: int) -> None:
    """An automover decision, as memcached's LOGGER_SLAB_MOVE line (``watch sysevents``)."""
    logger.emit(SYSEVENTS, b"type=slab_move src=%d dst=%d" % (src, dst))


def log_conn(
    logger: Logger, new: bool, peer: str, fd: int) -> None:
    family, _, addr = peer.partition(":")  # "tcp:<ip>:<port>", or a UNIX socket's path
    if family in ("tcp", "tcp6"):
        host, _, port = addr.rpartition(":")
        transport = b"tcp"
    else:
        host, port, transport = peer, "0", b"local"
    if new:
        body = b"type=conn_new rip=%b rport=%b transport=%b cfd=%d"
    else:
        body = b"type=conn_close rip=%b rport=%b transport=%b reason=normal cfd=%d"
    logger.emit(CONNEVENTS, body % (host.strip("[]").encode(), port.encode(), transport, fd))
