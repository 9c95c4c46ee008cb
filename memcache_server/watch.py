"""``watch``: live log streams (fetchers, mutations, evictions, connevents, deletions).

Why a shared ring: under a GIL the node serves from several worker processes, so an event raised
in one must reach a watcher connected to another. As memcached gives each worker thread its own
log buffer that a logger thread drains, each producing process here owns one ring buffer in the
node's shared segment (worker slot ``k`` ring ``k``, the supervisor's background threads the
last one; a single-process node writes ring 0). A ring has one writing process (its threads take
a short process-local lock), so producers never take a cross-process lock; a record overwritten
before a watcher read it is counted as skipped. The process holding a watcher polls every ring
from its worker loop (``pump``) into that watcher's bounded buffer and writes it out with
non-blocking sends; a slow watcher loses lines (counted, and reported as ``skipped=<n>``) and
never slows the server, as in memcached.

Gating: word ``W_OBSERVED`` of the logger's area is nonzero while an item stream is watched
anywhere (or ``stats detail`` is on) and ``W_MASK`` holds every watched stream, from per-slot
watcher counts; request paths pay one word read while nobody watches. Counts are written only
by the process that holds those watchers; the two summary words are recomputed under a
cross-process lock (on adding or dropping a watcher, and ``reclaim`` of a dead worker's slot).

Bounds: ``MAX_WATCHERS`` node-wide; a ring holds ``worker_logbuf_size`` bytes (clamped to
``RING_MIN``..``RING_MAX``); a watcher's pending output ``watcher_logbuf_size``.

Line formats are memcached's (logger.c): ``ts=<sec>.<usec> gid=<n> type=<event> ...``; keys are
URI-encoded; ``cfd`` is the node-wide connection id ``stats conns`` lists. The gid is unique
node-wide: ``ring * GID_STRIDE + seq + 1`` (each ring counts its own records), so ring 0, all a
single-process node writes, counts 1, 2, 3 as memcached does. ``deletions`` follows newer
memcached releases (1.6.18 has no such stream).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import TYPE_CHECKING

from memcache_server.protocol.uri import uriencode
from memcache_server.storage.seglock import SegmentLock

if TYPE_CHECKING:
    from memcache_server.storage.clock import Clock
    from memcache_server.storage.segment import Segment

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
NSTREAMS = len(STREAMS)
# Streams whose events come from the item request paths (they gate the context's ``observed``).
ITEM_STREAMS = FETCHERS | MUTATIONS | DELETIONS
DETAIL = 1 << 20  # ``stats detail on``: kept in the mask word, it also sets ``observed``
MAX_WATCHERS = 20  # memcached's WATCHER_LIMIT, node-wide
POLL_INTERVAL = 0.05  # how often a worker holding watchers polls the rings
RING_MIN = 16 * 1024
RING_MAX = 64 * 1024 * 1024
HEADER = 16  # a record: word (kind << 32 | length), word seq, then the line padded to 16
GID_STRIDE = 10**12  # the decimal digits of a gid above these name its ring
PAD = -1  # a header saying "the rest of the ring up to its end is unused"

# The logger area's words: two summary words, then per slot (ring) its producer's words and
# its watchers' counters. A slot's words are written by the one process serving that slot.
W_OBSERVED = 0
W_MASK = 1
SUMMARY_WORDS = 8
R_HEAD, R_TAIL, R_SEQ = 0, 1, 2  # ring: next write position, oldest intact record, records
S_WATCHERS, S_SENT, S_SKIPPED = 3, 4, 5  # watchers held, lines sent, lines skipped
S_COUNTS = 6  # then one watcher count per stream
SLOT_WORDS = S_COUNTS + NSTREAMS


def ring_size(worker_logbuf_size: int) -> int:
    """Bytes of one ring: ``worker_logbuf_size`` within its bounds, a multiple of ``HEADER``."""
    return min(max(worker_logbuf_size, RING_MIN), RING_MAX) // HEADER * HEADER


def _span(n: int) -> int:
    """Ring bytes a record of an ``n``-byte line takes: its header and the line, padded."""
    return HEADER + -(-n // HEADER) * HEADER


def reserve(rings: int, worker_logbuf_size: int) -> int:
    """Segment bytes a logger of ``rings`` rings carves (each area page-aligned)."""
    align = 4096
    words = -(-(SUMMARY_WORDS + rings * SLOT_WORDS) * 8 // align) * align
    return words + rings * (-(-ring_size(worker_logbuf_size) // align) * align)


class Watcher:
    """One watching connection: its socket (a duplicate of the client's), the streams it asked
    for, where it has read each ring up to, and its bounded pending output."""

    __slots__ = ("sock", "mask", "buf", "greeting", "skipped", "cap", "cursors", "seqs")

    def __init__(self, sock: socket.socket, mask: int, cap: int, cursors: list[int],
                 seqs: list[int]) -> None:
        self.sock = sock
        self.mask = mask
        self.buf = bytearray()
        self.greeting = 0  # bytes at the front of ``buf`` that are the command's reply
        self.skipped = 0
        self.cap = cap
        self.cursors = cursors  # per ring: the position of the next record to read
        self.seqs = seqs  # per ring: the sequence number of that record


class Logger:
    """The node's log streams over the shared rings; ``mask`` is what is watched node-wide."""

    def __init__(self, cap: int, clock: Clock, segment: Segment, rings: int,
                 worker_logbuf_size: int) -> None:
        self.cap = cap  # each watcher's pending-output bound (-o watcher_logbuf_size)
        self.clock = clock
        self.rings = rings
        self.segment = segment  # kept: its file is what the lock below locks
        self.ring_bytes = ring_size(worker_logbuf_size)
        offset, area = segment.carve((SUMMARY_WORDS + rings * SLOT_WORDS) * 8)
        self.words = area.cast("q")
        self.observed = area[W_OBSERVED * 8 : W_OBSERVED * 8 + 8].cast("q")  # the gate word
        self.areas = [segment.carve(self.ring_bytes)[1] for _ in range(rings)]
        self.ring_words = [area.cast("q") for area in self.areas]
        # adding/dropping watchers anywhere recomputes the summary words under this lock
        self._summary = SegmentLock(segment.fd, offset)
        self.slot = 0  # the ring this process writes, and the slot its watchers count in
        self._produce = threading.Lock()  # this process's threads share its ring
        self._pumping = threading.Lock()  # one worker thread of a process pumps at a time
        self.watchers: list[Watcher] = []  # the watchers this process holds

    def bind(self, slot: int) -> None:
        """Write ring ``slot`` from now on (a worker process ``k`` binds ``k`` after fork, the
        supervisor ``rings - 1``)."""
        self.slot = slot
        self._produce = threading.Lock()
        self._pumping = threading.Lock()
        self.watchers = []

    # ------------------------------------------------------------------ node-wide figures

    @property
    def mask(self) -> int:
        """The streams watched anywhere in the node (and the ``DETAIL`` bit)."""
        return int(self.words[W_MASK])

    def _sum(self, index: int) -> int:
        w = self.words
        return sum(int(w[SUMMARY_WORDS + r * SLOT_WORDS + index]) for r in range(self.rings))

    @property
    def written(self) -> int:
        """Lines logged by every process (memcached's log_worker_written)."""
        return sum(int(self.words[SUMMARY_WORDS + r * SLOT_WORDS + R_SEQ])
                   for r in range(self.rings))

    @property
    def sent(self) -> int:
        return self._sum(S_SENT)

    @property
    def skipped(self) -> int:
        return self._sum(S_SKIPPED)

    @property
    def watching(self) -> int:
        """Watchers connected to any process of the node."""
        return self._sum(S_WATCHERS)

    def _bump(self, index: int, by: int) -> None:
        self.words[SUMMARY_WORDS + self.slot * SLOT_WORDS + index] += by

    # ------------------------------------------------------------------ watchers

    def _resummarise(self) -> None:
        """Recompute the summary words from every slot's counts (with ``_summary`` held)."""
        w = self.words
        mask = int(w[W_MASK]) & DETAIL
        for r in range(self.rings):
            base = SUMMARY_WORDS + r * SLOT_WORDS + S_COUNTS
            for i in range(NSTREAMS):
                if w[base + i] > 0:
                    mask |= 1 << i
        w[W_MASK] = mask
        w[W_OBSERVED] = 1 if mask & (ITEM_STREAMS | DETAIL) else 0

    def _count(self, slot: int, mask: int, by: int) -> None:
        base = SUMMARY_WORDS + slot * SLOT_WORDS
        self.words[base + S_WATCHERS] += by
        for i in range(NSTREAMS):
            if mask & (1 << i):
                self.words[base + S_COUNTS + i] += by

    def set_detail(self, on: bool) -> None:
        """``stats detail on|off``, node-wide: it gates the item paths as a watcher does."""
        with self._summary:
            w = self.words
            w[W_MASK] = (int(w[W_MASK]) | DETAIL) if on else (int(w[W_MASK]) & ~DETAIL)
            self._resummarise()

    def add(self, fd: int, mask: int, greeting: bytes = b"") -> bool:
        """Make ``fd`` (a connection of this process) a watcher of ``mask``; False past the
        node-wide limit. It sees every event logged from now on, sent after ``greeting`` (the
        command's OK, queued here so the client cannot see it before the watcher counts)."""
        with self._summary:
            if self.watching >= MAX_WATCHERS:
                return False
            sock = socket.socket(fileno=os.dup(fd))
            sock.setblocking(False)
            w = self.words
            bases = [SUMMARY_WORDS + r * SLOT_WORDS for r in range(self.rings)]
            cursors = [int(w[b + R_HEAD]) for b in bases]
            seqs = [int(w[b + R_SEQ]) for b in bases]
            watcher = Watcher(sock, mask, self.cap, cursors, seqs)
            watcher.buf += greeting
            watcher.greeting = len(greeting)
            self.watchers.append(watcher)
            self._count(self.slot, mask, 1)
            self._resummarise()
        return True

    def _drop(self, w: Watcher) -> None:
        if w in self.watchers:
            self.watchers.remove(w)
            with self._summary:
                self._count(self.slot, w.mask, -1)
                self._resummarise()
        try:
            w.sock.close()
        except OSError:
            pass

    def reclaim(self, slot: int) -> None:
        """Forget the watchers counted in ``slot`` (its process died: its sockets went with
        it), so nobody logs for them any more."""
        with self._summary:
            base = SUMMARY_WORDS + slot * SLOT_WORDS
            self.words[base + S_WATCHERS] = 0
            for i in range(NSTREAMS):
                self.words[base + S_COUNTS + i] = 0
            self._resummarise()

    def stop(self) -> None:
        for w in list(self.watchers):
            self._drop(w)

    # ------------------------------------------------------------------ producing

    def emit(self, kind: int, body: bytes) -> None:
        """Append ``ts=... gid=... <body>`` to this process's ring (any thread)."""
        now = time.time()
        sec = int(now)
        usec = int((now - sec) * 1_000_000)
        with self._produce:
            ring = self.slot
            w = self.words
            base = SUMMARY_WORDS + ring * SLOT_WORDS
            seq = int(w[base + R_SEQ])
            line = b"ts=%d.%d gid=%d %b\n" % (sec, usec, ring * GID_STRIDE + seq + 1, body)
            n = len(line)
            size = _span(n)
            cap = self.ring_bytes
            if size > cap:
                return  # cannot happen within the bounds (a line is under 2 KB)
            head = int(w[base + R_HEAD])
            pos = head % cap
            data = self.areas[ring]
            words = self.ring_words[ring]
            pad = cap - pos if pos + size > cap else 0
            # Make room first: move the tail past every record the write will overwrite, so
            # a reader that finds the tail beyond what it copied knows the copy may be torn.
            tail = int(w[base + R_TAIL])
            while head + pad + size - tail > cap:
                t = tail % cap
                word = int(words[t // 8])
                tail += cap - t if word == PAD else _span(word & 0xFFFFFFFF)
            w[base + R_TAIL] = tail
            if pad:
                words[pos // 8] = PAD
                pos = 0
            words[pos // 8] = kind << 32 | n
            words[pos // 8 + 1] = seq
            data[pos + HEADER : pos + HEADER + n] = line
            w[base + R_SEQ] = seq + 1
            w[base + R_HEAD] = head + pad + size  # published: readers take it from here

    # ------------------------------------------------------------------ delivering

    def pump(self) -> None:
        """Copy new records of every ring into this process's watchers, and write their
        buffers out; called from a worker loop while ``watchers`` is not empty."""
        if not self._pumping.acquire(blocking=False):
            return  # another worker thread of this process is at it
        try:
            for watcher in list(self.watchers):
                self._collect(watcher)
                self._flush(watcher)
        finally:
            self._pumping.release()

    def _collect(self, wt: Watcher) -> None:
        w = self.words
        cap = self.ring_bytes
        for ring in range(self.rings):
            base = SUMMARY_WORDS + ring * SLOT_WORDS
            head = int(w[base + R_HEAD])
            cur = wt.cursors[ring]
            if cur >= head:
                continue
            data = self.areas[ring]
            words = self.ring_words[ring]
            while cur < head:
                if cur < int(w[base + R_TAIL]):
                    cur = int(w[base + R_TAIL])  # overwritten before we got here: resync
                    continue
                pos = cur % cap
                word = int(words[pos // 8])
                if word == PAD:
                    cur += cap - pos
                    continue
                n = word & 0xFFFFFFFF
                seq = int(words[pos // 8 + 1])
                line = bytes(data[pos + HEADER : pos + HEADER + n])
                if int(w[base + R_TAIL]) > cur:
                    continue  # overwritten while we copied it: resync on the next turn
                cur += _span(n)
                self._skip(wt, seq - wt.seqs[ring])  # records this watcher never saw
                wt.seqs[ring] = seq + 1
                if not (word >> 32) & wt.mask:
                    continue
                if len(wt.buf) + n > wt.cap:
                    self._skip(wt, 1)
                    continue
                wt.buf += line
            wt.cursors[ring] = cur

    def _skip(self, wt: Watcher, lost: int) -> None:
        if lost > 0:
            wt.skipped += lost
            self._bump(S_SKIPPED, lost)

    def _flush(self, w: Watcher) -> None:
        if w.skipped and len(w.buf) < w.cap // 2:
            w.buf += b"skipped=%d\n" % w.skipped
            w.skipped = 0
        if not w.buf:
            try:
                if w.sock.recv(1, socket.MSG_PEEK) == b"":
                    self._drop(w)  # the client hung up
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self._drop(w)
            return
        try:
            sent = w.sock.send(w.buf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(w)  # the watcher went away
            return
        lines = w.buf.count(b"\n", w.greeting, max(sent, w.greeting))  # the reply is no line
        w.greeting = max(w.greeting - sent, 0)
        self._bump(S_SENT, lines)
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
    logger: Logger, cid: int, key: bytes, code: int, clsid: int, size: int) -> None:
    """An item fetch: ``code`` is 1 for a hit, else a miss code (0, -1 expired, -2 flushed)."""
    if logger.mask & FETCHERS:
        logger.emit(
            FETCHERS,
            b"type=item_get key=%b status=%b clsid=%d cfd=%d size=%d"
            % (
                uriencode(key),
                _GET_STATUS.get(code, b"not_found"),
                clsid if code == 1 else 0,
                cid,
                size if code == 1 else 0,
            ),
        )


def log_store(
    logger: Logger, cid: int, cmd: bytes, key: bytes, ttl: int, clsid: int, size: int, outcome: int
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
                cid,
                size,
            ),
        )


def log_delete(
    logger: Logger, cid: int, cmd: bytes, key: bytes, clsid: int, size: int) -> None:
    if logger.mask & DELETIONS:
        logger.emit(
            DELETIONS,
            b"type=deleted key=%b cmd=%b clsid=%d cfd=%d size=%d"
            % (uriencode(key), cmd, clsid, cid, size),
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
    if logger.mask & SYSEVENTS:
        logger.emit(SYSEVENTS, b"type=slab_move src=%d dst=%d" % (src, dst))


def log_conn(
    logger: Logger, new: bool, peer: str, cid: int) -> None:
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
    logger.emit(CONNEVENTS, body % (host.strip("[]").encode(), port.encode(), transport, cid))
