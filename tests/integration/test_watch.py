"""``watch`` log streams on a real node: memcached's line formats, and a slow watcher loses
lines (counted, reported as ``skipped=``) instead of slowing the server."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest
from procs import ServerProc, start_node
from test_ops import ask, stats

LINE = rb"ts=\d+\.\d+ gid=\d+ "


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    node = start_node("-m", "4", "-o", "watcher_logbuf_size=1")
    yield node
    node.stop()


def watcher(srv: ServerProc, *streams: bytes) -> socket.socket:
    w = srv.connect()
    assert ask(w, b" ".join((b"watch",) + streams) + b"\r\n") == b"OK\r\n"
    return w


def read_until(w: socket.socket, pattern: bytes, timeout: float = 5.0) -> bytes:
    """Read the stream until ``pattern`` (a regex) matches it."""
    buf = b""
    w.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while not re.search(pattern, buf):
        assert time.monotonic() < deadline, buf[-2000:]
        try:
            buf += w.recv(65536)
        except TimeoutError:
            pass
    return buf


def test_watch_errors(srv: ServerProc) -> None:
    with srv.connect() as s:
        assert ask(s, b"watch bogus\r\n") == b"ERROR\r\n"
        assert ask(s, b"version\r\nwatch\r\n").endswith(
            b"ERROR cannot pipeline other commands before watch\r\n"
        )


def test_watch_disabled() -> None:
    node = start_node("-W")
    try:
        with node.connect() as s:
            assert ask(s, b"watch\r\n") == b"CLIENT_ERROR watch commands not allowed\r\n"
    finally:
        node.stop()


def test_fetchers_mutations_deletions(srv: ServerProc) -> None:
    with watcher(srv, b"fetchers", b"mutations", b"deletions") as w, srv.connect() as s:
        ask(s, b"set w:1 5 100 2\r\nhi\r\n")
        ask(s, b"get w:1 w:nope\r\n", b"END\r\n")
        ask(s, b"delete w:1\r\n")
        ask(s, b"mg w:1 v\r\n")
        buf = read_until(w, rb"type=item_get key=w%3A1 status=not_found")
        fd = rb"cfd=\d+"
        assert re.search(
            LINE
            + rb"type=item_store key=w%3A1 status=stored cmd=set ttl=100 clsid=1 "
            + fd
            + rb" size=2\n",
            buf,
        ), buf
        assert re.search(LINE + rb"type=item_get key=w%3A1 status=found clsid=1 " + fd, buf)
        assert re.search(LINE + rb"type=item_get key=w%3Anope status=not_found clsid=0", buf)
        assert re.search(LINE + rb"type=deleted key=w%3A1 cmd=delete", buf)
        # replies to the client were not disturbed, and the stream lines are well formed
        assert all(re.fullmatch(LINE + rb"type=\S+ .*", ln) for ln in buf.split(b"\n") if ln)


def test_connevents(srv: ServerProc) -> None:
    with watcher(srv, b"connevents") as w:
        with srv.connect() as s:
            port = s.getsockname()[1]
            ask(s, b"version\r\n")
        buf = read_until(w, rb"type=conn_close .*rport=%d" % port)
        assert re.search(
            LINE + rb"type=conn_new rip=127\.0\.0\.1 rport=%d transport=tcp" % port, buf
        )
        assert re.search(
            rb"type=conn_close rip=127\.0\.0\.1 rport=%d transport=tcp reason=" % port, buf
        )


def test_evictions(srv: ServerProc) -> None:
    with watcher(srv, b"evictions") as w, srv.connect() as s:
        value = b"x" * 1000
        for i in range(6000):
            s.sendall(b"set ev:%d 0 0 %d noreply\r\n%s\r\n" % (i, len(value), value))
        assert ask(s, b"version\r\n").startswith(b"VERSION")
        buf = read_until(w, rb"type=eviction")
        assert re.search(
            LINE + rb"type=eviction key=ev%3A\d+ fetch=no ttl=-1 la=\d+ clsid=\d+ size=1000\n",
            buf,
        ), buf[:500]


def test_slow_watcher_loses_lines_not_speed(srv: ServerProc) -> None:
    """A watcher that never reads: its 1 KB buffer fills, lines are dropped and counted, and
    the server keeps answering at full speed."""
    w = watcher(srv, b"fetchers")
    w.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        before = int(stats(srv_sock := srv.connect())["log_watcher_skipped"])
        start = time.monotonic()
        for _ in range(40):
            srv_sock.sendall(b"get " + b" ".join(b"slow:%d" % i for i in range(100)) + b"\r\n")
            assert ask(srv_sock, b"", b"END\r\n").endswith(b"END\r\n")
        elapsed = time.monotonic() - start
        # Lines are counted as skipped when the watcher's process next polls the rings (every
        # POLL_INTERVAL; memcached's logger thread counts them asynchronously too), which may
        # be after this loop ends when the watcher is held by another worker process.
        deadline = time.monotonic() + 5
        while int(stats(srv_sock)["log_watcher_skipped"]) <= before:
            assert time.monotonic() < deadline, "no line counted as skipped"
            time.sleep(0.05)
        after = stats(srv_sock)
        assert int(after["log_watchers"]) >= 1
        assert elapsed < 10, elapsed
        srv_sock.close()
        buf = read_until(w, rb"skipped=\d+\n", timeout=10)
        assert b"type=item_get" in buf
    finally:
        w.close()


def test_a_watcher_sees_what_follows_its_ok_on_every_worker(srv: ServerProc) -> None:
    """Once the client has read OK the watcher counts node-wide: a store sent at once from
    connections held open beforehand (so they are served by different worker processes) is
    logged, however soon it runs after the watch command."""
    clients = [srv.connect() for _ in range(8)]
    try:
        sent_before = int(stats(clients[0])["log_watcher_sent"])
        for round_ in range(5):
            with watcher(srv, b"mutations") as w:
                for i, c in enumerate(clients):
                    c.sendall(b"set ok:%d:%d 0 0 1 noreply\r\nx\r\n" % (round_, i))
                keys = [rb"key=ok%%3A%d%%3A%d " % (round_, i) for i in range(len(clients))]
                buf = b""
                w.settimeout(0.2)
                deadline = time.monotonic() + 5
                while not all(k in buf for k in keys):
                    assert time.monotonic() < deadline, buf
                    try:
                        buf += w.recv(65536)
                    except TimeoutError:
                        pass
                assert buf.count(b"type=item_store") == len(keys), buf
        # the OK each watch command was answered with is a reply, not a log line sent
        def sent() -> int:
            return int(stats(clients[0])["log_watcher_sent"]) - sent_before

        deadline = time.monotonic() + 5
        while sent() < 5 * len(clients):  # counted just after the send the client read
            assert time.monotonic() < deadline, sent()
            time.sleep(0.05)
        assert sent() == 5 * len(clients)
    finally:
        for c in clients:
            c.close()
