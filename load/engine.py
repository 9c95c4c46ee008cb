"""The per-process request loop: many non-blocking connections on one selector.

Why a selector: on CPython the GIL makes threads contend, while one epoll loop per process
with many connections keeps a core busy with useful work; scale further with ``--procs``.

Each connection runs closed-loop batches: build ``pipeline`` requests, send them in one write,
and read the responses in order.  A response's latency is measured from the batch's send to the
``recv`` that completed it.  Every get result is verified (``load.values``); anything that is
not a clean hit, miss, or ``STORED`` is counted as an error by kind, never as a hit.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from memcache_server.load.keys import KeyChooser, key_name
from memcache_server.load.protocol import (
    ErrorReply,
    ProtocolError,
    encode_set,
    parse_get,
    parse_set,
)
from memcache_server.load.stats import Interval
from memcache_server.load.values import make_value, verify_value
from memcache_server.load.workload import Workload

RECV_SIZE = 262144
RECONNECT_DELAY = 0.1
HOUSEKEEPING_EVERY = 0.05

Report = Callable[[str, dict[str, Any]], None]


@dataclass
class EngineConfig:
    """What one engine needs besides its connections' key choosers."""

    workload: Workload
    prefix: bytes
    start_perf: float
    deadline_perf: float
    request_quota: int | None
    timeout: float


class Conn:
    """One TCP connection pinned to one server, with its in-flight batch."""

    __slots__ = (
        "addr",
        "chooser",
        "sock",
        "inbuf",
        "outbuf",
        "expect",
        "idx",
        "t0",
        "version",
        "retry_at",
    )

    def __init__(self, addr: tuple[str, int], chooser: KeyChooser, version: int) -> None:
        self.addr = addr
        self.chooser = chooser
        self.sock: socket.socket | None = None
        self.inbuf = b""
        self.outbuf = b""
        self.expect: list[tuple[bytes, ...] | None] = []
        self.idx = 0
        self.t0 = 0
        self.version = version
        self.retry_at = 0.0


class Unreachable(OSError):
    """A target refused or timed out a connect; the message names the address."""


def open_socket(addr: tuple[str, int], timeout: float = 2.0) -> socket.socket:
    try:
        sock = socket.create_connection(addr, timeout=timeout)
    except OSError as exc:
        host = f"[{addr[0]}]" if ":" in addr[0] else addr[0]
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise Unreachable(exc.errno, f"cannot connect to {host}:{addr[1]}: {reason}") from exc
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


class Engine:
    """Drives a set of connections until the deadline or the request quota."""

    def __init__(self, cfg: EngineConfig, conns: list[Conn], rng: random.Random, report: Report):
        self.cfg = cfg
        self.wl = cfg.workload
        self.conns = conns
        self.rng = rng
        self.report = report
        self.sel = selectors.DefaultSelector()
        self.cur = Interval()
        self.slot = 0
        self.remaining = cfg.request_quota
        self.running = True

    # -- connection management -------------------------------------------------------------
    def connect_all(self) -> None:
        """Initial connects are blocking and fatal on failure: a typo should not look slow."""
        for c in self.conns:
            c.sock = open_socket(c.addr)
            self.sel.register(c.sock, selectors.EVENT_READ, c)

    def _fail(self, c: Conn, kind: str) -> None:
        self.cur.errors[kind] += 1
        if c.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.sel.unregister(c.sock)
            c.sock.close()
        c.sock = None
        c.inbuf = c.outbuf = b""
        c.expect = []
        c.idx = 0
        c.retry_at = time.perf_counter() + RECONNECT_DELAY

    def _reconnect(self, c: Conn) -> None:
        try:
            c.sock = open_socket(c.addr, timeout=1.0)
        except OSError:
            c.retry_at = time.perf_counter() + RECONNECT_DELAY
            self.cur.errors["connect"] += 1
            return
        self.sel.register(c.sock, selectors.EVENT_READ, c)
        self._issue(c)

    # -- sending ---------------------------------------------------------------------------
    def _issue(self, c: Conn) -> None:
        """Build and send the next batch, unless the run is over."""
        if not self.running or c.sock is None:
            return
        n = self.wl.pipeline
        if self.remaining is not None:
            n = min(n, self.remaining)
            if n <= 0:
                return
            self.remaining -= n
        wl = self.wl
        rng = self.rng
        prefix = self.cfg.prefix
        parts: list[bytes] = []
        expect: list[tuple[bytes, ...] | None] = []
        for _ in range(n):
            if rng.random() < wl.get_ratio:
                if wl.multiget == 1:
                    key = key_name(prefix, c.chooser.pick())
                    parts.append(b"get " + key + b"\r\n")
                    expect.append((key,))
                else:
                    keys = tuple(key_name(prefix, k) for k in c.chooser.pick_distinct(wl.multiget))
                    parts.append(b"get " + b" ".join(keys) + b"\r\n")
                    expect.append(keys)
            else:
                key = key_name(prefix, c.chooser.pick())
                c.version = (c.version + 1) & 0xFFFFFFFF
                value = make_value(key, c.version, wl.value_size.pick(rng))
                parts.append(encode_set(key, value, wl.ttl))
                expect.append(None)
        data = b"".join(parts)
        c.expect = expect
        c.idx = 0
        c.t0 = time.perf_counter_ns()
        self._write(c, data)

    def _write(self, c: Conn, data: bytes) -> None:
        assert c.sock is not None
        try:
            sent = c.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._fail(c, "connection")
            return
        c.outbuf = data[sent:]
        if c.outbuf:
            self.sel.modify(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)

    def _on_writable(self, c: Conn) -> None:
        assert c.sock is not None
        data, c.outbuf = c.outbuf, b""
        self.sel.modify(c.sock, selectors.EVENT_READ, c)
        self._write(c, data)

    # -- receiving -------------------------------------------------------------------------
    def _on_readable(self, c: Conn) -> None:
        assert c.sock is not None
        try:
            data = c.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError:
            self._fail(c, "connection")
            return
        if not data:
            self._fail(c, "connection")
            return
        now = time.perf_counter_ns()
        latency = now - c.t0
        buf = c.inbuf + data if c.inbuf else data
        st = self.cur
        expect = c.expect
        n = len(expect)
        i = c.idx
        pos = 0
        if i >= n:
            self._fail(c, "unexpected")  # bytes nobody asked for
            return
        while i < n:
            req = expect[i]
            try:
                if req is None:
                    r = parse_set(buf, pos)
                    if r is None:
                        break
                    pos = r
                    st.sets += 1
                else:
                    g = parse_get(buf, pos)
                    if g is None:
                        break
                    pos = g[0]
                    self._check_get(req, g[1], st)
            except ErrorReply as e:
                st.errors[e.kind] += 1
                pos = e.next_pos
                i += 1
                continue
            except ProtocolError:
                self._fail(c, "malformed")
                return
            st.ops += 1
            st.hist.record(latency)
            i += 1
        if i < n:
            c.idx = i
            c.inbuf = buf[pos:]
            return
        c.inbuf = b""
        c.expect = []
        if pos != len(buf):
            self._fail(c, "unexpected")
            return
        self._issue(c)

    @staticmethod
    def _check_get(
        req: tuple[bytes, ...], values: list[tuple[bytes, bytes, bytes]], st: Interval
    ) -> None:
        st.gets += 1
        st.get_keys += len(req)
        if len(req) == 1 and len(values) <= 1:
            if not values:
                st.misses += 1
                return
            key, flags, data = values[0]
            if key != req[0]:
                st.errors["unexpected"] += 1
                return
            bad = "foreign" if flags != b"0" else verify_value(key, data)
            if bad is None:
                st.hits += 1
            else:
                st.errors["value_" + bad] += 1
            return
        wanted = set(req)
        for key, flags, data in values:
            if key not in wanted:
                st.errors["unexpected"] += 1  # unrequested or duplicated key
                continue
            wanted.discard(key)
            bad = "foreign" if flags != b"0" else verify_value(key, data)
            if bad is None:
                st.hits += 1
            else:
                st.errors["value_" + bad] += 1
        st.misses += len(wanted)

    # -- main loop -------------------------------------------------------------------------
    def _tick(self, now: float) -> None:
        while now >= self.cfg.start_perf + self.slot + 1:
            self.report("tick", {"slot": self.slot, "interval": self.cur.to_dict()})
            self.cur = Interval()
            self.slot += 1

    def _housekeeping(self, now: float) -> None:
        timeout_ns = int(self.cfg.timeout * 1e9)
        now_ns = time.perf_counter_ns()
        for c in self.conns:
            if c.sock is None:
                if self.running and now >= c.retry_at:
                    self._reconnect(c)
            elif c.expect and now_ns - c.t0 > timeout_ns:
                self._fail(c, "timeout")

    def run(self) -> float:
        """Run to the end; returns the measured elapsed seconds since the common start."""
        cfg = self.cfg
        for c in self.conns:
            self._issue(c)
        next_house = time.perf_counter() + HOUSEKEEPING_EVERY
        hard_stop = cfg.deadline_perf + cfg.timeout + 1.0
        select = self.sel.select
        while True:
            now = time.perf_counter()
            if self.running and (now >= cfg.deadline_perf or self.remaining == 0):
                self.running = False
            if not self.running and (
                now >= hard_stop or not any(c.expect for c in self.conns if c.sock)
            ):
                break
            for key, mask in select(HOUSEKEEPING_EVERY):
                c = key.data
                if mask & selectors.EVENT_WRITE and c.outbuf:
                    self._on_writable(c)
                if mask & selectors.EVENT_READ and c.sock is not None:
                    self._on_readable(c)
            now = time.perf_counter()
            if now >= next_house:
                self._housekeeping(now)
                next_house = now + HOUSEKEEPING_EVERY
                self._tick(now)
        end = time.perf_counter()
        for c in self.conns:
            if c.sock is not None:
                self.sel.unregister(c.sock)
                c.sock.close()
        self.sel.close()
        return max(end - cfg.start_perf, 1e-9)

    def final_interval(self) -> dict[str, Any]:
        return {"slot": self.slot, "interval": self.cur.to_dict()}
