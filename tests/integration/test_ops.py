"""Operational commands on a real node: the LRU crawler reclaims expired items on request (and
says so in its stats), and ``debugtime`` moves the clock so expiry is tested without sleeping."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator

import pytest
from procs import ServerProc, start_node


def ask(sock: socket.socket, request: bytes, end: bytes = b"\r\n") -> bytes:
    """Send a request and read until the reply ends with ``end``."""
    sock.sendall(request)
    buf = b""
    deadline = time.monotonic() + 5
    while not buf.endswith(end) and time.monotonic() < deadline:
        buf += sock.recv(65536)
    return buf


def stats(sock: socket.socket, sub: bytes = b"") -> dict[str, str]:
    reply = ask(sock, b"stats" + (b" " + sub if sub else b"") + b"\r\n", b"END\r\n")
    return {
        m.group(1).decode(): m.group(2).decode()
        for m in re.finditer(rb"STAT (\S+) (\S+)\r\n", reply)
    }


def ttl(sock: socket.socket, key: bytes) -> int:
    reply = ask(sock, b"mg %b t\r\n" % key)
    assert reply.startswith(b"HD t"), reply
    return int(reply[4:-2])


@pytest.fixture(scope="module")
def srv() -> Iterator[ServerProc]:
    node = start_node("--debug-time", "-o", "lru_crawler_sleep=0")
    yield node
    node.stop()


def test_debugtime_moves_expiry(srv: ServerProc) -> None:
    with srv.connect() as s:
        assert ask(s, b"set dt:a 0 100 1\r\nx\r\n") == b"STORED\r\n"
        assert ttl(s, b"dt:a") in (99, 100)  # the clock may tick in between
        assert ask(s, b"debugtime 40\r\n") == b"OK\r\n"
        assert ttl(s, b"dt:a") in (59, 60)
        assert ask(s, b"debugtime 61\r\n") == b"OK\r\n"
        assert ask(s, b"get dt:a\r\n") == b"END\r\n"
        assert ask(s, b"debugtime soon\r\n") == b"ERROR\r\n"


def test_debugtime_needs_the_debug_option(node: ServerProc) -> None:
    with node.connect() as s:
        assert ask(s, b"debugtime 10\r\n") == b"ERROR\r\n"


@pytest.fixture
def flat_lru_srv() -> Iterator[ServerProc]:
    """A node whose only reclaimer of expired items is the crawler: with the segmented LRU's
    maintainer on (the default), it reclaims them at the list tails first, as memcached's does."""
    node = start_node("--debug-time", "-o", "lru_crawler_sleep=0,no_lru_maintainer")
    yield node
    node.stop()


def test_crawler_reclaims_expired_items(flat_lru_srv: ServerProc) -> None:
    srv = flat_lru_srv
    with srv.connect() as s:
        before = stats(s)
        for i in range(200):
            s.sendall(b"set cr:%d 0 50 10 noreply\r\n0123456789\r\n" % i)
        assert ask(s, b"set cr:keep 0 0 1\r\nx\r\n") == b"STORED\r\n"
        assert ask(s, b"debugtime 100\r\n") == b"OK\r\n"
        deadline = time.monotonic() + 10
        while ask(s, b"lru_crawler crawl 1\r\n") != b"OK\r\n":
            assert time.monotonic() < deadline, "the crawler stayed busy"
            time.sleep(0.05)
        while True:
            after = stats(s)
            if int(after["crawler_reclaimed"]) - int(before["crawler_reclaimed"]) >= 200:
                break
            assert time.monotonic() < deadline, after
            time.sleep(0.05)
        assert int(after["lru_crawler_starts"]) > int(before["lru_crawler_starts"])
        assert int(after["crawler_items_checked"]) > int(before["crawler_items_checked"])
        assert ask(s, b"mg cr:keep v\r\n") == b"VA 1\r\nx\r\n"
        items = stats(s, b"items")
        assert int(items["items:1:crawler_reclaimed"]) >= 200


def test_crawler_disable_enable(srv: ServerProc) -> None:
    with srv.connect() as s:
        assert ask(s, b"lru_crawler disable\r\n") == b"OK\r\n"
        assert ask(s, b"lru_crawler crawl all\r\n") == b"CLIENT_ERROR lru crawler disabled\r\n"
        assert stats(s, b"settings")["lru_crawler"] == "no"
        assert ask(s, b"lru_crawler enable\r\n") == b"OK\r\n"
        assert ask(s, b"lru_crawler enable\r\n") == b"ERROR failed to start lru crawler thread\r\n"
        assert stats(s, b"settings")["lru_crawler"] == "yes"
