"""A worker thread: one event loop owning its connections, memcached's threading model.

Rules: a worker's poller, connections and counter block are touched only by the worker thread.
Under a GIL, workers take turns: each holds ``node.worker_turns`` while it serves a batch of
events and releases it before blocking in the poller. Measured: letting workers contend for the
GIL at every recv/send (a futex hand-off per system call) cost 25-50% of throughput at -t 4.
Turn-taking still left several loops slower than one (fewer events per wake-up, more
hand-offs), so under a GIL the node runs a single worker (see ``Node.__init__``); with no GIL
the lock is None and -t workers run in parallel.
New connections arrive through ``hand_off()`` (a queue plus a wake-up pipe), the only entry point
other threads use. Each readable event reads once, runs up to -R requests, and answers with one
send; a connection with requests left over yields and is resumed after the others
(``conn_yields``). A client that does not read its replies stops being read from once its output
passes ``max_output_buffer``: the server never buffers without bound. With
``-o read_buf_mem_limit`` the bytes held for all connections (unparsed input and unsent output)
are also capped node-wide; see ``_over_budget``.

The loop polls with ``select.epoll`` (``select.poll`` where there is no epoll) directly, by file
descriptor, rather than through ``selectors``: the worker already maps descriptors to
connections, and the ``selectors`` layer (a key object per event, a dict lookup, a mask
translation) cost about a microsecond per wake-up, which is per request for a client that waits
for each reply.
"""

from __future__ import annotations

import collections
import os
import select
import socket
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from time import perf_counter_ns
from typing import TYPE_CHECKING, Protocol

from memcache_server.commands.session import Session
from memcache_server.latency import (
    OTHER_OFFSET,
    PREFIX_OFFSET,
    SAMPLE_MASK,
    SLOT_OF_BITS,
    SUM_SLOT,
    new_recorder,
)
from memcache_server.server.threadname import name_this_thread
from memcache_server.server.udp import UdpEndpoint
from memcache_server.stats import (
    BYTES_WRITTEN,
    CONN_YIELDS,
    IDLE_KICKS,
    READ_BUF_OOM,
    RESPONSE_OBJ_OOM,
    ThreadStats,
)
from memcache_server.storage.settings import S_VERBOSITY
from memcache_server.watch import POLL_INTERVAL

if TYPE_CHECKING:
    from memcache_server.commands.udp import UdpSession
    from memcache_server.config import ServerConfig
    from memcache_server.server.connections import ConnectionTable
    from memcache_server.server.tls import TLSConn, TLSServer
    from memcache_server.storage.clock import Clock
    from memcache_server.storage.settings import NodeSettings
    from memcache_server.watch import Logger

__all__ = ["Worker", "Connection", "WorkerContext"]

READ_SIZE = 256 * 1024
EV_READ = select.POLLIN  # the same bits for poll and epoll
EV_WRITE = select.POLLOUT
EV_BROKEN = select.POLLHUP | select.POLLERR  # reported as readable and writable, as selectors does
EV_IN = EV_READ | EV_BROKEN
EV_OUT = EV_WRITE | EV_BROKEN


class Poller:
    """epoll where the platform has it, else poll, behind poll's own interface (by fd).

    ``poll(timeout)`` takes seconds. With epoll it is epoll's own bound method: the loop calls
    it once per wake-up, and a wrapper would add a Python call to every round trip."""

    def __init__(self) -> None:
        self._epoll = select.epoll() if hasattr(select, "epoll") else None
        self._impl: select.epoll | select.poll = self._epoll or select.poll()
        self.register = self._impl.register
        self.modify = self._impl.modify
        self.unregister = self._impl.unregister
        self.poll: Callable[[float], list[tuple[int, int]]] = (
            self._epoll.poll if self._epoll is not None else self._poll_ms
        )

    def _poll_ms(self, timeout: float) -> list[tuple[int, int]]:
        return self._impl.poll(timeout * 1000)

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()


class Connection:
    """A client socket, its protocol session and its pending output."""

    __slots__ = (
        "sock",
        "fd",
        "session",
        "pending",
        "events",
        "peer",
        "listen_addr",
        "state",
        "last_active",
        "backlog",
        "tls",
        "charged",
        "cid",
        "rec",
    )

    def __init__(self, sock: socket.socket, session: Session, peer: str, listen_addr: str) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.session = session
        self.pending = bytearray()  # output not yet accepted by the kernel
        self.events = EV_READ
        self.peer = peer
        self.listen_addr = listen_addr
        self.state = "conn_waiting"
        self.last_active = 0
        self.backlog = False  # it yielded with complete requests still buffered
        self.tls: TLSConn | None = None  # set by TLSWorker for connections on a -Z listener
        self.charged = 0  # bytes counted against read_buf_mem_limit for this connection
        self.cid = self.fd  # its node-wide id (see server/connections.py)
        self.rec = -1  # its record in the node's connection table, -1 for none


class WorkerContext(Protocol):
    """What a worker needs of its node: settings, the clock, sessions for new connections, the
    connection bookkeeping, the other workers (for the node-wide buffer cap), with -Z TLS and
    with -U the UDP sockets every worker reads."""

    @property
    def config(self) -> ServerConfig: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def verbosity(self) -> int: ...
    @property
    def settings(self) -> NodeSettings: ...
    @property
    def worker_turns(self) -> threading.Lock | None: ...
    @property
    def workers(self) -> Sequence[Worker]: ...
    @property
    def tls(self) -> TLSServer | None: ...

    @property
    def conn_table(self) -> ConnectionTable: ...
    @property
    def logger(self) -> Logger: ...
    @property
    def udp_sockets(self) -> Sequence[socket.socket]: ...

    def new_session(self, stats: ThreadStats, peer: str, fd: int) -> Session: ...
    def new_udp_session(self, stats: ThreadStats, request_id: int, peer: str) -> UdpSession: ...
    def worker_stats(self, index: int) -> ThreadStats: ...
    def follow_settings(self) -> None: ...


class Worker(threading.Thread):
    """One event loop thread. ``node`` is its node as a ``WorkerContext``, nothing more."""

    def __init__(self, node: WorkerContext, index: int) -> None:
        super().__init__(name=f"worker-{index}", daemon=True)
        self.node = node
        self.index = index
        self.stats = node.worker_stats(index)  # its block of the node's shared counters
        # the node-wide settings words (another process may change them): read by index on
        # the request path, where a Word attribute would cost a Python call
        self.settings_words = node.settings.words
        # per-family latency histogram (see latency.py), kept only when metrics are served
        self.latency = new_recorder() if node.config.metrics_listen is not None else None
        self.poller = Poller()
        self.inbox: collections.deque[tuple[socket.socket, str, str]] = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.poller.register(self._wake_r, EV_READ)
        self.conns: dict[int, Connection] = {}
        self.ready: list[Connection] = []  # connections that yielded with requests left
        # One receive buffer per worker: recv() of a large size would malloc (mmap) and shrink a
        # fresh object on every call, three extra syscalls per request.
        self._rbuf = bytearray(READ_SIZE)
        self._rview = memoryview(self._rbuf)
        self.stopping = False
        self.rbuf_limit = node.config.read_buf_mem_limit  # node-wide cap in bytes, 0 = none
        self.udp: dict[int, UdpEndpoint] = {}  # -U: the node's UDP sockets, by descriptor
        # read on every request: kept here rather than looked up through the node each time
        self.clock = node.clock
        self.reqs_per_event = node.config.reqs_per_event
        self.max_output = node.config.max_output_buffer

    # -------------------------------------------------------------- other threads

    def hand_off(self, sock: socket.socket, peer: str, listen_addr: str) -> None:
        self.inbox.append((sock, peer, listen_addr))
        self.wake()

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def stop(self) -> None:
        self.stopping = True
        self.wake()

    def discard(self) -> None:
        """Close what a loop that will never run holds (a worker process keeps only its own)."""
        self.poller.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    # -------------------------------------------------------------- loop

    def run(self) -> None:
        name_this_thread("mc-worker")  # memcached's name for its event loop threads
        try:
            self._open_udp()
            self._loop()
        except Exception as exc:  # a bug must not take the process down silently
            print(f"worker {self.index} crashed: {exc!r}", file=sys.stderr)
            raise
        finally:
            for conn in list(self.conns.values()):
                self._flush_and_close(conn)
            self.poller.close()
            os.close(self._wake_r)
            os.close(self._wake_w)

    def _open_udp(self) -> None:
        """Read every UDP socket the node bound (in this worker's process, after a fork)."""
        node = self.node
        for sock in node.udp_sockets:
            ep = UdpEndpoint(sock, self.stats, node.new_udp_session, node.config.reqs_per_event)
            self.udp[sock.fileno()] = ep
            self.poller.register(sock.fileno(), EV_READ)

    def _loop(self) -> None:
        poll = self.poller.poll
        node = self.node
        idle_timeout = node.config.idle_timeout
        next_idle_check = 0
        turns = node.worker_turns
        sampling = self.latency is not None
        tick = 0
        settings = self.settings_words
        verbosity = settings[S_VERBOSITY]
        logger = node.logger
        while not self.stopping:
            # A process holding watchers polls the node's log rings every POLL_INTERVAL.
            timeout = 0.0 if self.ready else POLL_INTERVAL if logger.watchers else 1.0
            events = poll(timeout)
            # `verbosity`, maybe set in another process: sessions trace at 2
            if settings[S_VERBOSITY] != verbosity:
                verbosity = settings[S_VERBOSITY]
                node.follow_settings()
            # Latency sampling: one wake-up in SAMPLE_EVERY times its first read batch. Deciding
            # here, in locals, keeps the per-batch cost to one test of a local.
            timed = False
            if sampling:
                tick = (tick + 1) & SAMPLE_MASK
                timed = not tick
            if turns is not None:
                turns.acquire()
            try:
                self._handle(events, timed)
            finally:
                if turns is not None:
                    turns.release()
            # the batch names connections closed during it: drop it now, not at the next wake-up
            del events
            if logger.watchers:
                logger.pump()
            if idle_timeout:
                now = node.clock.now
                if now >= next_idle_check:
                    next_idle_check = now + 1
                    self._kick_idle(now, idle_timeout)
        # graceful stop: answer what is already buffered, then close
        for conn in list(self.conns.values()):
            if self.conns.get(conn.fd) is conn:
                self._run(conn, limit=1 << 30)

    def _handle(self, events: list[tuple[int, int]], timed: bool) -> None:
        """Serve one batch of readiness events, then the connections that yielded. With
        ``timed``, the first read batch is recorded in the latency histogram."""
        conns = self.conns
        for fd, mask in events:
            conn = conns.get(fd)
            if conn is None:
                if fd == self._wake_r:
                    self._drain_wake()
                elif fd in self.udp:
                    self._on_datagrams(self.udp[fd])
                continue  # a connection closed earlier in this batch
            if mask & EV_OUT:
                self._on_writable(conn)
                if conns.get(fd) is not conn:
                    continue
            if mask & EV_IN:
                if timed:
                    timed = False
                    self._on_readable(conn, True)
                else:
                    self._on_readable(conn)
        if self.ready:
            # A connection may have closed since it was queued, and its fd may already belong to
            # a new connection: only the same object is run.
            ready = self.ready
            self.ready = []
            conns = self.conns
            for conn in ready:
                if conns.get(conn.fd) is conn:
                    self._run(conn)

    def _on_datagrams(self, ep: UdpEndpoint) -> None:
        try:
            ep.serve()
        except Exception:  # a bug in one command must cost one datagram, not the thread
            print(f"worker {self.index}: a UDP request failed:", file=sys.stderr)
            traceback.print_exc(file=sys.stderr)

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while self.inbox:
            sock, peer, listen_addr = self.inbox.popleft()
            self._add(sock, peer, listen_addr)

    def _add(self, sock: socket.socket, peer: str, listen_addr: str) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        table = self.node.conn_table
        session = self.node.new_session(self.stats, peer, sock.fileno())
        conn = Connection(sock, session, peer, listen_addr)
        conn.cid = session.cid = table.conn_id(conn.fd)
        conn.last_active = self.node.clock.now
        self.conns[conn.fd] = conn
        self.poller.register(conn.fd, EV_READ)
        table.opened(conn, self.index)

    def _receive(self, conn: Connection) -> bytes | None:
        """One read from a readable connection (raw bytes, TLS records included): None when
        there is nothing to read now, when it is held back, or when it closed (it is then
        closed here)."""
        if conn.backlog:
            # Requests already read are still waiting their turn (-R): read no more until they
            # have run, so a client pipelining faster than we execute is held back by TCP.
            return None
        try:
            n = conn.sock.recv_into(self._rbuf)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            self._close(conn)
            return None
        if not n:
            self._close(conn)
            return None
        now = self.clock.now
        if now != conn.last_active:  # the shared record is written once a second at most
            conn.last_active = now
            self.node.conn_table.touch(conn)
        return self._rview[:n].tobytes()

    def _on_readable(self, conn: Connection, timed: bool = False) -> None:
        """Read once, run what arrived, send the replies: ``_receive``, ``_run`` and ``_send``
        in one frame. This is every request's path, and each Python call it saved measured
        about 0.1 us of the few microseconds a request costs here; those methods stay for the
        other callers (the ready list, TLS, a graceful stop) and keep the same rules."""
        if conn.backlog:
            return  # held back until its buffered requests have run (see _receive)
        try:
            n = conn.sock.recv_into(self._rbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not n:
            self._close(conn)
            return
        now = self.clock.now
        if now != conn.last_active:  # the shared record is written once a second at most
            conn.last_active = now
            self.node.conn_table.touch(conn)
        session = conn.session
        if timed:
            session.feed(self._rview[:n].tobytes())
            self._run(conn, 0, True)
            return
        try:
            more = session.serve(self._rview[:n].tobytes(), self.reqs_per_event)
        except Exception:  # a bug in one command must cost one connection, not the thread
            self._internal_error(conn)
            return
        conn.backlog = more
        out = session.out
        if out:
            if conn.pending:
                self._send(conn, out)
            else:  # _send's common case: nothing queued, the kernel takes it all
                self.stats[BYTES_WRITTEN] += len(out)
                try:
                    sent = conn.sock.send(out)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    sent = -1
                    session.want_close = True
                if 0 <= sent < len(out):
                    conn.pending += memoryview(out)[sent:]
                    self._want_write(conn)
            out.clear()
        if more or self.rbuf_limit or session.want_close or session.close_after:
            self._after_run(conn, more)

    def _run(self, conn: Connection, limit: int = 0, timed: bool = False) -> None:
        """Run requests (up to -R), then send everything they produced at once. A ``timed``
        batch is recorded in the latency histogram under the family of its first request."""
        session = conn.session
        fam = -1
        if timed:
            fr = session.framer
            fam = PREFIX_OFFSET.get(fr.buf[fr.pos : fr.pos + 3], OTHER_OFFSET)
            t0 = perf_counter_ns()
        try:
            more = session.process(limit or self.reqs_per_event)
        except Exception:  # a bug in one command must cost one connection, not the thread
            self._internal_error(conn)
            return
        conn.backlog = more
        out = session.out
        if out:
            self._send(conn, out)
            out.clear()
            if fam >= 0:
                self._observe(fam, perf_counter_ns() - t0)
        self._after_run(conn, more)

    def _after_run(self, conn: Connection, more: bool) -> None:
        """What follows a batch: the node-wide buffer cap, a close the batch asked for, and a
        turn in the ready list for a connection with requests left over."""
        session = conn.session
        if self.rbuf_limit and self._over_budget(conn):
            return
        if session.want_close:
            self._close(conn)
            return
        if session.close_after:
            if conn.pending:
                self._pause_reading(conn)
            else:
                self._close(conn)
            return
        if more and self.conns.get(conn.fd) is conn:
            if len(conn.pending) < self.max_output:
                self.stats[CONN_YIELDS] += 1
                self.ready.append(conn)
            # else: resumed from _on_writable once the client reads

    def _internal_error(self, conn: Connection) -> None:
        """A request raised: log it and close that connection (its stream state is unknown).

        Without this the exception would end the worker thread and strand every connection it
        owns; one malformed request would take a quarter of the node (all of it with -t 1).
        """
        print(f"worker {self.index}: request from {conn.peer} failed:", file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        conn.session.out.clear()
        self._close(conn)

    def _observe(self, fam: int, dt: int) -> None:
        lat = self.latency
        if lat is not None:
            lat[fam + SLOT_OF_BITS[(dt - 1).bit_length()]] += 1
            lat[fam + SUM_SLOT] += dt

    def _send(self, conn: Connection, out: bytes | bytearray) -> None:
        self.stats[BYTES_WRITTEN] += len(out)
        if conn.pending:
            conn.pending += out
            self._want_write(conn)
            return
        try:
            sent = conn.sock.send(out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            conn.session.want_close = True
            return
        if sent < len(out):
            conn.pending += memoryview(out)[sent:]
            self._want_write(conn)

    def _want_write(self, conn: Connection) -> None:
        events = EV_WRITE
        if len(conn.pending) < self.max_output and not conn.session.close_after:
            events |= EV_READ
        if events != conn.events:
            conn.events = events
            self.poller.modify(conn.fd, events)

    def _pause_reading(self, conn: Connection) -> None:
        if conn.events != EV_WRITE:
            conn.events = EV_WRITE
            self.poller.modify(conn.fd, EV_WRITE)

    def _on_writable(self, conn: Connection) -> None:
        try:
            sent = conn.sock.send(conn.pending)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        del conn.pending[:sent]
        if self.rbuf_limit:
            self._charge(conn)
        if conn.pending:
            self._want_write(conn)
            return
        if conn.session.close_after:
            self._close(conn)
            return
        conn.events = EV_READ
        self.poller.modify(conn.fd, EV_READ)
        if conn.session.framer.buffered() or conn.session.resume is not None:
            self.ready.append(conn)  # requests held back by back-pressure

    def _charge(self, conn: Connection) -> tuple[int, int]:
        """Count what ``conn`` holds now; returns (input held, growth since last count)."""
        held_in = conn.session.framer.buffered()
        held = held_in + len(conn.pending)
        before = conn.charged
        if held != before:  # in this slot's word of the node's table: the cap is node-wide
            self.node.conn_table.charge(self.index, held - before)
        conn.charged = held
        return held_in, held - before

    def _over_budget(self, conn: Connection) -> bool:
        """read_buf_mem_limit: close a connection that grows while the node is over the cap.

        memcached closes a connection when it cannot get a read buffer or a response object
        under this limit (read_buf_oom, response_obj_oom); we do the same rather than stop
        reading from it, because a connection paused halfway through a value can only release
        its buffer by completing the value: with the budget held by paused connections nothing
        would progress, whereas a close frees the memory at once and the client can retry.
        """
        held_in, growth = self._charge(conn)
        if growth <= 0:
            return False
        if self.node.conn_table.buffered <= self.rbuf_limit:
            return False
        if held_in >= len(conn.pending):
            self.stats[READ_BUF_OOM] += 1
        else:
            self.stats[RESPONSE_OBJ_OOM] += 1
        self._close(conn)
        return True

    def _kick_idle(self, now: int, idle_timeout: int) -> None:
        for conn in list(self.conns.values()):
            if now - conn.last_active > idle_timeout:
                self.stats[IDLE_KICKS] += 1
                self._close(conn)

    def _flush_and_close(self, conn: Connection) -> None:
        if conn.pending:
            try:
                conn.sock.setblocking(True)
                conn.sock.settimeout(1.0)
                conn.sock.sendall(conn.pending)
            except OSError:
                pass
        self._close(conn)

    def _close(self, conn: Connection) -> None:
        if self.conns.get(conn.fd) is not conn:
            return  # closed already (its fd may now be another connection's)
        del self.conns[conn.fd]
        if conn.charged:
            self.node.conn_table.charge(self.index, -conn.charged)
            conn.charged = 0
        try:
            self.poller.unregister(conn.fd)
        except (KeyError, ValueError, OSError):
            pass
        try:
            conn.sock.close()
        except OSError:
            pass
        self.node.conn_table.closed(conn, self.index)
