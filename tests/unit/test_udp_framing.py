"""UDP framing without a socket: the frame header read, replies cut into memcached's datagrams.

The session is driven with the bytes of one datagram, as the server feeds it; the expected
datagrams are the ones memcached 1.6.18 sends for the same request (the integration test
compares them with a live memcached).
"""

from __future__ import annotations

import dataclasses
import struct

from memcache_server.commands.context import NodeParts, new_store
from memcache_server.commands.udp import UdpSession
from memcache_server.config import ServerConfig
from memcache_server.protocol.udp import UDP_MAX_PAYLOAD, frame_replies, parse_request
from memcache_server.stats import private_stats
from memcache_server.storage.clock import Clock


def hdr(rid: int, seq: int, total: int, reserved: int = 0) -> bytes:
    return struct.pack(">HHHH", rid, seq, total, reserved)


class _Admin:
    """Stands in for the node: these requests never reach a node-wide command."""


def run(data: bytes, parts: NodeParts, rid: int = 7, limit: int = 1000) -> list[bytes]:
    s = UdpSession(parts, private_stats(), rid, "udp:test", _Admin())  # type: ignore[arg-type]
    s.framer.feed(data)
    out: list[bytes] = []
    while True:
        more = s.process(limit)
        out += s.take_datagrams()
        if not more:
            return out


def make_parts(*, out_limit: int | None = None) -> NodeParts:
    config = ServerConfig()
    if out_limit is not None:
        config = dataclasses.replace(config, max_output_buffer=out_limit)
    clock = Clock()
    return NodeParts(config, clock, new_store(config, clock))


def test_parse_request_takes_one_datagram_requests_only() -> None:
    assert parse_request(hdr(9, 0, 1) + b"get a\r\n") == (9, b"get a\r\n")
    # sequence and reserved are ignored, as memcached ignores them
    assert parse_request(hdr(9, 4, 1, 77) + b"get a\r\n") == (9, b"get a\r\n")
    assert parse_request(hdr(9, 0, 2) + b"get a\r\n") is None  # part of a multi-datagram request
    assert parse_request(hdr(9, 0, 0) + b"get a\r\n") is None
    assert parse_request(hdr(9, 0, 1)) is None  # nothing after the header
    assert parse_request(b"abc") is None


def test_frame_cuts_responses_at_the_payload_size() -> None:
    body = bytes(range(256)) * 12  # 3072 bytes: three datagrams of at most 1392 reply bytes
    dgs = frame_replies(0x0102, body, [0, len(body)])
    assert [len(d) for d in dgs] == [UDP_MAX_PAYLOAD, UDP_MAX_PAYLOAD, 8 + 3072 - 2 * 1392]
    assert [d[:8] for d in dgs] == [hdr(0x0102, i, 3) for i in range(3)]
    assert b"".join(d[8:] for d in dgs) == body


def test_empty_response_heads_the_queue_as_a_bare_header() -> None:
    # [empty, "x"]: a bare header (total 0), then x; [x, empty, y]: the empty one is finished
    assert frame_replies(1, b"x", [0, 0, 1]) == [hdr(1, 0, 0), hdr(1, 0, 1) + b"x"]
    assert frame_replies(1, b"xy", [0, 1, 1, 2]) == [hdr(1, 0, 1) + b"x", hdr(1, 0, 1) + b"y"]
    assert frame_replies(1, b"xy", [0, 1, 1, 2], continuing=True)[0] == hdr(1, 0, 1) + b"x"
    assert frame_replies(1, b"x", [0, 0, 1], continuing=True) == [hdr(1, 0, 1) + b"x"]


def test_multi_key_get_answers_one_response_per_key() -> None:
    parts = make_parts()
    run(b"set a 1 0 3\r\nabc\r\n", parts)
    assert run(b"get a miss a\r\n", parts) == [
        hdr(7, 0, 1) + b"VALUE a 1 3\r\nabc\r\n",
        hdr(7, 0, 1) + b"VALUE a 1 3\r\nabc\r\nEND\r\n",
    ]
    assert run(b"get miss a\r\n", parts) == [
        hdr(7, 0, 0),
        hdr(7, 0, 1) + b"VALUE a 1 3\r\nabc\r\nEND\r\n",
    ]
    assert run(b"gat 0 a miss\r\n", parts) == [
        hdr(7, 0, 1) + b"VALUE a 1 3\r\nabc\r\n",
        hdr(7, 0, 1) + b"END\r\n",
    ]


def test_noreply_and_quiet_requests_send_nothing() -> None:
    parts = make_parts()
    assert run(b"set n 0 0 1 noreply\r\n1\r\nincr n 5 noreply\r\nmg n v q\r\n", parts) == [
        hdr(7, 0, 1) + b"VA 1\r\n6\r\n"
    ]
    assert run(b"set q 0 0 1 noreply\r\nq\r\n", parts) == []


def test_quit_stops_the_datagram() -> None:
    parts = make_parts()
    assert run(b"quit\r\nversion\r\n", parts) == [hdr(7, 0, 0)]
    (version,) = run(b"version\r\nquit\r\nversion\r\n", parts)
    assert version.startswith(hdr(7, 0, 1) + b"VERSION ")


def test_a_key_too_long_drops_the_replies_not_yet_sent() -> None:
    parts = make_parts()
    run(b"set a 1 0 3\r\nabc\r\n", parts)
    long_key = b"k" * 251
    dgs = run(b"version\r\nget a " + long_key + b"\r\nversion\r\n", parts)
    assert dgs[0] == hdr(7, 0, 1) + b"CLIENT_ERROR bad command line format\r\n"
    assert dgs[1].startswith(hdr(7, 0, 1) + b"VERSION ") and len(dgs) == 2
    # a get that succeeded has been sent already: it stays
    dgs = run(b"get a\r\nget a " + long_key + b"\r\n", parts)
    assert dgs == [
        hdr(7, 0, 1) + b"VALUE a 1 3\r\nabc\r\nEND\r\n",
        hdr(7, 0, 1) + b"CLIENT_ERROR bad command line format\r\n",
    ]


def test_an_incomplete_request_is_dropped_with_its_datagram() -> None:
    parts = make_parts()
    assert run(b"set u 0 0 5\r\nab", parts) == []
    assert run(b"get u\r\n", parts) == [hdr(7, 0, 1) + b"END\r\n"]


def test_a_large_reply_is_produced_in_bounded_steps() -> None:
    """A get naming one big item many times: the session hands back datagrams every time the
    queued reply passes out_limit, and the datagrams are the same as in one go."""
    value = b"v" * 100_000
    small = make_parts(out_limit=150_000)
    big = make_parts()
    for parts in (small, big):
        run(b"set b 0 0 %d\r\n%b\r\n" % (len(value), value), parts)
    req = b"get " + b"b " * 20 + b"\r\nget b b\r\n"
    s = UdpSession(small, private_stats(), 3, "udp:test", _Admin())  # type: ignore[arg-type]
    s.framer.feed(req)
    steps: list[int] = []
    stepped: list[bytes] = []
    while True:
        more = s.process(1000)
        batch = s.take_datagrams()
        steps.append(sum(map(len, batch)))
        stepped += batch
        if not more:
            break
    assert len(steps) > 5 and max(steps) < 400_000
    assert stepped == run(req, big, rid=3)
    assert len(stepped) == 22 * 72  # each VALUE response: 100_018 (+5) bytes -> 72 datagrams
