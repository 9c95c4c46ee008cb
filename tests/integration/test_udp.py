"""The UDP port (-U) against memcached 1.6.18: same datagrams in, same datagrams out.

Both servers get the same command line and the same items (over TCP), then the same datagrams
from one client socket; every reply datagram is compared byte for byte, header included, except
where the content must differ (``stats`` values: pid, uptime, ports). Covered: one-key and
multi-key gets (one response per key, misses included), a value of many datagrams, headers that
memcached drops (multi-datagram requests, nothing after the header) or ignores (sequence,
reserved), noreply and quiet requests, quit, errors, and the settings and connection counters
that -U changes. Also: UDP stays off by default (ascii auth refusing -U is in test_cli).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest
from procs import ServerProc, exchange, start_memcached, start_node
from reference import need_memcached
from wire import stats

BIG = 200_000  # 144 datagrams
BIG_VALUE = bytes(range(256)) * (BIG // 256) + b"x" * (BIG % 256)
KEY_TOO_LONG = b"k" * 251


def hdr(rid: int, seq: int = 0, total: int = 1, reserved: int = 0) -> bytes:
    return struct.pack(">HHHH", rid, seq, total, reserved)


def free_udp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 a moment ago."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port


def udp_client() -> socket.socket:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)  # a 144-datagram reply fits
    u.bind(("127.0.0.1", 0))
    return u


def ask(u: socket.socket, port: int, datagram: bytes, quiet: float = 0.3) -> list[bytes]:
    """Send one datagram; the datagrams that come back until ``quiet`` seconds pass."""
    u.sendto(datagram, ("127.0.0.1", port))
    out: list[bytes] = []
    u.settimeout(quiet if out else 2.0)
    while True:
        try:
            data, _ = u.recvfrom(70_000)
        except TimeoutError:
            return out
        out.append(data)
        u.settimeout(quiet)


def _seed(srv: ServerProc) -> None:
    with srv.connect() as s:
        reply = exchange(
            s,
            b"set a 1 0 3\r\nabc\r\nset n 0 0 2\r\n10\r\n"
            + b"set big 5 0 %d\r\n%b\r\n" % (BIG, BIG_VALUE),
        )
    assert reply == b"STORED\r\n" * 3


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[tuple[ServerProc, int], tuple[ServerProc, int]]]:
    need_memcached()
    ref_port, our_port = free_udp_port(), free_udp_port()
    ref = start_memcached("-U", str(ref_port), "-t", "2")
    try:
        ours = start_node("-U", str(our_port), "-t", "2")
    except BaseException:
        ref.stop()
        raise
    try:
        _seed(ref)
        _seed(ours)
        yield (ref, ref_port), (ours, our_port)
    finally:
        ours.stop()
        ref.stop()


# (name, datagram): each run against both servers in this order (the state they leave is the
# same on both); replies compared byte for byte. Left out: what memcached does after a ``quit``
# on the same UDP descriptor, or with a request split across datagrams: it keeps that state on
# the descriptor (shared by every client) and the next datagram's replies depend on which worker
# the kernel handed it to.
CASES: list[tuple[str, bytes]] = [
    ("get-hit", hdr(1) + b"get a\r\n"),
    ("get-miss", hdr(2) + b"get nope\r\n"),
    ("get-keys", hdr(3) + b"get a nope a\r\n"),
    ("get-miss-first", hdr(4) + b"get nope nope a nope\r\n"),
    ("gets-gat", hdr(5) + b"gat 0 a nope\r\ngats 0 a a\r\n"),
    ("big", hdr(0xABCD) + b"get big\r\n"),
    ("big-twice", hdr(6) + b"get big a big\r\n"),
    ("pipeline", hdr(7) + b"set x 0 0 1\r\nq\r\nget x\r\ndelete x\r\nincr n 5\r\n"),
    ("noreply", hdr(8) + b"set u 0 0 1 noreply\r\nz\r\nincr n 1 noreply\r\nget u n\r\n"),
    ("noreply-only", hdr(9) + b"set u 0 0 1 noreply\r\nz\r\n"),
    ("meta-quiet", hdr(10) + b"mg nope v q\r\nmg a v q\r\nmn\r\n"),
    ("errors", hdr(14) + b"bogus\r\n\r\nget\r\n"),
    ("key-too-long", hdr(15) + b"version\r\nget a " + KEY_TOO_LONG + b"\r\nversion\r\n"),
    ("sent-get-stays", hdr(16) + b"get a\r\nget a nope " + KEY_TOO_LONG + b"\r\n"),
    ("seq-reserved-ignored", hdr(17, seq=3, reserved=9) + b"get a\r\n"),
    ("multi-datagram-dropped", hdr(18, total=2) + b"get a\r\n"),
    ("part-two-dropped", hdr(18, seq=1, total=2) + b"get a\r\n"),
    ("header-only-dropped", hdr(19)),
    ("short-dropped", b"\x00\x01"),
    ("incomplete-dropped", hdr(20) + b"get a"),
    ("version", hdr(0xFFFF) + b"version\r\n"),
    # last: memcached leaves its UDP descriptor marked to close after a quit
    ("quit-after", hdr(12) + b"version\r\nquit\r\nget a\r\n"),
    ("quit-first", hdr(11) + b"quit\r\nget a\r\n"),
]


@pytest.mark.parametrize(("name", "datagram"), CASES, ids=[c[0] for c in CASES])
def test_same_datagrams_as_memcached(
    pair: tuple[tuple[ServerProc, int], tuple[ServerProc, int]], name: str, datagram: bytes
) -> None:
    (_, ref_port), (_, our_port) = pair
    with udp_client() as u:
        want = ask(u, ref_port, datagram)
        got = ask(u, our_port, datagram)
    assert got == want, name


def test_large_get_arrives_whole(
    pair: tuple[tuple[ServerProc, int], tuple[ServerProc, int]],
) -> None:
    """The 144 datagrams of one value, each with its sequence number, reassemble to it."""
    _, (_, our_port) = pair
    with udp_client() as u:
        dgs = ask(u, our_port, hdr(77) + b"get big\r\n")
    assert len(dgs) == 144
    assert [struct.unpack(">HHHH", d[:8]) for d in dgs] == [(77, i, 144, 0) for i in range(144)]
    assert all(len(d) <= 1400 for d in dgs)
    body = b"".join(d[8:] for d in dgs)
    assert body == b"VALUE big 5 %d\r\n%b\r\nEND\r\n" % (BIG, BIG_VALUE)


def _stats_over_udp(port: int) -> dict[str, str]:
    with udp_client() as u:
        dgs = ask(u, port, hdr(5) + b"stats settings\r\n")
    total = struct.unpack(">HHHH", dgs[0][:8])[2]
    assert len(dgs) == total and total > 1  # one response, several datagrams
    lines = b"".join(d[8:] for d in dgs).decode().split("\r\n")
    assert lines[-2:] == ["END", ""]
    return {ln.split()[1]: ln.split()[2] for ln in lines[:-2]}


def test_settings_and_counters_as_memcached(
    pair: tuple[tuple[ServerProc, int], tuple[ServerProc, int]],
) -> None:
    """`stats settings` (read over UDP itself): udpport and num_threads_per_udp; `stats`: each
    worker's descriptor on the UDP socket counts as a connection, and bytes_read/bytes_written
    count the frame headers."""
    (ref, ref_port), (ours, our_port) = pair
    for port in (ref_port, our_port):
        settings = _stats_over_udp(port)
        assert settings["udpport"] == str(port)
        assert settings["num_threads_per_udp"] == "2"
    with ref.connect() as r, ours.connect() as o:
        want, got = stats(r), stats(o)
        for name in ("curr_connections", "total_connections", "connection_structures"):
            assert got[name] == want[name], name
        before = {"ref": int(want["bytes_read"]), "ours": int(got["bytes_read"])}
        with udp_client() as u:
            for port in (ref_port, our_port):
                assert len(ask(u, port, hdr(1) + b"get a\r\n")) == 1
        want, got = stats(r), stats(o)
    # the request's 8 + 7 bytes are counted header and all (and the 7 of `stats\r\n`)
    assert int(want["bytes_read"]) - before["ref"] == 15 + 7
    assert int(got["bytes_read"]) - before["ours"] == 15 + 7


def test_udp_is_off_by_default() -> None:
    node = start_node()
    try:
        with node.connect() as s:
            assert stats(s)["curr_connections"] == "1"
            settings = exchange(s, b"stats settings\r\n")
        assert b"STAT udpport 0\r\n" in settings
    finally:
        node.stop()
