"""The node's open connections and its connection counters, node-wide in the shared segment.

Why in the segment: under a GIL ``-t N`` is N worker processes, and ``stats``, ``stats conns``
and ``-c`` are about the whole node. Each worker slot has its own counter words (admitted,
closed, rejected, its high-water of open connections) and its own run of connection records;
a slot's words and records are written only by the process serving it (its acceptor thread
admits, its worker thread opens and closes), and readers sum or scan every slot. So the accept
path takes no cross-process lock.

-c is checked in ``admit`` against the node-wide sum of open connections. Acceptors of different
processes racing for the last places may each see room: the node can overshoot -c by at most
one connection per other slot, which memcached's own per-thread accounting would also allow.

Connection ids (``stats conns``, watch lines' ``cfd``): file descriptors are per process, so two
worker processes can hold the same number. The id is ``process * id_stride + fd``, where
``process`` is the worker slot the process was forked for (``forked``; 0 in the node's own
process) and ``id_stride`` the smallest power of ten above the kernel's cap on descriptor
numbers (``fs.nr_open``): unique node-wide, the fd itself in worker 0 and in a single-process
node (whatever its number of worker threads: one process never hands out one fd twice), so it
prints what memcached prints, and for the others the fd still readable in the low digits.

Bounds: ``slots`` is -t; each slot has room for ``min(-c + slots, MAX_RECORDS_PER_SLOT)``
records (one worker may hold every connection of the node). A connection past that is served
but not listed in ``stats conns``. A record holds ``ADDR_BYTES`` of each address (longer ones,
only long UNIX socket paths, are cut).

A dead worker's slot is handed back with ``reclaim`` (its connections died with it).

``-o read_buf_mem_limit`` caps the bytes held for connections node-wide, so what each slot's
connections hold (unparsed input, unsent output) is a word of that slot too (``charge``,
written only while the limit is set), summed by ``buffered``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from memcache_server import watch
from memcache_server.storage.segment import ALIGN

if TYPE_CHECKING:
    from memcache_server.server.worker import Connection
    from memcache_server.storage.segment import Segment

__all__ = ["ConnectionTable", "ConnInfo", "MAX_RECORDS_PER_SLOT"]

MAX_RECORDS_PER_SLOT = 65536
RECORD_BYTES = 256
ADDR_BYTES = 104  # per address in a record (a tcp6 peer with its port needs under 64)
# a slot's counter words; C_BUFFERED: bytes its connections hold (-o read_buf_mem_limit)
C_ADMITTED, C_CLOSED, C_REJECTED, C_HIGH, C_FRESH, C_BUFFERED = 0, 1, 2, 3, 4, 5
SLOT_WORDS = 8
# node words, after the slots' words
N_TOTAL_BASE, N_REJECTED_BASE, N_UDP, N_HIGH = 0, 1, 2, 3
NODE_WORDS = 8
# a record's words, then its two addresses
R_USED, R_ID, R_STATE, R_LAST, R_PEER_LEN, R_LISTEN_LEN = 0, 1, 2, 3, 4, 5
RECORD_WORDS = RECORD_BYTES // 8
PEER_AT = 48
LISTEN_AT = PEER_AT + ADDR_BYTES
STATES = ("conn_waiting", "conn_parse_cmd", "conn_watch")


class ConnInfo(NamedTuple):
    """One connection of the node as ``stats conns`` shows it."""

    cid: int
    peer: str
    listen_addr: str
    state: str
    last_active: int


def id_stride() -> int:
    """The smallest power of ten above every descriptor number the kernel can hand out."""
    try:
        with open("/proc/sys/fs/nr_open") as f:
            cap = int(f.read())
    except (OSError, ValueError):
        cap = 1 << 20  # Linux's default nr_open
    stride = 10
    while stride <= cap:
        stride *= 10
    return stride


def records_per_slot(max_connections: int, slots: int) -> int:
    return min(max_connections + slots, MAX_RECORDS_PER_SLOT)


def _round(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


class ConnectionTable:
    """Open connections and memcached's connection counters, node-wide."""

    @staticmethod
    def reserve(max_connections: int, slots: int) -> int:
        """Segment bytes a table for -c ``max_connections`` and ``slots`` workers carves."""
        return _round((slots * SLOT_WORDS + NODE_WORDS) * 8) + _round(
            slots * records_per_slot(max_connections, slots) * RECORD_BYTES)

    def __init__(
        self,
        max_connections: int,
        logger: watch.Logger,
        verbosity: Callable[[], int],
        segment: Segment,
        slots: int,
    ) -> None:
        self.max_connections = max_connections
        self.logger = logger
        self.verbosity = verbosity  # read at each open/close: `verbosity` changes it at run time
        self.slots = slots
        self.per_slot = records_per_slot(max_connections, slots)
        self.id_stride = id_stride()
        self.process = 0  # the worker slot this process was forked for (see conn_id)
        self.listeners = 0
        self.segment = segment  # kept alive with the views carved from it
        self.words = segment.carve((slots * SLOT_WORDS + NODE_WORDS) * 8)[1].cast("q")
        self.area = segment.carve(slots * self.per_slot * RECORD_BYTES)[1]
        self.records = self.area.cast("q")
        self._free: list[list[int]] = [[] for _ in range(slots)]  # records this process freed
        # this process's own connections, for the worker-level views (tests, the node)
        self._lock = threading.Lock()
        self._conns: dict[int, Connection] = {}

    # ------------------------------------------------------------------ counters

    def _sum(self, index: int) -> int:
        w = self.words
        return sum(int(w[s * SLOT_WORDS + index]) for s in range(self.slots))

    def _node(self, index: int) -> int:
        return int(self.words[self.slots * SLOT_WORDS + index])

    @property
    def curr_connections(self) -> int:
        return self._sum(C_ADMITTED) - self._sum(C_CLOSED) + self._node(N_UDP)

    @property
    def total_connections(self) -> int:
        return self._sum(C_ADMITTED) - self._node(N_TOTAL_BASE)

    @property
    def rejected_connections(self) -> int:
        return self._sum(C_REJECTED) - self._node(N_REJECTED_BASE)

    @property
    def connection_structures(self) -> int:
        return self.listeners + self._node(N_HIGH) + self._node(N_UDP)

    @property
    def buffered(self) -> int:
        """Bytes every worker's connections hold (while -o read_buf_mem_limit is set)."""
        return self._sum(C_BUFFERED)

    def charge(self, slot: int, delta: int) -> None:
        """Worker ``slot``'s connections hold ``delta`` more bytes (or fewer)."""
        self.words[slot * SLOT_WORDS + C_BUFFERED] += delta

    accepting_conns = 1  # this node never stops accepting: past -c it refuses (maxconns_fast)
    listen_disabled_num = 0

    def listening(self, count: int) -> None:
        """memcached counts its listening sockets as connections too."""
        self.listeners = count
        self.words[self.slots * SLOT_WORDS + N_TOTAL_BASE] = self._sum(C_ADMITTED) - count

    def reset_counts(self) -> None:
        """``stats reset``: the connection totals memcached zeroes (from here on)."""
        base = self.slots * SLOT_WORDS
        self.words[base + N_TOTAL_BASE] = self._sum(C_ADMITTED)
        self.words[base + N_REJECTED_BASE] = self._sum(C_REJECTED)

    def udp_connections(self, count: int) -> None:
        """memcached opens a connection per worker thread on each UDP socket: they count as
        current, total and structures from the start (node words, set once at bind)."""
        w = self.words
        base = self.slots * SLOT_WORDS
        w[base + N_UDP] = count
        w[base + N_TOTAL_BASE] -= count

    def admit(self, slot: int) -> bool:
        """Called by the acceptor for a connection it will give worker ``slot``: enforce -c."""
        w = self.words
        base = slot * SLOT_WORDS
        curr = self.curr_connections
        if curr >= self.max_connections:
            w[base + C_REJECTED] += 1
            return False
        w[base + C_ADMITTED] += 1
        # memcached allocates a connection structure per descriptor number and reuses it, so
        # its count is the most connections ever open at once: a node-wide high-water mark (a
        # race between two acceptors may miss one, as any sampled maximum may)
        held = curr + 1 - self._node(N_UDP)
        node = self.slots * SLOT_WORDS
        if held > w[node + N_HIGH]:
            w[node + N_HIGH] = held
        return True

    # ------------------------------------------------------------------ records

    def conn_id(self, fd: int) -> int:
        """The node-wide id of this process's descriptor ``fd`` (see the module doc)."""
        return self.process * self.id_stride + fd

    def opened(self, conn: Connection, slot: int) -> None:
        """Worker ``slot`` took ``conn`` (whose ``cid`` is set): record it, tell watchers."""
        rec = self._take(slot)
        conn.rec = rec
        if rec >= 0:
            r = rec * RECORD_WORDS
            records = self.records
            records[r + R_ID] = conn.cid
            records[r + R_STATE] = 0
            records[r + R_LAST] = conn.last_active
            at = rec * RECORD_BYTES
            records[r + R_PEER_LEN] = self._put(at + PEER_AT, conn.peer)
            records[r + R_LISTEN_LEN] = self._put(at + LISTEN_AT, conn.listen_addr)
            records[r + R_USED] = 1  # published
        with self._lock:
            self._conns[id(conn)] = conn
        if self.logger.mask & watch.CONNEVENTS:
            watch.log_conn(self.logger, True, conn.peer, conn.cid)
        if self.verbosity() > 1:
            _log_line(f"<{conn.cid} new auto-negotiating client connection")

    def _put(self, at: int, text: str) -> int:
        data = text.encode("utf-8", "replace")[:ADDR_BYTES]
        self.area[at : at + len(data)] = data
        return len(data)

    def _take(self, slot: int) -> int:
        free = self._free[slot]
        if free:
            return free.pop()
        w = self.words
        fresh = int(w[slot * SLOT_WORDS + C_FRESH])
        if fresh >= self.per_slot:
            return -1
        w[slot * SLOT_WORDS + C_FRESH] = fresh + 1
        return slot * self.per_slot + fresh

    def touch(self, conn: Connection) -> None:
        """``conn`` just read a request: its record's last-command time (once a second)."""
        if conn.rec >= 0:
            self.records[conn.rec * RECORD_WORDS + R_LAST] = conn.last_active

    def set_state(self, cid: int, state: str) -> None:
        """Connection ``cid`` of this process changed role (``conn_watch``), as ``stats conns``
        will show it."""
        with self._lock:
            conns = [c for c in self._conns.values() if c.cid == cid]
        for conn in conns:
            if conn.rec >= 0:
                self.records[conn.rec * RECORD_WORDS + R_STATE] = STATES.index(state)

    def closed(self, conn: Connection, slot: int) -> None:
        rec = conn.rec
        if rec >= 0:
            self.records[rec * RECORD_WORDS + R_USED] = 0
            conn.rec = -1
            self._free[slot].append(rec)
        self.words[slot * SLOT_WORDS + C_CLOSED] += 1
        with self._lock:
            self._conns.pop(id(conn), None)
        if self.logger.mask & watch.CONNEVENTS:
            watch.log_conn(self.logger, False, conn.peer, conn.cid)
        if self.verbosity() > 1:
            _log_line(f"<{conn.cid} connection closed.")

    def reclaim(self, slot: int) -> None:
        """Worker ``slot``'s process died: its connections are closed, its records free."""
        w = self.words
        base = slot * SLOT_WORDS
        w[base + C_CLOSED] = w[base + C_ADMITTED]
        w[base + C_BUFFERED] = 0
        for rec in range(slot * self.per_slot, slot * self.per_slot + int(w[base + C_FRESH])):
            self.records[rec * RECORD_WORDS + R_USED] = 0
        w[base + C_FRESH] = 0
        self._free[slot] = []

    def forked(self, slot: int) -> None:
        """In a process just forked from the node to serve worker ``slot``: ids are that
        slot's, and the parent's connections and locks are not this process's (the shared
        words and records stay as they are)."""
        self.process = slot
        self._lock = threading.Lock()
        self._conns = {}
        self._free = [[] for _ in range(self.slots)]

    def all(self) -> list[Connection]:
        """This process's open connections, by descriptor."""
        with self._lock:
            return sorted(self._conns.values(), key=lambda c: c.fd)

    def records_all(self) -> list[ConnInfo]:
        """Every open connection of the node, whichever process holds it, by id."""
        out = []
        records, area, w = self.records, self.area, self.words
        for slot in range(self.slots):
            first = slot * self.per_slot
            for rec in range(first, first + int(w[slot * SLOT_WORDS + C_FRESH])):
                r = rec * RECORD_WORDS
                if not records[r + R_USED]:
                    continue
                at = rec * RECORD_BYTES
                peer = bytes(area[at + PEER_AT : at + PEER_AT + records[r + R_PEER_LEN]])
                listen = bytes(area[at + LISTEN_AT : at + LISTEN_AT + records[r + R_LISTEN_LEN]])
                state = int(records[r + R_STATE])
                out.append(ConnInfo(
                    int(records[r + R_ID]),
                    peer.decode("utf-8", "replace"),
                    listen.decode("utf-8", "replace"),
                    STATES[state] if 0 <= state < len(STATES) else STATES[0],
                    int(records[r + R_LAST]),
                ))
        out.sort()
        return out


def _log_line(text: str) -> None:
    """A -vv line in one write(2): worker processes share stderr, and ``print`` writes the text
    and its newline separately, so another process's line could land in between."""
    sys.stderr.flush()
    os.write(2, text.encode() + b"\n")
