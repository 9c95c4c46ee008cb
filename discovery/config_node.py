"""The config node: the configuration endpoint clients poll, and the keeper of membership.

One thread runs one selector loop: it accepts connections, frames requests with the cache node's
own framer, answers them (one send per read batch, like the cache node), and between events
expires silent members and publishes new versions. The traffic is small (a heartbeat per node
per second, a poll per client per minute), so a single thread owns the ``Registry`` and needs no
lock; the state file's fsync runs on this thread too, only when the document changes.

It answers ``config get cluster`` (and the legacy ``get AmazonElastiCache:cluster``),
``version``, ``stats``, ``verbosity``, ``quit`` and the private ``cluster_*`` commands
(``discovery/wire.py``). It stores no items: data commands get a ``SERVER_ERROR``.

Membership lives either in this process (``Registry``, with a state file: one config node) or in
etcd (``EtcdRegistry``: any number of config nodes serve one cluster). On etcd, the membership
commands run on the registry's worker thread; the loop parks the connection until the reply
comes back through a self-pipe, so a slow or unreachable etcd never stalls ``config get``.
"""

from __future__ import annotations

import hmac
import os
import selectors
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from memcache_server.config import EMULATED_VERSION
from memcache_server.discovery.document import LEGACY_KEY, DocumentError, NodeAddress, legacy_value
from memcache_server.discovery.etcd_registry import EtcdRegistry, EtcdSettings
from memcache_server.discovery.registry import (
    Registry,
    RegistryCounters,
    RegistryFull,
    VersionExhausted,
)
from memcache_server.discovery.wire import HEARTBEAT, JOIN, LEAVE, NODES, REMOVE
from memcache_server.protocol import constants as C
from memcache_server.protocol.framer import CLOSE, CMD, REPLY, STORE, Framer
from memcache_server.protocol.numbers import strtoul32
from memcache_server.server.listener import Listener, open_listeners

__all__ = ["ConfigNode", "ConfigNodeSettings"]

NO_ITEMS = b"SERVER_ERROR this is a cluster configuration endpoint: it stores no items\r\n"
CONFIG_READ_ONLY = (
    b"CLIENT_ERROR the configuration endpoint's document is managed by membership\r\n"
)
TOKEN_REQUIRED = b"CLIENT_ERROR cluster token required\r\n"
BAD_TOKEN = b"CLIENT_ERROR bad cluster token\r\n"
BAD_ADDRESS = b"CLIENT_ERROR bad node address\r\n"
CLUSTER_FULL = b"SERVER_ERROR cluster is full\r\n"
NOT_PUBLISHED = b"SERVER_ERROR cannot persist the cluster state\r\n"
DATA_COMMANDS = frozenset(
    b"gets gat gats touch delete incr decr flush_all mg ms md ma mn me "
    b"lru_crawler slabs watch cache_memlimit".split()
)
MAX_VALUE = 1024 * 1024  # data blocks of refused storage commands are swallowed, not buffered
READ_SIZE = 64 * 1024
MAX_OUTPUT = 1024 * 1024  # stop reading a client that does not read its replies


@dataclass(frozen=True, slots=True)
class ConfigNodeSettings:
    listen: tuple[str, ...] = ("127.0.0.1",)
    port: int = 11211
    state_file: str = "cluster.state"
    heartbeat_timeout: float = 10.0
    token: str | None = None
    max_connections: int = 1024
    backlog: int = 1024
    verbosity: int = 0
    etcd: EtcdSettings | None = None  # membership in etcd instead of the state file


MEMBERSHIP = frozenset((JOIN, HEARTBEAT, LEAVE, REMOVE))
WAKE = object()  # selector data of the self-pipe the etcd worker wakes the loop through


class _Conn:
    __slots__ = ("sock", "framer", "pending", "close_after", "reading", "waiting")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.framer = Framer(MAX_VALUE)
        self.pending = bytearray()
        self.close_after = False
        self.reading = True
        self.waiting = False  # a request is with the etcd worker: answer nothing after it yet


class ConfigNode:
    """The configuration endpoint. ``serve()`` runs on one thread until ``stop()``."""

    def __init__(
        self, settings: ConfigNodeSettings, now: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self._local: Registry | None = None
        self._etcd: EtcdRegistry | None = None
        self.registry: Registry | EtcdRegistry
        if settings.etcd is not None:
            self.registry = self._etcd = EtcdRegistry(settings.etcd, settings.verbosity)
        else:
            self.registry = self._local = Registry(
                Path(settings.state_file), settings.heartbeat_timeout, now
            )
        # replies the etcd worker finished, and the socket pair that wakes the loop for them
        self._done: deque[tuple[_Conn, bytes]] = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_lock = threading.Lock()
        self.started = time.time()
        self.port = settings.port
        self.listeners: list[Listener] = []
        self.curr_connections = 0
        self.total_connections = 0
        self._stopping = False  # set from a signal handler: a plain flag, no lock
        self._tick = min(0.25, settings.heartbeat_timeout / 8)
        self._token = settings.token.encode() if settings.token else None
        self._publish_failing = False

    # ------------------------------------------------------------------ lifecycle

    def bind(self) -> None:
        self.listeners = open_listeners(
            self.settings.listen, self.settings.port, None, 0o700, self.settings.backlog
        )
        self.port = int(self.listeners[0].sock.getsockname()[1])

    def stop(self) -> None:
        """Safe from a signal handler: only sets a flag the loop checks every tick (an Event's
        lock could deadlock if a second signal arrived while the first handler held it)."""
        self._stopping = True

    def log(self, text: str) -> None:
        if self.settings.verbosity:
            print(f"config-node: {text}", file=sys.stderr, flush=True)

    def serve(self) -> None:
        sel = selectors.DefaultSelector()
        for lst in self.listeners:
            lst.sock.setblocking(False)
            sel.register(lst.sock, selectors.EVENT_READ, None)
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        sel.register(self._wake_r, selectors.EVENT_READ, WAKE)
        conns: dict[int, _Conn] = {}
        next_tick = 0.0
        if self._etcd is not None:
            self._etcd.start()
        try:
            while not self._stopping:
                for key, mask in sel.select(self._tick):
                    if key.data is None:
                        self._accept(sel, key.fileobj, conns)  # type: ignore[arg-type]
                        continue
                    if key.data is WAKE:
                        self._answer_deferred(sel, conns)
                        continue
                    conn: _Conn = key.data
                    if mask & selectors.EVENT_WRITE:
                        self._flush(sel, conn, conns)
                    if mask & selectors.EVENT_READ and conn.sock.fileno() in conns:
                        self._read(sel, conn, conns)
                now = time.monotonic()
                if now >= next_tick:
                    next_tick = now + self._tick
                    self._maintain()
        finally:
            for conn in list(conns.values()):
                self._close(sel, conn, conns)
            for lst in self.listeners:
                lst.sock.close()
            sel.close()
            if self._etcd is not None:
                self._etcd.stop()
            self._wake_r.close()
            self._wake_w.close()

    def _maintain(self) -> None:
        removed = self.registry.expire()
        if removed:
            self.log(f"{removed} node(s) missed heartbeats for {self.settings.heartbeat_timeout}s")
        self._publish()

    def _publish(self) -> bool:
        """Publish pending changes; False if they could not be made durable (retried later)."""
        try:
            if self.registry.publish():
                doc = self.registry.published
                n = len(doc.nodes) if doc else 0
                self.log(f"published version {self.registry.version} with {n} node(s)")
        except (OSError, VersionExhausted) as exc:
            self.registry.counters.publish_failures += 1
            if not self._publish_failing:  # once, not every tick while the disk stays full
                print(f"config-node: cannot publish: {exc}", file=sys.stderr, flush=True)
            self._publish_failing = True
            return False
        if self._publish_failing:
            print("config-node: publishing again", file=sys.stderr, flush=True)
            self._publish_failing = False
        return True

    # ------------------------------------------------------------------ connections

    def _accept(
        self, sel: selectors.BaseSelector, lsock: socket.socket, conns: dict[int, _Conn]
    ) -> None:
        try:
            sock, _ = lsock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        self.total_connections += 1
        if len(conns) >= self.settings.max_connections:
            try:
                sock.send(C.TOO_MANY_CONNECTIONS)
            except OSError:
                pass
            sock.close()
            return
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(sock)
        conns[sock.fileno()] = conn
        self.curr_connections = len(conns)
        sel.register(sock, selectors.EVENT_READ, conn)

    def _close(self, sel: selectors.BaseSelector, conn: _Conn, conns: dict[int, _Conn]) -> None:
        fd = conn.sock.fileno()
        if conns.pop(fd, None) is None:
            return
        try:
            sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        self.curr_connections = len(conns)

    def _read(self, sel: selectors.BaseSelector, conn: _Conn, conns: dict[int, _Conn]) -> None:
        try:
            data = conn.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(sel, conn, conns)
            return
        conn.framer.feed(data)
        self._run_requests(sel, conn, conns)

    def _run_requests(
        self, sel: selectors.BaseSelector, conn: _Conn, conns: dict[int, _Conn]
    ) -> None:
        out = bytearray()
        close_now = self._process(conn, out)
        if close_now:
            self._close(sel, conn, conns)
            return
        if out or conn.waiting:
            conn.pending += out
            self._flush(sel, conn, conns)

    # ------------------------------------------------------------------ deferred (etcd) replies

    def _defer(self, conn: _Conn, tokens: list[bytes], out: bytearray) -> None:
        """Hand a membership request to the etcd worker; its reply comes back through
        ``_answer_deferred``, in order (the connection reads nothing more until then)."""
        etcd = self._etcd
        assert etcd is not None
        cmd = tokens[0]
        if cmd in (JOIN, HEARTBEAT):
            parsed = self._parse_register(tokens)
            if isinstance(parsed, bytes):
                out += parsed
                return
            request = etcd.register(parsed, fresh=cmd == JOIN)
        else:
            dropped = self._parse_drop(tokens)
            if isinstance(dropped, bytes):
                out += dropped
                return
            request = etcd.drop(dropped, "left" if cmd == LEAVE else "removed")
        conn.waiting = True
        etcd.submit(request, lambda reply: self._deferred_done(conn, reply))

    def _deferred_done(self, conn: _Conn, reply: bytes) -> None:
        """On the worker thread: queue the reply and wake the loop."""
        self._done.append((conn, reply))
        with self._wake_lock:
            try:
                self._wake_w.send(b"\0")
            except (BlockingIOError, OSError):
                pass  # the pipe is full (the loop will wake anyway) or closed (stopping)

    def _answer_deferred(self, sel: selectors.BaseSelector, conns: dict[int, _Conn]) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        while self._done:
            conn, reply = self._done.popleft()
            if conns.get(conn.sock.fileno()) is not conn:
                continue  # closed meanwhile
            conn.waiting = False
            conn.pending += reply
            self._run_requests(sel, conn, conns)
            if conns.get(conn.sock.fileno()) is conn and conn.pending and not conn.waiting:
                self._flush(sel, conn, conns)

    def _flush(self, sel: selectors.BaseSelector, conn: _Conn, conns: dict[int, _Conn]) -> None:
        """Send what is pending in one call; keep the rest for when the socket is writable."""
        if conn.pending:
            try:
                sent = conn.sock.send(conn.pending)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(sel, conn, conns)
                return
            del conn.pending[:sent]
        if not conn.pending and conn.close_after:
            self._close(sel, conn, conns)
            return
        events = selectors.EVENT_WRITE if conn.pending else 0
        conn.reading = len(conn.pending) < MAX_OUTPUT and not conn.close_after and not conn.waiting
        if conn.reading:
            events |= selectors.EVENT_READ
        sel.modify(conn.sock, events, conn)

    def _process(self, conn: _Conn, out: bytearray) -> bool:
        """Answer every complete request; True when the connection must close at once."""
        while not conn.close_after and not conn.waiting:
            req = conn.framer.next_request()
            if req is None:
                return False
            kind = req[0]
            if kind == CMD:
                tokens: list[bytes] = req[1]
                if not tokens:
                    out += C.ERROR
                    continue
                if tokens[-1].startswith(b"HTTP/"):
                    return True
                if self._etcd is not None and tokens[0] in MEMBERSHIP:
                    self._defer(conn, tokens, out)
                    continue
                out += self.command(tokens, conn)
            elif kind == STORE:
                if not req[7]:  # noreply
                    out += NO_ITEMS
            elif kind == REPLY:
                out += req[1]
            elif kind == CLOSE:
                return True
        return False

    # ------------------------------------------------------------------ commands

    def command(self, tokens: list[bytes], conn: _Conn | None = None) -> bytes:
        """One request line (already split) -> its whole reply."""
        cmd = tokens[0]
        reg = self.registry
        if cmd == b"config":
            if len(tokens) == 3 and tokens[1] == b"get":
                reg.counters.config_requests += 1
                return reg.reply() if tokens[2] == b"cluster" else C.END
            if len(tokens) >= 2 and tokens[1] in (b"set", b"delete"):
                return CONFIG_READ_ONLY
            return C.ERROR
        if cmd == b"get" or cmd == b"bget":
            return self._legacy_get(tokens)
        if cmd in (JOIN, HEARTBEAT):
            return self._register(tokens, fresh=cmd == JOIN)
        if cmd in (LEAVE, REMOVE):
            return self._drop(tokens, leave=cmd == LEAVE)
        if cmd == NODES:
            return self._listing()
        if cmd == b"version":
            return b"VERSION %b\r\n" % EMULATED_VERSION.encode()
        if cmd == b"stats":
            return self._stats(tokens)
        if cmd == b"verbosity":
            return C.OK if len(tokens) in (2, 3) and strtoul32(tokens[1]) is not None else C.ERROR
        if cmd == b"quit":
            if conn is not None:
                conn.close_after = True
            return b""
        if cmd in DATA_COMMANDS:
            return NO_ITEMS
        return C.ERROR

    def _legacy_get(self, tokens: list[bytes]) -> bytes:
        if len(tokens) < 2:
            return C.ERROR
        if any(k != LEGACY_KEY for k in tokens[1:]):
            return NO_ITEMS
        self.registry.counters.config_requests += 1
        doc = self.registry.document()
        if doc is None:
            return C.END
        raw = doc.encode()
        return b"".join(legacy_value(k, raw) for k in tokens[1:]) + C.END

    def _check_token(self, given: bytes | None) -> bytes | None:
        """None when the request may proceed, else the error reply."""
        if self._token is None:
            return None
        if given is None:
            return TOKEN_REQUIRED
        if not hmac.compare_digest(given, self._token):
            return BAD_TOKEN
        return None

    def _parse_register(self, tokens: list[bytes]) -> NodeAddress | bytes:
        """The address of a join/heartbeat, or the error reply (counted as a failure)."""
        parsed = self._check_register(tokens)
        if isinstance(parsed, bytes):
            self.registry.counters.heartbeat_failures += 1
        return parsed

    def _check_register(self, tokens: list[bytes]) -> NodeAddress | bytes:
        if len(tokens) not in (5, 6):
            return C.BAD_FORMAT
        refusal = self._check_token(tokens[5] if len(tokens) == 6 else None)
        if refusal is not None:
            return refusal
        if not tokens[3].isdigit() or strtoul32(tokens[4]) is None:
            return C.BAD_FORMAT
        try:
            ip = "" if tokens[2] == b"-" else tokens[2].decode("ascii")
            return NodeAddress(tokens[1].decode("ascii"), ip, int(tokens[3])).checked_ip()
        except (DocumentError, UnicodeDecodeError):
            return BAD_ADDRESS

    def _register(self, tokens: list[bytes], fresh: bool) -> bytes:
        reg = self._local
        assert reg is not None
        address = self._parse_register(tokens)
        if isinstance(address, bytes):
            return address
        held = strtoul32(tokens[4])
        assert held is not None
        known = address.key in reg.members
        try:
            reg.register(address, held, fresh)
        except RegistryFull:
            reg.counters.heartbeat_failures += 1
            return CLUSTER_FULL
        if not known and address.key in reg.members:
            self.log(f"{address.hostname}:{address.port} joined")
        if not self._publish():
            return NOT_PUBLISHED
        return reg.reply()

    def _parse_drop(self, tokens: list[bytes]) -> tuple[str, int] | bytes:
        """(hostname, port) of a leave/remove, or the error reply."""
        if len(tokens) not in (3, 4) or not tokens[2].isdigit():
            return C.BAD_FORMAT
        refusal = self._check_token(tokens[3] if len(tokens) == 4 else None)
        if refusal is not None:
            return refusal
        try:
            return NodeAddress(tokens[1].decode("ascii"), "", int(tokens[2])).key
        except (DocumentError, UnicodeDecodeError):
            return BAD_ADDRESS

    def _drop(self, tokens: list[bytes], leave: bool) -> bytes:
        reg = self._local
        assert reg is not None
        key = self._parse_drop(tokens)
        if isinstance(key, bytes):
            return key
        host, port = key
        done = reg.leave(host, port) if leave else reg.remove(host, port)
        if done:
            self.log(f"{host}:{port} {'left' if leave else 'removed by an operator'}")
        if not self._publish():
            return NOT_PUBLISHED
        if leave:
            return reg.reply()
        return C.DELETED if done else C.NOT_FOUND

    def _listing(self) -> bytes:
        reg = self.registry
        doc = reg.document()
        lines = [b"CLUSTER %d %d\r\n" % (reg.version, len(doc.nodes) if doc else 0)]
        for row in reg.listing() + reg.removed():
            a = row.address
            lines.append(
                b"NODE %b %b %d %b %.1f\r\n"
                % (a.hostname.encode(), (a.ip or "-").encode(), a.port, row.state.encode(), row.age)
            )
        lines.append(C.END)
        return b"".join(lines)

    def _stats(self, tokens: list[bytes]) -> bytes:
        if len(tokens) > 1:
            if tokens[1] == b"reset" and len(tokens) == 2:
                self.registry.counters = RegistryCounters()
                self.total_connections = self.curr_connections
                return C.RESET
            return C.ERROR
        lines = [b"STAT %b %b\r\n" % (k.encode(), str(v).encode()) for k, v in self.stats()]
        lines.append(C.END)
        return b"".join(lines)

    def stats(self) -> list[tuple[str, object]]:
        """`stats` of the config node: memcached's identity fields, then the cluster counters."""
        reg = self.registry
        c = reg.counters
        doc = reg.document()
        now = int(time.time())
        return [
            ("pid", os.getpid()),
            ("uptime", now - int(self.started)),
            ("time", now),
            ("version", EMULATED_VERSION),
            ("curr_connections", self.curr_connections),
            ("total_connections", self.total_connections),
            ("cluster_version", reg.version),
            ("cluster_nodes", len(doc.nodes) if doc else 0),
            ("cluster_joins", c.joins),
            ("cluster_leaves", c.leaves),
            ("cluster_removals", c.removals),
            ("cluster_heartbeats", c.heartbeats),
            ("cluster_heartbeat_failures", c.heartbeat_failures),
            ("cluster_config_requests", c.config_requests),
            ("cluster_publish_failures", c.publish_failures),
        ]
