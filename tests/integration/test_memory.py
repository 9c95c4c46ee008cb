"""Memory bound: churn far more distinct data than -m through a node; RSS stays near -m.

A -m 64 node gets pipelined noreply sets of distinct keys with 100-byte values, 10k per batch,
at most two batches in flight (a ``version`` after each batch paces the client the way a client
reading its replies is paced). The target is ~300 MB of values; the churn stops earlier at a
time budget (a pure-Python node takes 35-70k sets/s here), after at least 80 MB. Meanwhile a
second client checks the node keeps answering, and /proc/<pid>/status VmRSS is sampled; the
RSS and curr_items are printed (pytest -s).
"""

from __future__ import annotations

import socket
import threading
import time

from procs import ServerProc, start_node
from wire import rss_mb

MB = 1024 * 1024
LIMIT_MB = 64
RSS_BOUND_MB = LIMIT_MB * 1.6 + 40
TARGET_BYTES = 300 * MB  # of values
# whatever the budget, churn at least 800k items: over five times what fits in -m 64
MIN_BYTES = 80 * MB
TIME_BUDGET = 38.0  # seconds of churning once MIN_BYTES went through
VALUE = b"v" * 100
BATCH = 10_000


def recv_until(sock: socket.socket, end: bytes, timeout: float) -> bytes:
    sock.settimeout(timeout)
    buf = b""
    while not buf.endswith(end):
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        buf += chunk
    return buf


def stats(sock: socket.socket) -> dict[bytes, bytes]:
    sock.sendall(b"stats\r\n")
    buf = recv_until(sock, b"END\r\n", 30)
    return dict(line.split(b" ")[1:3] for line in buf.split(b"\r\n") if line.startswith(b"STAT"))


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except (OSError, AssertionError):
                return
            self.stop.wait(0.1)


def test_churn_stays_under_the_memory_bound() -> None:
    srv: ServerProc = start_node("-m", str(LIMIT_MB))
    sampler = RssSampler(srv.proc.pid)
    sampler.start()
    try:
        churn = srv.connect(timeout=60)
        probe = srv.connect(timeout=10)
        t0 = time.monotonic()
        sent = 0
        i = 0
        worst_probe = 0.0
        next_probe = t0
        outstanding = False
        while sent < TARGET_BYTES:
            if sent >= MIN_BYTES and time.monotonic() - t0 > TIME_BUDGET:
                break
            batch = b"".join(
                b"set churn:%010d 0 0 100 noreply\r\n%b\r\n" % (k, VALUE)
                for k in range(i, i + BATCH)
            )
            if outstanding:
                # keep at most two batches in flight, as a client that reads its replies does:
                # the node's own input buffering is test_node_raw's concern, not this test's
                recv_until(churn, b"VERSION 1.6.18\r\n", 60)
            churn.sendall(batch + b"version\r\n")
            outstanding = True
            i += BATCH
            sent += BATCH * len(VALUE)
            if time.monotonic() >= next_probe:
                # the node keeps answering other clients while it churns
                p0 = time.monotonic()
                probe.sendall(b"set probe 0 0 2\r\nok\r\nget probe\r\n")
                reply = recv_until(probe, b"END\r\n", 10)
                assert reply == b"STORED\r\nVALUE probe 0 2\r\nok\r\nEND\r\n"
                worst_probe = max(worst_probe, time.monotonic() - p0)
                next_probe = time.monotonic() + 1.0
        # a request on the churn connection answers once every set before it is done
        churn.sendall(b"get churn:%010d\r\n" % (i - 1))
        last = recv_until(churn, b"END\r\n", 60)
        elapsed = time.monotonic() - t0
        want = b"VALUE churn:%010d 0 100\r\n%b\r\nEND\r\n" % (i - 1, VALUE)
        assert last == b"VERSION 1.6.18\r\n" + want
        st = stats(probe)
        rss_now = rss_mb(srv.proc.pid)
        sampler.stop.set()
        sampler.join(2)
        peak = max(sampler.peak, rss_now)
        print(
            f"\nchurned {i} sets ({sent / MB:.0f} MB of values) in {elapsed:.1f} s "
            f"({i / elapsed:.0f}/s); curr_items {int(st[b'curr_items'])}, "
            f"evictions {int(st[b'evictions'])}; RSS now {rss_now:.0f} MB, peak {peak:.0f} MB "
            f"(bound {RSS_BOUND_MB:.0f} MB); slowest probe {worst_probe * 1000:.0f} ms"
        )
        assert int(st[b"evictions"]) > 0
        assert int(st[b"curr_items"]) + int(st[b"evictions"]) >= i - 1
        assert int(st[b"limit_maxbytes"]) == LIMIT_MB * MB
        assert peak < RSS_BOUND_MB
        churn.close()
        probe.close()
    finally:
        sampler.stop.set()
        srv.stop()
