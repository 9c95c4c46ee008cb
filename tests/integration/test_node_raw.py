"""A real node over raw sockets: pipelining, split reads, framing errors, limits, signals.

Exact reply bytes are memcached 1.6.18's; where cheap, the same bytes are also sent to a real
memcached and the replies compared.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from procs import ROOT, ServerProc, start_memcached, start_node
from reference import need_memcached
from wire import rss_mb

TOO_LARGE = b"SERVER_ERROR object too large for cache\r\n"


def recv_exactly(sock: socket.socket, n: int, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(1 << 20, n - len(buf)))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def recv_until(sock: socket.socket, end: bytes, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    buf = b""
    while not buf.endswith(end):
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        buf += chunk
    return buf


def closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True if the peer closes (EOF/reset) within ``timeout``; data before that is skipped."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def ask(sock: socket.socket, request: bytes, end: bytes = b"\r\n") -> bytes:
    sock.sendall(request)
    return recv_until(sock, end)


def roundtrip(srv: ServerProc, request: bytes, end: bytes = b"END\r\n") -> bytes:
    with srv.connect() as s:
        s.sendall(request)
        return recv_until(s, end)


@pytest.fixture
def memcached_or_skip() -> Iterator[ServerProc]:
    need_memcached()
    srv = start_memcached()
    yield srv
    srv.stop(signal.SIGKILL)  # real memcached idles a second on SIGTERM; nothing to keep


# ---------------------------------------------------------------------- pipelining and framing


def test_pipelined_500_requests_in_one_send(node: ServerProc) -> None:
    req = bytearray(b"set n 0 0 1\r\n0\r\n")
    want = bytearray(b"STORED\r\n")
    for i in range(100):
        v = b"value-%d" % i
        req += b"set k%d %d 0 %d\r\n%b\r\n" % (i, i, len(v), v)
        want += b"STORED\r\n"
        req += b"get k%d\r\n" % i
        want += b"VALUE k%d %d %d\r\n%b\r\nEND\r\n" % (i, i, len(v), v)
        req += b"incr n 1\r\n"
        want += b"%d\r\n" % (i + 1)
        req += b"delete k%d\r\n" % i
        want += b"DELETED\r\n"
        req += b"get k%d\r\n" % i
        want += b"END\r\n"
    with node.connect() as s:
        s.sendall(req)  # 501 requests
        got = recv_exactly(s, len(want))
    assert got == want


def test_split_writes(node: ServerProc) -> None:
    with node.connect() as s:
        for part in (b"se", b"t split 3 0 10\r", b"\n01234", b"\r\n789", b"\r", b"\n"):
            s.sendall(part)
            time.sleep(0.05)
        assert recv_until(s, b"\r\n") == b"STORED\r\n"
        for part in (b"get sp", b"lit other", b"\r", b"\n"):
            s.sendall(part)
            time.sleep(0.05)
        assert recv_until(s, b"END\r\n") == b"VALUE split 3 10\r\n01234\r\n789\r\nEND\r\n"
        # a large value arriving in many small pieces
        value = os.urandom(300_000)
        data = b"set big 0 0 %d\r\n%b\r\n" % (len(value), value)
        for i in range(0, len(data), 65536):
            s.sendall(data[i : i + 65536])
            time.sleep(0.01)
        assert recv_until(s, b"\r\n") == b"STORED\r\n"
        s.sendall(b"get big\r\n")
        assert recv_until(s, b"END\r\n") == b"VALUE big 0 %d\r\n%b\r\nEND\r\n" % (len(value), value)


BAD_CHUNK_STREAM = b"set k 0 0 3\r\nabcde\r\nget k\r\nset j 0 0 1\r\nx\r\nget j\r\n"
BAD_CHUNK_REPLY = (
    b"CLIENT_ERROR bad data chunk\r\n"  # 5 bytes + CRLF where 3 + CRLF was announced
    b"ERROR\r\n"  # the leftover "\r\n" is a line of its own
    b"END\r\n"
    b"STORED\r\n"
    b"VALUE j 0 1\r\nx\r\nEND\r\n"
)


def test_bad_data_chunk_keeps_the_stream_in_sync(node: ServerProc) -> None:
    assert roundtrip(node, BAD_CHUNK_STREAM, b"x\r\nEND\r\n") == BAD_CHUNK_REPLY


def test_bad_data_chunk_same_bytes_as_memcached(memcached_or_skip: ServerProc) -> None:
    assert roundtrip(memcached_or_skip, BAD_CHUNK_STREAM, b"x\r\nEND\r\n") == BAD_CHUNK_REPLY


WHITESPACE_STREAM = b"set a 0 0 5\r\r\nhello\r\nset b 0\t 0 1\r\nx\r\nget a b\r\n"
WHITESPACE_REPLY = b"STORED\r\nSTORED\r\nVALUE a 0 5\r\nhello\r\nVALUE b 0 1\r\nx\r\nEND\r\n"


def test_whitespace_after_numbers_memcached(memcached_or_skip: ServerProc) -> None:
    assert roundtrip(memcached_or_skip, WHITESPACE_STREAM) == WHITESPACE_REPLY


def test_whitespace_after_numbers(node: ServerProc) -> None:
    assert roundtrip(node, WHITESPACE_STREAM) == WHITESPACE_REPLY


def test_over_long_line_closes_only_that_connection(node: ServerProc) -> None:
    other = node.connect()
    try:
        assert ask(other, b"set o 0 0 2\r\nok\r\n") == b"STORED\r\n"
        with node.connect() as bad:
            bad.sendall(b"set " + b"k" * 3000)  # no newline past 2048 bytes: not a get
            assert closed_by_peer(bad, 5.0)
        assert ask(other, b"get o\r\n", b"END\r\n") == b"VALUE o 0 2\r\nok\r\nEND\r\n"
        # a 100 KB get line is fine, though
        keys = b" ".join(b"key%06d" % i for i in range(10_000))
        other.sendall(b"get o " + keys + b"\r\n")
        assert recv_until(other, b"END\r\n") == b"VALUE o 0 2\r\nok\r\nEND\r\n"
    finally:
        other.close()


def test_value_over_item_size_max(node: ServerProc) -> None:
    with node.connect() as s:
        assert ask(s, b"set k 0 0 3\r\nold\r\n") == b"STORED\r\n"
        size = 2 * 1024 * 1024
        s.sendall(b"set k 0 0 %d\r\n" % size)
        assert recv_until(s, b"\r\n") == TOO_LARGE  # refused before the data arrives
        block = b"z" * 65536
        for _ in range(size // len(block)):
            s.sendall(block)
        s.sendall(b"\r\nget k\r\nset k 0 0 3 noreply\r\nnew\r\n")
        s.sendall(b"set q 0 0 %d noreply\r\n%b\r\nget k q\r\n" % (size, b"q" * size))
        got = recv_until(s, b"END\r\nVALUE k 0 3\r\nnew\r\nEND\r\n")
        # memcached drops the old value of a set that is too large, and stays in step
        assert got == b"END\r\nVALUE k 0 3\r\nnew\r\nEND\r\n"
        # item header + key + value over -I 1m, though the value alone fits
        assert ask(s, b"set k 0 0 %d\r\n%b\r\n" % (1024 * 1024, b"m" * 1024 * 1024)) == TOO_LARGE


BINARY_KEYS = [
    bytes(range(0x80, 0x100)),  # all 128 high bytes
    b"\x1c\x1d\x1e\x1f",
    b"k\x1c\xff\x80\x1f",
    b"\xc3\xa9t\xc3\xa9",
    b"tab\there",
]


def binary_keys_stream() -> tuple[bytes, bytes]:
    req = bytearray()
    want = bytearray()
    for i, key in enumerate(BINARY_KEYS):
        v = bytes([i]) * 5 + key
        req += b"set %b %d 0 %d\r\n%b\r\n" % (key, i, len(v), v)
        want += b"STORED\r\n"
    req += b"get " + b" ".join(BINARY_KEYS) + b"\r\n"
    for i, key in enumerate(BINARY_KEYS):
        v = bytes([i]) * 5 + key
        want += b"VALUE %b %d %d\r\n%b\r\n" % (key, i, len(v), v)
    want += b"END\r\n"
    req += b"delete %b\r\nget %b\r\n" % (BINARY_KEYS[0], BINARY_KEYS[0])
    want += b"DELETED\r\nEND\r\n"
    return bytes(req), bytes(want)


def test_binary_keys_round_trip(node: ServerProc) -> None:
    req, want = binary_keys_stream()
    with node.connect() as s:
        s.sendall(b"version\r\n")  # a first byte of 0x80 would mean the binary protocol
        recv_until(s, b"\r\n")
        s.sendall(req)
        assert recv_exactly(s, len(want)) == want


def test_binary_keys_same_bytes_as_memcached(memcached_or_skip: ServerProc) -> None:
    req, want = binary_keys_stream()
    with memcached_or_skip.connect() as s:
        s.sendall(req)
        assert recv_exactly(s, len(want)) == want


def test_quit_closes(node: ServerProc) -> None:
    with node.connect() as s:
        s.sendall(b"set a 0 0 1\r\nx\r\nquit\r\nget a\r\n")
        assert recv_until(s, b"STORED\r\n") == b"STORED\r\n"
        assert closed_by_peer(s, 5.0)


# ---------------------------------------------------------------------- limits


def connect_admitted(srv: ServerProc, timeout: float = 5.0) -> socket.socket:
    """A connection the node admitted. Retries while the node still counts a client that has
    just closed (such as start_node's readiness probe) against -c."""
    deadline = time.monotonic() + timeout
    while True:
        s = srv.connect()
        reply = ask(s, b"version\r\n")
        if reply.startswith(b"VERSION"):
            return s
        s.close()
        assert reply == b"ERROR Too many open connections\r\n", reply
        assert time.monotonic() < deadline, "never admitted"
        time.sleep(0.05)


def test_connection_limit() -> None:
    srv = start_node("-c", "2")
    try:
        a = connect_admitted(srv)
        b = connect_admitted(srv)
        for _ in range(3):
            with srv.connect() as c:
                assert recv_until(c, b"\r\n", 5) == b"ERROR Too many open connections\r\n"
                assert closed_by_peer(c, 5)
        assert ask(a, b"version\r\n").startswith(b"VERSION")  # the admitted ones still work
        assert ask(b, b"version\r\n").startswith(b"VERSION")
        b.close()
        d = connect_admitted(srv)  # once the node sees b's close, a new client fits again
        d.close()
        a.close()
    finally:
        srv.stop()


def test_idle_timeout() -> None:
    srv = start_node("-o", "idle_timeout=1")
    try:
        idle = srv.connect()
        busy = srv.connect()
        t0 = time.monotonic()
        closed = False
        while time.monotonic() - t0 < 6:
            assert ask(busy, b"version\r\n").startswith(b"VERSION")
            idle.settimeout(0.3)
            try:
                if not idle.recv(100):
                    closed = True
                    break
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed = True
                break
        elapsed = time.monotonic() - t0
        assert closed, "idle connection still open after 6 s"
        assert elapsed <= 4.0, elapsed  # memcached checks idle connections once a second
        assert ask(busy, b"version\r\n").startswith(b"VERSION")  # the active one stays
        idle.close()
        busy.close()
    finally:
        srv.stop()


def test_back_pressure_from_a_client_that_never_reads() -> None:
    srv = start_node()
    try:
        with srv.connect() as s:
            value = b"b" * 100_000
            s.sendall(b"set big 0 0 %d\r\n%b\r\n" % (len(value), value))
            assert recv_until(s, b"\r\n") == b"STORED\r\n"
        hog = srv.connect()
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        hog.sendall(b"get big\r\n" * 2000)  # 200 MB of replies, never read
        time.sleep(1.0)
        with srv.connect() as s:
            t0 = time.monotonic()
            for i in range(20):
                assert ask(s, b"set k%d 0 0 1\r\nx\r\n" % i) == b"STORED\r\n"
            s.sendall(b"get big\r\n")
            assert recv_until(s, b"END\r\n", 5) == b"VALUE big 0 100000\r\n%b\r\nEND\r\n" % value
            assert time.monotonic() - t0 < 5
        rss = rss_mb(srv.proc.pid)
        print(f"node RSS with a 200 MB reply backlog: {rss:.0f} MB")
        assert rss < 300
        hog.close()
        with srv.connect() as s:  # the hog's connection is cleaned up; the node still serves
            assert ask(s, b"get k0\r\n", b"END\r\n") == b"VALUE k0 0 1\r\nx\r\nEND\r\n"
    finally:
        srv.stop()


# ---------------------------------------------------------------------- process control


def test_shutdown_refused_without_A(node: ServerProc) -> None:
    with node.connect() as s:
        assert ask(s, b"shutdown\r\n") == b"ERROR: shutdown not enabled\r\n"
        assert ask(s, b"version\r\n").startswith(b"VERSION")
    assert node.proc.poll() is None


@pytest.mark.parametrize("command", [b"shutdown\r\n", b"shutdown graceful\r\n"])
def test_shutdown_with_A_exits(command: bytes) -> None:
    srv = start_node("-A")
    try:
        with srv.connect() as s:
            s.sendall(command)
            assert closed_by_peer(s, 5)
        assert srv.proc.wait(5) == 0
    finally:
        srv.stop()


def test_sigterm_exits_zero_promptly() -> None:
    srv = start_node()
    try:
        conn = srv.connect()
        assert ask(conn, b"set a 0 0 1\r\nx\r\n") == b"STORED\r\n"
        t0 = time.monotonic()
        os.kill(srv.proc.pid, signal.SIGTERM)
        assert srv.proc.wait(5) == 0
        assert time.monotonic() - t0 < 3
        conn.close()
    finally:
        srv.stop()


def test_port_zero_prints_the_port() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "-l", "127.0.0.1", "-p", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    srv = None
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip().isdigit(), line
        port = int(line)
        assert 0 < port < 65536
        srv = ServerProc(proc, "127.0.0.1", port)
        with srv.connect() as s:
            assert ask(s, b"version\r\n") == b"VERSION 1.6.18\r\n"
            st = ask(s, b"stats settings\r\n", b"END\r\n")
            assert b"STAT tcpport %d\r\n" % port in st
    finally:
        if srv is not None:
            srv.stop()
        else:
            proc.kill()
            proc.wait(5)


def test_unix_socket() -> None:
    path = f"/tmp/memcache-test-{uuid.uuid4().hex[:12]}.sock"
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "-s", path, "-a", "600"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                s.close()
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.05)
        with s:
            s.settimeout(5)
            s.sendall(b"set u 0 0 4\r\nunix\r\nget u\r\n")
            assert recv_until(s, b"END\r\n") == b"STORED\r\nVALUE u 0 4\r\nunix\r\nEND\r\n"
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o600)
    finally:
        ServerProc(proc, "", 0).stop()  # by PID, escalating to SIGKILL
        if os.path.exists(path):
            os.unlink(path)


def test_input_is_not_buffered_without_bound() -> None:
    srv = start_node()
    try:
        base = rss_mb(srv.proc.pid)
        s = srv.connect(timeout=30)
        chunk = b"get nokey\r\n" * 100_000
        sent = [0]
        replies = [0]
        stop = threading.Event()

        def sender() -> None:
            try:
                while not stop.is_set():
                    s.sendall(chunk)
                    sent[0] += len(chunk)
            except OSError:
                pass

        def reader() -> None:  # the client reads every reply: only input can pile up
            try:
                while data := s.recv(1 << 20):
                    replies[0] += len(data)
            except OSError:
                pass

        threads = [threading.Thread(target=sender), threading.Thread(target=reader)]
        for t in threads:
            t.start()
        peak = base
        t0 = time.monotonic()
        while time.monotonic() - t0 < 4.0:
            peak = max(peak, rss_mb(srv.proc.pid))
            time.sleep(0.05)
        stop.set()
        s.shutdown(socket.SHUT_RDWR)
        s.close()
        for t in threads:
            t.join(10)
        executed = replies[0] // len(b"END\r\n") * len(b"get nokey\r\n")
        print(
            f"\naccepted {sent[0] / 2**20:.1f} MB, executed {executed / 2**20:.1f} MB, "
            f"RSS {base:.0f} -> peak {peak:.0f} MB"
        )
        assert peak - base < 20
    finally:
        srv.stop()
